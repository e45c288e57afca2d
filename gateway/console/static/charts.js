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
      axes: [{}, { size: 60, values: opts.axis || null }],
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

  /* Stacked bars over UTC days ("2026-12-06"): one layer per name. uPlot draws series in
     order, so the running totals go from the whole stack down, each over the one before. */
  function daily(el, days, names, rows, opts) {
    opts = opts || {};
    const xs = days.map(function (_, i) { return i; });
    const running = [], sum = days.map(function () { return 0; });
    rows.forEach(function (row) { row.forEach(function (v, j) { sum[j] += v; }); running.push(sum.slice()); });
    const series = [{ label: "day", value: function (u, i) { return i === null ? "–" : days[i]; } }];
    const data = [xs];
    for (let i = names.length - 1; i >= 0; i--) {
      const color = PALETTE[i % PALETTE.length], own = rows[i];
      series.push({ label: names[i], stroke: color, fill: color + "cc", paths: uPlot.paths.bars({ size: [0.7, 80] }), points: { show: false },
        value: function (u, v, si, idx) { return idx === null ? "–" : (opts.format || String)(own[idx]); } });
      data.push(running[i]);
    }
    return new uPlot({
      width: width(el), height: opts.height || 240, series: series,
      scales: { x: { time: false, range: [-0.6, days.length - 0.4] }, y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } } },
      axes: [{ values: function (u, splits) { return splits.map(function (i) { return days[i] === undefined ? "" : days[i]; }); } },
        { size: 80, values: opts.axis || null }],
    }, data, el);
  }

  /* Bars over categories (a histogram): labels under the bars, one series. */
  function bars(el, labels, values, name, opts) {
    opts = opts || {};
    const xs = labels.map(function (_, i) { return i; });
    return new uPlot({
      width: width(el), height: opts.height || 200,
      scales: { x: { time: false, range: [-0.6, labels.length - 0.4] } },
      series: [{ label: opts.xLabel || "bucket", value: function (u, i) { return i === null ? "–" : labels[i]; } }, { label: name, stroke: PALETTE[0], fill: "rgba(47, 91, 211, 0.35)",
        paths: uPlot.paths.bars({ size: [0.8, 60] }), points: { show: false } }],
      axes: [{ values: function (u, splits) { return splits.map(function (i) { return labels[i] === undefined ? "" : labels[i]; }); } }, {}],
    }, [xs, values], el);
  }

  window.SyCharts = { live: live, daily: daily, bars: bars, PALETTE: PALETTE };
})();
