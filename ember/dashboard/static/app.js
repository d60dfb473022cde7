// The ember dashboard: one page, plain JavaScript, no dependencies. Every second it reads the
// driver's JSON API (/api/...) for the page on screen and draws it again; charts are SVG.
"use strict";

const REFRESH_MS = 1000;
const TASK_ROWS = 50;
const COLORS = ["#1971c2", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c92a2a"];
const ui = { page: "overview", selected: null, actorFilter: "", actorState: "",
             taskFilter: "", taskState: "", timer: null, busy: false };

function esc(value) {
  return String(value === null || value === undefined ? "" : value)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

function bytes(n) {
  if (typeof n !== "number") return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n.toFixed(0)} B` : `${n.toFixed(1)} ${units[i]}`;
}

function num(n, digits) {
  if (typeof n !== "number" || !isFinite(n)) return "-";
  // One fixed locale: "26.942" must not read as twenty-six thousand in a browser whose
  // default locale writes the decimal point as a comma (or the other way round).
  return n.toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 2 : digits });
}

function badge(state) { return `<span class="badge ${esc(state)}">${esc(state)}</span>`; }

function firstLine(text) {
  if (!text) return "";
  const line = String(text).split("\n")[0];
  return line.length > 90 ? line.slice(0, 87) + "…" : line;
}

async function api(path) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 10000);  // a stuck request must not stop updates
  try {
    const response = await fetch(path, { credentials: "same-origin", cache: "no-store",
                                         signal: abort.signal });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return await response.json();
  } finally {
    clearTimeout(timer);
  }
}

// -- charts ------------------------------------------------------------------------------------
// lineChart([{name, points: [[x, y], ...]}], {title, unit, xLabel}) -> an SVG element's HTML.
function lineChart(series, opts) {
  const w = 560, h = 200, left = 52, right = 12, top = 22, bottom = 26;
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && isFinite(p[1])));
  const count = all.length;
  const title = `<text x="${left}" y="14" style="font-size:12px;font-weight:600;fill:#1d2330">` +
                `${esc(opts.title || "")}</text>`;
  if (!count) {
    return `<svg class="chart" viewBox="0 0 ${w} ${h}" data-points="0" ` +
           `data-title="${esc(opts.title || "")}">${title}` +
           `<text x="${w / 2}" y="${h / 2}" text-anchor="middle">no data yet</text></svg>`;
  }
  let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
  let y0 = Math.min(0, ...all.map((p) => p[1])), y1 = Math.max(...all.map((p) => p[1]));
  if (x1 === x0) { x1 = x0 + 1; }
  if (y1 === y0) { y1 = y0 + 1; }
  const sx = (x) => left + (x - x0) / (x1 - x0) * (w - left - right);
  const sy = (y) => h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
  let out = `<svg class="chart" viewBox="0 0 ${w} ${h}" data-points="${count}" ` +
            `data-title="${esc(opts.title || "")}">${title}`;
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    const span = y1 - y0, digits = span >= 100 ? 0 : span >= 10 ? 1 : span >= 1 ? 2 : 3;
    out += `<line class="grid" x1="${left}" x2="${w - right}" y1="${sy(y)}" y2="${sy(y)}"/>` +
           `<text x="${left - 6}" y="${sy(y) + 3}" text-anchor="end">${esc(num(y, digits))}</text>`;
  }
  out += `<line class="axis" x1="${left}" x2="${w - right}" y1="${h - bottom}" y2="${h - bottom}"/>`;
  out += `<text x="${left}" y="${h - 8}">${esc(opts.fmtX ? opts.fmtX(x0) : num(x0))}</text>` +
         `<text x="${w - right}" y="${h - 8}" text-anchor="end">` +
         `${esc(opts.fmtX ? opts.fmtX(x1) : num(x1))}</text>`;
  if (opts.xLabel) {
    out += `<text x="${(left + w - right) / 2}" y="${h - 8}" text-anchor="middle">` +
           `${esc(opts.xLabel)}</text>`;
  }
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => p[1] !== null && isFinite(p[1]));
    if (!pts.length) return;
    out += `<polyline class="line" data-series="${esc(s.name)}" stroke="${color}" points="` +
           pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ") + `"/>`;
    if (pts.length <= 300) {
      for (const p of pts) {
        out += `<circle class="pt" data-series="${esc(s.name)}" r="2.2" fill="${color}" ` +
               `cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}">` +
               `<title>${esc(s.name)}: ${esc(num(p[1], 4))}</title></circle>`;
      }
    }
  });
  out += "</svg>";
  const legend = series.map((s, i) => `<span><i style="background:${s.color ||
    COLORS[i % COLORS.length]}"></i>${esc(s.name)}</span>`).join("");
  return `<div>${out}<div class="legend">${legend}</div></div>`;
}

