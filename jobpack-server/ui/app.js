// The jobpack dashboard: plain JavaScript, no build step, no third-party code. It uses the same
// /v1 and /api/v1 APIs as everyone else, with the token (an API token, or the session of a
// password sign-in) kept in sessionStorage (gone when the tab closes). The pictures are
// charts.js's, the new-job form form.js's.
"use strict";

const FINAL = ["completed", "failed", "stopped", "timed_out", "oom_killed", "limit_exceeded", "skipped"];
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("jobpack-token");
let poller = null;      // the current view's refresh timer
let logAbort = null;    // stops the current log stream
let view = 0;           // bumped on every view change: late answers for an old view are dropped

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function api(method, path, body) {
  const opts = { method, headers: headers(body ? { "content-type": "application/json" } : {}) };
  if (body) opts.body = body;
  const r = await fetch(path, opts);
  if (r.status === 401) { showLogin("Your token is no longer accepted; log in again."); throw new Error("unauthorized"); }
  const text = await r.text();
  let data = text;
  try { data = JSON.parse(text); } catch (_) { /* plain text */ }
  if (!r.ok) throw new Error((data && data.message) || r.statusText);
  return data;
}

function text(tag, value, cls) {
  const e = document.createElement(tag);
  e.textContent = value == null ? "-" : String(value);
  if (cls) e.className = cls;
  return e;
}

function statusBadge(s) {
  return text("span", s, "status status-" + s);
}

function duration(from, to) {
  if (!from) return "-";
  const secs = ((to ? Date.parse(to) : Date.now()) - Date.parse(from)) / 1000;
  if (secs < 60) return secs.toFixed(1) + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m" + String(Math.floor(secs % 60)).padStart(2, "0") + "s";
  return Math.floor(secs / 3600) + "h" + String(Math.floor(secs % 3600 / 60)).padStart(2, "0") + "m";
}

function show(name) {
  for (const v of ["login-view", "jobs-view", "job-view", "workflow-view", "batch-view"]) $(v).hidden = v !== name;
  view += 1;
  clearInterval(poller);
  poller = null;
  if (logAbort) { logAbort.abort(); logAbort = null; }
}

function showLogin(message) {
  show("login-view");
  $("login-error").textContent = message || "";
  $("me").textContent = "";
  $("logout").hidden = true;
}

async function login(candidate) {
  const r = await fetch("/v1/me", { headers: candidate ? { "Authorization": "Bearer " + candidate } : {} });
  if (!r.ok) return false;
  const me = await r.json();
  token = candidate;
  if (token) sessionStorage.setItem("jobpack-token", token);
  $("me").textContent = me.user + " (" + me.role + ")";
  $("logout").hidden = !token;
  return true;
}

// ---- the job list -------------------------------------------------------------------------
async function refreshJobs() {
  const status = $("filter").value;
  const q = "/v1/jobs?limit=200" + (status ? "&status=" + encodeURIComponent(status) : "");
  const mine = view;
  let list;
  try { list = await api("GET", q); } catch (_) { return; }
  if (mine !== view || $("filter").value !== status) return;
  const body = $("jobs").tBodies[0];
  const rows = list.jobs.map((j) => {
    const tr = document.createElement("tr");
    tr.dataset.id = j.job_id;
    tr.append(text("td", j.job_id.slice(0, 8)), text("td", j.name));
    const st = document.createElement("td");
    st.append(statusBadge(j.status));
    tr.append(st, text("td", j.exit_code), text("td", (j.request.queue || "default") + " / " + (j.request.priority || 0)),
      text("td", j.owner),
      text("td", j.created_at.replace("T", " ").slice(0, 19)),
      text("td", duration(j.created_at, j.finished_at)));
    tr.addEventListener("click", () => { location.hash = "#/jobs/" + j.job_id; });
    return tr;
  });
  body.replaceChildren(...rows);
  $("count").textContent = list.total + (list.total === 1 ? " job" : " jobs");
}

