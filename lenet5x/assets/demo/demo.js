/* lenet5x demo: "Draw a digit, watch LeNet-5 (or the network shown) think".

   Flow:
   1. On load, GET /api/model fills the header (#model), sets the score captions, and shows
      or hides the sample buttons (#samples) and the F6 panel (#f6).
   2. Drawing on #pad (Pointer Events) records strokes in pad coordinates 0..1 and paints
      them as thick round white lines on black, like MNIST; a loaded test digit is painted
      underneath as a background picture. Storing strokes lets the pad repaint sharply
      at any size and devicePixelRatio.
   3. Every change calls requestPrediction(), a throttle: at most one request every
      MIN_INTERVAL_MS, never two in flight, and always the newest drawing (a drawing that
      changed while a request was out is sent once that request is answered).
   4. sendPrediction() repaints the drawing onto an offscreen 280x280 canvas, POSTs it as a
      PNG to /api/predict and renders the answer: #digit, #label-kind, #scores,
      #input-image, #maps and, for the paper's model, #f6 (F6 beside the nearest prototypes).
      The server does all the preparation (crop, centre, resize); this file sends pixels.
   5. #random-digit and #misclassified-digit GET /api/sample, draw that test digit into the
      pad and show the answer that comes with it (the test image as the test set is scored);
      drawing over it predicts the drawing.
   Errors (API errors, network failures) go to #status; nothing is thrown to the console.
*/
"use strict";

