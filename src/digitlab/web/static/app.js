// digitlab drawing page. Plain JavaScript modules, no build step, no network beyond the
// server (or the static site) the page came from.
//
// The drawing is kept as strokes in coordinates 280 high, and as wide as the canvas is
// ({"strokes", "width", "height", "pen"}, as the API takes it), whatever size the canvas
// has on screen. What is read is a digit or a number ("2026"), digit by digit. Where:
//   - in the browser, when the settings (api/browser, or settings.json on a static site)
//     name a runtime and the model loads: read.js (the port of digitlab.read, over
//     preprocess.js, the port of the stroke path) and onnxruntime-web (model.js: the digit
//     model, and the string model when the settings name one), with the card's constants
//     and the server's trust rules;
//   - on the server otherwise (POST api/predict), and always for uploaded images.
// The result panel says which, and how long it took.
import { judge, preprocessStrokes, verdictOf } from "./preprocess.js";
import { digitDrawing, framesBatchOf, READ_CONFIG, readDrawing, scoreBatchOf } from "./read.js";
import { loadModel, loadStringModel } from "./model.js";
import { normalizedPng } from "./png.js";
import { addCorrection, allCorrections, toNdjson } from "./local-corrections.js";

const SIZE = 280; // the drawing's height in the coordinates sent to the API
const PEN = 18; // pen diameter in those coordinates: a felt-tip on a 280 px canvas
const LIVE_MS = 150; // while drawing, at most one server prediction per LIVE_MS (browser: 30)
const LIVE_MS_HERE = 30;

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const result = $("result");
const bars = [...$("bars").children];
const labelButtons = [...$("labels").querySelectorAll("button")];
const SETTINGS_URL = document.querySelector('meta[name="digitlab-settings"]').content;

let width = SIZE; // the drawing's width: SIZE x the canvas's aspect (wide: room for a number)
let strokes = []; // [[[x, y], ...], ...] in drawing coordinates
let current = null; // the stroke being drawn
let pointerId = null; // the pointer drawing it (a second finger is ignored)
let picture = null; // an uploaded image shown on the canvas instead of strokes
let seq = 0; // prediction counter: a result for anything but the latest is dropped
let liveTimer = null;
let frame = null;
let reading = null; // the reading shown ({text, digits, ...}; digit images as base64 PNGs)
let selected = 0; // the digit of it whose probabilities show, and that "Wrong?" corrects
let corrected = new Set(); // the digits of the reading shown already corrected

// Where predictions run: `model` once it has loaded in this browser, else the server.
let settings = null; // the page's settings; null until read (or when unreadable)
let model = null;
let stringModel = null; // the string model (touching digits read whole); null: read without it
let modelLoading = null; // the promise of the model being loaded
let notHere = "loading the in-browser model"; // why the browser does not predict (yet)
let busyHere = false; // a prediction is running in the browser ...
let pendingHere = null; // ... and this one comes next (only the latest counts)

const hasServer = () => settings === null || settings.server;
const drawing = () => ({ strokes, width, height: SIZE, pen: PEN });

// ---------------------------------------------------------------- drawing

function resize() {
  const box = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(box.width * dpr));
  canvas.height = Math.max(1, Math.round(box.height * dpr));
  width = Math.max(SIZE, Math.round((SIZE * box.width) / Math.max(box.height, 1)));
  render();
}

function render() {
  frame = null;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const k = canvas.height / SIZE;
  ctx.setTransform(k, 0, 0, k, 0, 0);
  if (picture) drawPicture(picture);
  ctx.strokeStyle = ctx.fillStyle = "#111";
  ctx.lineWidth = PEN;
  ctx.lineCap = ctx.lineJoin = "round";
  strokes.forEach(drawStroke);
  drawBoxes();
  $("hint").hidden = strokes.length > 0 || picture !== null;
}