const clock = (t) => new Date(t * 1000).toLocaleTimeString();

// -- pages -------------------------------------------------------------------------------------
function table(columns, rows, options) {
  options = options || {};
  if (!rows.length) return `<div class="empty">${esc(options.empty || "nothing here")}</div>`;
  let out = "<table><thead><tr>" + columns.map((c) => `<th>${esc(c[0])}</th>`).join("") +
            "</tr></thead><tbody>";
  for (const row of rows) {
    const key = options.key ? options.key(row) : null;
    const cls = [key ? "click" : "", key && key === ui.selected ? "selected" : ""].join(" ");
    out += `<tr class="${cls}"${key ? ` data-key="${esc(key)}"` : ""}>` +
           columns.map((c) => `<td>${c[1](row)}</td>`).join("") + "</tr>";
  }
  return out + "</tbody></table>";
}

async function overview() {
  const status = await api("/api/status");
  let out = "<h2>Overview</h2><div class='grid'>";
  for (const node of status.nodes || []) {
    const total = node.resources_total || {}, used = node.resources_used || {};
    out += `<div class="card" id="node-${esc(node.node_id)}"><h3>Node ${esc(node.node_id)} ` +
           `${badge(node.state)}</h3>`;
    for (const key of Object.keys(total).sort()) {
      if (key === "object_store_memory") continue;
      const share = total[key] ? 100 * (used[key] || 0) / total[key] : 0;
      out += `<div>${esc(key)}: ${num(used[key] || 0)} / ${num(total[key])} in use</div>` +
             `<div class="bar"><span style="width:${share.toFixed(1)}%"></span></div>`;
    }
    const cap = node.object_store_capacity_bytes || 1;
    out += `<div>object store: ${bytes(node.object_store_used_bytes)} of ${bytes(cap)} in ` +
           `memory, ${bytes(node.object_store_spilled_bytes)} spilled</div>` +
           `<div class="bar"><span style="width:${(100 * node.object_store_used_bytes / cap)
             .toFixed(2)}%"></span></div>` +
           `<div class="muted">${num(node.num_objects, 0)} objects, ` +
           `${num(node.num_workers, 0)} worker processes</div></div>`;
  }
  const counts = (found) => Object.entries(found || {}).map(([s, n]) =>
    `<div class="stat"><div class="big">${n}</div><div class="label">${badge(s)}</div></div>`)
    .join("") || "<div class='empty'>none yet</div>";
  out += `<div class="card"><h3>Actors</h3>${counts(status.actors)}</div>`;
  out += `<div class="card"><h3>Tasks</h3>${counts(status.tasks)}</div>`;
  const views = status.views || {};
  out += `<div class="card"><h3>Libraries</h3><dl class="kv">` +
         `<dt><a href="#serve">serve</a></dt><dd>${views.serve || 0} application(s)</dd>` +
         `<dt><a href="#data">data</a></dt><dd>${views.data || 0} dataset run(s)</dd>` +
         `<dt><a href="#train">train</a></dt><dd>${views.train || 0} run(s)</dd>` +
         `<dt><a href="#rl">rl</a></dt><dd>${views.rl || 0} run(s)</dd></dl></div></div>`;
  out += "<h2>Recent failures</h2>";
  out += table([["task", (r) => `<code>${esc(r.task_id)}</code>`],
                ["function", (r) => esc(r.func_or_class_name)],
                ["error", (r) => `${esc(r.error_type)}: ${esc(firstLine(r.error_message))}`]],
               status.recent_failures || [], { empty: "no failures", key: (r) => "t:" + r.task_id });
  return out;
}