(function () {
  const SEND_SIZE = 280;          // side of the PNG sent to the server
  const MIN_INTERVAL_MS = 250;    // at most 4 predictions a second
  const LINE_WIDTH = 1 / 14;      // stroke width as a fraction of the pad's side
  const DEFAULT_CLASSES = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
  // LeNet-5's feature maps, drawn as empty placeholders before the first answer.
  const DEFAULT_MAPS = [
    { name: "C1", shape: [6, 28, 28] },
    { name: "S2", shape: [6, 14, 14] },
    { name: "C3", shape: [16, 10, 10] },
    { name: "S4", shape: [16, 5, 5] },
    { name: "C5", shape: [1, 12, 10] },
  ];
  // What each stage computes, in a line, said from the model's layer table (/api/model
  // "layers": kind and output shape), so that it holds for LeNet-1, LeNet-4 and the modern
  // variant as for LeNet-5; the pooled stages of the modern variant have no row of their own.
  const PAPER_URL = "http://yann.lecun.com/exdb/publis/pdf/lecun-01a.pdf";
  const POOLED = {
    P2: "2×2 max-pooling and ReLU of C1: half the size",
    P4: "2×2 max-pooling and ReLU of C3: half the size",
  };
  // the network's name in the page's title, and where the paper describes it
  const FAMILY = {
    classic: ["LeNet-5", "paper §II-B"], lenet1: ["LeNet-1", "paper §III-C"],
    lenet4: ["LeNet-4", "paper §III-C"], modern: ["a modern LeNet-5", "paper §II-B (LeNet-5)"],
  };

  const WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "16", "17", "18", "19", "20"];

  function stageWhat(name, layer, first) {
    if (POOLED[name]) return POOLED[name];
    if (!layer) return "";
    const kind = String(layer.kind), shape = layer.shape || [];
    const size = (kind.match(/(\d+)x(\d+)/) || []).slice(1).join("×");
    const count = shape[0] <= 20 ? WORDS[shape[0]] : shape[0];
    const whole = shape.length === 1 || (shape[1] === 1 && shape[2] === 1);
    const drawn = whole ? ": " + count + " numbers that describe the whole digit, drawn as one " +
      "picture, a pixel each" : "";
    if (kind.startsWith("convolution")) {
      const over = first ? "slide over the input" :
        kind.includes("table") ? (state.model.architecture === "classic" ?
          "over chosen S2 maps (Table I): strokes combined into parts of digits" :
          "over chosen maps of the stage before (its connection table)") :
          "over every map of the stage before";
      const pool = kind.includes("max-pool") ? "; then 2×2 max-pooling" : "";
      const lights = first ? "; a map lights up where its pattern is" : "";
      return "convolution: " + count + " " + size + " kernels " + over + lights + pool + drawn;
    }
    if (kind.startsWith("subsampling")) {
      return "subsampling: each " + size + " block summed, scaled, biased and squashed: " +
        count + " maps of " + shape.slice(1).join("×");
    }
    if (kind.startsWith("full")) {
      return "fully connected: " + count + " units, each weighing every output of the stage " +
        "before" + drawn;
    }
    return kind;
  }
  const NEAREST_PLACEHOLDERS = 3;
  const MAPS_PER_COLUMN = 8;

  const el = {};
  const state = {
    model: null,
    classes: DEFAULT_CLASSES,
    scoreKind: "rbf_distance",
    // the drawing
    strokes: [],        // each stroke: array of {x, y} in 0..1
    current: null,      // the stroke being drawn
    pointerId: null,    // the pointer drawing it (other fingers are ignored)
    background: null,   // a loaded test digit (HTMLImageElement), or null
    sample: null,       // {index, label, predicted, kind} of the loaded test digit
    edited: false,      // drawn over the loaded test digit
    // the prediction throttle
    dirty: false,       // the drawing changed since the last request was sent
    inFlight: false,
    lastSentAt: -Infinity,
    timer: null,
    generation: 0,      // bumped when the drawing is replaced: older answers are dropped
    sampleToken: 0,     // bumped per sample request and on clear: older samples are dropped
  };
  const blankUrls = new Map();
  let sendCanvas = null;

  // ---------------------------------------------------------------- start-up

  function init() {
    for (const id of ["pad", "pad-hint", "clear", "samples", "random-digit", "misclassified-digit",
      "sample-info", "status", "model", "digit", "label-kind", "scores", "scores-caption",
      "input-image", "maps", "f6", "f6-image", "nearest",
      "enlarge", "enlarged-image", "enlarged-caption"]) {
      el[id] = document.getElementById(id);
    }
    installErrorTrap();
    setUpPad();
    setUpEnlarge();
    el.clear.addEventListener("click", clearAll);
    el["random-digit"].addEventListener("click", () => loadSample("random"));
    el["misclassified-digit"].addEventListener("click", () => loadSample("misclassified"));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !el.enlarge.open) clearAll();  // an open map closes first
    });
    buildScoreRows(state.classes);
    resetResults();
    setScoreCaptions(state.scoreKind);
    showStatus("Draw a digit in the black square.");
    loadModel();
  }

  // Last line of defence: anything unexpected is shown in #status, not thrown to the console.
  function installErrorTrap() {
    window.addEventListener("error", (event) => {
      showError("Unexpected error: " + (event.message || "unknown"));
      event.preventDefault();
    });
    window.addEventListener("unhandledrejection", (event) => {
      showError("Unexpected error: " + describeError(event.reason));
      event.preventDefault();
    });
  }

  async function loadModel() {
    try {
      const response = await fetch("/api/model", { headers: { Accept: "application/json" } });
      const data = await readJson(response);
      if (!response.ok || !data) {
        throw new Error(errorMessage(response, data, "could not read the model description"));
      }
      applyModel(data);
    } catch (err) {
      el.model.textContent = "Model unknown";
      showError("Cannot load /api/model: " + describeError(err));
    }
  }

  function applyModel(model) {
    state.model = model;
    if (Array.isArray(model.classes) && model.classes.length > 0) {
      state.classes = model.classes.map(String);
      buildScoreRows(state.classes);
    }
    state.scoreKind = model.score_kind || state.scoreKind;
    renderModelLine(model);
    renderNetworkWords();
    if (Array.isArray(model.stages) && model.stages.length > 0) renderMaps(model.stages);
    refreshStageNotes();
    setScoreCaptions(state.scoreKind);
    const samplesOn = model.samples === true;
    el.samples.hidden = !samplesOn;
    el["random-digit"].disabled = !samplesOn;
    el["misclassified-digit"].disabled = !samplesOn;
    resetResults();
  }

  function renderModelLine(model) {
    const parts = [];
    if (model.name) parts.push(model.name);
    if (model.architecture && model.architecture !== model.name) parts.push(model.architecture);
    if (typeof model.test_error === "number") {
      parts.push("test error " + formatPercent(model.test_error, 2));
    } else {
      parts.push("test error not measured");
    }
    if (typeof model.parameters === "number") {
      parts.push(model.parameters.toLocaleString("en-US") + " parameters");
    }
    if (model.dataset) parts.push(String(model.dataset).toUpperCase());
    el.model.replaceChildren();
    const title = document.createElement("strong");
    title.textContent = model.description || model.name || "model";
    el.model.append(title);
    for (const part of parts) {
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.textContent = "·";
      el.model.append(dot, String(part));
    }
  }

  // [the network's name, where the paper describes it] (FAMILY; a boosted ensemble says so)
  function family() {
    const arch = state.model && state.model.architecture;
    const known = FAMILY[arch] || FAMILY.classic;
    const boosted = state.model && /boosted/.test(String(state.model.name || ""));
    return boosted ? ["boosted " + known[0], known[1]] : known;
  }

  function inputSize() {
    const size = state.model && Number(state.model.input_size);
    return size > 0 ? size : 32;
  }

  // the title, the input's label and the help follow the network being shown
  function renderNetworkWords() {
    const name = family()[0], side = inputSize() + "×" + inputSize();
    for (const node of document.querySelectorAll(".network-name")) node.textContent = name;
    document.title = "lenet5x · Draw a digit, watch " + name + " think";
    const label = document.querySelector("#input-figure .stage-shape");
    if (label) label.textContent = side;
    el["input-image"].alt = "The " + side + " input the network saw";
  }

  function isPaperModel() {
    return state.scoreKind === "rbf_distance" ||
      (state.model !== null && state.model.architecture === "classic");
  }

  // ---------------------------------------------------------------- the drawing pad

  function setUpPad() {
    const pad = el.pad;
    pad.addEventListener("pointerdown", onPointerDown);
    pad.addEventListener("pointermove", onPointerMove);
    pad.addEventListener("pointerup", onPointerEnd);
    pad.addEventListener("pointercancel", onPointerEnd);
    pad.addEventListener("lostpointercapture", onPointerEnd);
    pad.addEventListener("contextmenu", (event) => event.preventDefault());
    if (typeof ResizeObserver === "function") {
      new ResizeObserver(resizePad).observe(pad);
    }
    window.addEventListener("resize", resizePad);
    resizePad();
  }

  // Match the canvas's backing store to its CSS size times devicePixelRatio, then repaint.
  function resizePad() {
    const side = el.pad.getBoundingClientRect().width;
    const pixels = Math.max(1, Math.round(side * (window.devicePixelRatio || 1)));
    if (el.pad.width !== pixels || el.pad.height !== pixels) {
      el.pad.width = pixels;
      el.pad.height = pixels;
    }
    repaintPad();
  }

  function repaintPad() {
    paint(el.pad.getContext("2d"), el.pad.width);
    el["pad-hint"].classList.toggle("is-hidden", !isBlank());
  }

  // Paint the whole drawing on ctx, a square canvas of `side` pixels: black, then the
  // loaded test digit (if any), then the strokes. Leaves ctx in 0..1 pad coordinates.
  function paint(ctx, side) {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, side, side);
    ctx.setTransform(side, 0, 0, side, 0, 0);
    if (state.background) {
      ctx.imageSmoothingEnabled = true;
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(state.background, 0, 0, 1, 1);
    }
    setInk(ctx);
    for (const stroke of state.strokes) drawStroke(ctx, stroke);
  }

  function setInk(ctx) {
    ctx.strokeStyle = "#fff";
    ctx.fillStyle = "#fff";
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
  }

  function drawStroke(ctx, points) {
    if (points.length === 1) {
      drawDot(ctx, points[0]);
      return;
    }
    ctx.beginPath();
    ctx.moveTo(points[0].x, points[0].y);
    for (let i = 1; i < points.length; i += 1) ctx.lineTo(points[i].x, points[i].y);
    ctx.stroke();
  }

  function drawDot(ctx, p) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, LINE_WIDTH / 2, 0, 2 * Math.PI);
    ctx.fill();
  }

  function drawSegment(ctx, a, b) {
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x, b.y);
    ctx.stroke();
  }

  // Pointer position in pad coordinates 0..1 (not clamped: strokes may leave the pad).
  function padPoint(event) {
    const rect = el.pad.getBoundingClientRect();
    return {
      x: (event.clientX - rect.left) / rect.width,
      y: (event.clientY - rect.top) / rect.height,
    };
  }

  function onPointerDown(event) {
    if (state.pointerId !== null) return;                       // a second finger
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    state.pointerId = event.pointerId;
    try { el.pad.setPointerCapture(event.pointerId); } catch (err) { /* not capturable: fine */ }
    const p = padPoint(event);
    state.current = [p];
    state.strokes.push(state.current);
    const ctx = el.pad.getContext("2d");
    setInk(ctx);
    drawDot(ctx, p);
    noteDrawingChanged();
  }

  function onPointerMove(event) {
    if (event.pointerId !== state.pointerId || state.current === null) return;
    event.preventDefault();
    const events = typeof event.getCoalescedEvents === "function" ? event.getCoalescedEvents() : [];
    const ctx = el.pad.getContext("2d");
    setInk(ctx);
    let moved = false;
    for (const e of events.length > 0 ? events : [event]) {
      const p = padPoint(e);
      const last = state.current[state.current.length - 1];
      if (Math.hypot(p.x - last.x, p.y - last.y) < 0.002) continue;
      drawSegment(ctx, last, p);
      state.current.push(p);
      moved = true;
    }
    if (moved) noteDrawingChanged();
  }

  function onPointerEnd(event) {
    if (event.pointerId !== state.pointerId) return;
    state.pointerId = null;
    const ended = state.current !== null;
    state.current = null;
    if (el.pad.hasPointerCapture && el.pad.hasPointerCapture(event.pointerId)) {
      try { el.pad.releasePointerCapture(event.pointerId); } catch (err) { /* already released */ }
    }
    if (ended) requestPrediction();   // the final request of this stroke
  }

  function noteDrawingChanged() {
    el["pad-hint"].classList.add("is-hidden");
    if (state.sample && !state.edited) {
      state.edited = true;
      renderSampleInfo();
    }
    requestPrediction();
  }

  function isBlank() {
    return state.strokes.length === 0 && state.background === null;
  }

  // Forget the drawing (and any answer still on its way for it).
  function resetDrawing() {
    state.strokes = [];
    state.current = null;
    state.background = null;
    state.sample = null;
    state.edited = false;
    state.dirty = false;
    state.generation += 1;
    if (state.timer !== null) {
      clearTimeout(state.timer);
      state.timer = null;
    }
    markPending();
    repaintPad();
    renderSampleInfo();
  }

  function clearAll() {
    state.sampleToken += 1;          // a test digit still on its way is dropped
    setSampleButtonsBusy(false);
    resetDrawing();
    resetResults();
    showStatus("Cleared. Draw a digit in the black square.");
  }

  // ---------------------------------------------------------------- the prediction throttle

  // The drawing changed: make sure its newest state gets predicted.
  function requestPrediction() {
    state.dirty = true;
    pumpPredictions();
  }

  // Send now if allowed; otherwise wait for the interval (timer) or the answer (inFlight).
  function pumpPredictions() {
    markPending();
    if (!state.dirty || state.inFlight || state.timer !== null) return;
    if (isBlank()) {
      state.dirty = false;            // a blank pad is never sent
      markPending();
      return;
    }
    const wait = state.lastSentAt + MIN_INTERVAL_MS - performance.now();
    if (wait > 0) {
      state.timer = setTimeout(() => {
        state.timer = null;
        pumpPredictions();
      }, wait);
      return;
    }
    sendPrediction();
  }

  async function sendPrediction() {
    state.dirty = false;
    state.inFlight = true;
    state.lastSentAt = performance.now();
    const generation = state.generation;
    try {
      const blob = await drawingAsPng();
      const response = await fetch("/api/predict", {
        method: "POST",
        headers: { "Content-Type": "image/png", Accept: "application/json" },
        body: blob,
      });
      const data = await readJson(response);
      if (generation !== state.generation) return;      // the drawing was replaced meanwhile
      if (!response.ok || !data || data.error) {
        showError(errorMessage(response, data, "the prediction failed"));
        setStale(true);
        return;
      }
      renderPrediction(data, performance.now() - state.lastSentAt);
    } catch (err) {
      if (generation === state.generation) {
        showError("Cannot reach the server: " + describeError(err));
        setStale(true);
      }
    } finally {
      state.inFlight = false;
      pumpPredictions();               // the drawing may have changed while we waited
    }
  }

  // <body data-pending="yes"> while the drawing has an answer still to come (waiting for the
  // interval, painting the PNG, or on the wire): what a test waits on before reading the answer.
  function markPending() {
    const pending = state.dirty || state.inFlight || state.timer !== null;
    document.body.dataset.pending = pending ? "yes" : "no";
  }

  // The drawing, repainted at SEND_SIZE x SEND_SIZE, as a PNG Blob.
  function drawingAsPng() {
    if (sendCanvas === null) {
      sendCanvas = document.createElement("canvas");
      sendCanvas.width = SEND_SIZE;
      sendCanvas.height = SEND_SIZE;
    }
    paint(sendCanvas.getContext("2d"), SEND_SIZE);
    return new Promise((resolve, reject) => {
      sendCanvas.toBlob((blob) => {
        if (blob) resolve(blob);
        else reject(new Error("the browser could not encode the drawing as PNG"));
      }, "image/png");
    });
  }

  // ---------------------------------------------------------------- rendering an answer

  function renderPrediction(data, elapsedMs) {
    const kind = data.score_kind || state.scoreKind;
    if (kind !== state.scoreKind) {
      state.scoreKind = kind;
      setScoreCaptions(kind);
    }
    const scores = Array.isArray(data.scores) ? data.scores.map(Number) : [];
    const index = predictedIndex(data, scores, kind);
    const label = data.label !== undefined && data.label !== null ? String(data.label)
      : (state.classes[index] !== undefined ? state.classes[index] : String(data.digit));

    const reason = typeof data.reason === "string" ? data.reason : "";
    el.digit.textContent = reason ? refusalWord(reason) : label;
    el.digit.classList.remove("is-empty");
    el.digit.classList.toggle("is-refused", reason !== "");
    el["label-kind"].textContent = reason ? describeRefusal(data, scores, kind)
      : describeScore(kind, scores[index]);
    renderScores(scores, kind, reason ? -1 : index, data.shares);
    setImage(el["input-image"], data.input, inputSize(), inputSize());
    renderMaps(Array.isArray(data.maps) ? data.maps : []);
    renderF6(data.f6 || null, Array.isArray(data.nearest) ? data.nearest : []);
    setStale(false);

    let message = (reason ? "Says " : "Reads ") + label + " · answered in " + Math.round(elapsedMs) + " ms";
    if (data.inverted) message += " · the image was inverted (dark ink on light)";
    showStatus(message);
  }

  function predictedIndex(data, scores, kind) {
    if (Number.isInteger(data.digit) && data.digit >= 0 && data.digit < state.classes.length) {
      return data.digit;
    }
    const byLabel = state.classes.indexOf(String(data.label));
    if (byLabel >= 0) return byLabel;
    if (scores.length === 0) return 0;
    const best = kind === "rbf_distance" ? Math.min(...scores) : Math.max(...scores);
    return scores.indexOf(best);
  }

  // A refusal in a word or two for the big answer: "not sure", "not a digit", "no ink".
  function refusalWord(reason) {
    if (reason.startsWith("not sure")) return "not sure";
    return reason === "no ink found" ? "no ink" : reason;
  }

  // Why it refused, with the numbers: the runner-up, the margin or distance against the limit.
  function describeRefusal(data, scores, kind) {
    const model = state.model || {};
    const margin = Number(data.margin);
    if (String(data.reason).startsWith("not sure")) {
      return data.reason + " · margin " + formatDistance(margin) + " < " +
        formatDistance(Number(model.reject_margin));
    }
    if (data.reason === "not a digit" && Number.isInteger(data.best)) {
      return "not a digit · nearest distance " + formatDistance(scores[data.best]) + " > " +
        formatDistance(Number(model.not_digit_distance)) + " (nearest: " +
        (state.classes[data.best] || data.best) + ")";
    }
    return String(data.reason);
  }

  function describeScore(kind, value) {
    if (!Number.isFinite(value)) return "";
    if (kind === "rbf_distance") return "RBF distance " + formatDistance(value) + " · lower is closer";
    if (kind === "probability") return "probability " + formatProbability(value);
    return "score " + value.toFixed(3);
  }

  function setScoreCaptions(kind) {
    const caption = el["scores-caption"];
    caption.replaceChildren();
    const strong = document.createElement("strong");
    if (kind === "rbf_distance") {
      strong.textContent = "Squared distance to each class's prototype: lower is closer.";
      caption.append(strong, " Bars show each class's share of belief by the paper's MAP criterion " +
        "(eq. 9): e^−d ÷ (e^−j + Σ e^−d), where e^−j is its \u201cnone of them\u201d class, so " +
        "a shape far from every prototype gets no full bar.");
    } else if (kind === "probability") {
      strong.textContent = "Probability of each class";
      caption.append(strong, " (softmax output), 0–100%.");
    }
    const model = state.model || {};
    if (typeof model.reject_margin === "number") {
      caption.append(" It says \u201cnot sure\u201d when the two best classes are closer than a margin of " +
        formatDistance(model.reject_margin) + (kind === "probability" ? " (log-probability gap)" : " (distance gap)") +
        ", chosen on digits held out of training for " +
        formatPercent(Number(model.reject_target_error), 1) + " error on what it answers.");
    }
    if (typeof model.not_digit_distance === "number") {
      caption.append(" \u201cNot a digit\u201d: nearest distance above " +
        formatDistance(model.not_digit_distance) + ", beyond " +
        formatPercent(Number(model.not_digit_quantile), 1) + " of the training digits.");
    }
    if (kind !== "rbf_distance" && kind !== "probability") {
      strong.textContent = "Score of each class.";
      caption.append(strong);
    }
  }

  function buildScoreRows(classes) {
    el.scores.replaceChildren();
    classes.forEach((name, i) => {
      const row = document.createElement("div");
      row.className = "score-row";
      row.setAttribute("role", "listitem");
      row.dataset.index = String(i);
      row.innerHTML = '<span class="score-label"></span>' +
        '<span class="score-track"><span class="score-bar"></span></span>' +
        '<span class="score-value">–</span>';
      row.querySelector(".score-label").textContent = name;
      el.scores.append(row);
    });
  }

  // Bar lengths in 0..1: probabilities as they are; RBF distances as closeness min(d)/d.
  function barLengths(scores, kind) {
    if (kind === "probability") return scores.map((p) => clamp01(p));
    if (kind === "rbf_distance") {
      const finite = scores.filter(Number.isFinite);
      const nearest = finite.length > 0 ? Math.max(0, Math.min(...finite)) : 0;
      const eps = 1e-6;
      return scores.map((d) => (Number.isFinite(d) ? clamp01((nearest + eps) / (Math.max(d, 0) + eps)) : 0));
    }
    const top = Math.max(...scores.map(Math.abs), 1e-12);
    return scores.map((s) => clamp01(Math.abs(s) / top));
  }

  function renderScores(scores, kind, predicted, shares) {
    if (scores.length !== el.scores.children.length) {
      buildScoreRows(scores.map((_, i) => (state.classes[i] !== undefined ? state.classes[i] : String(i))));
    }
    const lengths = Array.isArray(shares) && shares.length === scores.length
      ? shares.map((v) => clamp01(Number(v))) : barLengths(scores, kind);
    Array.from(el.scores.children).forEach((row, i) => {
      const value = scores[i];
      const text = kind === "rbf_distance" ? formatDistance(value)
        : kind === "probability" ? formatProbability(value) : formatNumber(value);
      row.classList.toggle("is-predicted", i === predicted);
      row.querySelector(".score-bar").style.width = (100 * (lengths[i] || 0)).toFixed(1) + "%";
      row.querySelector(".score-value").textContent = text;
      const what = kind === "rbf_distance" ? "distance " : kind === "probability" ? "probability " : "score ";
      row.setAttribute("aria-label", "class " + row.querySelector(".score-label").textContent + ": " + what + text);
    });
  }

  function resetScores() {
    for (const row of el.scores.children) {
      row.classList.remove("is-predicted");
      row.querySelector(".score-bar").style.width = "0%";
      row.querySelector(".score-value").textContent = "–";
      row.removeAttribute("aria-label");
    }
  }

  // One labelled group per stage (C1, S2, C3, S4); images are reused between answers.
  function renderMaps(maps) {
    const sameLayout = el.maps.children.length === maps.length &&
      maps.every((m, i) => el.maps.children[i].dataset.key === stageKey(m));
    if (!sameLayout) {
      buildStages(maps);
      refreshStageNotes();
    }
    maps.forEach((m, i) => {
      const images = Array.isArray(m.images) ? m.images : [];
      const imgs = el.maps.children[i].querySelectorAll("img.map");
      const [, h, w] = stageShape(m);
      imgs.forEach((img, j) => {
        setImage(img, images[j], w, h);
        img.title = m.name + " map " + (j + 1) + (Array.isArray(m.range) ? " · values " +
          formatNumber(m.range[0]) + " to " + formatNumber(m.range[1]) : "");
      });
    });
  }

  function buildStages(maps) {
    el.maps.replaceChildren();
    const largest = Math.max(1, ...maps.map((m) => stageShape(m)[1]));
    for (const m of maps) {
      const [count, h, w] = stageShape(m);
      const figure = document.createElement("figure");
      figure.className = "stage";
      figure.dataset.key = stageKey(m);
      figure.dataset.stage = m.name;

      const label = document.createElement("figcaption");
      label.className = "stage-label";
      label.innerHTML = '<span class="stage-name"></span><span class="stage-sep"> · </span><span class="stage-shape"></span>';
      label.querySelector(".stage-name").textContent = m.name;
      label.querySelector(".stage-shape").textContent =
        count === 1 ? h * w + " outputs" : count + "@" + h + "×" + w;

      const grid = document.createElement("div");
      grid.className = "map-grid";
      grid.style.setProperty("--cols", String(Math.max(1, Math.ceil(count / MAPS_PER_COLUMN))));
      // Smaller maps are drawn smaller, but not in proportion (S4's 5x5 would be specks).
      grid.style.setProperty("--scale", (0.42 + 0.58 * h / largest).toFixed(3));
      for (let j = 0; j < count; j += 1) {
        const img = document.createElement("img");
        img.className = "map";
        img.alt = m.name + " map " + (j + 1);
        img.src = blankUrl(w, h);
        grid.append(img);
      }
      const note = document.createElement("p");
      note.className = "stage-note";
      figure.append(label, note, grid);
      el.maps.append(figure);
    }
  }

  // One line under each stage's name: what it computes, its parameters and connections.
  function refreshStageNotes() {
    const layers = state.model && Array.isArray(state.model.layers) ? state.model.layers : [];
    for (const figure of el.maps.children) {
      const note = figure.querySelector(".stage-note");
      if (!note) continue;
      const name = figure.dataset.stage;
      const layer = layers.find((l) => l.name === name);
      const parts = [stageWhat(name, layer, layers.length > 0 && layers[0].name === name)];
      if (layer) {
        parts.push(formatCount(layer.parameters) + " parameters, " +
          formatCount(layer.connections) + " connections");
      }
      note.replaceChildren(parts.filter(Boolean).join(" · ") + " · ");
      const link = document.createElement("a");
      link.href = PAPER_URL;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.textContent = family()[1];
      note.append(link);
    }
  }

  function formatCount(n) {
    return Number(n).toLocaleString("en-US");
  }

  // Click a map: see it large (a dialog; Escape or a click closes it).
  function setUpEnlarge() {
    el.maps.addEventListener("click", (event) => {
      const img = event.target.closest("img.map");
      if (!img) return;
      el["enlarged-image"].src = img.src;
      el["enlarged-image"].alt = img.alt;
      el["enlarged-caption"].textContent = img.title || img.alt;
      el.enlarge.showModal();
    });
    el.enlarge.addEventListener("click", () => el.enlarge.close());
  }

  function stageShape(m) {
    const shape = Array.isArray(m.shape) ? m.shape.map(Number) : [];
    const count = shape[0] || (Array.isArray(m.images) ? m.images.length : 0);
    return [count, shape[1] || 1, shape[2] || shape[1] || 1];
  }

  function stageKey(m) {
    return m.name + ":" + stageShape(m).join("x");
  }

  // F6 as a 7x12 picture beside the prototypes of the nearest classes (paper's Fig. 3).
  function renderF6(f6, nearest) {
    if (!f6) {
      el.f6.hidden = true;
      return;
    }
    el.f6.hidden = false;
    setImage(el["f6-image"], f6.image, 7, 12);
    if (Array.isArray(f6.values) && f6.values.length > 0) {
      const values = f6.values.map(Number);
      el["f6-image"].title = "F6: " + values.length + " outputs, from " +
        formatNumber(Math.min(...values)) + " to " + formatNumber(Math.max(...values));
    }
    renderNearest(nearest);
  }

  function renderNearest(nearest) {
    el.nearest.replaceChildren();
    nearest.forEach((item, i) => {
      const label = item.label !== undefined && item.label !== null ? String(item.label) : String(item.digit);
      const distance = Number(item.distance);
      el.nearest.append(bitmapFigure(item.image, label,
        Number.isFinite(distance) ? "d = " + formatDistance(distance) : "", i === 0));
    });
  }

  function bitmapFigure(src, name, detail, best) {
    const figure = document.createElement("figure");
    figure.className = "bitmap-figure" + (best ? " is-best" : "");
    figure.setAttribute("role", "listitem");
    const img = document.createElement("img");
    img.className = "bitmap";
    img.alt = name ? "Prototype of class " + name : "Prototype";
    setImage(img, src, 7, 12);
    const caption = document.createElement("figcaption");
    const strong = document.createElement("strong");
    strong.textContent = name;
    caption.append(strong, detail ? " " + detail : "");
    figure.append(img, caption);
    return figure;
  }

  // Back to the empty state: no digit, empty bars, blank pictures.
  function resetResults() {
    el.digit.textContent = "?";
    el.digit.classList.add("is-empty");
    el.digit.classList.remove("is-refused");
    el["label-kind"].textContent = "waiting for a digit";
    resetScores();
    setImage(el["input-image"], null, inputSize(), inputSize());
    renderMaps(el.maps.children.length > 0 ? currentStages() : DEFAULT_MAPS);
    el.f6.hidden = !isPaperModel();
    setImage(el["f6-image"], null, 7, 12);
    el["f6-image"].removeAttribute("title");
    el.nearest.replaceChildren();
    for (let i = 0; i < NEAREST_PLACEHOLDERS; i += 1) el.nearest.append(bitmapFigure(null, "–", "", false));
    setStale(false);
  }

  // The stages now on the page, without their pictures (so renderMaps blanks them).
  function currentStages() {
    return Array.from(el.maps.children).map((figure) => {
      const [name, dims] = figure.dataset.key.split(":");
      return { name: name, shape: dims.split("x").map(Number) };
    });
  }

  function setStale(stale) {
    for (const node of [el.digit, el.scores, el["input-image"], el.maps, el.f6]) {
      node.classList.toggle("is-stale", stale);
    }
  }

  // ---------------------------------------------------------------- test digits

  async function loadSample(kind) {
    const token = ++state.sampleToken;
    const startedAt = performance.now();
    setSampleButtonsBusy(true);
    showStatus(kind === "misclassified" ? "Fetching a test digit it gets wrong…" : "Fetching a random test digit…");
    try {
      const response = await fetch("/api/sample?kind=" + encodeURIComponent(kind),
        { headers: { Accept: "application/json" } });
      const data = await readJson(response);
      if (token !== state.sampleToken) return;
      if (!response.ok || !data || data.error || typeof data.image !== "string") {
        showError(errorMessage(response, data, "no test digit available"));
        return;
      }
      const image = await loadImage(data.image);
      if (token !== state.sampleToken) return;
      resetDrawing();
      state.background = image;
      state.sample = { index: data.index, label: data.label, predicted: data.predicted, kind: kind };
      repaintPad();
      renderSampleInfo();
      // The server's answer for the test image itself; redrawn and prepared again like a
      // drawing, a digit it gets wrong may be read right. Drawing on it predicts the drawing.
      if (data.prediction && typeof data.prediction === "object" && !data.prediction.error) {
        renderPrediction(data.prediction, performance.now() - startedAt);
      } else {
        requestPrediction();
      }
    } catch (err) {
      if (token === state.sampleToken) showError("Cannot load a test digit: " + describeError(err));
    } finally {
      if (token === state.sampleToken) setSampleButtonsBusy(false);
    }
  }

  function setSampleButtonsBusy(busy) {
    const available = state.model === null || state.model.samples === true;
    el["random-digit"].disabled = busy || !available;
    el["misclassified-digit"].disabled = busy || !available;
  }

  function renderSampleInfo() {
    const info = el["sample-info"];
    info.replaceChildren();
    const s = state.sample;
    if (!s) return;
    const label = document.createElement("strong");
    label.textContent = String(s.label);
    info.append("Test image " + s.index + ", labelled ", label);
    if (s.kind === "misclassified" && s.predicted !== undefined && s.predicted !== null) {
      info.append(" · the model says " + s.predicted);
    }
    if (state.edited) info.append(" · edited");
  }

  function loadImage(src) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the test digit's image could not be decoded"));
      img.src = src;
    });
  }

  // ---------------------------------------------------------------- small helpers

  function setImage(img, src, width, height) {
    img.src = typeof src === "string" && src.length > 0 ? src : blankUrl(width, height);
  }

  // A black PNG of the given size: the placeholder before the first answer.
  function blankUrl(width, height) {
    const key = width + "x" + height;
    if (!blankUrls.has(key)) {
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, width);
      canvas.height = Math.max(1, height);
      const ctx = canvas.getContext("2d");
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      blankUrls.set(key, canvas.toDataURL("image/png"));
    }
    return blankUrls.get(key);
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch (err) {
      return null;
    }
  }

  function errorMessage(response, data, fallback) {
    if (data && typeof data.error === "string" && data.error) return data.error;
    return fallback + " (HTTP " + response.status + ")";
  }

  function describeError(err) {
    if (err && typeof err.message === "string" && err.message) return err.message;
    return String(err);
  }

  function showStatus(text) {
    el.status.textContent = text;
    el.status.classList.remove("is-error");
  }

  function showError(text) {
    if (!el.status) return;
    el.status.textContent = text;
    el.status.classList.add("is-error");
  }

  function clamp01(v) {
    return Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0;
  }

  function formatDistance(d) {
    if (!Number.isFinite(d)) return "–";
    return Math.abs(d) >= 100 ? d.toFixed(0) : d.toFixed(1);
  }

  function formatProbability(p) {
    if (!Number.isFinite(p)) return "–";
    if (p > 0 && p < 0.001) return "<0.1%";
    return (100 * p).toFixed(1) + "%";
  }

  function formatPercent(v, digits) {
    return (100 * v).toFixed(digits) + "%";
  }

  function formatNumber(v) {
    const n = Number(v);
    if (!Number.isFinite(n)) return "–";
    return Math.abs(n) >= 100 ? n.toFixed(0) : n.toFixed(2);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