// Batches with a progress bar: ended jobs (completed, failed, stopped) out of all.
async function refreshBatches() {
  const mine = view;
  let list;
  try { list = await api("GET", "/v1/batches?limit=20"); } catch (_) { return; }
  if (mine !== view) return;
  $("batches-box").hidden = list.batches.length === 0;
  $("batches").tBodies[0].replaceChildren(...list.batches.map((b) => {
    const tr = document.createElement("tr");
    tr.dataset.id = b.batch_id;
    const ended = b.completed + b.failed + b.stopped;
    const bar = document.createElement("progress");
    bar.max = b.total;
    bar.value = ended;
    const cell = document.createElement("td");
    cell.append(bar, " " + ended + "/" + b.total);
    const counts = text("td", b.completed + " completed, " + b.failed + " failed, " + b.stopped +
      " stopped, " + b.running + " running, " + b.queued + " queued");
    const st = document.createElement("td");
    st.append(statusBadge(b.status));
    tr.append(text("td", b.batch_id.slice(0, 8)), text("td", b.name), text("td", b.owner), cell, counts, st);
    tr.addEventListener("click", () => { location.hash = "#/batches/" + b.batch_id; });
    return tr;
  }));
}

// Workflows: each job as a badge in the file's order, with what it requires; click one to open it.
async function refreshWorkflows() {
  const mine = view;
  let list;
  try { list = await api("GET", "/v1/workflows?limit=20"); } catch (_) { return; }
  if (mine !== view) return;
  $("workflows-box").hidden = list.workflows.length === 0;
  $("workflows").tBodies[0].replaceChildren(...list.workflows.map((w) => {
    const tr = document.createElement("tr");
    tr.dataset.id = w.workflow_id;
    const jobs = document.createElement("td");
    for (const j of w.jobs) {
      const b = statusBadge(j.status);
      b.textContent = j.name + ": " + j.status + (j.exit_code == null ? "" : " (" + j.exit_code + ")");
      b.title = (j.dependencies.length ? "requires " + j.dependencies.map((d) => d.job + ":" + d.status).join(", ") : "requires nothing") +
        (j.reason ? "\n" + j.reason : "");
      b.classList.add("wf-job");
      b.addEventListener("click", (e) => { e.stopPropagation(); location.hash = "#/jobs/" + j.job_id; });
      jobs.append(b, " ");
    }
    const st = document.createElement("td");
    st.append(statusBadge(w.status));
    tr.append(text("td", w.workflow_id.slice(0, 8)), text("td", w.name), text("td", w.owner), jobs, st);
    tr.addEventListener("click", () => { location.hash = "#/workflows/" + w.workflow_id; });
    return tr;
  }));
}

// Status cards: the caller's jobs (admins and viewers: everyone's) in the JobRunner's words.
async function refreshCards() {
  const mine = view;
  let stats;
  try { stats = await api("GET", "/api/v1/jobs/stats"); } catch (_) { return; }
  if (mine !== view) return;
  const sum = { waiting: 0, running: 0, failed: 0, passed: 0, total: 0 };
  for (const u of stats) for (const k of Object.keys(sum)) sum[k] += u[k];
  for (const e of document.querySelectorAll("#cards .n")) e.textContent = String(sum[e.dataset.k]);
}