/** A number's digits, boxed faintly where the reader found them; the selected one bolder. */
function drawBoxes() {
  if (!reading || reading.digits.length < 2 || result.dataset.source !== "drawing") return;
  ctx.lineWidth = 1.5;
  ctx.setLineDash([5, 4]);
  reading.digits.forEach((d, i) => {
    const [x0, y0, x1, y1] = d.box;
    ctx.strokeStyle = i === selected ? "#2358c4" : "#9fb3d9";
    ctx.strokeRect(x0 - 3, y0 - 3, x1 - x0 + 6, y1 - y0 + 6);
  });
  ctx.setLineDash([]);
}

function renderSoon() {
  if (frame === null) frame = requestAnimationFrame(render);
}

// Smooth strokes: quadratic curves through the midpoints between the recorded points.
function drawStroke(s) {
  if (s.length === 1) {
    ctx.beginPath();
    ctx.arc(s[0][0], s[0][1], PEN / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.moveTo(s[0][0], s[0][1]);
  for (let i = 1; i < s.length - 1; i++) {
    const mx = (s[i][0] + s[i + 1][0]) / 2;
    const my = (s[i][1] + s[i + 1][1]) / 2;
    ctx.quadraticCurveTo(s[i][0], s[i][1], mx, my);
  }
  const last = s[s.length - 1];
  ctx.lineTo(last[0], last[1]);
  ctx.stroke();
}

function drawPicture(img) {
  const k = Math.min(width / img.width, SIZE / img.height);
  const w = img.width * k;
  const h = img.height * k;
  ctx.drawImage(img, (width - w) / 2, (SIZE - h) / 2, w, h);
}

function toDrawing(e) {
  const box = canvas.getBoundingClientRect();
  const k = SIZE / box.height; // one scale for x and y: the drawing is not stretched
  const x = (e.clientX - box.left) * k;
  const y = (e.clientY - box.top) * k;
  return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
}

canvas.addEventListener("pointerdown", (e) => {
  if (current !== null || (e.pointerType === "mouse" && e.button !== 0)) return;
  e.preventDefault();
  canvas.setPointerCapture(e.pointerId);
  pointerId = e.pointerId;
  picture = null; // drawing replaces an uploaded image
  current = [toDrawing(e)];
  strokes.push(current);
  renderSoon();
});

canvas.addEventListener("pointermove", (e) => {
  if (current === null) {
    pointAt(toDrawing(e)); // a mouse over a digit of a number shows that digit
    return;
  }
  if (e.pointerId !== pointerId) return;
  // Coalesced events: the points the browser saw between two frames (smoother lines).
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
  for (const ev of events.length ? events : [e]) {
    const p = toDrawing(ev);
    const q = current[current.length - 1];
    if (Math.abs(p[0] - q[0]) + Math.abs(p[1] - q[1]) >= 1) current.push(p);
  }
  renderSoon();
  if (liveTimer === null) liveTimer = setTimeout(() => predict(false), model ? LIVE_MS_HERE : LIVE_MS);
});

function endStroke(e) {
  if (current === null || e.pointerId !== pointerId) return;
  current = null;
  pointerId = null;
  renderSoon();
  predict(true);
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

// ---------------------------------------------------------------- predicting

function predict(final) {
  clearTimeout(liveTimer);
  liveTimer = null;
  if (strokes.length === 0) return;
  if (model) {
    predictHere(final);
  } else if (hasServer()) {
    const body = JSON.stringify(drawing());
    const headers = { "Content-Type": "application/json" };
    send(() => fetch("api/predict", { method: "POST", headers, body }), "drawing", final);
  } else {
    showError(`Cannot read drawings yet: ${notHere}.`);
  }
}

/** Read the digit or number in this page: what the server's Reader does. */
async function readHere(d) {
  const t0 = performance.now();
  const frames = stringModel ? framesBatchOf(stringModel) : null;
  const r = await readDrawing(d, scoreBatchOf(model), settings, READ_CONFIG, frames);
  const ms = performance.now() - t0;
  const side = settings.preprocessing.canvas;
  const digits = r.digits.map((x) => ({ ...x, image: x.image && normalizedPng(x.image, side) }));
  return { ...r, digits, ms };
}

/** Preprocess one digit and run the model in this page: what the server's Predictor does. */
async function infer(d) {
  const t0 = performance.now();
  const norm = preprocessStrokes(d, settings.preprocessing);
  const scores = norm.image ? await model.scores(norm.image) : null;
  const ms = performance.now() - t0;
  return { ...judge(norm, scores, settings.card.classes, settings.trust), norm, ms };
}

async function predictHere(final) {
  if (busyHere) { // one at a time; when it is done, the latest drawing is read
    pendingHere = { final: final || (pendingHere?.final ?? false) };
    return;
  }
  busyHere = true;
  const mine = ++seq;
  result.setAttribute("aria-busy", "true");
  let answer;
  try {
    answer = await readHere(drawing());
  } catch (err) {
    answer = { error: String(err.message || err) };
  }
  busyHere = false;
  if (mine === seq) {
    result.removeAttribute("aria-busy");
    if (answer.error) showError(answer.error);
    else show(answer, "drawing", final, { where: "browser", ms: answer.ms });
  }
  if (pendingHere) {
    const next = pendingHere;
    pendingHere = null;
    if (strokes.length && model) predictHere(next.final);
  }
}

function upload(file) {
  strokes = [];
  current = null;
  picture = null;
  createImageBitmap(file)
    .then((bitmap) => { picture = bitmap; renderSoon(); })
    .catch(() => {}); // not an image the browser can show: the server says why
  renderSoon();
  if (!hasServer()) {
    seq++;
    showError("Reading image files needs the digitlab server (digitlab serve); draw instead.");
    return;
  }
  const form = new FormData();
  form.append("file", file);
  send(() => fetch("api/predict", { method: "POST", body: form }), "upload", true);
}

async function send(request, source, final) {
  const mine = ++seq;
  result.setAttribute("aria-busy", "true");
  const t0 = performance.now();
  let answer;
  try {
    const response = await request();
    const data = await response.json();
    answer = response.ok ? data : { error: data.error || response.statusText };
  } catch (err) {
    answer = { error: "The server cannot be reached." };
  }
  if (mine !== seq) return; // a newer drawing was sent (or the canvas cleared) meanwhile
  result.removeAttribute("aria-busy");
  if (answer.error) showError(answer.error);
  else show(answer, source, final, { where: "server", ms: performance.now() - t0 });
}

// ---------------------------------------------------------------- the result panel

const aDigit = (d) => (d === 8 ? "an 8" : `a ${d}`); // "a 7", "an 8"
// Calibrated, a sure model says 99.9 % and means it; rounding that up to "100 %" would
// claim a certainty it does not have.
const percent = (p) => (p >= 0.9995 ? ">99.9 %" : `${(100 * p).toFixed(p < 0.005 ? 0 : 1)} %`);

/** "no ink", "not a digit" (one digit that is none), "unsure" or "read", for a reading. */
function verdictOfReading(r) {
  if (r.digits.length === 0) return "no ink";
  if (r.digits.length === 1) return verdictOf(r.digits[0]);
  return r.unsure ? "unsure" : "read";
}

function show(r, source, final, ran) {
  reading = r;
  corrected = new Set();
  const verdict = verdictOfReading(r);
  const inked = verdict !== "no ink";
  const one = r.digits.length === 1;
  result.dataset.state = !inked ? "empty" : r.unsure ? "unsure" : "sure";
  result.dataset.source = source;
  const digit = $("digit");
  digit.textContent = inked ? r.text.replaceAll("?", "×") : "–";
  digit.dataset.length = String(Math.min(r.digits.length, 9));
  $("verdict").textContent = !inked
    ? "No ink found"
    : verdict === "not a digit"
      ? "Not a digit"
      : r.unsure
        ? `Not sure: ${r.reasons.join(", ")}`
        : "Sure";
  if (one && verdict === "not a digit") {
    const d = r.digits[0];
    const closest = d.probabilities.indexOf(d.confidence); // the class the model would read
    $("confidence").textContent = `Closest: ${aDigit(closest)}, ${percent(d.confidence)}`;
  } else {
    const every = one ? "" : ` that all ${r.digits.length} digits are right`;
    $("confidence").textContent = inked ? `${percent(r.confidence)} confident${every}` : "";
  }
  showChips(r);
  select(0);
  showWhere(ran);
  $("saved").textContent = "";
  renderSoon(); // the digits' boxes
  if (final) $("announce").textContent = announcement(r, verdict);
}

function announcement(r, verdict) {
  if (verdict === "no ink") return "No digit found.";
  if (verdict === "not a digit") return "Not a digit.";
  if (r.digits.length > 1) {
    const spoken = r.text.split("").map((c) => (c === "." ? "point" : c)).join(" ");
    return r.unsure ? `Not sure. Perhaps ${spoken}.` : `The model reads ${spoken}, ${percent(r.confidence)} confident.`;
  }
  const d = r.digits[0].digit;
  return r.unsure ? `Not sure. Perhaps ${aDigit(d)}.` : `The model reads ${aDigit(d)}, ${percent(r.confidence)} confident.`;
}

/** A button a digit of a number (none for one digit): hover, focus or tap shows that digit. */
function showChips(r) {
  const chips = $("digits");
  chips.replaceChildren();
  chips.hidden = r.digits.length < 2;
  if (chips.hidden) return;
  r.digits.forEach((d, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = d.digit === null ? "×" : String(d.digit);
    b.className = d.unsure ? "unsure" : "";
    b.setAttribute("aria-label", `Digit ${i + 1}: ${d.digit === null ? "not a digit" : d.digit}, ${percent(d.confidence)}`);
    for (const event of ["click", "mouseenter", "focus"]) b.addEventListener(event, () => select(i));
    chips.append(b);
  });
}

/** Show digit ``i`` of the reading: its probabilities, what the model saw, "Wrong?" for it. */
function select(i) {
  selected = i;
  const d = reading && reading.digits[i];
  [...$("digits").children].forEach((b, k) => b.setAttribute("aria-pressed", String(k === i)));
  const notDigit = d && d.reasons.includes("not a digit");
  setBars(d ? d.probabilities : null, d ? (notDigit ? d.probabilities.indexOf(d.confidence) : d.digit) : null);
  const eye = $("eye");
  eye.hidden = !(d && d.image);
  if (d && d.image) eye.src = `data:image/png;base64,${d.image}`;
  const several = reading && reading.digits.length > 1;
  $("wrong").textContent = several ? `Wrong? Digit ${i + 1} of ${reading.digits.length} is a …` : "Wrong? This is a …";
  // Corrections are for drawings: an upload has no strokes to learn from.
  setLabelsEnabled(Boolean(d) && result.dataset.source === "drawing" && !corrected.has(i));
  renderSoon();
}

/** The mouse over a digit's box selects it (no button pressed: not drawing). */
function pointAt([x, y]) {
  if (!reading || reading.digits.length < 2 || result.dataset.source !== "drawing") return;
  const i = reading.digits.findIndex(({ box }) => box[0] <= x && x <= box[2] && box[1] <= y && y <= box[3]);
  if (i >= 0 && i !== selected) select(i);
}

function showWhere(ran) {
  const where = $("where");
  result.dataset.where = ran.where;
  const ms = ran.ms < 10 ? ran.ms.toFixed(1) : Math.round(ran.ms);
  where.textContent = ran.where === "browser"
    ? `In your browser: ${ms} ms`
    : `On the server: ${ms} ms (round trip)`; // why not here: the footer says (#mode)
}

function showError(message) {
  reset("error", "Cannot read this");
  $("confidence").textContent = message;
  $("announce").textContent = `Error: ${message}`;
}

function reset(state = "empty", verdict = "Draw a digit or a number") {
  reading = null;
  result.dataset.state = state;
  delete result.dataset.source;
  $("digit").textContent = "–";
  delete $("digit").dataset.length;
  $("digits").replaceChildren();
  $("digits").hidden = true;
  $("wrong").textContent = "Wrong? This is a …";
  $("verdict").textContent = verdict;
  $("confidence").textContent = "";
  $("where").textContent = "";
  $("eye").hidden = true;
  setBars(null, null);
  setLabelsEnabled(false);
  renderSoon();
}

function setBars(probabilities, top) {
  bars.forEach((li, i) => {
    const p = probabilities ? probabilities[i] : 0;
    li.querySelector(".fill").style.width = `${100 * p}%`;
    li.querySelector(".pct").textContent = percent(p);
    li.classList.toggle("top", i === top);
  });
}

function setLabelsEnabled(on) {
  labelButtons.forEach((b) => { b.disabled = !on; });
}

// ---------------------------------------------------------------- commands

function clear() {
  seq++; // drop answers still on their way
  result.removeAttribute("aria-busy");
  clearTimeout(liveTimer);
  liveTimer = null;
  strokes = [];
  current = null;
  picture = null;
  renderSoon();
  reset();
  $("saved").textContent = "";
  $("announce").textContent = "Cleared.";
}

function undo() {
  if (current !== null || strokes.length === 0) return;
  strokes.pop();
  renderSoon();
  if (strokes.length) {
    predict(true);
  } else {
    seq++;
    result.removeAttribute("aria-busy");
    reset();
  }
}

/** Store the selected digit's drawing with its true ``label`` (and learn it). A digit of a
 * number stores its own strokes (read.js's `digitDrawing`): what the model should learn. */
async function correct(label) {
  if (strokes.length === 0 || !reading || !reading.digits[selected]) return;
  const i = selected;
  const several = reading.digits.length > 1;
  const d = several ? digitDrawing(drawing(), reading.digits[i].box) : drawing();
  setLabelsEnabled(false); // one correction per digit
  let message;
  if (d.strokes.length === 0) {
    message = "Not saved: this digit's strokes run on into its neighbours; draw it alone to correct it.";
  } else {
    try {
      message = hasServer() ? await correctOnServer(label, d) : await correctHere(label, d);
      corrected.add(i);
    } catch (err) {
      message = `Not saved: ${err.message || err}`;
    }
    if (several) message = `Digit ${i + 1}: ${message}`;
  }
  $("saved").textContent = message;
  $("announce").textContent = message;
}

async function correctOnServer(label, d) {
  const body = JSON.stringify({ label, learn: $("learn").checked, ...d });
  let response;
  try {
    response = await fetch("api/corrections", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
  } catch (err) {
    throw new Error("the server cannot be reached.");
  }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error);
  showLearning(data.learning);
  // The server now reads with a personal model that learnt this correction: load it here
  // before saying so, so that the next drawing is read with it.
  await refreshSettings();
  if (data.learned) return `Saved as ${aDigit(label)} and learnt: draw it again.`;
  return `Saved as ${aDigit(label)} (not learnt: ${data.not_learned_because}).`;
}

// ---------------------------------------------------------------- learning from corrections

/** What the server's personal model has learnt (GET api/learning), or why it cannot learn. */
function showLearning(state) {
  const box = $("learn");
  box.disabled = !state.enabled;
  if (!state.enabled) box.checked = false;
  const n = state.examples;
  let text = `Personal model: learnt from ${n} correction${n === 1 ? "" : "s"}.`;
  if (state.problem) text = state.enabled ? `Not learning: ${state.problem}` : "Learning is off on this server.";
  else if (!state.ready) text = "The personal model is getting ready…";
  $("learned").textContent = text;
  $("forget").disabled = n === 0;
}

async function readLearning() {
  try {
    const response = await fetch("api/learning");
    if (!response.ok) return;
    const state = await response.json();
    showLearning(state);
    // Still loading its MNIST reference (seconds, once): look again shortly.
    if (state.enabled && !state.ready && !state.problem) setTimeout(readLearning, 1000);
  } catch (err) {
    // No server answer: the row keeps what it says.
  }
}

async function forget() {
  $("forget").disabled = true;
  let message;
  try {
    const response = await fetch("api/learning/reset", { method: "POST" });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error);
    showLearning(data);
    await refreshSettings(); // back to the base model, here too
    message = "Back to the base model: what it learnt is forgotten (the corrections stay stored).";
  } catch (err) {
    message = `Not reset: ${err.message || err}`;
  }
  $("saved").textContent = message;
  $("announce").textContent = message;
}

/** A static site: the correction is kept in this browser, to download as NDJSON. */
async function correctHere(label, d) {
  if (!model) throw new Error(notHere);
  const r = await infer(d);
  if (!r.norm.image) throw new Error("nothing to store: the drawing has no ink");
  await addCorrection({
    label,
    predicted: r.digit,
    confidence: Math.round(r.confidence * 1e6) / 1e6,
    drawing: JSON.parse(JSON.stringify(d)),
    image_png: normalizedPng(r.norm.image, settings.preprocessing.canvas),
    model_sha256: model.sha256,
  });
  await showStoredCount();
  return `Saved in this browser as ${aDigit(label)}. Thank you!`;
}

async function showStoredCount() {
  const n = (await allCorrections()).length;
  $("download").textContent = `Download corrections (${n})`;
  $("download").disabled = n === 0;
}

async function download() {
  const text = toNdjson(await allCorrections());
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" }));
  link.download = "digitlab-corrections.ndjson";
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

$("clear").addEventListener("click", clear);
$("undo").addEventListener("click", undo);
$("upload").addEventListener("click", () => $("file").click());
$("download").addEventListener("click", download);
$("forget").addEventListener("click", forget);
$("file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) upload(file);
  e.target.value = ""; // choosing the same file again still fires "change"
});
labelButtons.forEach((b) => {
  b.addEventListener("click", () => correct(Number(b.dataset.label)));
});

// The original app's keys, plus undo. Enter on a focused button presses that button.
document.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") {
    e.preventDefault();
    undo();
  } else if (e.key === "Enter" && !e.target.closest("button, a, input")) {
    e.preventDefault();
    predict(true);
  } else if (e.key === "Delete" || e.key === "Backspace") {
    e.preventDefault();
    clear();
  }
});

