// digitlab drawing page. Plain JavaScript, no build step, no network beyond this server.
//
// The drawing is kept as strokes in a fixed 280 x 280 coordinate space, whatever size the
// canvas has on screen, and sent as JSON to api/predict ({"strokes", "width", "height",
// "pen"}): the server renders and normalises it exactly as `digitlab predict` would.
"use strict";

(() => {
  const SIZE = 280; // drawing coordinates sent to the API (width = height = SIZE)
  const PEN = 18; // pen diameter in those coordinates: a felt-tip on a 280 px canvas
  const LIVE_MS = 150; // while drawing, at most one prediction per LIVE_MS

  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const result = $("result");
  const bars = [...$("bars").children];
  const labelButtons = [...$("labels").querySelectorAll("button")];

  let strokes = []; // [[[x, y], ...], ...] in drawing coordinates
  let current = null; // the stroke being drawn
  let pointerId = null; // the pointer drawing it (a second finger is ignored)
  let picture = null; // an uploaded image shown on the canvas instead of strokes
  let seq = 0; // request counter: an answer to anything but the latest request is dropped
  let liveTimer = null;
  let frame = null;

  // ---------------------------------------------------------------- drawing

  function resize() {
    const box = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(box.width * dpr));
    canvas.height = Math.max(1, Math.round(box.height * dpr));
    render();
  }

  function render() {
    frame = null;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const k = canvas.width / SIZE;
    ctx.setTransform(k, 0, 0, k, 0, 0);
    if (picture) drawPicture(picture);
    ctx.strokeStyle = ctx.fillStyle = "#111";
    ctx.lineWidth = PEN;
    ctx.lineCap = ctx.lineJoin = "round";
    strokes.forEach(drawStroke);
    $("hint").hidden = strokes.length > 0 || picture !== null;
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
    const k = Math.min(SIZE / img.width, SIZE / img.height);
    const w = img.width * k;
    const h = img.height * k;
    ctx.drawImage(img, (SIZE - w) / 2, (SIZE - h) / 2, w, h);
  }

  function toDrawing(e) {
    const box = canvas.getBoundingClientRect();
    const x = ((e.clientX - box.left) * SIZE) / box.width;
    const y = ((e.clientY - box.top) * SIZE) / box.height;
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
    if (current === null || e.pointerId !== pointerId) return;
    // Coalesced events: the points the browser saw between two frames (smoother lines).
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) {
      const p = toDrawing(ev);
      const q = current[current.length - 1];
      if (Math.abs(p[0] - q[0]) + Math.abs(p[1] - q[1]) >= 1) current.push(p);
    }
    renderSoon();
    if (liveTimer === null) liveTimer = setTimeout(() => predict(false), LIVE_MS);
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

  // ---------------------------------------------------------------- the API

  function predict(final) {
    clearTimeout(liveTimer);
    liveTimer = null;
    if (strokes.length === 0) return;
    const body = JSON.stringify({ strokes, width: SIZE, height: SIZE, pen: PEN });
    const headers = { "Content-Type": "application/json" };
    send(fetch("api/predict", { method: "POST", headers, body }), "drawing", final);
  }

  function upload(file) {
    strokes = [];
    current = null;
    picture = null;
    createImageBitmap(file)
      .then((bitmap) => { picture = bitmap; renderSoon(); })
      .catch(() => {}); // not an image the browser can show: the server says why
    renderSoon();
    const form = new FormData();
    form.append("file", file);
    send(fetch("api/predict", { method: "POST", body: form }), "upload", true);
  }

  async function send(request, source, final) {
    const mine = ++seq;
    result.setAttribute("aria-busy", "true");
    let answer;
    try {
      const response = await request;
      const data = await response.json();
      answer = response.ok ? data : { error: data.error || response.statusText };
    } catch (err) {
      answer = { error: "The server cannot be reached." };
    }
    if (mine !== seq) return; // a newer drawing was sent (or the canvas cleared) meanwhile
    result.removeAttribute("aria-busy");
    if (answer.error) showError(answer.error);
    else show(answer, source, final);
  }

  // ---------------------------------------------------------------- the result panel

  const aDigit = (d) => (d === 8 ? "an 8" : `a ${d}`); // "a 7", "an 8"
  // Calibrated, a sure model says 99.9 % and means it; rounding that up to "100 %" would
  // claim a certainty it does not have.
  const percent = (p) => (p >= 0.9995 ? ">99.9 %" : `${(100 * p).toFixed(p < 0.005 ? 0 : 1)} %`);

  function show(r, source, final) {
    const inked = r.digit !== null;
    result.dataset.state = !inked ? "empty" : r.unsure ? "unsure" : "sure";
    result.dataset.source = source;
    $("digit").textContent = inked ? String(r.digit) : "–";
    $("verdict").textContent = !inked
      ? "No ink found"
      : r.unsure
        ? `Not sure: ${r.reasons.join(", ")}`
        : "Sure";
    $("confidence").textContent = inked ? `${percent(r.confidence)} confident` : "";
    setBars(r.probabilities, r.digit);
    const eye = $("eye");
    eye.hidden = !r.image;
    if (r.image) eye.src = `data:image/png;base64,${r.image}`;
    // Corrections are for drawings: an upload has no strokes to learn from.
    setLabelsEnabled(source === "drawing" && inked);
    $("saved").textContent = "";
    if (final) {
      $("announce").textContent = !inked
        ? "No digit found."
        : r.unsure
          ? `Not sure. Perhaps ${aDigit(r.digit)}.`
          : `The model reads ${aDigit(r.digit)}, ${percent(r.confidence)} confident.`;
    }
  }

  function showError(message) {
    reset("error", "Cannot read this");
    $("confidence").textContent = message;
    $("announce").textContent = `Error: ${message}`;
  }

  function reset(state = "empty", verdict = "Draw a digit") {
    result.dataset.state = state;
    delete result.dataset.source;
    $("digit").textContent = "–";
    $("verdict").textContent = verdict;
    $("confidence").textContent = "";
    $("eye").hidden = true;
    setBars(null, null);
    setLabelsEnabled(false);
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
      reset();
    }
  }

  async function correct(label) {
    if (strokes.length === 0) return;
    setLabelsEnabled(false); // one correction per drawing
    const body = JSON.stringify({ label, strokes, width: SIZE, height: SIZE, pen: PEN });
    let message;
    try {
      const response = await fetch("api/corrections", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body,
      });
      const data = await response.json();
      message = response.ok ? `Saved as ${aDigit(label)}. Thank you!` : `Not saved: ${data.error}`;
    } catch (err) {
      message = "Not saved: the server cannot be reached.";
    }
    $("saved").textContent = message;
    $("announce").textContent = message;
  }

  $("clear").addEventListener("click", clear);
  $("undo").addEventListener("click", undo);
  $("upload").addEventListener("click", () => $("file").click());
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

  fetch("api/model")
    .then((r) => r.json())
    .then((card) => {
      const acc = card.metrics && card.metrics.test_accuracy;
      const score = acc ? `, ${(100 * acc).toFixed(2)} % on the MNIST test set` : "";
      $("model").textContent = `Model: ${card.name}${score}`;
    })
    .catch(() => { $("model").textContent = "Model: unknown"; });

  new ResizeObserver(resize).observe(canvas);
  resize();
})();