// The batch gallery: each batch with a segmented bar (grey waiting, yellow running, red failed,
// green passed); a click opens its member jobs, each with "View logs".
const openBatches = new Set();
async function refreshGallery() {
  const mine = view;
  let list;
  try { list = await api("GET", "/api/v1/job-batches?limit=20"); } catch (_) { return; }
  if (mine !== view) return;
  $("gallery-box").hidden = list.length === 0;
  const items = await Promise.all(list.map(async (b) => {
    const item = document.createElement("div");
    item.className = "gallery-item";
    item.dataset.id = b.id;
    const title = text("div", (b.name || b.id.slice(0, 8)) + " — " + b.passed + " passed, " + b.failed +
      " failed, " + b.running + " running, " + b.waiting + " waiting of " + b.total, "title");
    title.addEventListener("click", () => {
      if (openBatches.has(b.id)) openBatches.delete(b.id); else openBatches.add(b.id);
      refreshGallery();
    });
    const bar = document.createElement("div");
    bar.className = "seg";
    for (const k of ["waiting", "running", "failed", "passed"]) {
      const part = document.createElement("span");
      part.className = "seg-" + k;
      part.dataset.count = String(b[k]);
      part.style.width = (b.total ? (100 * b[k] / b.total) : 0) + "%";
      part.title = b[k] + " " + k;
      bar.append(part);
    }
    item.append(title, bar);
    if (openBatches.has(b.id)) {
      let jobs = [];
      try { jobs = await api("GET", "/api/v1/job-batches/" + b.id + "/jobs"); } catch (_) { /* shown empty */ }
      const t = document.createElement("table");
      t.className = "members";
      t.append(...jobs.map((j) => {
        const tr = document.createElement("tr");
        const st = document.createElement("td");
        st.append(statusBadge(j.status));
        const act = document.createElement("td");
        const btn = text("button", "View logs", "view-logs");
        btn.addEventListener("click", () => viewLogs(j.id));
        act.append(btn);
        tr.append(text("td", j.name), st, text("td", j.result.exit_code), act);
        return tr;
      }));
      item.append(t);
    }
    return item;
  }));
  if (mine !== view) return;
  $("gallery").replaceChildren(...items);
}

async function viewLogs(id) {
  const pre = $("runner-log");
  pre.hidden = false;
  try {
    const l = await api("GET", "/api/v1/jobs/" + id + "/logs");
    pre.textContent = "--- stdout of " + id.slice(0, 8) + " ---\n" + l.stdout + "\n--- stderr ---\n" + l.stderr;
  } catch (e) { pre.textContent = e.message; }
}

// The overview: jobs ended per minute by status, and the waiting and running jobs at each
// minute's end, over the last hour (`/v1/activity`).
async function refreshActivity() {
  const mine = view;
  let a;
  try { a = await api("GET", "/v1/activity?minutes=60"); } catch (_) { return; }
  if (mine !== view) return;
  Charts.stackedBars($("activity-ended"), a.minutes, "Jobs ended per minute by status, last hour");
  const at = (m) => Date.parse(m.at);
  Charts.lineChart($("activity-queue"), [
    { name: "waiting", color: "#2853b8", points: a.minutes.map((m) => ({ t: at(m), v: m.waiting })) },
    { name: "running", color: "#b07d00", points: a.minutes.map((m) => ({ t: at(m), v: m.running })) },
  ], { label: "Jobs waiting and running at each minute, last hour", fmt: (v) => String(Math.round(v)),
       startLabel: "-60 min", endLabel: "now", min: 1 });
}

function jobsView() {
  show("jobs-view");
  let n = 0;
  const tick = () => {
    refreshCards(); refreshGallery(); refreshJobs(); refreshBatches(); refreshWorkflows();
    if (n++ % 4 === 0) refreshActivity();
  };
  tick();
  poller = setInterval(tick, 1500);
}

// Submitting the advanced view's JSON as it is.
async function submitJob() {
  $("submit-result").textContent = "";
  try {
    JSON.parse($("new-spec").value);
  } catch (e) {
    $("submit-result").textContent = "not JSON: " + e.message;
    return;
  }
  try {
    const r = await api("POST", "/v1/jobs", $("new-spec").value);
    location.hash = "#/jobs/" + r.job_id;
  } catch (e) {
    $("submit-result").textContent = e.message;
  }
}

// ---- one job ------------------------------------------------------------------------------
function facts(tbody, pairs) {
  tbody.replaceChildren(...pairs.map(([k, v]) => {
    const tr = document.createElement("tr");
    tr.append(text("td", k), v instanceof Node ? (() => { const td = document.createElement("td"); td.append(v); return td; })() : text("td", v));
    return tr;
  }));
}

// "1 failed, 2 completed": each run of a retried job.
async function attemptsText(id) {
  try {
    const a = await api("GET", "/v1/jobs/" + id + "/attempts");
    return a.attempts.map((x) => x.attempt + " " + x.status).join(", ");
  } catch (_) { return null; }
}