// Drag and drop an image file onto the canvas.
const drop = $("drop");
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("dragging");
});
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("dragging");
  const file = e.dataTransfer.files[0];
  if (file) upload(file);
});

// ---------------------------------------------------------------- the settings and the model

async function readSettings() {
  const response = await fetch(SETTINGS_URL, { cache: "no-cache" });
  if (!response.ok) throw new Error(`${SETTINGS_URL}: ${response.status}`);
  return response.json();
}

/** Read the settings, show the model, and load it in the browser when they name a runtime. */
async function start() {
  try {
    settings = await readSettings();
  } catch (err) {
    // An older server, or one that cannot answer: predict there, as before.
    notHere = location.protocol === "file:"
      ? "open this page through a web server (e.g. python -m http.server), not as a file"
      : "the page's settings cannot be read";
    showMode();
    const card = await fetch("api/model").then((r) => r.json()).catch(() => null);
    showModel(card);
    return { where: "server", reason: notHere };
  }
  showModel(settings.card);
  document.body.dataset.site = settings.server ? "server" : "static";
  if (!settings.server) await showStoredCount().catch(() => {}); // no IndexedDB: none stored
  else await readLearning();
  return switchModel();
}

/** Load the model the settings name (again, when its SHA-256 changed). */
async function switchModel() {
  const wanted = settings.model_sha256;
  if (model && model.sha256 === wanted) return { where: "browser" };
  if (modelLoading) return modelLoading;
  modelLoading = (async () => {
    try {
      const [loaded, strings] = await Promise.all([
        loadModel(settings, document.baseURI),
        switchStringModel(),
      ]);
      if (settings.model_sha256 !== loaded.sha256) throw new Error("the model changed while loading");
      // A first run compiles what the first drawing would wait for: do it now, once.
      preprocessStrokes({ strokes: [[[0, 0], [1, 1]]] }, settings.preprocessing);
      await loaded.predict(new Float32Array(settings.preprocessing.canvas ** 2));
      stringModel = strings;
      model = loaded;
      return { where: "browser" };
    } catch (err) {
      model = null;
      notHere = `the in-browser model did not load (${err.message || err})`;
      if (!settings.runtime) notHere = "the in-browser runtime is not installed on this server";
      return { where: hasServer() ? "server" : "none", reason: notHere };
    } finally {
      modelLoading = null;
      showMode();
    }
  })();
  return modelLoading;
}

