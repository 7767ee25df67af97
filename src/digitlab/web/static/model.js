// The model in the browser: onnxruntime-web (WebAssembly) running the ONNX file the
// settings name (GET api/browser on a digitlab server, settings.json on a static site).
//
//   const model = await loadModel(settings, document.baseURI);
//   const probabilities = await model.predict(image);   // Float32Array(28 * 28) -> per class
//   const { probabilities, notDigit } = await model.scores(image);  // and the detector's score
//   const each = await model.scoresMany(images);  // a number's candidate digits: one run
//
//   const strings = await loadStringModel(settings, document.baseURI);  // null: none here
//   const frames = await strings.framesMany(pictures);  // Float32Array(32 * 128) -> (32 * 12)
//
// The runtime is loaded from the files the settings name (served from this server or this
// site, never from a CDN). A graph is checked against the SHA-256 the settings give, as
// `digitlab.modelfile` checks it against the card, before it runs.

// The graph's input shape, less the batch, for each layout a card may name
// (`digitlab.card.LAYOUTS`).
const LAYOUTS = { N1HW: [1, 28, 28], NHW: [28, 28], N784: [784] };
// The string model's picture (`digitlab.strings.string_image`) and its frames' classes.
const STRING_PICTURE = [1, 32, 128];
const STRING_FRAMES = 32 * 12;

export async function loadModel(settings, base) {
  const { runtime, card } = settings;
  if (!runtime) throw new Error("the in-browser runtime is not installed on this server");
  if (!settings.model_url) throw new Error("this model has no graph the browser can run");
  if (!(card.input.layout in LAYOUTS)) throw new Error(`unknown input layout ${card.input.layout}`);
  const [ort, session] = await openSession(runtime, settings.model_url, settings.model_sha256, base);
  return new BrowserModel(ort, session, card, settings.model_sha256);
}

/** The string model the settings name (`digitlab.strings`: touching digits read whole), or
 * null when they name none or no runtime. */
export async function loadStringModel(settings, base) {
  const { runtime, strings } = settings;
  if (!runtime || !strings) return null;
  const [ort, session] = await openSession(runtime, strings.url, strings.sha256, base);
  return new StringModel(ort, session, strings.sha256);
}

/** [ort, a session on the graph at ``path``], the graph checked against ``sha256`` first. */
async function openSession(runtime, path, sha256, base) {
  const url = (p) => new URL(p, base).href;
  // The same URL is one module instance: two models share one runtime.
  const [ort, graph] = await Promise.all([import(url(runtime.module)), fetchBytes(url(path))]);
  await checkSha256(graph, sha256);
  // One thread: no worker, no cross-origin isolation needed, and a sub-1 MB model needs no more.
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = { wasm: url(runtime.wasm) };
  const session = await ort.InferenceSession.create(graph, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  return [ort, session];
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function checkSha256(bytes, expected) {
  if (!globalThis.crypto?.subtle) return; // plain http on a network address: no WebCrypto
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  if (hex !== expected) throw new Error("the model file does not match its SHA-256 (changed while loading?)");
}

export class BrowserModel {
  constructor(ort, session, card, sha256) {
    this.ort = ort;
    this.session = session;
    this.sha256 = sha256;
    this.classes = card.classes;
    this.input = card.input;
    // Cards written before the output block existed name the output: "probabilities".
    const index = typeof card.output === "object" ? card.output.index ?? 0 : 0;
    this.outputName = session.outputNames[index];
    // The "not a digit" detector's output (digitlab.notdigit), when the card names one.
    this.notDigitName = card.not_digit ? card.not_digit.output : null;
    this.queue = Promise.resolve(); // one run at a time: a session runs one request at once
  }

  /** Class probabilities for one float image (28 x 28, 0 = paper, 1 = ink). */
  async predict(image) {
    return (await this.scores(image)).probabilities;
  }

  /** {probabilities, notDigit}: notDigit is the detector's score, null without a detector. */
  async scores(image) {
    return (await this.scoresMany([image]))[0];
  }

  /** `scores` of each image, in one run of the graph when it takes a batch (the bundled
   * one does), else one run an image. */
  scoresMany(images) {
    return queued(this, () => this.runMany(images));
  }

  async runMany(images) {
    if (images.length > 1 && this.batched !== false) {
      try {
        const out = await this.run(images);
        this.batched = true;
        return out;
      } catch (err) {
        if (this.batched) throw err; // it took a batch before: a real failure
        this.batched = false; // a graph with a batch of one: one image a run from now on
      }
    }
    const out = [];
    for (const image of images) out.push(...(await this.run([image])));
    return out;
  }

  async run(images) {
    const { mean = 0, std = 1, layout } = this.input;
    const x = batchOf(images);
    if (mean || std !== 1) { // as `InputSpec.prepare`, in float32
      const [m, s] = [Math.fround(mean), Math.fround(std)];
      for (let i = 0; i < x.length; i++) x[i] = Math.fround(x[i] - m) / s;
    }
    const shape = [images.length, ...LAYOUTS[layout]];
    const out = await this.session.run({ [this.session.inputNames[0]]: new this.ort.Tensor("float32", x, shape) });
    const probs = out[this.outputName].data;
    const k = probs.length / images.length;
    const nd = this.notDigitName ? out[this.notDigitName].data : null;
    return images.map((_, n) => ({
      probabilities: probs.slice(n * k, (n + 1) * k), notDigit: nd ? nd[n] : null,
    }));
  }
}

/** The string model: `digitlab.strings.StringModel.frames` in the browser. */
export class StringModel {
  constructor(ort, session, sha256) {
    this.ort = ort;
    this.session = session;
    this.sha256 = sha256;
    this.queue = Promise.resolve(); // one run at a time, as `BrowserModel`
  }

  /** Each picture's (Float32Array(32 * 128), `string_image`) frame probabilities, frame t's
   * class c at t * 12 + c: one run of the graph for them all. */
  framesMany(images) {
    return queued(this, () => this.run(images));
  }

  async run(images) {
    if (!images.length) return [];
    const x = new this.ort.Tensor("float32", batchOf(images), [images.length, ...STRING_PICTURE]);
    const out = await this.session.run({ [this.session.inputNames[0]]: x });
    const frames = out[this.session.outputNames[0]].data;
    if (frames.length !== images.length * STRING_FRAMES) {
      throw new Error("the string model's output is not N x 32 x 12");
    }
    return images.map((_, n) => frames.slice(n * STRING_FRAMES, (n + 1) * STRING_FRAMES));
  }
}

/** ``task`` run after ``model``'s earlier runs: a session runs one request at a time. */
function queued(model, task) {
  const run = model.queue.then(task);
  model.queue = run.catch(() => {});
  return run;
}

/** Equal-sized images as one Float32Array, one after another: a batch's input. */
function batchOf(images) {
  const size = images.length ? images[0].length : 0;
  const x = new Float32Array(images.length * size);
  images.forEach((image, n) => x.set(image, n * size));
  return x;
}