async function logsOf(id) {
  const answer = await api(`/api/logs?id=${encodeURIComponent(id)}`);
  const lines = answer.lines.slice(-300);
  if (!lines.length) return "<div class='empty'>no output yet</div>";
  return `<pre class="logs">${lines.map((l) =>
    esc(`(${l.name} pid=${l.pid}) ${l.text}`)).join("\n")}</pre>`;
}

function matches(row, text, columns) {
  if (!text) return true;
  const needle = text.toLowerCase();
  return columns.some((c) => String(row[c] === null ? "" : row[c]).toLowerCase().includes(needle));
}

// A chosen state is filtered by the driver, so the newest 1000 rows are of that state.
function stateFilter(state) {
  return state ? "&filter=" + encodeURIComponent(`state=${state}`) : "";
}

function filterBar(prefix, text, state, states) {
  return `<div class="filters"><input id="${prefix}-filter" placeholder="filter: id, class, ` +
         `name, pid…" value="${esc(text)}"><select id="${prefix}-state"><option value="">` +
         `any state</option>${states.map((s) => `<option${s === state ? " selected" : ""}>` +
         `${esc(s)}</option>`).join("")}</select></div>`;
}

async function actors() {
  const rows = await api("/api/list/actors?limit=1000" + stateFilter(ui.actorState));
  const shown = rows.filter((r) => (!ui.actorState || r.state === ui.actorState) &&
    matches(r, ui.actorFilter, ["actor_id", "class_name", "name", "pid", "state"]));
  let out = table([["actor id", (r) => `<code>${esc(r.actor_id)}</code>`],
                ["class", (r) => esc(r.class_name)], ["state", (r) => badge(r.state)],
                ["name", (r) => esc(r.name)], ["pid", (r) => esc(r.pid)],
                ["restarts", (r) => esc(r.num_restarts)],
                ["calls (running / queued)", (r) => `${esc(r.running_calls)} / ` +
                  `${esc(r.pending_calls)}`],
                ["death cause", (r) => esc(firstLine(r.death_cause))]],
               shown, { empty: "no actors", key: (r) => "a:" + r.actor_id });
  const chosen = rows.find((r) => "a:" + r.actor_id === ui.selected);
  if (chosen) {
    out += `<div class="card detail" id="actor-detail"><h3>Actor ${esc(chosen.class_name)} ` +
           `<code>${esc(chosen.actor_id)}</code> ${badge(chosen.state)}</h3><dl class="kv">` +
           `<dt>pid</dt><dd>${esc(chosen.pid)}</dd><dt>name</dt><dd>${esc(chosen.name)}</dd>` +
           `<dt>resources</dt><dd>${esc(JSON.stringify(chosen.required_resources))}</dd>` +
           `<dt>restarts</dt><dd>${esc(chosen.num_restarts)}</dd></dl>`;
    if (chosen.death_cause) {
      out += `<h3>Death cause</h3><pre class="error death-cause">${esc(chosen.death_cause)}</pre>`;
    }
    out += `<h3>Output</h3>${await logsOf(chosen.actor_id)}</div>`;
  }
  return out;
}

