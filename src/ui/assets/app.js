// neurostream live view: renders the snapshots the engine pushes over /ws (one per second).
// No framework, no network access beyond the engine that served the page.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const query = token ? "?token=" + encodeURIComponent(token) : "";
const $ = (sel) => document.querySelector(sel);
const fmt = (x, d = 1) => (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(d);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

let latest = null;
const plots = {};  // uPlot instances by key, rebuilt when their series change
let socket = null;
// The trace channels this page shows, by stream: the server sends those only.
const selection = {};
function sendSelection() {
  if (socket && socket.readyState === WebSocket.OPEN && Object.keys(selection).length) {
    socket.send(JSON.stringify({ traces: Object.values(selection) }));
  }
}

// ---- tabs
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("nav button").forEach((x) => x.classList.toggle("active", x === b));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === "panel-" + b.dataset.panel));
  if (latest) render(latest);
}));

// ---- connection, with reconnection after the run restarts
function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" + query);
  socket = ws;
  ws.onopen = () => { $("#connection").textContent = "live"; $("#connection").className = "ok"; sendSelection(); };
  ws.onmessage = (ev) => { latest = JSON.parse(ev.data); render(latest); };
  ws.onclose = () => {
    $("#connection").textContent = "disconnected: retrying";
    $("#connection").className = "bad";
    setTimeout(connect, 1000);
  };
}
connect();

function render(s) {
  $("#pipeline").textContent = s.pipeline || "";
  $("#uptime").textContent = fmt(s.uptime_s, 1) + " s";
  const processes = s.processes || [0];
  $("#processes").textContent = processes.length > 1 ? `processes ${processes.join(", ")}` : "";
  $("#processes").dataset.count = processes.length;
  $("#viewers").textContent = `viewers ${s.viewers.connected}, snapshots dropped ${s.viewers.dropped}`;
  $("#viewers").dataset.dropped = s.viewers.dropped;
  $("#outcome").textContent = s.outcome ? "run ended: " + s.outcome : "";
  renderPipeline(s);
  const active = document.querySelector(".panel.active").id;
  if (active === "panel-signals") renderSignals(s);
  if (active === "panel-features") renderFeatures(s);
  if (active === "panel-structure") renderStructure(s);
}

// ---- Pipeline: the graph, then one row of counters per node
function renderPipeline(s) {
  const depth = {};
  const byId = Object.fromEntries(s.nodes.map((n) => [n.id, n]));
  const d = (n) => depth[n.id] ?? (depth[n.id] = n.input && byId[n.input] ? d(byId[n.input]) + 1 : 0);
  s.nodes.forEach(d);
  const columns = {};
  s.nodes.forEach((n) => (columns[depth[n.id]] = columns[depth[n.id]] || []).push(n));
  const pos = {};
  const W = 190, H = 44;
  let svg = "";
  Object.entries(columns).forEach(([c, nodes]) => nodes.forEach((n, r) => (pos[n.id] = [10 + c * (W + 40), 10 + r * (H + 12)])));
  s.nodes.forEach((n) => {
    if (n.input && pos[n.input]) {
      const [x1, y1] = pos[n.input], [x2, y2] = pos[n.id];
      svg += `<path d="M${x1 + W},${y1 + H / 2} C${x1 + W + 20},${y1 + H / 2} ${x2 - 20},${y2 + H / 2} ${x2},${y2 + H / 2}"/>`;
    }
  });
  s.nodes.forEach((n) => {
    const [x, y] = pos[n.id];
    svg += `<g data-node="${esc(n.id)}"><rect x="${x}" y="${y}" width="${W}" height="${H}" rx="6"/>` +
      `<text x="${x + 8}" y="${y + 17}">${esc(n.id)} (${esc(n.kind)})</text>` +
      `<text x="${x + 8}" y="${y + 34}">${fmt(n.rows_per_s, 0)} rows/s · busy ${fmt(n.busy_pct, 0)} %</text></g>`;
  });
  const dag = $("#dag");
  const rows = Math.max(...Object.values(columns).map((c) => c.length));
  dag.setAttribute("height", 20 + rows * (H + 12));
  dag.innerHTML = svg;
  $("#nodes tbody").innerHTML = s.nodes.map((n) => `<tr data-node="${esc(n.id)}">` +
    `<td>${esc(n.id)}</td><td>${esc(n.kind)}</td><td data-field="rows">${n.rows}</td>` +
    `<td data-field="rows_per_s">${fmt(n.rows_per_s, 0)}</td><td>${fmt(n.busy_pct, 1)}</td>` +
    `<td data-field="in_flight">${n.in_flight}</td><td>${n.p99_ms === null ? "–" : n.p99_ms < 0 ? "> 10000" : fmt(n.p99_ms, 2)}</td>` +
    `<td data-field="dropped">${n.dropped}</td><td>${esc(n.device ?? "")}</td></tr>`).join("");
}

