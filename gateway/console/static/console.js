/* Switchyard console: each page reads /console/api/* and renders with DOM calls only
   (textContent, never HTML strings), so nothing a worker, tenant or policy says can run. */
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; } else if (k === "cls") { node.className = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c !== null && c !== undefined) { node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); } });
    return node;
  }

  async function api(path, opts) {
    opts = opts || {};
    const headers = { accept: "application/json" };
    if (opts.method === "POST") { headers["x-csrf-token"] = csrf; headers["content-type"] = opts.type || "application/json"; }
    const response = await fetch("/console/api/" + path, { method: opts.method || "GET", headers: headers, body: opts.body, credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) { window.location.assign("/console/login"); throw new Error("logged out"); }
    const body = await response.json();
    return { status: response.status, body: body };
  }

  function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%"; }
  function val(v) { return v === null || v === undefined ? "–" : Number.isInteger(v) ? String(v) : Number(v).toPrecision(3); }
  function num(v) { return v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"); }
  function usd(v) { return v === null || v === undefined ? "–" : "$" + Number(v).toFixed(4); }
  function table(head, rows) {
    return el("table", {}, [el("thead", {}, [el("tr", {}, head.map(function (h) { return el("th", { text: h }); }))]), el("tbody", {}, rows)]);
  }
  function cell(text, cls) { return el("td", { text: String(text), cls: cls || "" }); }
  function replace(node, child) { node.replaceChildren(child); }
  function poll(fn, ms) { fn(); window.setInterval(fn, ms); }

  /* A confirmation before every change: resolves true only on an explicit click on Confirm. */
  function confirmChange(message) {
    let dialog = document.getElementById("confirm");
    if (!dialog) {
      dialog = el("dialog", { id: "confirm" }, [el("p", { id: "confirm-text" }), el("form", { method: "dialog" }, [
        el("button", { value: "cancel", id: "confirm-no", text: "Cancel" }), " ",
        el("button", { value: "yes", id: "confirm-yes", cls: "danger", text: "Confirm" })])]);
      document.body.appendChild(dialog);
    }
    document.getElementById("confirm-text").textContent = message;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise(function (resolve) {
      dialog.addEventListener("close", function () { resolve(dialog.returnValue === "yes"); }, { once: true });
    });
  }

  // --- Workers -------------------------------------------------------------------------------
  function workersPage() {
    const root = document.getElementById("workers");
    let chart = null, ids = [];
    poll(async function () {
      const data = (await api("workers")).body;
      const cards = data.pools.map(function (pool) {
        const rows = pool.workers.map(function (w) {
          const errors = Object.keys(w.errors).map(function (c) { return c + " ×" + w.errors[c]; }).join(", ");
          return el("tr", { "data-worker": w.id }, [cell(w.id), cell(w.address), cell(w.healthy ? "healthy" : "down: " + w.detail, w.healthy ? "ok" : "bad"),
            cell(w.circuit, w.circuit === "closed" ? "ok" : "bad"), cell(w.in_flight, "num in-flight"), cell(w.queued, "num queued"),
            cell(num(w.prompt_tokens), "num prompt"), cell(num(w.cached_tokens), "num cached"), cell(pct(w.cache_hit_rate), "num hit"), cell(errors || "none", "errors")]);
        });
        return el("div", { cls: "card", "data-pool": pool.name }, [el("h2", { text: "Pool " + pool.name }),
          table(["worker", "address", "health", "circuit", "in flight", "queued", "prompt tokens", "cached tokens", "hit rate", "failed attempts"], rows)]);
      });
      root.replaceChildren.apply(root, cards);
      const workers = [].concat.apply([], data.pools.map(function (p) { return p.workers; })).filter(function (w) { return w.kind === "sglang"; });
      if (!chart && workers.length) {
        ids = workers.map(function (w) { return w.id; });
        chart = SyCharts.live(document.getElementById("hit-chart"), ids, { range: [0, 1], axis: function (u, s) { return s.map(function (v) { return Math.round(v * 100) + "%"; }); } });
      }
      if (chart) {
        const byId = {};
        workers.forEach(function (w) { byId[w.id] = w.cache_hit_rate; });
        chart.push(Date.now() / 1000, ids.map(function (id) { return byId[id] === undefined ? null : byId[id]; }));
      }
    }, 3000);
  }

  // --- Routes --------------------------------------------------------------------------------
  function routesPage() {
    const root = document.getElementById("routes");
    const charts = {};
    poll(async function () {
      const data = (await api("routes")).body;
      if (!data.routes.length) { replace(root, el("p", { text: "No difficulty routes in the active policy." })); return; }
      data.routes.forEach(function (r) {
        let card = root.querySelector('[data-route="' + CSS.escape(r.name) + '"]');
        if (!card) {
          card = el("div", { cls: "card", "data-route": r.name }, [el("h2", { text: r.name + ": " + r.cheap + " / " + r.strong }), el("div", { cls: "facts" }),
            el("h3", { text: "Share sent to the strong model, against the target" }), el("div", { cls: "chart share-chart" }),
            el("h3", { text: "Difficulty scores" }), el("div", { cls: "chart scores-chart" })]);
          root.appendChild(card);
        }
        const total = r.decisions.cheap + r.decisions.strong;
        const share = total ? r.decisions.strong / total : null;
        replace(card.querySelector(".facts"), table(["threshold", "target strong share", "cheap", "strong", "strong share", "estimated saved"], [el("tr", {}, [
          cell(r.threshold.toFixed(3), "num threshold"), cell(r.target_strong_share === null ? "–" : pct(r.target_strong_share), "num"),
          cell(num(r.decisions.cheap), "num cheap"), cell(num(r.decisions.strong), "num strong"), cell(pct(share), "num share"), cell(usd(r.estimated_saved_usd), "num saved")])]));
        if (!charts[r.name]) {
          charts[r.name] = SyCharts.live(card.querySelector(".share-chart"), ["strong share", "target"], { range: [0, 1], dash: [false, true] });
        }
        charts[r.name].push(Date.now() / 1000, [share, r.target_strong_share]);
        const scores = card.querySelector(".scores-chart");
        scores.replaceChildren();
        SyCharts.bars(scores, r.histogram.map(function (b) { return "≤" + b.le.toFixed(2); }), r.histogram.map(function (b) { return b.count; }), "requests", { xLabel: "score" });
      });
    }, 5000);
  }

  // --- Canaries ------------------------------------------------------------------------------
  function canaryCard(c) {
    const checks = c.verdict ? c.verdict.checks.map(function (g) {
      return el("tr", {}, [cell(g.guard), cell(g.judgement, g.judgement === "breach" ? "bad" : g.judgement === "pass" ? "ok" : "warn"),
        cell(val(g.canary), "num"), cell(val(g.stable), "num"), cell(val(g.ratio_limit), "num"), cell(g.reason)]);
    }) : [];
    const history = c.history.slice(-10).reverse().map(function (t) {
      return el("tr", {}, [cell(new Date(t.at * 1000).toISOString().replace(".000", "")), cell(t.kind), cell(t.actor), cell(pct(t.from_weight) + " → " + pct(t.to_weight)), cell(t.reason)]);
    });
    const buttons = ["promote", "rollback", "pause", "resume"].map(function (action) {
      const b = el("button", { type: "button", "data-action": action, cls: action === "rollback" || action === "promote" ? "danger" : "", text: action });
      b.addEventListener("click", async function () {
        if (!(await confirmChange(action + " the canary " + c.canary + " of " + c.model + "?"))) { return; }
        const result = await api("canaries/" + encodeURIComponent(c.model) + "/" + action, { method: "POST", body: JSON.stringify({ reason: "from the console" }) });
        if (result.status !== 200) { window.alert(result.body.error ? result.body.error.message : "failed"); }
        canariesRefresh();
      });
      return b;
    });
    return el("div", { cls: "card", "data-model": c.model }, [
      el("h2", { text: c.model + ": " + c.stable + " → " + c.canary + " (" + c.mode + ")" }),
      table(["phase", "weight", "step", "next"], [el("tr", {}, [cell(c.phase, "phase"), cell(pct(c.weight), "num weight"), cell(c.steps ? c.step + "/" + c.steps.length : "–", "num"), cell(c.next)])]),
      el("h3", { text: "Guards" }), checks.length ? table(["guard", "verdict", "canary", "stable", "limit (ratio)", "why"], checks) : el("p", { cls: "hint", text: "No guard verdict yet." }),
      el("h3", { text: "History" }), history.length ? table(["at (UTC)", "kind", "by", "weight", "reason"], history) : el("p", { cls: "hint", text: "No transitions yet." }),
      el("p", {}, buttons)]);
  }
  let canariesRefresh = function () {};
  function canariesPage() {
    const root = document.getElementById("canaries");
    canariesRefresh = async function () {
      const data = (await api("canaries")).body;
      if (document.querySelector("dialog[open]")) { return; }  // do not redraw under an open confirmation
      if (!data.canaries.length) { replace(root, el("p", { text: "No canaries in the active policy." })); return; }
      root.replaceChildren.apply(root, data.canaries.map(canaryCard));
    };
    poll(canariesRefresh, 3000);
  }

  // --- Policy --------------------------------------------------------------------------------
  function policyPage() {
    const editor = document.getElementById("policy-editor");
    const problems = document.getElementById("policy-problems");
    const diff = document.getElementById("policy-diff");
    const status = document.getElementById("policy-status");
    const replayButton = document.getElementById("policy-replay");
    let timer = null, valid = false;

    async function loadActive(fillEditor) {
      const p = (await api("policy")).body;
      const dl = document.getElementById("policy-active");
      dl.replaceChildren(el("dt", { text: "version" }), el("dd", { id: "active-version", text: p.version || "–" }),
        el("dt", { text: "sha256" }), el("dd", { text: p.sha256 || "–" }), el("dt", { text: "source" }), el("dd", { text: p.source || "–" }),
        el("dt", { text: "applied" }), el("dd", { text: p.applied_at ? new Date(p.applied_at * 1000).toISOString() : "–" }));
      if (fillEditor) { editor.value = p.text; }
      replayButton.disabled = !p.replay;
      document.getElementById("policy-replay-note").textContent = p.replay
        ? "Replays the first recorded requests of the access log through both policies on simulated workers (takes a while)."
        : "No recorded traffic: the gateway needs its access log in a file (SWITCHYARD_ACCESS_LOG) and observability.capture_content on.";
    }

    function showProblems(list) {
      problems.replaceChildren.apply(problems, list.map(function (p) { return el("li", { "data-path": p.path, text: p.path + ": " + p.message }); }));
    }

    async function check() {
      const result = (await api("policy/check", { method: "POST", body: editor.value, type: "application/yaml" })).body;
      valid = result.valid;
      editor.classList.toggle("invalid", !valid);
      showProblems(result.problems || []);
      diff.textContent = valid ? (result.diff || "") : "(fix the problems above to see the diff)";
    }

    editor.addEventListener("input", function () { window.clearTimeout(timer); timer = window.setTimeout(check, 300); });
    replayButton.addEventListener("click", async function () {
      const out = document.getElementById("policy-replay-out");
      out.textContent = "replaying…";
      const result = (await api("policy/replay", { method: "POST", body: editor.value, type: "application/yaml" })).body;
      if (!result.ran) { out.textContent = result.error || "the replay failed"; return; }
      const rows = [["policy", function (p) { return p.label.replace(".yaml", "") + " (" + p.version + ")"; }],
        ["answered / sent", function (p) { return p.answered + " / " + p.sent; }], ["cost", function (p) { return usd(p.cost_usd); }],
        ["prefix-cache hit rate", function (p) { return pct(p.hit_rate); }], ["TTFT p50 / p95 (ms)", function (p) { return val(p.ttft_ms.p50) + " / " + val(p.ttft_ms.p95); }],
        ["decisions", function (p) { return Object.keys(p.decisions).map(function (k) { return k + ": " + p.decisions[k]; }).join(", "); }],
        ["refused", function (p) { return Object.keys(p.rejections).map(function (k) { return k + ": " + p.rejections[k]; }).join(", ") || "none"; }]];
      out.replaceChildren(el("span", { text: result.report.traffic.requests + " recorded requests replayed on simulated workers" }),
        table([""].concat(["active", "edited"]), rows.map(function (r) { return el("tr", {}, [el("th", { text: r[0] })].concat(result.report.policies.map(function (p) { return cell(r[1](p), "num"); }))); })));
    });
    document.getElementById("policy-apply").addEventListener("click", async function () {
      if (!(await confirmChange("Apply this policy to the gateway (and, with Redis, every replica)?"))) { return; }
      const result = await api("policy", { method: "POST", body: editor.value, type: "application/yaml" });
      if (result.status === 200) {
        status.textContent = result.body.applied ? "applied: version " + result.body.version : "no change: this policy is already active";
        status.className = "ok";
        await loadActive(false);
        await check();
      } else {
        status.textContent = "refused: the active policy keeps serving";
        status.className = "bad";
        showProblems(result.body.problems || [{ path: "(request)", message: result.body.error ? result.body.error.message : "failed" }]);
      }
    });
    loadActive(true).then(check);
  }

  // --- Usage ---------------------------------------------------------------------------------
  async function usagePage() {
    const data = (await api("usage?days=14")).body;
    const days = Array.from(new Set([].concat.apply([], data.tenants.map(function (t) { return t.rows.map(function (r) { return r.day; }); })))).sort();
    const tenants = data.tenants.map(function (t) { return t.tenant; });
    const spend = data.tenants.map(function (t) { return days.map(function (d) { return t.rows.filter(function (r) { return r.day === d; }).reduce(function (s, r) { return s + r.cost_usd; }, 0); }); });
    const models = Array.from(new Set([].concat.apply([], data.tenants.map(function (t) { return t.rows.map(function (r) { return r.model; }); })))).sort();
    const tokens = models.map(function (m) { return days.map(function (d) {
      return data.tenants.reduce(function (s, t) { return s + t.rows.filter(function (r) { return r.day === d && r.model === m; }).reduce(function (a, r) { return a + r.input_tokens + r.cached_input_tokens + r.output_tokens; }, 0); }, 0);
    }); });
    if (days.length) {
      SyCharts.daily(document.getElementById("usage-tenants"), days, tenants, spend, { format: usd, axis: function (u, splits) { return splits.map(function (v) { return "$" + v.toFixed(4); }); } });
      SyCharts.daily(document.getElementById("usage-models"), days, models, tokens, { format: num });
    } else {
      document.getElementById("usage-tenants").textContent = "No usage recorded yet.";
    }
    replace(document.getElementById("top-tenants"), el("tbody", {}, [el("tr", {}, ["tenant", "requests", "tokens", "spend"].map(function (h) { return el("th", { text: h }); }))].concat(
      data.top_today.map(function (t) { return el("tr", { "data-tenant": t.tenant }, [cell(t.tenant), cell(num(t.requests), "num"), cell(num(t.tokens), "num tokens"), cell(usd(t.usd), "num")]); }))));
  }

  const pages = { workers: workersPage, routes: routesPage, canaries: canariesPage, policy: policyPage, usage: usagePage };
  const page = pages[document.body.dataset.page];
  if (page) { page(); }
})();
