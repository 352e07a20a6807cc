// difflab explorer: plain JavaScript over the JSON API of difflab/explore/server.py (nothing from the internet).
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
const state = { info: null, curves: null, forward: null, reverse: null, score: null };

// -- talking to the server ------------------------------------------------------------------------
async function api(path, body) {
  const opts = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let r;
  try { r = await fetch(path, opts); } catch (e) { throw new Error("the explorer server does not answer (was it stopped?)"); }
  let data;
  try { data = await r.json(); } catch (e) { throw new Error(`unreadable answer from the server (HTTP ${r.status})`); }
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

function panelError(panel, msg) {
  const el = document.querySelector(`#${panel} .panel-error`);
  el.textContent = msg || "";
  el.hidden = !msg;
}

const fmt = (v, d = 3) => (v === null || v === undefined) ? "∞" : Number(v).toFixed(d);

// -- pictures: a PNG (images) or points on a canvas -------------------------------------------------
function render(el, pic, opts = {}) {
  el.replaceChildren();
  if (!pic) {
    const ph = document.createElement("div");
    ph.className = "placeholder";
    ph.textContent = opts.empty || "—";
    el.appendChild(ph);
  } else if (pic.png) {
    const img = document.createElement("img");
    img.src = pic.png;
    img.alt = opts.alt || "";
    el.appendChild(img);
  } else {
    const c = document.createElement("canvas");
    c.width = c.height = opts.size || 220;
    drawPoints(c, [{ pts: pic.points, color: "rgba(31,119,180,0.55)" }], opts.lim || 3);
    el.appendChild(c);
  }
}

function drawPoints(canvas, sets, lim) {
  const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  g.fillStyle = "#fff";
  g.fillRect(0, 0, w, h);
  for (const s of sets) {
    g.fillStyle = s.color;
    const r = s.r || 1.6;
    for (const [x, y] of s.pts) g.fillRect((x + lim) / (2 * lim) * w - r / 2, (lim - y) / (2 * lim) * h - r / 2, r, r);
  }
}

// -- line plots (the schedule curves) ---------------------------------------------------------------
function drawPlot(canvas, { xs, series, ymin, ymax, title, ylabel, marks, tMark }) {
  const g = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  const L = 46, R = 10, T = 22, B = 34;
  const X = (x) => L + x * (W - L - R), Y = (y) => T + (ymax - Math.min(Math.max(y, ymin), ymax)) / (ymax - ymin) * (H - T - B);
  g.fillStyle = "#fff"; g.fillRect(0, 0, W, H);
  g.font = "11px sans-serif"; g.fillStyle = "#333"; g.strokeStyle = "#ccc"; g.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {               // grid and ticks
    const yv = ymin + k * (ymax - ymin) / 4, xv = k / 4;
    g.beginPath(); g.moveTo(L, Y(yv)); g.lineTo(W - R, Y(yv)); g.stroke();
    g.beginPath(); g.moveTo(X(xv), T); g.lineTo(X(xv), H - B); g.stroke();
    g.textAlign = "right"; g.fillText(yv.toFixed(ymax - ymin > 5 ? 0 : 2), L - 4, Y(yv) + 4);
    g.textAlign = "center"; g.fillText(xv.toFixed(2), X(xv), H - B + 14);
  }
  g.fillText("t", (L + W - R) / 2, H - 4);
  g.font = "bold 12px sans-serif"; g.fillText(title, (L + W - R) / 2, 14);
  g.save(); g.translate(11, (T + H - B) / 2); g.rotate(-Math.PI / 2); g.font = "11px sans-serif"; g.fillText(ylabel, 0, 0); g.restore();
  for (const s of series) {
    g.strokeStyle = s.color; g.lineWidth = 1.6; g.setLineDash(s.dash ? [5, 4] : []);
    g.beginPath();
    s.ys.forEach((y, i) => (i ? g.lineTo(X(xs[i]), Y(y)) : g.moveTo(X(xs[i]), Y(y))));
    g.stroke();
  }
  g.setLineDash([]);
  if (tMark !== undefined) {                   // the current t and each curve's value there
    g.strokeStyle = "#555"; g.lineWidth = 1; g.beginPath(); g.moveTo(X(tMark), T); g.lineTo(X(tMark), H - B); g.stroke();
    for (const m of marks) {
      g.fillStyle = m.color; g.strokeStyle = "#000";
      g.beginPath(); g.arc(X(tMark), Y(m.y === null ? ymax : m.y), 4, 0, 2 * Math.PI); g.fill(); g.stroke();
    }
  }
}

// -- 1 forward process ------------------------------------------------------------------------------
let fwdBusy = false, fwdAgain = false;
async function updateForward() {
  if (fwdBusy) { fwdAgain = true; return; }
  fwdBusy = true;
  try {
    do {
      fwdAgain = false;
      const q = `t=${$("fwd-t").value}&index=${$("fwd-index").value || 0}&seed=${$("fwd-seed").value || 0}`;
      try {
        state.forward = await api(`/api/forward?${q}`);
        panelError("forward", "");
        renderForward();
      } catch (e) { panelError("forward", e.message); }
    } while (fwdAgain);
  } finally { fwdBusy = false; }
}

function renderForward() {
  const d = state.forward, box = $("fwd-images");
  $("fwd-t-out").textContent = Number(d.t).toFixed(3);
  $("fwd-note").textContent = `clean examples: ${d.note}. Images of x_t are shown at unit variance, x_t/√(α²+σ²).`;
  if (box.children.length !== d.schedules.length + 1) {
    box.replaceChildren();
    for (let k = 0; k <= d.schedules.length; k++) {
      const card = document.createElement("div");
      card.className = k ? "card xt" : "card x0";
      card.innerHTML = `<h3></h3><div class="pic"></div><div class="values"></div>`;
      box.appendChild(card);
    }
  }
  const cards = box.children;
  cards[0].querySelector("h3").textContent = "x₀ (clean)";
  render(cards[0].querySelector(".pic"), d.x0, { alt: "clean example" });
  cards[0].querySelector(".values").textContent = d.index !== undefined ? `example #${d.index}` : "";
  d.schedules.forEach((s, k) => {
    const c = cards[k + 1];
    c.querySelector("h3").textContent = s.name;
    c.querySelector("h3").style.color = COLORS[k % COLORS.length];
    render(c.querySelector(".pic"), s.x_t, { alt: `x_t under ${s.name}` });
    c.querySelector(".values").textContent = `α=${fmt(s.alpha)} σ=${fmt(s.sigma)} λ=${fmt(s.logsnr, 2)}`;
  });
  drawSchedules();
}

function drawSchedules() {
  const c = state.curves, d = state.forward;
  if (!c || !d) return;
  const color = (k) => COLORS[k % COLORS.length];
  const as = [], lam = [];
  const legend = $("fwd-legend");
  legend.replaceChildren();
  c.curves.forEach((s, k) => {
    as.push({ ys: s.alpha, color: color(k) });
    as.push({ ys: s.sigma, color: color(k), dash: true });
    lam.push({ ys: s.logsnr, color: color(k) });
    const item = document.createElement("span");
    item.innerHTML = `<b style="background:${color(k)}"></b>`;
    item.append(s.name);
    legend.appendChild(item);
  });
  legend.append("· dots: the values at the chosen t");
  const marksAS = [], marksLam = [];
  d.schedules.forEach((s, k) => {
    marksAS.push({ y: s.alpha, color: color(k) }, { y: s.sigma, color: color(k) });
    marksLam.push({ y: s.logsnr === null ? c.logsnr_clip : Math.max(-c.logsnr_clip, Math.min(c.logsnr_clip, s.logsnr)), color: color(k) });
  });
  drawPlot($("fwd-plot-as"), { xs: c.t, series: as, ymin: 0, ymax: 1.05, title: "signal α_t (solid) and noise σ_t (dashed)",
    ylabel: "α_t, σ_t", marks: marksAS, tMark: d.t });
  drawPlot($("fwd-plot-lam"), { xs: c.t, series: lam, ymin: -c.logsnr_clip, ymax: c.logsnr_clip,
    title: `log-SNR λ_t = log(α²/σ²), clipped to ±${c.logsnr_clip}`, ylabel: "λ_t", marks: marksLam, tMark: d.t });
}

// -- jobs: start, poll progress, cancel -------------------------------------------------------------
async function runJob(panel, prefix, path, body, onDone) {
  const prog = $(`${prefix}-progress`), bar = prog.querySelector("progress"),
    text = prog.querySelector(".progress-text"), cancel = prog.querySelector(".cancel"), run = $(`${prefix}-run`);
  panelError(panel, "");
  let job;
  try { job = await api(path, body); } catch (e) { panelError(panel, e.message); return; }
  prog.hidden = false; run.disabled = true; cancel.disabled = false;
  cancel.onclick = async () => { cancel.disabled = true; try { await api(`/api/jobs/${job.id}/cancel`, {}); } catch (e) { panelError(panel, e.message); } };
  try {
    while (job.state === "running") {
      bar.value = job.fraction;
      text.textContent = job.message + (job.eta_s !== null ? ` · about ${Math.ceil(job.eta_s)} s left` : "");
      await new Promise((r) => setTimeout(r, 200));
      job = await api(`/api/jobs/${job.id}`);
    }
    if (job.state === "done") { prog.hidden = true; onDone(job.result); }
    else if (job.state === "cancelled") { bar.value = 0; text.textContent = "cancelled"; }
    else { prog.hidden = true; panelError(panel, job.error); }
  } catch (e) { prog.hidden = true; panelError(panel, e.message); }
  finally { run.disabled = false; updateReadiness(); }
}

function condBody(prefix) {
  if (!state.info || !state.info.model.model || !state.info.model.model.num_classes) return {};
  const label = $(`${prefix}-class`).value;
  return label === "" ? {} : { label: Number(label), guidance: Number($(`${prefix}-guidance`).value) };
}

// -- 2 reverse process ------------------------------------------------------------------------------
function startReverse() {
  const body = { sampler: $("rev-sampler").value, steps: Number($("rev-steps").value), seed: Number($("rev-seed").value),
    ...condBody("rev") };
  runJob("reverse", "rev", "/api/sample", body, (res) => {
    state.reverse = res;
    $("rev-result").hidden = false;
    const s = $("rev-step");
    s.max = res.frames.length - 1;
    s.value = s.max;
    $("rev-nfe").textContent = `${res.sampler}, ${res.steps} steps: ${res.nfe} network evaluations (NFE) per sample, counted; ` +
      `${res.seconds.toFixed(2)} s.` + (res.frames.length < res.steps + 1 ? ` Showing ${res.frames.length} of the ${res.steps + 1} states.` : "");
    showStep();
  });
}

function showStep() {
  const res = state.reverse, f = res.frames[Number($("rev-step").value)];
  render($("rev-x"), f.x, { alt: "state x_t" });
  render($("rev-x0"), f.x0_hat, { alt: "x0_hat", empty: "no guess yet: the sampler starts from pure noise" });
  $("rev-step-label").textContent = f.step === 0
    ? `start: noise x_T at t = ${fmt(f.t_next)}`
    : `step ${f.step} of ${res.steps}: x̂₀ guessed at t = ${fmt(f.t)}, state moved to t = ${fmt(f.t_next)}`;
}

function play(slider, show, button) {
  if (button.timer) { clearInterval(button.timer); button.timer = null; button.textContent = "▶ play"; return; }
  if (Number(slider.value) >= Number(slider.max)) slider.value = 0;
  button.textContent = "■ stop";
  button.timer = setInterval(() => {
    if (Number(slider.value) >= Number(slider.max)) { play(slider, show, button); return; }
    slider.value = Number(slider.value) + 1;
    show();
  }, 90);
}

// -- 3 samplers side by side --------------------------------------------------------------------------
function startCompare() {
  const body = { nfe: Number($("cmp-nfe").value), seed: Number($("cmp-seed").value), ...condBody("cmp") };
  runJob("compare", "cmp", "/api/compare", body, (res) => {
    const grid = $("cmp-grid");
    grid.replaceChildren();
    for (const s of res.samplers) {
      const card = document.createElement("div");
      card.className = "card sampler";
      card.innerHTML = `<h3></h3><div class="pic"></div><div class="values"></div>`;
      card.querySelector("h3").textContent = s.sampler;
      if (s.skipped) {
        card.querySelector(".pic").innerHTML = `<div class="placeholder skipped"></div>`;
        card.querySelector(".placeholder").textContent = s.skipped;
      } else {
        render(card.querySelector(".pic"), s.picture, { alt: s.sampler, size: 160 });
        const opts = Object.entries(s.options).map(([k, v]) => `${k}=${v}`).join(" ");
        const steps = s.adaptive ? "adaptive steps" : `${s.steps} step${s.steps === 1 ? "" : "s"}`;
        card.querySelector(".values").textContent = `${steps} · NFE ${s.nfe}${s.stochastic ? " · stochastic" : ""}` +
          (opts ? `\n${opts}` : "");
        card.querySelector(".values").style.whiteSpace = "pre-line";
      }
      grid.appendChild(card);
    }
  });
}

// -- 4 score field ---------------------------------------------------------------------------------
function viridis(u) {                          // a few stops of matplotlib's viridis, linearly mixed
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.min(Math.max(u, 0), 1) * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
  const c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

async function startScore() {
  const q = `sampler=${$("score-sampler").value}&steps=${$("score-steps").value}&seed=${$("score-seed").value}`;
  panelError("score", "");
  $("score-run").disabled = true;
  try {
    state.score = await api(`/api/score?${q}`);
    const s = $("score-frame");
    s.max = state.score.frames.length - 1;
    s.value = 0;
    drawScore();
  } catch (e) { panelError("score", e.message); }
  finally { $("score-run").disabled = false; updateReadiness(); }
}

function drawScore() {
  const d = state.score, f = d.frames[Number($("score-frame").value)], c = $("score-canvas"), g = c.getContext("2d");
  const lim = d.lim, W = c.width, P = (x, y) => [(x + lim) / (2 * lim) * W, (lim - y) / (2 * lim) * W];
  drawPoints(c, [{ pts: d.data, color: "rgba(255,127,14,0.35)", r: 2 }], lim);
  const mags = f.score.map(([a, b]) => Math.log10(Math.hypot(a, b) + 1e-12));
  const lo = Math.min(...mags), hi = Math.max(...mags), cell = W / Math.sqrt(d.grid.length);
  d.grid.forEach(([x, y], k) => {              // unit arrows: direction; colour: log10 |score|
    const [sx, sy] = f.score[k], m = Math.hypot(sx, sy) || 1, [px, py] = P(x, y);
    const dx = sx / m * cell * 0.42, dy = -sy / m * cell * 0.42;
    g.strokeStyle = g.fillStyle = viridis((mags[k] - lo) / (hi - lo || 1));
    g.lineWidth = 1.4;
    g.beginPath(); g.moveTo(px - dx, py - dy); g.lineTo(px + dx, py + dy); g.stroke();
    const a = Math.atan2(dy, dx);
    g.beginPath(); g.moveTo(px + dx, py + dy);
    g.lineTo(px + dx - 5 * Math.cos(a - 0.45), py + dy - 5 * Math.sin(a - 0.45));
    g.lineTo(px + dx - 5 * Math.cos(a + 0.45), py + dy - 5 * Math.sin(a + 0.45));
    g.fill();
  });
  g.fillStyle = "rgba(20,60,200,0.8)";
  for (const [x, y] of f.points) { const [px, py] = P(x, y); g.fillRect(px - 1.5, py - 1.5, 3, 3); }
  $("score-label").textContent = `t = ${fmt(f.t)}` + (f.t_score !== f.t ? ` (score drawn at t = ${fmt(f.t_score)})` : "") +
    ` · ${d.sampler}, frame ${Number($("score-frame").value)} of ${d.frames.length - 1}`;
  $("score-legend").textContent = `arrow colour: log10 |score| from ${lo.toFixed(2)} (dark) to ${hi.toFixed(2)} (yellow); ` +
    `view [-${lim}, ${lim}]².`;
}

// -- models: state, first-use training ----------------------------------------------------------------
function slotText(slot) {
  if (slot.model) return slot.model.label;
  return slot.builtin ? `built-in ${slot.builtin} (${slot.status === "training" ? "training" : "not trained"})`
    : `${slot.path} (could not be opened)`;
}

function updateReadiness() {
  const info = state.info;
  if (!info) return;
  const ready = { model: info.model.status === "ready", toy: info.toy.status === "ready" };
  for (const b of document.querySelectorAll(".needs-model")) if (!b.closest(".panel").querySelector(".progress:not([hidden])")) b.disabled = !ready.model;
  $("score-run").disabled = !ready.toy;
}

function renderTraining(info) {
  const box = $("training");
  box.replaceChildren();
  for (const slot of [info.model, info.toy]) {
    if (slot === info.toy && slot.role === "model") continue;   // a 2-D run serves the score field too
    if (slot.status === "training" && slot.job) {
      const div = document.createElement("div");
      div.className = "progress training";
      div.innerHTML = `<span class="what"></span> ${PROGRESS}`;
      div.querySelector(".what").textContent = `First use: training the built-in ${slot.builtin} model (${slot.summary}).`;
      div.querySelector("progress").value = slot.job.fraction;
      div.querySelector(".progress-text").textContent = slot.job.message.replace(/^training the built-in \w+ model: /, "") +
        (slot.job.eta_s !== null ? ` · about ${Math.ceil(slot.job.eta_s)} s left` : "");
      div.querySelector(".cancel").onclick = () => api(`/api/jobs/${slot.job.id}/cancel`, {}).catch((e) => showGlobalError(e.message));
      box.appendChild(div);
    } else if (slot.status === "missing" && slot.builtin) {
      const div = document.createElement("div");
      div.className = "missing";
      div.innerHTML = `<span></span> <button>Train it now</button>`;
      div.querySelector("span").textContent = `The built-in ${slot.builtin} model (${slot.summary}) is not trained yet` +
        (slot.job && slot.job.state === "cancelled" ? " (training was cancelled)." : ".");
      div.querySelector("button").onclick = () => api("/api/train", { role: slot.role }).then(pollState).catch((e) => showGlobalError(e.message));
      box.appendChild(div);
    }
  }
}

function showGlobalError(msg) {
  const e = $("error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

let wasReady = { model: null, toy: null };
async function pollState() {
  let info;
  try { info = await api("/api/state"); } catch (e) { showGlobalError(e.message); setTimeout(pollState, 2000); return; }
  const first = !state.info;
  state.info = info;
  const m = info.model;
  $("model-info").textContent = `model: ${slotText(m)}` + (m.model ? ` · ${m.model.kind} ${m.model.shape.join("×")}, ` +
    `${m.model.schedule} schedule, ${m.model.prediction}-prediction` + (m.model.step !== null ? `, step ${m.model.step}` : "") : "") +
    ` · score field: ${info.toy.role === "model" ? "the same model" : slotText(info.toy)}`;
  const errors = [info.model.error, info.toy.error].filter((e) => e);
  showGlobalError(errors.join(" · "));
  renderTraining(info);
  if (first) setup(info);
  if (m.model && m.model.num_classes) setupCond(m.model);
  updateReadiness();
  if (info.toy.status === "ready" && wasReady.toy === false || (first && info.toy.status === "ready")) startScore();
  wasReady = { model: info.model.status === "ready", toy: info.toy.status === "ready" };
  if (info.model.status === "training" || info.toy.status === "training") setTimeout(pollState, 700);
}

function setupCond(model) {
  for (const span of document.querySelectorAll(".cond")) span.hidden = false;
  for (const sel of document.querySelectorAll(".cond-class")) {
    if (sel.options.length) continue;
    sel.add(new Option("none (unconditional)", ""));
    model.classes.forEach((name, k) => sel.add(new Option(name, String(k))));
  }
}

function setup(info) {
  for (const sel of document.querySelectorAll(".sampler-select")) {
    for (const s of info.samplers) sel.add(new Option(`${s.name} (order ${s.order}${s.stochastic ? ", stochastic" : ""})`, s.name));
    sel.value = "ddim";
  }
  $("rev-steps").max = info.max_steps;
  if (info.forward.kind === "images") $("fwd-index").max = info.forward.examples - 1;
  else $("fwd-index-label").hidden = true;
  api("/api/schedules").then((c) => { state.curves = c; drawSchedules(); }).catch((e) => panelError("forward", e.message));
  updateForward();
}

// the controls the reverse and sampler panels share: class and guidance (shown for conditional models), progress
const PROGRESS = `<progress max="1" value="0"></progress> <span class="progress-text"></span> <button class="cancel">Cancel</button>`;
function buildSharedControls() {
  for (const span of document.querySelectorAll(".cond")) {
    const p = span.dataset.prefix;
    span.innerHTML = `<label>class <select class="cond-class" id="${p}-class"></select></label> ` +
      `<label>guidance <input type="number" class="cond-guidance" id="${p}-guidance" min="0" step="0.5" value="1"></label>`;
  }
  for (const div of document.querySelectorAll(".progress.job")) div.innerHTML = PROGRESS;
}

function main() {
  buildSharedControls();
  $("fwd-t").addEventListener("input", updateForward);
  $("fwd-index").addEventListener("change", updateForward);
  $("fwd-seed").addEventListener("change", updateForward);
  $("rev-run").addEventListener("click", startReverse);
  $("rev-step").addEventListener("input", showStep);
  $("rev-play").addEventListener("click", () => play($("rev-step"), showStep, $("rev-play")));
  $("cmp-run").addEventListener("click", startCompare);
  $("score-run").addEventListener("click", startScore);
  $("score-frame").addEventListener("input", () => state.score && drawScore());
  $("score-play").addEventListener("click", () => state.score && play($("score-frame"), drawScore, $("score-play")));
  for (const b of document.querySelectorAll(".needs-model, .needs-toy")) b.disabled = true;
  pollState();
}

main();