// ---- Signals: traces of fast streams, bars and timelines of slow ones
const FAST = 20; // rows/s above which a signal is drawn as traces
function renderSignals(s) {
  const signals = s.streams.filter((v) => v.type === "signal");
  const fast = signals.filter((v) => v.rows_per_s >= FAST);
  const sel = $("#signal-stream");
  const keys = fast.map((v) => v.node + " / " + v.stream);
  if (sel.options.length !== keys.length) {
    sel.innerHTML = keys.map((k) => `<option>${esc(k)}</option>`).join("");
    sel.onchange = () => { $("#signal-channels").innerHTML = ""; delete plots.trace; render(latest); };
  }
  const v = fast[Math.max(0, keys.indexOf(sel.value))];
  if (v) drawTraces(v);
  $("#signal-bars").innerHTML = "";
  signals.filter((x) => x.rows_per_s < FAST).forEach((x) => {
    const id = "slow-" + x.node + "-" + x.stream;
    const max = Math.max(1e-12, ...x.latest.map((y) => Math.abs(y ?? 0)));
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.stream = x.node;
    card.innerHTML = `<b>${esc(x.node)}</b> <span class="muted">${esc(x.stream)}, ${x.rows} rows</span>` +
      `<div class="bars">${x.latest.map((y, i) => `<div title="${esc(x.channels[i])}: ${fmt(y, 3)}" style="height:${100 * Math.abs(y ?? 0) / max}%"></div>`).join("")}</div>` +
      `<div class="timeline"></div>`;
    $("#signal-bars").appendChild(card);
    const series = x.traced.map((c) => x.channels[c]);
    const data = [x.t, ...x.traced.map((_, k) => x.max[k])];
    withThresholds(s, x.node, series, data);
    linePlot(id, card.querySelector(".timeline"), series, data, 260);
  });
}

