// The page's number reader (static/read.js) against golden fixtures that the Python reader
// wrote: tests/test_js_read_parity.py writes them to a temporary folder and runs
//
//   DIGITLAB_READ_FIXTURES=.../read-fixtures.json DIGITLAB_STATIC=.../static node --test tests/js/read.test.mjs
//
// The model is answered from the fixtures: each case carries every 28 x 28 the Python reader
// had scored and the bundled model's scores. read.js's images must be those to float32
// rounding, so the nearest recorded image answers each one.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { pathToFileURL } from "node:url";

const scripts = process.env.DIGITLAB_STATIC
  ? pathToFileURL(`${process.env.DIGITLAB_STATIC}/`)
  : new URL("../../src/digitlab/web/static/", import.meta.url);
const { READ_CONFIG, digitDrawing, readDrawing } = await import(new URL("read.js", scripts));

if (!process.env.DIGITLAB_READ_FIXTURES) {
  throw new Error("DIGITLAB_READ_FIXTURES is not set: run `python tests/test_js_read_parity.py FOLDER`");
}
const fixtures = JSON.parse(readFileSync(process.env.DIGITLAB_READ_FIXTURES, "utf8"));

const PIXEL_TOLERANCE = 1e-5; // Pillow's and the port's float32 sums may differ in the last bit
const CONFIDENCE_TOLERANCE = 1e-5;

function float32s(b64) {
  const bytes = Buffer.from(b64, "base64");
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
}

function maxDifference(a, b) {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** A `scoreBatch` answering from a case's recorded scores; it counts the model's calls. */
function recordedModel(scored) {
  const known = scored.map((s) => ({ image: float32s(s.image),
    scores: { probabilities: float32s(s.probabilities), notDigit: s.notDigit } }));
  const model = { calls: 0, images: 0 };
  model.scoreBatch = async (images) => {
    model.calls += 1;
    model.images += images.length;
    return images.map((image) => {
      let best = null;
      let diff = Infinity;
      for (const k of known) {
        const d = maxDifference(image, k.image);
        if (d < diff) [best, diff] = [k, d];
      }
      assert.ok(diff <= PIXEL_TOLERANCE, `an image Python never scored (off by ${diff})`);
      return best.scores;
    });
  };
  return model;
}

/** A `readFrames` answering from a case's recorded string model frames, as `recordedModel`. */
function recordedFrames(framed) {
  const known = framed.map((f) => ({ image: float32s(f.image), frames: float32s(f.frames) }));
  return async (images) => images.map((image) => {
    let best = null;
    let diff = Infinity;
    for (const k of known) {
      const d = maxDifference(image, k.image);
      if (d < diff) [best, diff] = [k, d];
    }
    assert.ok(diff <= PIXEL_TOLERANCE, `a picture the string model never read (off by ${diff})`);
    return best.frames;
  });
}

function close(actual, expected, what) {
  assert.ok(Math.abs(actual - expected) <= CONFIDENCE_TOLERANCE,
    `${what}: ${actual} against Python's ${expected}`);
}

test("READ_CONFIG is ReadConfig's defaults", () => {
  assert.deepEqual({ ...READ_CONFIG, cut_slants: [...READ_CONFIG.cut_slants] },
    fixtures.read_config);
});

describe("a drawing reads as the Python reader reads it", () => {
  for (const c of fixtures.cases) {
    test(c.name, async () => {
      const model = recordedModel(c.scored);
      const read = () => readDrawing(c.drawing, model.scoreBatch, fixtures.settings,
        READ_CONFIG, recordedFrames(c.framed));
      if (c.expected.error) {
        await assert.rejects(read(), { name: c.expected.kind, message: c.expected.error });
        return;
      }
      const r = await read();
      const want = c.expected;
      assert.equal(r.text, want.text);
      assert.deepEqual(r.reasons, want.reasons);
      assert.equal(r.unsure, want.unsure);
      close(r.confidence, want.confidence, "the number's confidence");
      assert.equal(r.digits.length, want.digits.length);
      r.digits.forEach((d, k) => {
        const e = want.digits[k];
        assert.deepEqual(d.box, e.box, `digit ${k}'s box`);
        assert.equal(d.digit, e.digit);
        assert.deepEqual(d.reasons, e.reasons, `digit ${k}'s reasons`);
        close(d.confidence, e.confidence, `digit ${k}'s confidence`);
        d.probabilities.forEach((p, i) => close(p, e.probabilities[i], `probability ${i}`));
        assert.equal(d.image.length, 28 * 28);
        assert.deepEqual(digitDrawing(c.drawing, d.box).strokes, c.strokes[k]);
      });
      if (want.digits.length === 1) { // the Predictor's fields, as `Reading.to_dict()`
        assert.equal(r.digit, want.digits[0].digit);
        assert.deepEqual(r.probabilities, r.digits[0].probabilities);
      }
      // One model call per segmentation Python tried, and one for the whole drawing at most.
      assert.ok(model.calls <= c.segmentations + 1,
        `${model.calls} calls to the model for ${c.segmentations} segmentation(s)`);
    });
  }
});