/** The string model the settings name, loaded when new; null when they name none or it does
 * not load: numbers are then read without it, as before it existed. */
async function switchStringModel() {
  const wanted = settings.strings;
  if (stringModel && wanted && stringModel.sha256 === wanted.sha256) return stringModel;
  try {
    const loaded = await loadStringModel(settings, document.baseURI);
    await loaded?.framesMany([new Float32Array(32 * 128)]); // compiled now, not on a number
    return loaded;
  } catch (err) {
    console.warn(`digitlab: the string model did not load, numbers are read without it (${err.message || err})`);
    return null;
  }
}

/** The server may have swapped its model (issue 13: a personal one): follow it. */
async function refreshSettings() {
  if (!settings || !settings.server) return;
  try {
    const fresh = await readSettings();
    if (fresh.model_sha256 !== settings.model_sha256) {
      settings = fresh;
      showModel(settings.card);
      await switchModel();
    }
  } catch (err) {
    // The server went away for a moment: keep the model we have.
  }
}

function showModel(card) {
  if (!card) {
    $("model").textContent = "Model: unknown";
    return;
  }
  const acc = card.metrics && card.metrics.test_accuracy;
  const score = acc ? `, ${(100 * acc).toFixed(2)} % on the MNIST test set` : "";
  $("model").textContent = `Model: ${card.name}${score}`;
}