async function tasks() {
  const [rows, summary] = await Promise.all([api("/api/list/tasks?limit=1000" +
                                                 stateFilter(ui.taskState)),
                                             api("/api/summary/tasks")]);
  const shown = rows.filter((r) => (!ui.taskState || r.state === ui.taskState) &&
    matches(r, ui.taskFilter, ["task_id", "func_or_class_name", "actor_id", "worker_pid",
                               "error_type"]));
  let out = table([["task id", (r) => `<code>${esc(r.task_id)}</code>`],
                ["function", (r) => esc(r.func_or_class_name)], ["state", (r) => badge(r.state)],
                ["pid", (r) => esc(r.worker_pid)],
                ["error", (r) => r.error_type ? `${esc(r.error_type)}: ` +
                  esc(firstLine(r.error_message)) : ""]],
               shown.slice(0, TASK_ROWS), { empty: "no tasks", key: (r) => "t:" + r.task_id });
  if (shown.length > TASK_ROWS) {
    out += `<div class="muted">the first ${TASK_ROWS} of ${shown.length}: running and queued ` +
           "first, then failures, then the newest finished; filter to narrow</div>";
  }
  const chosen = rows.find((r) => "t:" + r.task_id === ui.selected);
  if (chosen) {
    out += `<div class="card detail" id="task-detail"><h3>Task ${esc(chosen.func_or_class_name)}` +
           ` <code>${esc(chosen.task_id)}</code> ${badge(chosen.state)}</h3>`;
    if (chosen.error_message) {
      out += `<pre class="error">${esc(chosen.error_type)}: ${esc(chosen.error_message)}</pre>`;
    }
    out += `<h3>Output</h3>${await logsOf(chosen.task_id)}</div>`;
  }
  const byName = Object.values(summary.summary || {});
  out += "<h2>Tasks by function</h2>" +
    table([["function", (r) => esc(r.func_or_class_name)], ["type", (r) => esc(r.type)],
           ["states", (r) => Object.entries(r.state_counts).map(([s, n]) =>
             `${badge(s)} ${n}`).join(" ")]], byName, { empty: "no tasks yet" });
  return out;
}

async function serve() {
  const answer = await api("/api/views/serve");
  const apps = Object.entries(answer.views);
  if (!apps.length) return "<h2>Serve</h2><div class='empty'>no serve applications</div>";
  let out = "<h2>Serve</h2>";
  for (const [app, view] of apps) {
    const state = view.state || {};
    out += `<div class="card serve-app" data-app="${esc(app)}"><h3>Application ${esc(app)} ` +
           `${badge(state.status || "?")} <span class="muted">route ` +
           `${esc(state.route_prefix)}</span></h3>`;
    for (const [name, dep] of Object.entries(state.deployments || {})) {
      const points = (answer.series || {})[`${app}/${name}`] || [];
      const last = points[points.length - 1];
      const running = (dep.replicas || []).filter((r) => r.state === "RUNNING").length;
      out += `<h3>Deployment ${esc(name)} ${badge(dep.status)} <span class="muted">` +
             `${running} / ${esc(dep.target_replicas)} replicas` +
             (last ? `, ${num(last.rps, 1)} req/s` : "") + `</span></h3>`;
      if (dep.message) out += `<pre class="error">${esc(dep.message)}</pre>`;
      out += `<div class="charts">` +
        lineChart([{ name: "requests/s", points: points.map((p) => [p.t, p.rps]) },
                   { name: "errors/s", points: points.map((p) => [p.t, p.eps]),
                     color: "#c92a2a" }],
                  { title: `${name}: requests per second`, fmtX: clock }) +
        lineChart([{ name: "p50 ms", points: points.map((p) => [p.t, p.p50]) },
                   { name: "p99 ms", points: points.map((p) => [p.t, p.p99]) }],
                  { title: `${name}: latency (ms)`, fmtX: clock }) + "</div>";
      out += table([["replica", (r) => esc(r.replica_id)], ["state", (r) => badge(r.state)],
                    ["ongoing", (r) => esc(r.ongoing)], ["pid", (r) => esc(r.pid)],
                    ["models", (r) => esc((r.models || []).join(", "))],
                    ["actor", (r) => `<code>${esc(r.actor_id)}</code>`]],
                   dep.replicas || [], { empty: "no replicas" });
    }
    out += "</div>";
  }
  return out;
}

