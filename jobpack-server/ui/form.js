// The new-job form: its fields become a job spec (the same JSON any client posts), and the
// server's own validation errors are shown beside the fields they name. Nothing is checked
// here that the server does not check: the server is the one source of the rules.
"use strict";

const Form = (() => {
  const $ = (id) => document.getElementById(id);

  function addDataRow(url, sha) {
    const i = $("f-data-rows").children.length;
    const row = document.createElement("div");
    row.className = "data-row";
    const u = document.createElement("input");
    u.className = "f-data-url";
    u.placeholder = "https://host/file.csv";
    u.value = url || "";
    u.setAttribute("aria-label", "Data URL " + (i + 1));
    const s = document.createElement("input");
    s.className = "f-data-sha";
    s.placeholder = "sha256 (optional)";
    s.size = 24;
    s.value = sha || "";
    s.setAttribute("aria-label", "sha256 of data URL " + (i + 1));
    const rm = document.createElement("button");
    rm.type = "button";
    rm.textContent = "Remove";
    rm.setAttribute("aria-label", "Remove data URL " + (i + 1));
    rm.addEventListener("click", () => row.remove());
    const err = document.createElement("span");
    err.className = "field-error";
    err.setAttribute("role", "alert");
    row.append(u, s, rm, err);
    $("f-data-rows").append(row);
  }

  // The spec the fields say; empty fields are left out (the server's defaults apply).
  function spec() {
    const s = {};
    const v = (id) => $(id).value.trim();
    if (v("f-name")) s.name = v("f-name");
    if (v("f-git_url")) s.git_url = v("f-git_url");
    if (v("f-commit_hash")) s.commit_hash = v("f-commit_hash");
    const data = [...document.querySelectorAll("#f-data-rows .data-row")]
      .map((r) => ({ url: r.querySelector(".f-data-url").value.trim(), sha256: r.querySelector(".f-data-sha").value.trim() }))
      .filter((d) => d.url || d.sha256)
      .map((d) => (d.sha256 ? d : { url: d.url }));
    if (data.length) s.data = data;
    s.command = $("f-command").value;
    const limits = {};
    const num = (id) => (v(id) === "" ? null : Number(v(id)));
    if (num("f-memory") != null) limits.memory_bytes = Math.round(num("f-memory") * 1024 * 1024);
    if (num("f-cpu") != null) limits.cpu_percent = num("f-cpu");
    if (num("f-timeout") != null) limits.timeout = num("f-timeout");
    if (num("f-pids") != null) limits.pids = num("f-pids");
    if (Object.keys(limits).length) s.limits = limits;
    s.network = $("f-network").value;
    return s;
  }

  function clearErrors() {
    $("form-error").textContent = "";
    for (const e of document.querySelectorAll("#job-form .field-error")) e.textContent = "";
    for (const e of document.querySelectorAll("#job-form [aria-invalid]")) e.removeAttribute("aria-invalid");
  }

  // Where the server's error about `field` goes: `commit_hash`, `data[1].sha256`, `limits...`.
  function slot(field) {
    const d = /^data\[(\d+)\]/.exec(field);
    if (d) {
      const row = document.querySelectorAll("#f-data-rows .data-row")[Number(d[1])];
      if (row) return { err: row.querySelector(".field-error"), input: row.querySelector(field.endsWith("sha256") ? ".f-data-sha" : ".f-data-url") };
    }
    const top = field.split(/[.[]/)[0];
    const err = $("e-" + top);
    return err ? { err, input: $("f-" + top) } : null;
  }

  function showProblem(p) {
    const fields = p.errors || [];
    let placed = false;
    for (const f of fields) {
      const s = slot(f.field);
      if (!s) continue;
      s.err.textContent = (s.err.textContent ? s.err.textContent + "; " : "") + f.message;
      if (s.input) s.input.setAttribute("aria-invalid", "true");
      placed = true;
    }
    // A problem without fields (a malformed value, a quota) names its key first: `limits: ...`.
    const key = /^([a-z_]+):/.exec(p.message || "");
    if (!placed && key && slot(key[1])) {
      const s = slot(key[1]);
      s.err.textContent = p.message.slice(key[0].length).trim();
      if (s.input) s.input.setAttribute("aria-invalid", "true");
      placed = true;
    }
    if (!placed) $("form-error").textContent = p.message || "the server refused the job";
  }

  async function submit(ev, headers, onCreated) {
    ev.preventDefault();
    clearErrors();
    const r = await fetch("/v1/jobs", {
      method: "POST",
      headers: headers({ "content-type": "application/json" }),
      body: JSON.stringify(spec()),
    });
    const body = await r.json().catch(() => ({}));
    if (r.ok && body.job_id) onCreated(body.job_id);
    else showProblem(body.message ? body : { message: r.status + " " + r.statusText });
  }

  function init(headers, onCreated) {
    $("add-data").addEventListener("click", () => addDataRow());
    $("job-form").addEventListener("submit", (ev) => submit(ev, headers, onCreated));
    addDataRow();
  }

  return { init, spec };
})();
window.Form = Form;