async function refreshJob(id) {
  const mine = view;
  let j;
  try { j = await api("GET", "/v1/jobs/" + id); } catch (e) { $("action-result").textContent = e.message; return null; }
  if (mine !== view) return null;
  const st = $("job-status");
  st.textContent = j.status;
  st.className = "status status-" + j.status;
  facts($("facts"), [
    ["name", j.name], ["status", j.status], ["exit code", j.exit_code], ["reason", j.reason],
    ["owner", j.owner], ["queue", j.request.queue || "default"], ["priority", j.request.priority || 0],
    ["working directory", j.request.working_dir],
    ["created", j.created_at], ["started", j.started_at], ["finished", j.finished_at],
    ["run time", j.started_at ? duration(j.started_at, j.finished_at) : null],
    ["commit", j.commit], ["artifact sha256", j.artifact_sha256], ["cpu seconds", j.cpu_seconds],
    ["retry", j.request.retry ? JSON.stringify(j.request.retry) : null],
    ["attempts", j.request.retry ? await attemptsText(id) : null],
    ["pinned", j.pinned ? "yes" : "no"],
    ["files removed by retention", j.collected_at],
  ]);
  $("pin").textContent = j.pinned ? "Unpin" : "Pin";
  $("pin").onclick = async () => {
    try { await api(j.pinned ? "DELETE" : "POST", "/v1/jobs/" + id + "/pin"); await refreshJob(id); }
    catch (e) { $("action-result").textContent = e.message; }
  };
  $("spec").textContent = JSON.stringify(j.request, null, 2);
  const done = FINAL.includes(j.status) || (!j.run && j.status === "packed");
  $("cancel").disabled = done;
  $("dl-artifact").disabled = !j.artifact_sha256;
  return j;
}

// The job's CPU and memory over time, from its usage samples; the peaks below.
async function refreshUsage(id) {
  const mine = view;
  let u;
  try { u = await api("GET", "/v1/jobs/" + id + "/usage"); } catch (_) { return; }
  if (mine !== view) return;
  const from = u.samples.length ? u.samples[0].at_ms - (u.interval_ms || 1000) : null;
  const cpu = u.samples.filter((p) => p.cpu_cores != null).map((p) => ({ t: p.at_ms, v: p.cpu_cores }));
  const mem = u.samples.filter((p) => p.memory_bytes != null).map((p) => ({ t: p.at_ms, v: p.memory_bytes }));
  const to = u.samples.length ? u.samples[u.samples.length - 1].at_ms : null;
  const none = u.interval_ms == null ? "this server does not sample jobs" : "no samples (a job shorter than a second, or no cgroup)";
  Charts.lineChart($("chart-cpu"), [{ name: "CPU", color: "#2853b8", points: cpu }],
    { label: "CPU cores used over time", fmt: (v) => v.toFixed(2), from, to, min: 1, empty: u.samples.length ? "one sample so far" : none });
  Charts.lineChart($("chart-mem"), [{ name: "memory", color: "#1d6b35", points: mem }],
    { label: "Memory used over time", fmt: Charts.bytes, from, to, min: 1 << 20, empty: none });
  const p = u.peaks;
  $("peaks").textContent = p ? "Peaks over " + p.samples + " samples: " + (p.cpu_cores == null ? "-" : p.cpu_cores.toFixed(2)) +
    " cores, " + Charts.bytes(p.memory_bytes) + " memory, " + (p.pids == null ? "-" : p.pids) + " processes, " +
    Charts.bytes(p.io_read_bytes) + " read, " + Charts.bytes(p.io_write_bytes) + " written" : "";
}

async function showManifest(id) {
  const mine = view;
  let m;
  try { m = await api("GET", "/v1/jobs/" + id + "/manifest"); } catch (_) { return false; }
  if (mine !== view) return false;
  const pairs = [["spec digest", m.spec_digest], ["generator", m.generator]];
  if (m.source) pairs.push(["git url", m.source.git_url], ["resolved commit", m.source.commit]);
  for (const d of m.data || []) pairs.push(["data " + (d.path || d.name || ""), (d.sha256 || "") + "  " + (d.url || "")]);
  pairs.push(["files", (m.files || []).length]);
  facts($("manifest"), pairs);
  return true;
}

