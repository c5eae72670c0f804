// gpumesh dashboard: polls the coordinator's /api/ and renders tables.
// Every value goes into the page as text (textContent), never as HTML: names, errors and
// reasons come from providers and submitters.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { refreshMs: 3000, jobState: "", jobsBefore: [], detail: "", timer: 0, refreshes: 0 };

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "title") node.title = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else if (key === "onclick") node.addEventListener("click", value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function td(value, cls, title) {
    return el("td", { class: cls || "", title: title || "" }, value);
  }

  function short(text, head = 10, tail = 6) {
    if (!text) return "";
    return text.length > head + tail + 1 ? text.slice(0, head) + "…" + text.slice(-tail) : text;
  }

  function amount(text) {
    try {
      return BigInt(text || "0").toLocaleString("en-US");
    } catch (e) {
      return String(text);
    }
  }

  function ago(ts) {
    if (!ts) return "";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 60) return Math.round(s) + "s ago";
    if (s < 3600) return Math.round(s / 60) + "m ago";
    if (s < 86400) return Math.round(s / 3600) + "h ago";
    return Math.round(s / 86400) + "d ago";
  }

  function when(ts) {
    return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "";
  }

  function badge(text, kind) {
    return el("span", { class: "badge " + (kind || String(text).toLowerCase()) }, text);
  }

  function bar(fraction, label) {
    const pct = Math.round(Math.min(1, Math.max(0, fraction)) * 100);
    const fill = el("span", { class: "fill" });
    fill.style.width = pct + "%";
    return el("span", { class: "bar", title: pct + "%" }, fill, el("span", { class: "bar-label" }, label));
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    const body = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function fill(tableId, rows, emptyText, columns) {
    const body = $(tableId).tBodies[0];
    if (!rows.length) {
      body.replaceChildren(el("tr", { class: "empty" }, el("td", { colSpan: columns }, emptyText)));
    } else {
      body.replaceChildren(...rows);
    }
  }

  function renderSummary(s) {
    $("queue-depth").textContent = s.queue_depth;
    $("providers-connected").textContent = s.providers_connected;
    $("leases-running").textContent = s.leases_running;
    const states = Object.entries(s.tasks);
    $("task-states").replaceChildren(
      ...(states.length ? states.map(([k, n]) => el("span", { class: "state-count" }, badge(k), " " + n)) : ["none"]));
    const role = $("role");
    role.textContent = s.leader ? "leader" : "follower";
    role.className = "badge " + (s.leader ? "leader" : "follower");
    $("replica").textContent = "replica " + s.replica_id + (s.settles ? " · settles on-chain" : " · no settlement");
    if (s.refresh_s > 0) state.refreshMs = Math.max(200, s.refresh_s * 1000);
  }

  // Hardware as timed checks verified it: the scheduler uses this, never the claim.
  function verifiedCell(p) {
    if (!p.hardware_checks.length) return badge("unchecked", "unisolated");
    return p.hardware_checks.map((c) => !c.verified ? "not verified (claimed " + c.claimed + ")"
      : c.source === "trusted" ? c.verified_label + " (trusted)"
      : c.verified_label + " · " + c.tflops.toFixed(c.tflops < 10 ? 2 : 0) + " TFLOPS").join(", ");
  }

  function checksTitle(p) {
    return p.hardware_checks.map((c) => c.claimed + ": " + (c.verified ? c.verified_label : "not verified") +
      (c.source === "trusted" ? " (trusted)" : ", measured " + c.tflops.toFixed(3) + " TFLOPS") +
      (c.note ? " – " + c.note : "")).join("\n") || "no hardware check answered yet: no work until one is";
  }

  function renderProviders(page) {
    const rows = page.providers.map((p) => {
      const rep = p.reputation;
      return el("tr", { "data-provider-id": p.provider_id },
        td(p.name, "name", p.provider_id),
        td(short(p.address), "mono", p.address),
        td(badge(p.tier)),
        td(p.gpu_summary, "claimed", p.cpu_count + " CPUs, " + Math.round(p.memory_total_mb / 1024) + " GB RAM"),
        td(verifiedCell(p), "verified", checksTitle(p)),
        td(p.isolated ? badge(p.runtime, "isolated") : badge(p.runtime + " · unisolated", "unisolated"), "isolation",
           p.isolated ? "workloads run sandboxed" : "workloads run without a sandbox: no sealed job is leased to it"),
        td(amount(p.price_per_hour), "num mono"),
        td(p.connected ? badge(p.where === "here" ? "connected" : p.where, "connected") : badge("offline", "offline"),
           "conn", p.connected ? p.running + " running" : "last seen " + ago(p.last_seen)),
        td(rep.trusted ? "trusted" : rep.mean.toFixed(3), "num"),
        td(rep.lower.toFixed(3), "num", rep.eligible ? "eligible for work" : "not eligible: too many invalid results"),
        td(p.tasks_done, "num tasks-done"),
        td(p.tasks_rejected, "num tasks-rejected"),
        td(p.slashed, "num"));
    });
    fill("providers", rows, "No provider has registered yet.", 13);
    const more = $("providers-more");
    more.hidden = !page.next;
    more.textContent = page.next ? "Showing the first " + page.providers.length + " providers." : "";
  }

  function renderJobs(page) {
    const rows = page.jobs.map((j) => {
      const link = el("a", { href: "#job=" + encodeURIComponent(j.job_id), class: "mono" }, short(j.job_id, 12, 4));
      return el("tr", { "data-job-id": j.job_id, class: state.detail === j.job_id ? "selected" : "" },
        td(link, "", j.job_id),
        td(j.name, "name"),
        td(badge(j.state), "state", j.error || j.pending_reason),
        td(bar(j.progress, j.tasks_done + "/" + j.tasks_total), "progress"),
        td(short(j.submitter), "mono submitter", j.submitter),
        td(amount(j.budget), "num mono"),
        td(amount(j.cost), "num mono cost"),
        td(j.settlement === "NONE" ? "–" : badge(j.settlement), "settlement", j.settle_tx),
        td(j.has_output ? "yes" : "–", "output", j.has_output ? "ask the submitter's client for it" : ""),
        td(ago(j.created_at), "muted", when(j.created_at)));
    });
    fill("jobs", rows, state.jobState ? "No " + state.jobState + " jobs." : "No jobs yet.", 10);
    state.jobsNext = page.next;
    $("jobs-older").hidden = !page.next;
    $("jobs-newest").hidden = !state.jobsBefore.length;
  }

  function renderDetail(d) {
    const j = d.job;
    $("job-detail").hidden = false;
    $("detail-id").textContent = j.job_id;
    $("detail-meta").replaceChildren(
      badge(j.state), " " + j.name + " · " + j.kind + " · " + j.tasks_done + "/" + j.tasks_total + " tasks · " +
      j.prompts_total + " prompts · cost " + amount(j.cost) + (j.has_output ? " · output ready" : ""));
    const err = $("detail-error");
    err.hidden = !(j.error || j.pending_reason);
    err.textContent = j.error || j.pending_reason;
    fill("tasks", d.tasks.map((t) => el("tr", { "data-task-id": t.task_id },
      td(t.index, "num"), td(badge(t.state), "state"), td(short(t.provider_id, 12, 4), "mono", t.provider_id),
      td(t.attempts, "num"), td(t.prompts, "num"), td(t.seconds === null ? "" : t.seconds.toFixed(1), "num"),
      td(t.has_output ? "yes" : "–", "output"), td(t.error || t.verdict, "reason"))), "No tasks.", 8);
    const more = $("tasks-more");
    more.hidden = !d.next;
    more.textContent = d.next ? "Showing the first " + d.tasks.length + " of " + j.tasks_total + " tasks." : "";
    $("checks-hidden").hidden = !d.checks_hidden;
    fill("checks", d.checks.map((t) => el("tr", {},
      td(t.index, "num"), td(t.role), td(badge(t.state), "state"),
      td(short(t.provider_id, 12, 4), "mono", t.provider_id),
      td(t.error || t.verdict, "reason"))), d.checks_hidden ? "–" : "No checks ran.", 5);
  }

  function renderPayouts(p) {
    fill("payouts-providers", p.providers.map((r) => el("tr", { "data-address": r.address },
      td(r.name || r.provider_id, "name", r.provider_id), td(short(r.address), "mono", r.address),
      td(r.jobs, "num"), td(amount(r.amount), "num mono"))), "Nothing settled yet.", 4);
    fill("payouts-jobs", p.jobs.map((r) => el("tr", { "data-job-id": r.job_id },
      td(short(r.job_id, 12, 4), "mono", r.job_id), td(amount(r.budget), "num mono"), td(amount(r.paid), "num mono"),
      td(amount(r.refund), "num mono"), td(short(r.settle_tx), "mono", r.settle_tx))), "Nothing settled yet.", 5);
    fill("slashes", p.slashes.map((s) => el("tr", {},
      td(s.name || s.provider_id, "name", s.address), td(short(s.job_id, 12, 4), "mono", s.job_id), td(badge(s.state)),
      td(amount(s.amount), "num mono"), td(amount(s.slashed_amount), "num mono"), td(s.reason, "reason"))),
      "No slashes.", 6);
  }

  function jobsQuery() {
    const q = new URLSearchParams({ limit: "50" });
    if (state.jobState) q.set("state", state.jobState);
    const before = state.jobsBefore[state.jobsBefore.length - 1];
    if (before) q.set("before", before);
    return "/api/jobs?" + q;
  }

  async function refresh() {
    clearTimeout(state.timer);
    try {
      const [summary, providers, jobs, payouts] = await Promise.all([
        getJSON("/api/summary"), getJSON("/api/providers"), getJSON(jobsQuery()), getJSON("/api/payouts")]);
      renderSummary(summary);
      renderProviders(providers);
      renderJobs(jobs);
      renderPayouts(payouts);
      if (state.detail) renderDetail(await getJSON("/api/jobs/" + encodeURIComponent(state.detail)));
      $("error").hidden = true;
      state.refreshes += 1;
      document.body.dataset.refreshes = String(state.refreshes);
      $("updated").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    } catch (e) {
      const box = $("error");
      box.hidden = false;
      box.textContent = "Cannot reach the coordinator: " + e.message;
    }
    state.timer = setTimeout(refresh, state.refreshMs);
  }

  function route() {
    const m = /^#job=(.+)$/.exec(location.hash);
    state.detail = m ? decodeURIComponent(m[1]) : "";
    if (!state.detail) $("job-detail").hidden = true;
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("job-state").addEventListener("change", (e) => {
      state.jobState = e.target.value;
      state.jobsBefore = [];
      refresh();
    });
    $("jobs-older").addEventListener("click", () => {
      if (state.jobsNext) state.jobsBefore.push(state.jobsNext);
      refresh();
    });
    $("jobs-newest").addEventListener("click", () => {
      state.jobsBefore = [];
      refresh();
    });
    $("detail-close").addEventListener("click", () => { location.hash = ""; });
    window.addEventListener("hashchange", route);
    route();
  });
})();
