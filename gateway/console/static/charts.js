/* Switchyard console charts: thin helpers over the vendored uPlot (vendor/uPlot.iife.min.js). */
"use strict";
(function () {
  const PALETTE = ["#2f5bd3", "#d9822b", "#1b7f3b", "#b3261e", "#7a4cc2", "#0f8b8d", "#9a6700", "#5c6577"];

  function width(el) { return Math.max(320, Math.min(1100, el.clientWidth - 12 || 800)); }

  function seriesOf(names, opts) {
    return [{}].concat(names.map(function (name, i) {
      const s = { label: name, stroke: PALETTE[i % PALETTE.length], width: 2, points: { show: !!opts.points } };
      if (opts.dash && opts.dash[i]) { s.dash = [6, 4]; }
      if (opts.value) { s.value = opts.value; }
      return s;
    }));
  }

  /* A time series that grows as the page polls: push(seconds, [v1, v2, ...]). */
  function live(el, names, opts) {
    opts = opts || {};
    const keep = opts.keep || 120;
    const data = [[]].concat(names.map(function () { return []; }));
    const plot = new uPlot({
      width: width(el), height: opts.height || 220, series: seriesOf(names, opts),
      scales: { y: opts.range ? { range: opts.range } : { auto: true } },
      axes: [{}, { values: opts.axis || null }],
    }, data, el);
    return {
      push: function (t, values) {
        data[0].push(t);
        values.forEach(function (v, i) { data[i + 1].push(v); });
        if (data[0].length > keep) { data.forEach(function (col) { col.shift(); }); }
        plot.setData(data);
      },
    };
  }

  /* Lines over days: x are UTC days ("2026-12-06"), one series per name. */
  function daily(el, days, names, rows, opts) {
    opts = opts || {};
    const xs = days.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
    const data = [xs].concat(names.map(function (_, i) { return rows[i]; }));
    return new uPlot({
      width: width(el), height: opts.height || 240, series: seriesOf(names, { points: true, value: opts.value }),
      axes: [{}, { values: opts.axis || null }],
    }, data, el);
  }

  /* Bars over categories (a histogram): labels under the bars, one series. */
  function bars(el, labels, values, name, opts) {
    opts = opts || {};
    const xs = labels.map(function (_, i) { return i; });
    return new uPlot({
      width: width(el), height: opts.height || 200,
      scales: { x: { time: false, range: [-0.6, labels.length - 0.4] } },
      series: [{}, { label: name, stroke: PALETTE[0], fill: "rgba(47, 91, 211, 0.35)",
        paths: uPlot.paths.bars({ size: [0.8, 60] }), points: { show: false } }],
      axes: [{ values: function (u, splits) { return splits.map(function (i) { return labels[i] === undefined ? "" : labels[i]; }); } }, {}],
    }, [xs, values], el);
  }

  window.SyCharts = { live: live, daily: daily, bars: bars, PALETTE: PALETTE };
})();