async function data() {
  const answer = await api("/api/views/data");
  const runs = Object.entries(answer.views).reverse();
  if (!runs.length) return "<h2>Data</h2><div class='empty'>no datasets have run yet</div>";
  let out = "<h2>Data</h2>";
  for (const [key, view] of runs) {
    const s = view.state || {};
    out += `<div class="card dataset" data-key="${esc(key)}"><h3>${esc(s.name || key)} ` +
           `${badge(s.status || "?")} <span class="muted">${num(s.wall_s, 1)} s, memory ` +
           `${bytes(s.bytes_in_flight)} in flight (peak ${bytes(s.peak_bytes_in_flight)}) of a ` +
           `${bytes(s.memory_budget)} budget</span></h3>`;
    out += table([["operator", (o) => esc(o.name)],
                  ["progress", (o) => {
                    const share = o.rows_total ? Math.min(100, 100 * o.rows / o.rows_total) : null;
                    return `${num(o.rows, 0)}${o.rows_total ? " / " + num(o.rows_total, 0) : ""} rows` +
                      (share === null ? "" : `<div class="bar"><span style="width:${share
                        .toFixed(1)}%"></span></div>`);
                  }],
                  ["rows/s", (o) => num(o.rows_per_s, 0)], ["output", (o) => bytes(o.bytes)],
                  ["memory (in flight / peak)", (o) => `${bytes(o.bytes_in_flight)} / ` +
                    bytes(o.peak_bytes_in_flight)],
                  ["tasks (running / done)", (o) => `${num(o.running, 0)} / ${num(o.tasks, 0)}`],
                  ["actors", (o) => num(o.actors, 0)]],
                 s.operators || [], { empty: "no operators" });
    out += "</div>";
  }
  return out;
}

async function train() {
  const answer = await api("/api/views/train");
  const runs = Object.entries(answer.views).reverse();
  if (!runs.length) return "<h2>Train</h2><div class='empty'>no train runs yet</div>";
  let out = "<h2>Train</h2>";
  for (const [run, view] of runs) {
    const s = view.state || {};
    out += `<div class="card train-run" data-run="${esc(run)}"><h3>Run ${esc(run)} ` +
           `${badge(s.status || "?")} <span class="muted">${esc(s.trainer || "")}, ` +
           `${esc(s.num_workers)} workers, ${esc(s.reports || 0)} reports</span></h3>`;
    if (s.error) out += `<pre class="error">${esc(s.error)}</pre>`;
    const events = view.events || [];
    const keys = [];
    for (const e of events) {
      for (const [k, v] of Object.entries(e.metrics || {})) {
        if (typeof v === "number" && !keys.includes(k)) keys.push(k);
      }
    }
    out += "<div class='charts'>" + keys.slice(0, 6).map((k) => lineChart(
      [{ name: k, points: events.filter((e) => typeof (e.metrics || {})[k] === "number")
        .map((e) => [e.report, e.metrics[k]]) }],
      { title: k, xLabel: "report" })).join("") + "</div>";
    out += "<h3>Workers</h3>" + table([["rank", (w) => esc(w.rank)], ["pid", (w) => esc(w.pid)],
      ["node", (w) => esc(w.node_id)], ["GPUs", (w) => esc((w.gpu_ids || []).join(", "))]],
      s.workers || [], { empty: "no workers running" });
    out += "<h3>Checkpoints</h3>" + table([["index", (c) => esc(c.index)],
      ["state", (c) => badge(c.deleted ? "deleted" : (c.committed ? "committed" : "uploading"))],
      ["size", (c) => bytes(c.size_bytes)], ["path", (c) => `<code>${esc(c.path)}</code>`],
      ["metrics", (c) => esc(JSON.stringify(c.metrics || {}))]],
      (s.checkpoints || []).slice().reverse(), { empty: "no checkpoints" });
    out += "</div>";
  }
  return out;
}

