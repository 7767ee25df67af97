// The page's stroke path and verdict (static/preprocess.js) against golden fixtures that the
// Python code wrote: tests/test_js_parity.py writes them to a temporary folder and runs
//
//   DIGITLAB_FIXTURES=.../fixtures.json DIGITLAB_STATIC=.../static node --test tests/js/
//
// (DIGITLAB_STATIC: a folder holding the page's scripts; by default the package's own).
// Node's own test runner and assert: nothing to install.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { pathToFileURL } from "node:url";

const scripts = process.env.DIGITLAB_STATIC
  ? pathToFileURL(`${process.env.DIGITLAB_STATIC}/`)
  : new URL("../../src/digitlab/web/static/", import.meta.url);
const { judge, preprocessStrokes, verdictOf } = await import(new URL("preprocess.js", scripts));

if (!process.env.DIGITLAB_FIXTURES) {
  throw new Error("DIGITLAB_FIXTURES is not set: run `python tests/test_js_parity.py FOLDER` first");
}
const fixtures = JSON.parse(readFileSync(process.env.DIGITLAB_FIXTURES, "utf8"));

// Pillow's and this port's float32 arithmetic agree to the last bit on every fixture so far;
// the browser parity test allows float32 rounding, and so does this one.
const PIXEL_TOLERANCE = 1e-6;

/** The largest difference between two images, or Infinity when their sizes differ. */
function maxDifference(image, expected) {
  if (image.length !== expected.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < image.length; i++) worst = Math.max(worst, Math.abs(image[i] - expected[i]));
  return worst;
}

/** What `BrowserModel.scores` hands the page: float32 probabilities, the detector's score. */
function modelScores(scores) {
  if (scores === null) return null;
  return { probabilities: Float32Array.from(scores.probabilities), notDigit: scores.notDigit };
}

/** The Predictor's answer (fixtures' "expected") without the page's reading of it. */
function withoutVerdict({ verdict, ...answer }) {
  return answer;
}

describe("a drawing becomes the Python image, with the same diagnostics", () => {
  for (const c of fixtures.drawings) {
    test(`${c.name} (${c.config})`, () => {
      const config = fixtures.configs[c.config];
      if (c.expected.error) {
        assert.throws(() => preprocessStrokes(c.drawing, config), { message: c.expected.error });
        return;
      }
      const { image, ...diagnostics } = preprocessStrokes(c.drawing, config);
      const { image: expected, ...expectedDiagnostics } = c.expected;
      assert.deepEqual(diagnostics, expectedDiagnostics);
      if (expected === null) {
        assert.equal(image, null);
      } else {
        assert.ok(image !== null, "no ink found, where Python found some");
        const diff = maxDifference(image, expected);
        assert.ok(diff <= PIXEL_TOLERANCE, `pixels differ by up to ${diff}`);
      }
    });
  }
});

describe("the bundled model's scores for a drawing are judged as the Predictor judges them", () => {
  const { classes, trust } = fixtures.bundled;
  for (const c of fixtures.drawings.filter((d) => d.model)) {
    test(c.name, () => {
      const norm = preprocessStrokes(c.drawing, fixtures.configs[c.config]);
      const answer = judge(norm, modelScores(c.model.scores), classes, trust);
      assert.deepEqual(answer, withoutVerdict(c.model.expected));
      assert.equal(verdictOf(answer), c.model.expected.verdict);
      // The server's answer (POST api/predict) reads the same on the page.
      assert.equal(verdictOf(c.model.server), c.model.expected.verdict);
    });
  }
});

describe("the trust rules, just passed and just broken, say what the Predictor says", () => {
  for (const c of fixtures.verdicts) {
    test(c.name, () => {
      const size = fixtures.configs.bundled.canvas ** 2;
      const norm = { ...c.norm, image: c.norm.inked ? new Float32Array(size) : null };
      const answer = judge(norm, modelScores(c.scores), c.classes, c.trust);
      assert.deepEqual(answer, withoutVerdict(c.expected));
      assert.equal(verdictOf(answer), c.expected.verdict);
      assert.equal(verdictOf(c.server), c.expected.verdict);
    });
  }
});