// The signed receipt of the last run: what it is about (by digest) and who signed it.
async function showReceipt(id) {
  const mine = view;
  let r;
  try { r = await api("GET", "/v1/jobs/" + id + "/receipt"); } catch (_) { return false; }
  if (mine !== view) return false;
  let st = {};
  try { st = JSON.parse(atob(r.payload)); } catch (_) { return false; }
  const rows = [];
  for (const s of st.subject || []) rows.push(["receipt: " + s.name + " sha256", s.digest.sha256]);
  const p = st.predicate || {};
  rows.push(["receipt: backend", p.backend], ["receipt: kernel", p.host && p.host.kernel]);
  rows.push(["receipt: signed by", (r.signatures || []).map((s) => s.keyid).join(", ")]);
  const body = $("manifest");
  const more = document.createElement("tbody");
  facts(more, rows);
  body.append(...more.children);
  return true;
}

// The log over SSE, read with fetch (EventSource cannot send a token). Each event id is a byte
// offset: after a dropped connection, Last-Event-ID resumes exactly where it stopped.
async function followLog(id, pre, signal) {
  let lastId = null;
  let ended = false;
  while (!signal.aborted && !ended) {
    try {
      const h = headers(lastId ? { "Last-Event-ID": lastId } : {});
      const r = await fetch("/v1/jobs/" + id + "/logs/stream", { headers: h, signal });
      if (!r.ok) return;
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let event = "message", data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) lastId = line.slice(3).trim();
            else if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (!data.length) continue;
          const payload = JSON.parse(data.join("\n"));
          if (event === "end") { ended = true; break; }
          const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.append(payload.text || "");
          if (atBottom) pre.scrollTop = pre.scrollHeight;
        }
        if (ended) break;
      }
    } catch (_) {
      if (signal.aborted) return;
    }
    if (!ended) await new Promise((r) => setTimeout(r, 1000));
  }
}

async function download(path, fallbackName) {
  $("action-result").textContent = "downloading...";
  try {
    const r = await fetch(path, { headers: headers() });
    if (!r.ok) {
      let msg = r.statusText;
      try { msg = (await r.json()).message; } catch (_) { /* keep */ }
      throw new Error(msg);
    }
    const cd = r.headers.get("content-disposition") || "";
    const m = /filename="?([^";]+)"?/.exec(cd);
    const blob = await r.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = m ? m[1] : fallbackName;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
    $("action-result").textContent = "downloaded " + a.download + " (" + blob.size + " bytes)";
  } catch (e) {
    $("action-result").textContent = e.message;
  }
}

function jobView(id) {
  show("job-view");
  $("job-id").textContent = id;
  $("log").textContent = "";
  $("manifest").replaceChildren();
  $("action-result").textContent = "";
  let haveManifest = false;
  let haveReceipt = false;
  let timer = null;
  const tick = async () => {
    const j = await refreshJob(id);
    if (j) refreshUsage(id);
    if (j && j.artifact_sha256 && !haveManifest) haveManifest = await showManifest(id);
    if (j && FINAL.includes(j.status) && haveManifest && !haveReceipt) haveReceipt = await showReceipt(id);
    // This view's own timer: a late tick of an earlier view must not stop the current one.
    if (j && (FINAL.includes(j.status) || (!j.run && j.status === "packed"))) clearInterval(timer);
  };
  tick();
  timer = poller = setInterval(tick, 1000);
  logAbort = new AbortController();
  followLog(id, $("log"), logAbort.signal);
  $("cancel").onclick = async () => {
    try { await api("POST", "/v1/jobs/" + id + "/cancel"); $("action-result").textContent = "stopping"; }
    catch (e) { $("action-result").textContent = e.message; }
  };
  $("delete").onclick = async () => {
    if (!confirm("Delete job " + id + " and its files?")) return;
    try { await api("DELETE", "/v1/jobs/" + id); location.hash = "#/"; }
    catch (e) { $("action-result").textContent = e.message; }
  };
  $("dl-artifact").onclick = () => download("/v1/jobs/" + id + "/artifact", id + ".tar.gz");
  $("dl-tarball").onclick = () => download("/v1/jobs/" + id + "/tarball", id + "-work.tar.gz");
  $("dl-file").onclick = () => {
    const p = $("file-path").value.trim().replace(/^\/+/, "");
    if (p) download("/v1/jobs/" + id + "/files/" + p.split("/").map(encodeURIComponent).join("/"), p.split("/").pop());
  };
}