function showMode() {
  const mode = $("mode");
  mode.dataset.where = model ? "browser" : hasServer() ? "server" : "none";
  if (model) {
    mode.textContent = `Runs in your browser (onnxruntime-web, WebAssembly; ${weight()})`;
  } else if (hasServer()) {
    mode.textContent = `Runs on the server: ${notHere}`;
  } else {
    mode.textContent = `Cannot run: ${notHere}`;
  }
}

/** What the runtime and the models weigh: as files, and as this page downloaded them. */
function weight() {
  const strings = stringModel ? settings.strings : null;
  const files = [settings.runtime.module, settings.runtime.wasm, settings.model_url, strings?.url]
    .filter(Boolean).map((path) => new URL(path, document.baseURI).href);
  const sent = performance.getEntriesByType("resource")
    .filter((e) => files.includes(e.name))
    .reduce((n, e) => n + e.transferSize, 0);
  const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
  const size = mb(settings.runtime.bytes + settings.model_bytes + (strings?.bytes ?? 0));
  return sent ? `${size}, ${mb(sent)} downloaded` : `${size}, from the cache`;
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") refreshSettings();
});

new ResizeObserver(resize).observe(canvas);
resize();

// For the tests and the benchmark (tests/test_browser_model.py, benchmarks/browser.py):
// `ready` says where predictions run once that is settled; `infer` reads a drawing here as
// one digit, `read` as a digit or a number.
window.digitlab = {
  ready: start(),
  read: (d) => readHere(d),
  infer: async (d) => {
    const r = await infer(d);
    const { norm, ...answer } = r;
    return { ...answer, image: norm.image && Array.from(norm.image), nBlobs: norm.nBlobs };
  },
  where: () => (model ? "browser" : hasServer() ? "server" : "none"),
  modelSha256: () => model && model.sha256,
  drawing,
};
