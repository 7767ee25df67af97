// The model in the browser: onnxruntime-web (WebAssembly) running the ONNX file the
// settings name (GET api/browser on a digitlab server, settings.json on a static site).
//
//   const model = await loadModel(settings, document.baseURI);
//   const probabilities = await model.predict(image);   // Float32Array(28 * 28) -> per class
//   const { probabilities, notDigit } = await model.scores(image);  // and the detector's score
//   const each = await model.scoresMany(images);  // a number's candidate digits: one run
//
// The runtime is loaded from the files the settings name (served from this server or this
// site, never from a CDN). The graph is checked against the SHA-256 the settings give, as
// `digitlab.modelfile` checks it against the card, before it runs.

// The graph's input shape, less the batch, for each layout a card may name
// (`digitlab.card.LAYOUTS`).
const LAYOUTS = { N1HW: [1, 28, 28], NHW: [28, 28], N784: [784] };

export async function loadModel(settings, base) {
  const { runtime, card } = settings;
  if (!runtime) throw new Error("the in-browser runtime is not installed on this server");
  if (!settings.model_url) throw new Error("this model has no graph the browser can run");
  if (!(card.input.layout in LAYOUTS)) throw new Error(`unknown input layout ${card.input.layout}`);
  const url = (path) => new URL(path, base).href;
  const [ort, graph] = await Promise.all([
    import(url(runtime.module)),
    fetchBytes(url(settings.model_url)),
  ]);
  await checkSha256(graph, settings.model_sha256);
  // One thread: no worker, no cross-origin isolation needed, and a sub-1 MB model needs no more.
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = { wasm: url(runtime.wasm) };
  const session = await ort.InferenceSession.create(graph, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  return new BrowserModel(ort, session, card, settings.model_sha256);
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
    const run = this.queue.then(() => this.runMany(images));
    this.queue = run.catch(() => {}); // a session runs one request at a time
    return run;
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
    const size = images.length ? images[0].length : 0;
    const x = new Float32Array(images.length * size);
    images.forEach((image, n) => x.set(image, n * size));
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
