// gpumesh market page: polls /api/market, draws its charts as SVG, quotes through /api/quote.
// Everything from the server goes into the page as text or attribute values, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f6fde", "#1f8a4c", "#b7791f", "#c2413b", "#6941c6", "#0e7490", "#be185d", "#4b5563"];
  const W = 520, H = 180, PAD = { l: 64, r: 12, t: 10, b: 28 };

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") node.className = v; else node[k] = v;
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function amount(text) {
    try { return BigInt(text || "0").toLocaleString("en-US"); } catch (e) { return String(text); }
  }

  function num(text) { const n = Number(text); return Number.isFinite(n) ? n : 0; }

  function duration(s) {
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function canvas(id) {
    const box = $(id);
    box.replaceChildren();
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
    box.append(root);
    return root;
  }

  function empty(root, text) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, text));
  }

  function axes(root, max, unit) {
    root.append(svg("line", { x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b, class: "axis" }));
    root.append(svg("line", { x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b, class: "axis" }));
    root.append(svg("text", { x: PAD.l - 4, y: PAD.t + 8, "text-anchor": "end" }, fmt(max) + (unit || "")));
    root.append(svg("text", { x: PAD.l - 4, y: H - PAD.b, "text-anchor": "end" }, "0"));
  }

  function fmt(n) { return n >= 1000 ? Math.round(n).toLocaleString("en-US") : (Math.round(n * 10) / 10).toString(); }

  function y(v, max) { return H - PAD.b - (max > 0 ? v / max : 0) * (H - PAD.t - PAD.b); }

  function priceChart(classes) {
    const root = canvas("chart-prices");
    if (!classes.length) return empty(root, "no verified provider online");
    const max = Math.max(...classes.map((c) => num(c.price_p90))) || 1;
    axes(root, max, "/h");
    const step = (W - PAD.l - PAD.r) / classes.length;
    classes.forEach((c, k) => {
      const x = PAD.l + k * step + step / 2;
      const lo = y(num(c.price_p10), max), hi = y(num(c.price_p90), max);
      root.append(svg("rect", { x: x - 8, y: hi, width: 16, height: Math.max(2, lo - hi), class: "range", "data-class": c.key }));
      root.append(svg("circle", { cx: x, cy: y(num(c.price_p50), max), r: 4, class: "mid" }));
      root.append(svg("text", { x, y: H - PAD.b + 14, "text-anchor": "middle" }, c.key));
    });
  }

  function throughputChart(classes) {
    const root = canvas("chart-throughput");
    const measured = classes.filter((c) => c.samples > 0);
    if (!measured.length) return empty(root, "no finished task in the last hour");
    const max = Math.max(...measured.map((c) => c.tokens_per_s)) || 1;
    axes(root, max, " tok/s");
    const step = (W - PAD.l - PAD.r) / measured.length;
    measured.forEach((c, k) => {
      const x = PAD.l + k * step + step * 0.2, top = y(c.tokens_per_s, max);
      root.append(svg("rect", { x, y: top, width: step * 0.6, height: H - PAD.b - top, class: "bar-fill", "data-class": c.key }));
      root.append(svg("text", { x: x + step * 0.3, y: H - PAD.b + 14, "text-anchor": "middle" }, c.key));
    });
  }

  function lines(id, history, series, unit) {
    const root = canvas(id);
    if (history.length < 2) return empty(root, "history builds up one point a minute");
    const t0 = history[0].at, t1 = history[history.length - 1].at;
    const max = Math.max(1, ...series.flatMap((s) => history.map(s.value)));
    axes(root, max, unit);
    const x = (t) => PAD.l + (t1 > t0 ? (t - t0) / (t1 - t0) : 0) * (W - PAD.l - PAD.r);
    series.forEach((s, k) => {
      const pts = history.filter((p) => s.value(p) !== null).map((p) => `${x(p.at).toFixed(1)},${y(s.value(p), max).toFixed(1)}`);
      if (!pts.length) return;
      root.append(svg("polyline", { points: pts.join(" "), class: "line", stroke: COLORS[k % COLORS.length], "data-series": s.name }));
      root.append(svg("text", { x: W - PAD.r - 4, y: PAD.t + 12 + 12 * k, "text-anchor": "end", fill: COLORS[k % COLORS.length] }, s.name));
    });
    root.append(svg("text", { x: PAD.l, y: H - 6 }, new Date(t0 * 1000).toISOString().slice(11, 16) + " UTC"));
    root.append(svg("text", { x: W - PAD.r, y: H - 6, "text-anchor": "end" }, new Date(t1 * 1000).toISOString().slice(11, 16) + " UTC"));
  }

  function render(m) {
    $("m-providers").textContent = m.providers;
    $("m-free").textContent = m.classes.reduce((a, c) => a + c.slots_free, 0);
    $("m-queue").textContent = m.queue_depth;
    const f = m.fallback;
    $("m-fallback").textContent = `${f.centralized_providers} centralized provider(s), ${f.tasks_on_centralized} task(s) running there, ` +
      `${f.tasks_routed} routed in the last round, ${f.instances_live} launched instance(s)`;
    const body = $("classes").tBodies[0];
    body.replaceChildren(...(m.classes.length ? m.classes.map((c) => el("tr", { "class": "class-row" },
      el("td", {}, c.label), el("td", {}, c.tier.toLowerCase()), el("td", { class: "num" }, c.providers),
      el("td", {}, `${c.slots_free} of ${c.slots_total}`),
      el("td", { class: "num" }, amount(c.price_min)), el("td", { class: "num" }, amount(c.price_p10)),
      el("td", { class: "num" }, amount(c.price_p50)), el("td", { class: "num" }, amount(c.price_p90)),
      el("td", { class: "num" }, c.samples ? fmt(c.tokens_per_s) : "–"), el("td", { class: "num" }, c.speed),
      el("td", { class: "num" }, c.memory_mb || "–"))) :
      [el("tr", { class: "empty" }, el("td", { colSpan: 11 }, "no verified provider is online"))]));
    priceChart(m.classes);
    throughputChart(m.classes);
    lines("chart-queue", m.history, [
      { name: "queued", value: (p) => p.queue_depth }, { name: "running", value: (p) => p.running }], "");
    const keys = [...new Set(m.history.flatMap((p) => Object.keys(p.price_p50)))];
    lines("chart-history", m.history, keys.map((key) => ({
      name: key, value: (p) => (key in p.price_p50 ? num(p.price_p50[key]) : null) })), "/h");
    $("updated").textContent = "updated " + new Date(m.generated_at * 1000).toISOString().slice(11, 19) + " UTC";
  }

  async function refresh() {
    try {
      const r = await fetch("/api/market", { cache: "no-store" });
      const body = await r.json();
      if (!r.ok) throw new Error(body.error || r.statusText);
      render(body);
      $("error").hidden = true;
    } catch (e) {
      $("error").textContent = "cannot read the market: " + e.message;
      $("error").hidden = false;
    }
  }

  async function quote(event) {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData($("quote-form")).entries()) if (v) params.set(k, v);
    const out = $("quote-result"), table = $("quote-classes");
    try {
      const r = await fetch("/api/quote?" + params.toString(), { cache: "no-store" });
      const q = await r.json();
      if (!r.ok) throw new Error((q.field ? q.field + ": " : "") + (q.error || r.statusText));
      if (!q.servable) {
        out.textContent = "Cannot be served: " + q.reason;
        table.hidden = true;
        return;
      }
      out.textContent = `${q.tasks} task(s), about ${amount(String(q.output_tokens))} output tokens: ` +
        `${amount(q.cost_expected)} expected (${amount(q.cost_low)}–${amount(q.cost_high)}), done in about ${duration(q.eta_s)}` +
        ` (${q.basis})` + (q.fallback_needed ? `; centralized capacity needed: ${q.fallback_reason}` : "");
      table.tBodies[0].replaceChildren(...q.classes.map((c) => el("tr", {},
        el("td", {}, c.label), el("td", {}, c.tier.toLowerCase()), el("td", { class: "num" }, c.providers),
        el("td", { class: "num" }, amount(c.price_per_hour)), el("td", { class: "num" }, duration(c.eta_s)),
        el("td", { class: "num" }, amount(c.cost)), el("td", {}, c.meets_deadline ? "yes" : "no"),
        el("td", {}, c.chosen ? "chosen" : ""))));
      table.hidden = false;
    } catch (e) {
      out.textContent = "Quote failed: " + e.message;
      table.hidden = true;
    }
  }

  $("quote-form").addEventListener("submit", quote);
  refresh();
  setInterval(refresh, 5000);
})();