// ---- a workflow: its graph and timeline; a batch: its timeline --------------------------
const ms = (t) => (t ? Date.parse(t) : null);
const openJob = (id) => { location.hash = "#/jobs/" + id; };

function workflowView(id) {
  show("workflow-view");
  const tick = async () => {
    const mine = view;
    let w;
    try { w = await api("GET", "/v1/workflows/" + id); } catch (e) { $("wf-name").textContent = e.message; return; }
    if (mine !== view) return;
    $("wf-name").textContent = w.name || w.workflow_id.slice(0, 8);
    $("wf-status").textContent = w.status;
    $("wf-status").className = "status status-" + w.status;
    Charts.dag($("dag"), w.jobs, openJob);
    Charts.gantt($("wf-timeline"), w.jobs.map((j) => ({
      label: j.name, id: j.job_id, status: j.status,
      created: ms(w.created_at), started: ms(j.started_at), finished: ms(j.finished_at),
    })), openJob);
    if (!["queued", "running"].includes(w.status)) clearInterval(timer);
  };
  tick();
  const timer = poller = setInterval(tick, 1500);
}

function batchView(id) {
  show("batch-view");
  const tick = async () => {
    const mine = view;
    let b, list;
    try {
      b = await api("GET", "/v1/batches/" + id);
      list = await api("GET", "/v1/jobs?limit=200&batch_id=" + encodeURIComponent(id));
    } catch (e) { $("batch-name").textContent = e.message; return; }
    if (mine !== view) return;
    $("batch-name").textContent = b.name || b.batch_id.slice(0, 8);
    $("batch-status").textContent = b.status;
    $("batch-status").className = "status status-" + b.status;
    $("batch-counts").textContent = b.completed + " completed, " + b.failed + " failed, " + b.stopped +
      " stopped, " + b.running + " running, " + b.queued + " queued of " + b.total;
    const jobs = list.jobs.slice().sort((x, y) => Date.parse(x.created_at) - Date.parse(y.created_at));
    Charts.gantt($("batch-timeline"), jobs.map((j) => ({
      label: j.name || j.job_id.slice(0, 8), id: j.job_id, status: j.status,
      created: ms(j.created_at), started: ms(j.started_at), finished: ms(j.finished_at),
    })), openJob);
    if (jobs.length === b.total && jobs.every((j) => FINAL.includes(j.status))) clearInterval(timer);
  };
  tick();
  const timer = poller = setInterval(tick, 1500);
}

// ---- routing ------------------------------------------------------------------------------
async function route() {
  if (!$("me").textContent && !(await login(token))) { showLogin(); return; }
  const m = /^#\/(jobs|workflows|batches)\/([0-9a-f-]+)$/.exec(location.hash);
  if (!m) jobsView();
  else if (m[1] === "jobs") jobView(m[2]);
  else if (m[1] === "workflows") workflowView(m[2]);
  else batchView(m[2]);
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const t = $("token").value.trim();
    if (await login(t)) { $("token").value = ""; route(); }
    else $("login-error").textContent = "That token is not accepted.";
  });
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new URLSearchParams({ username: $("email").value.trim(), password: $("password").value, grant_type: "password" });
    const r = await fetch("/api/v1/auth/token", { method: "POST", body: form });
    const answer = await r.json().catch(() => ({}));
    if (r.ok && answer.access_token && await login(answer.access_token)) {
      $("password").value = "";
      route();
    } else {
      $("login-error").textContent = answer.message || "Signing in failed.";
    }
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem("jobpack-token");
    token = null;
    showLogin();
  });
  $("filter").addEventListener("change", refreshJobs);
  $("submit").addEventListener("click", submitJob);
  Form.init(headers, openJob);
  route();
});