function drawTraces(v) {
  const picker = $("#signal-channels");
  if (picker.options.length !== v.channels.length) {
    picker.innerHTML = v.channels.map((c, i) => `<option value="${i}" ${i < 8 ? "selected" : ""}>${esc(c)}</option>`).join("");
    picker.onchange = () => {
      selection[v.node + "\u0000" + v.stream] = { node: v.node, stream: v.stream, channels: [...picker.selectedOptions].map((o) => +o.value) };
      sendSelection();
      delete plots.trace;
      render(latest);
    };
    $("#signal-scale").onchange = () => render(latest);
  }
  // Channels picked whose traces have arrived (a new pick is sent within a moment).
  const picked = [...picker.selectedOptions].map((o) => +o.value).filter((c) => v.traced.includes(c));
  const row = (c) => v.traced.indexOf(c);
  const common = $("#signal-scale").value === "common";
  const ranges = picked.map((c) => {
    let lo = Infinity, hi = -Infinity;
    v.min[row(c)].forEach((y) => { if (y !== null && y < lo) lo = y; });
    v.max[row(c)].forEach((y) => { if (y !== null && y > hi) hi = y; });
    return [lo, hi];
  });
  const commonSpan = Math.max(1e-12, ...ranges.map(([lo, hi]) => hi - lo));
  const data = [v.t];
  const series = [];
  picked.forEach((c, k) => {
    const [lo, hi] = ranges[k];
    const span = common ? commonSpan : Math.max(1e-12, hi - lo);
    const mid = (lo + hi) / 2;
    const offset = picked.length - 1 - k;
    const scale = (y) => (y === null ? null : offset + 0.9 * (y - mid) / span);
    data.push(v.min[row(c)].map(scale), v.max[row(c)].map(scale));
    series.push({ label: v.channels[c] + " min", stroke: "#457b9d", width: 1 }, { label: v.channels[c], stroke: "#1d3557", width: 1 });
  });
  const el = $("#signal-plot");
  const key = "trace:" + v.node + v.stream + picked.join(",");
  if (!plots.trace || plots.trace.key !== key) {
    if (plots.trace) plots.trace.plot.destroy();
    const markers = (u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#e63946";
      ctx.fillStyle = "#e63946";
      (u.markers || []).forEach(([t, label]) => {
        const x = u.valToPos(t, "x", true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
        ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
        ctx.fillText(label, x + 3, u.bbox.top + 12);
      });
      ctx.restore();
    };
    const plot = new uPlot({
      width: Math.max(400, el.clientWidth || 900), height: 60 + 40 * picked.length,
      scales: { x: { time: false } },
      axes: [{ label: "s" }, { show: false }],
      legend: { show: false },
      series: [{}, ...series],
      bands: picked.map((_, k) => ({ series: [2 + 2 * k, 1 + 2 * k], fill: "rgba(69,123,157,0.25)" })),
      hooks: { draw: [markers] },
    }, data, el);
    plots.trace = { key, plot };
  }
  plots.trace.plot.markers = v.markers;
  plots.trace.plot.setData(data);
  el.dataset.columns = v.t.length;
  el.dataset.channels = picked.length;
}

// Bounds from the pipeline file (alert rules, score thresholds) as flat lines on the series of
// `node` they apply to.
function withThresholds(s, node, labels, data) {
  (s.thresholds || []).filter((t) => t.node === node && labels.includes(t.column)).forEach((t) => {
    labels.push(`${t.rule}: ${t.column} ${fmt(t.value, 3)}`);
    data.push(data[0].map(() => t.value));
  });
}

function linePlot(id, el, labels, data, height) {
  const palette = ["#1d3557", "#e63946", "#2a9d8f", "#f4a261", "#6a4c93", "#457b9d", "#8ab17d", "#b5838d"];
  const key = labels.join(",");
  const old = plots[id];
  if (old && old.key === key && old.el === el) { old.plot.setData(data); return; }
  if (old) old.plot.destroy();
  const plot = new uPlot({
    width: Math.max(300, el.clientWidth || 600), height,
    scales: { x: { time: false } },
    series: [{}, ...labels.map((l, i) => l.includes(": ") ?
      { label: l, stroke: "#e63946", width: 1, dash: [6, 4] } :
      { label: l, stroke: palette[i % palette.length], width: 1 })],
  }, data, el);
  plots[id] = { key, plot, el };
}

// ---- Features: densities, most active features, L0, examples, alerts
function tablesOf(s, name) {
  return s.streams.filter((v) => v.type === "tables" && v.tables[name]).map((v) => [v, v.tables[name]]);
}

function htmlTable(t, limit) {
  const rows = t.rows.slice(-limit);
  return `<table><thead><tr>${t.columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>` +
    rows.map((r) => `<tr>${t.columns.map((c) => `<td>${typeof r[c] === "number" ? fmt(r[c], Number.isInteger(r[c]) ? 0 : 4) : esc(r[c])}</td>`).join("")}</tr>`).join("") +
    "</tbody></table>";
}

function renderFeatures(s) {
  const host = $("#feature-streams");
  host.innerHTML = "";
  s.streams.filter((v) => v.type === "features").forEach((f) => {
    const h = f.density_histogram;
    const max = Math.max(1, ...h.counts);
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.stream = f.node;
    card.innerHTML = `<b>${esc(f.node)}</b> <span class="muted">${esc(f.stream)}</span> · ` +
      `tokens <span data-field="tokens">${f.tokens}</span> · mean L0 <span data-field="mean_l0">${fmt(f.mean_l0, 2)}</span> · ` +
      `features ${f.n_features} · never fired <span data-field="dead">${f.dead}</span>` +
      `<h3>Feature density (log10 of firings per token, ${h.log10_from} … ${h.log10_to})</h3>` +
      `<div class="bars density">${h.counts.map((c, i) => `<div title="log10 density ${fmt(h.log10_from + (i + 0.5) * (h.log10_to - h.log10_from) / h.counts.length, 2)}: ${c} features" style="height:${100 * c / max}%"></div>`).join("")}</div>` +
      `<h3>Most active features</h3><table class="top"><thead><tr><th>feature</th><th>firings</th><th>density</th></tr></thead><tbody>` +
      f.top.map((t) => `<tr><td>${t.feature}</td><td>${t.fires}</td><td>${fmt(t.density, 4)}</td></tr>`).join("") +
      `</tbody></table><h3>L0 per batch</h3><div class="l0"></div>`;
    host.appendChild(card);
    linePlot("l0-" + f.node + f.stream, card.querySelector(".l0"), ["L0"], [f.l0.tokens, f.l0.values], 160);
  });
  const alerts = tablesOf(s, "alerts");
  $("#alerts").innerHTML = alerts.length ? htmlTable(alerts[0][1], 20).replace(/^<table>|<\/table>$/g, "") : "<tr><td class='muted'>no alerts</td></tr>";
  $("#alerts").dataset.total = alerts.reduce((n, [, t]) => n + t.total_rows, 0);
  const ex = tablesOf(s, "top_examples");
  $("#examples").innerHTML = ex.map(([v, t]) => {
    const byFeature = {};
    t.rows.forEach((r) => (byFeature[r.feature] = byFeature[r.feature] || []).push(r));
    const top = Object.entries(byFeature).slice(0, 12);
    return `<div class="card"><b>${esc(v.node)}</b>` + top.map(([feature, rows]) =>
      `<div><b>feature ${feature}</b>: ` + rows.slice(0, 3).map((r) => `<span class="ctx">${highlight(r.context ?? r.token ?? "")}</span> <span class="muted">(${fmt(r.act, 2)})</span>`).join(" · ") + "</div>").join("") + "</div>";
  }).join("") || "<p class='muted'>no top-examples table (add feature_stats with token text)</p>";
  const scalars = $("#scalars");
  scalars.innerHTML = "";
  s.streams.filter((v) => v.type === "scalars").forEach((v) => scalarCard(scalars, v));
}

function highlight(context) {
  // The firing token is marked «token» by feature_stats.
  return esc(context).replace(/«([^»]*)»/, '<span class="hit">$1</span>');
}

function scalarCard(host, v) {
  const card = document.createElement("div");
  card.className = "card";
  card.dataset.stream = v.node;
  card.innerHTML = `<b>${esc(v.node)}</b> <span class="muted">${esc(v.stream)}, ${v.tokens} rows (batch means)</span><div class="plot"></div>`;
  host.appendChild(card);
  const labels = [...v.columns];
  const data = [v.x, ...v.columns.map((_, c) => v.means.map((m) => m[c]))];
  withThresholds(latest, v.node, labels, data);
  linePlot("scalars-" + v.node + v.stream, card.querySelector(".plot"), labels, data, 180);
}

// ---- Structure and drift: every result table but alerts and examples, and score streams
function renderStructure(s) {
  const host = $("#structure");
  host.innerHTML = "";
  s.streams.filter((v) => v.type === "tables").forEach((v) => {
    Object.entries(v.tables).filter(([name]) => name !== "alerts" && name !== "top_examples").forEach(([name, t]) => {
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.table = v.node + "/" + name;
      card.innerHTML = `<b>${esc(v.node)}</b> table <b>${esc(name)}</b> <span class="muted">${t.total_rows} rows in all, newest shown</span>` +
        clusterSizes(t) + htmlTable(t, 10);
      host.appendChild(card);
    });
  });
  s.streams.filter((v) => v.type === "scalars").forEach((v) => scalarCard(host, v));
}

// Cluster sizes (k-means `centroids`): bars of the newest report's counts.
function clusterSizes(t) {
  if (!t.columns.includes("cluster") || !t.columns.includes("count") || !t.rows.length) return "";
  const last = t.rows[t.rows.length - 1];
  const rows = t.rows.filter((r) => r.window_end === last.window_end && r.scope === last.scope);
  const max = Math.max(1, ...rows.map((r) => r.count));
  return `<div class="bars sizes">${rows.map((r) => `<div title="cluster ${r.cluster}: ${r.count}" style="height:${100 * r.count / max}%"></div>`).join("")}</div>`;
}