async function rl() {
  const answer = await api("/api/views/rl");
  const runs = Object.entries(answer.views).reverse();
  if (!runs.length) return "<h2>RL</h2><div class='empty'>no rl runs yet</div>";
  let out = "<h2>RL</h2>";
  for (const [run, view] of runs) {
    const s = view.state || {};
    const events = view.events || [];
    const last = events[events.length - 1] || {};
    out += `<div class="card rl-run" data-run="${esc(run)}"><h3>${esc(run)} <span class="muted">` +
           `${esc(s.algorithm || "")} on ${esc(s.env || "")}, iteration ` +
           `${esc(last.training_iteration)}</span></h3><div class="charts">` +
      lineChart([{ name: "episode_return_mean", points: events.map((e) =>
        [e.training_iteration, e.episode_return_mean]) }],
        { title: "episode return (mean)", xLabel: "iteration" }) +
      lineChart([{ name: "env steps/s", points: events.map((e) =>
        [e.training_iteration, e.num_env_steps_sampled_per_s]) }],
        { title: "env steps per second", xLabel: "iteration" }) + "</div>";
    out += "<dl class='kv'>" + Object.entries(last).map(([k, v]) =>
      `<dt>${esc(k)}</dt><dd>${esc(typeof v === "number" ? num(v, 4) : JSON.stringify(v))}</dd>`)
      .join("") + "</dl></div>";
  }
  return out;
}

const PAGES = { overview, actors, tasks, serve, data, train, rl };

// Filters sit outside the part redrawn every second, so typing and open menus are not lost.
function controls(page) {
  if (page === "actors") {
    return "<h2>Actors</h2>" + filterBar("actors", ui.actorFilter, ui.actorState,
      ["DEPENDENCIES_UNREADY", "PENDING_CREATION", "ALIVE", "RESTARTING", "DEAD"]);
  }
  if (page === "tasks") {
    return "<h2>Tasks</h2>" + filterBar("tasks", ui.taskFilter, ui.taskState,
      ["PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER",
       "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY", "RUNNING", "FINISHED", "FAILED"]);
  }
  return "";
}

// -- the loop ----------------------------------------------------------------------------------
async function refresh() {
  if (ui.busy) return;
  ui.busy = true;
  const page = ui.page;
  const live = document.getElementById("live");
  try {
    const html = await PAGES[page]();
    if (page !== ui.page) return;
    const main = document.getElementById("page");
    main.innerHTML = html;
    main.dataset.page = page;
    main.dataset.updated = String(Date.now());
    live.textContent = `live · ${new Date().toLocaleTimeString()}`;
    live.classList.remove("stale");
  } catch (err) {
    live.textContent = `not updating: ${err.message}`;
    live.classList.add("stale");
  } finally {
    ui.busy = false;
  }
}

function show(page) {
  ui.page = PAGES[page] ? page : "overview";
  ui.selected = null;
  document.getElementById("controls").innerHTML = controls(ui.page);
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === ui.page);
  }
  refresh();
}

document.addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-key]");
  if (!row) return;
  const key = row.dataset.key;
  ui.selected = ui.selected === key ? null : key;
  if (key.startsWith("t:") && ui.page === "overview") {
    location.hash = "#tasks";
    ui.selected = key;
    return;
  }
  refresh();
});

function onFilter(event) {
  const id = event.target.id;
  if (id === "actors-filter") ui.actorFilter = event.target.value;
  else if (id === "actors-state") ui.actorState = event.target.value;
  else if (id === "tasks-filter") ui.taskFilter = event.target.value;
  else if (id === "tasks-state") ui.taskState = event.target.value;
  else return;
  refresh();
}
document.addEventListener("input", onFilter);
document.addEventListener("change", onFilter);

window.addEventListener("hashchange", () => {
  const keep = ui.selected;
  show(location.hash.slice(1));
  if (keep && keep.startsWith("t:") && ui.page === "tasks") { ui.selected = keep; refresh(); }
});

show(location.hash.slice(1) || "overview");
ui.timer = setInterval(refresh, REFRESH_MS);
