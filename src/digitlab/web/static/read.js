// The number reader of `digitlab.read`, for drawings, in the browser: "7" and "2026" with one
// call, with the same result as `Reader().read(strokes)` in Python.
//
//   const reading = await readDrawing(drawing, scoreBatchOf(model), settings);
//   reading.text        // "2026"; "" when there is no ink; "?" for a part that is not a digit;
//                       // "." for a decimal point or comma between digits ("3.14")
//   reading.digits      // [{box, digit, confidence, unsure, reasons, probabilities, image}]
//   reading.confidence, reading.unsure, reading.reasons
//   digitDrawing(drawing, reading.digits[1].box)   // the strokes of one digit ("Wrong?")
//
// `settings` is what the page already has (GET api/browser, settings.json): the card's
// preprocessing constants, its classes and the trust rules. The segmentation's own constants
// are READ_CONFIG below, `ReadConfig`'s defaults (tests/test_js_read_parity.py checks them
// against Python's). The model is the caller's: `scoreBatch(images)` gets the 28 x 28 images
// (Float32Array each) and answers [{probabilities, notDigit}] in order. The reader asks once
// per segmentation for all its candidate digits, and once for the whole drawing read as one
// digit (the Predictor's reading), when it needs that. So is the string model
// (`digitlab.strings`, model.js `loadStringModel`): `readFrames(images)` gets 32 x 128
// pictures and answers each one's 32 x 12 frame probabilities (`framesBatchOf`); without it
// (null) the reader is `Reader(string_model=None)`'s.
//
// The steps are read.py's (its docstring and docs/numbers.md say why each is so):
//   1. the drawing rendered so the line is 64 px high (`_strokes_page`);
//   2. pieces of ink, dust dropped, pieces overlapping in x merged (`_primitives`);
//   3. each piece split between its strokes, left to right (`_stroke_parts`), where it
//      holds few enough and none too wide; when no digit of that reading is in doubt, it is
//      the reading; else wide pieces cut along straight lines at the writing's slant (`_cuts`)
//      and, in another segmentation, along drop-fall paths where those cross less ink
//      (`_bend`), and the best of them is read;
//   4. each plausible group of primitives made a 28 x 28 as `preprocess` makes one from ink;
//   5. a group joining strokes that the string model reads as several digits pays for it
//      (`_doubt_joins`);
//   6. the best path by dynamic programming (`_two_best`), never splitting one digit
//      (`_one_digit`).
// Floating-point work follows numpy's order of operations where a tie could turn on the last
// bit (pairwise sums, float32 percentiles, Pillow's resampling), so the cuts fall on the same
// pixels as in Python.
import {
  adjustStroke, checkConfig, countBlobs, filledEllipse, fit, judge, preprocessStrokes, pyRound,
  wideLine, thinLine, point,
} from "./preprocess.js";

const f32 = Math.fround;

/** `ReadConfig`'s defaults (lengths in line heights H); read.py says what each one does. */
export const READ_CONFIG = Object.freeze({
  max_digits: 32,
  max_pieces: 128,
  max_primitives: 128,
  max_candidates: 256,
  max_group: 4,
  merge_overlap: 0.5,
  cut_width: 1.0,
  min_digit_width: 0.15,
  cut_every: 0.3,
  cut_window: 0.08,
  cut_slants: Object.freeze([0.0, -0.1, 0.1]),
  cut_spacing: 0.15,
  min_cut_side: 0.1,
  cut_band: 0.0,
  drop_fall: true,
  drop_fall_images: false,
  drop_band: 0.5,
  max_width: 1.7,
  stroke_pieces: true,
  max_piece_strokes: 12,
  stroke_cut_width: 1.7,
  strokes_sure_from: -1.5, // ... read first: when no digit scores under this, not cut too
  max_gap: 0.35,
  // Touching pairs read whole by the pair model: images only (read.py), never a drawing.
  pairs: true,
  pair_aspect: 0.75,
  pair_max_width: 2.6,
  pair_max_group: 8,
  pair_cost: -0.5,
  pair_min: 0.3,
  // Touching digits read whole by the string model: images only too (read.py).
  strings: true,
  string_max_width: 4.6,
  string_max_group: 12,
  string_cost: -0.5,
  string_min: 0.3,
  // A touching digit of those runs the digit model settles: images only too (read.py).
  settle_unsure: 0.8,
  settle_sure: 0.9,
  // A drawing's group joining strokes that the string model reads as several digits pays.
  join_string_weight: 0.3,
  join_string_aspect: 0.5,
  join_string_from: -2.0,
  not_pair: 0.8,
  one_stroke_wide: true,
  points: true,
  point_size: 0.4,
  point_low: 0.6,
  point_mass: 0.005,
  point_gap: 0.06,
  point_aspect: 3.0,
  speck_fraction: 0.02,
  noise_fraction: 0.005,
  line_height: 64,
  max_side: 4096,
  digit_cost: 0.5,
  not_digit_weight: 2.0,
  wide_weight: 6.7,
  wide_from: 1.1,
  short_weight: 6.0,
  short_from: 0.6,
  gap_weight: 8.4,
  cut_cost: 1.0,
  stroke_cut_cost: 2.0,
  lift_cost: 0.5,
  lift_not_digit_weight: 1.0,
  lift_not_digit_from: 0.2,
  stroke_side: 0.02,
  parts_join_cost: 2.0,
  parts_tall: 0.75,
  parts_sure: 0.99,
  apart_weight: 1.8,
  unclear_margin: 1.0,
  split_scale_images: 3.0, // pictures only: not used here
  split_scale_drawings: 1.0,
  one_narrow: 0.6,
  one_gap: 0.1,
  one_aspect: 1.0,
  one_max_aspect: 2.5,
  one_fragment: 0.6,
  one_confidence: 0.9,
  one_sure_aspect: 1.3, // pictures only: not used here
  one_sure: 0.999,
  one_margin: 0.9,
});

/** A drawing holding more digits (or pieces of ink) than a reading allows. */
export class TooManyDigits extends Error {
  constructor(message) {
    super(message);
    this.name = "TooManyDigits";
  }
}

// ------------------------------------------------------------------ the entry points

/**
 * Read the digit or number in a drawing {strokes, width, height, pen} (canvas pixels).
 * ``scoreBatch(images)`` runs the model; ``settings`` holds `preprocessing`, `trust` and
 * `card.classes` (the page's settings). Resolves to the shape of `Reading.to_dict()` (values
 * not rounded), each digit with the 28 x 28 `image` the model saw. Throws `TooManyDigits`
 * beyond `max_digits` digits (or `max_pieces` pieces), an Error for more points than the
 * preprocessing allows. Ink longer than a line of `max_digits` digits (a rule, a dash), cut
 * into more than `max_primitives` primitives, or segmented into more than `max_candidates`
 * candidate digits over all segmentations, is read whole, as the Predictor reads it.
 */
export async function readDrawing(drawing, scoreBatch, settings, config = READ_CONFIG,
  readFrames = null) {
  const pconf = checkConfig(settings.preprocessing);
  const d = asStrokes(drawing, pconf);
  const reader = new Reader(d, scoreBatch, settings, config, readFrames);
  const page = strokesPage(d, config);
  if (page === null) return reader.one();
  const cache = new Map();
  let [byStrokes, first] = [null, null];
  if (page.penPaths !== null) { // strokes that can be told: split between them first
    byStrokes = primitives(page, { ...config, drop_fall: false }, true);
    first = byStrokes === null ? null : await reader.paths(page, byStrokes, cache);
    if (first !== null && weakest(first, byStrokes) >= config.strokes_sure_from) {
      return reader.bestPath(byStrokes, first);
    }
  }
  let best = primitives(page, { ...config, drop_fall: false });
  let found = best === null ? null : await reader.paths(page, best, cache);
  if (found === null) best = null;
  const others = [];
  if (config.drop_fall && best !== null && new Set(best.units).size < best.units.length) {
    // a piece was cut: cuts that follow drop-fall paths where those cross less ink
    others.push(primitives(page, config));
  }
  if (page.penPaths !== null && reader.doubt(best, found)) {
    // a drawing read with doubt: its pieces split between their strokes (above)
    others.push(byStrokes);
  }
  for (const other of others) { // the classifier chooses: the better best path
    if (other === null || (best !== null && sameLabels(other.labels, best.labels))) continue;
    const alt = other === byStrokes ? first : await reader.paths(page, other, cache);
    if (alt !== null && (found === null || alt.paths[0][0] > found.paths[0][0])) {
      [best, found] = [other, alt];
    }
  }
  if (best === null || found === null) return reader.one();
  return reader.bestPath(best, found);
}

/**
 * The strokes of a drawing that make up the digit read in ``box`` (`read.digit_drawing`):
 * those with at least half their points in the box grown by the pen's radius.
 */
export function digitDrawing(drawing, box) {
  const d = asStrokes(drawing);
  const r = d.pen / 2;
  const [x0, y0, x1, y1] = [box[0] - r, box[1] - r, box[2] + r, box[3] + r];
  const inside = ([x, y]) => x0 <= x && x <= x1 && y0 <= y && y <= y1;
  const strokes = d.strokes.filter((s) => 2 * s.filter(inside).length >= s.length);
  return { ...drawing, strokes, pen: d.pen };
}

/** A ``scoreBatch`` for `BrowserModel` (model.js): the whole list in one run. */
export function scoreBatchOf(model) {
  return (images) => (images.length ? model.scoresMany(images) : Promise.resolve([]));
}

/** A ``readFrames`` for the string model (model.js `loadStringModel`): one run a list. */
export function framesBatchOf(model) {
  return (images) => (images.length ? model.framesMany(images) : Promise.resolve([]));
}

/** A drawing as `Drawing.digit()` makes it: empty strokes dropped, points [x, y], pen 1. */
function asStrokes(drawing, pconf) {
  const strokes = (drawing.strokes ?? []).filter((s) => s.length > 0)
    .map((s) => s.map((p) => [p[0], p[1]]));
  let count = 0;
  for (const s of strokes) count += s.length;
  if (pconf && count > pconf.max_points) {
    throw new Error(`drawing: more than ${pconf.max_points} points`);
  }
  return { strokes, width: drawing.width, height: drawing.height, pen: drawing.pen ?? 1 };
}

/** The score of the best path's weakest group (`_weakest`). */
function weakest(found, prims) {
  const n = prims.units.length;
  let least = Infinity;
  for (const [i, j] of found.paths[0][1]) least = Math.min(least, found.score.get(i * (n + 1) + j));
  return least;
}

function sameLabels(a, b) {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ------------------------------------------------------------------ the reader

/** One reading: the drawing, the model, the settings; `Reader` in read.py. */
class Reader {
  constructor(drawing, scoreBatch, settings, config, readFrames) {
    this.drawing = drawing;
    this.scoreBatch = scoreBatch;
    this.readFrames = readFrames;
    this.pconf = settings.preprocessing;
    // A drawing's digits get at least MNIST's stroke, as a drawing alone gets (`_drawn_config`):
    // the page is drawn with the writer's pen.
    this.drawn = { ...this.pconf, stroke_range: [this.pconf.stroke, this.pconf.stroke_range[1]] };
    this.classes = settings.card.classes;
    this.trust = settings.trust;
    this.config = config;
    this.whole = null; // the Predictor's reading of the whole drawing, made once
  }

  /** The Predictor's one digit for the whole drawing (`Predictor.predict`). */
  async predictWhole() {
    if (this.whole === null) {
      const norm = preprocessStrokes(this.drawing, this.pconf);
      const scores = norm.image === null ? null : (await this.scoreBatch([norm.image]))[0];
      this.whole = { norm, answer: judge(norm, scores, this.classes, this.trust) };
    }
    return this.whole;
  }

  /** The whole drawing as one digit (`Reader._one`): exactly the Predictor's reading. */
  async one() {
    const { norm, answer } = await this.predictWhole();
    if (norm.image === null) {
      return { text: "", digits: [], confidence: 0, unsure: true, reasons: answer.reasons };
    }
    return reading([digitOf(norm.inkBox ?? [0, 0, 0, 0], answer, norm.image)], []);
  }

  /** The best paths (`twoBest`), the groups tried and their 28 x 28s (`Reader._paths`). */
  async paths(page, prims, cache) {
    const cfg = this.config;
    const n = prims.units.length;
    const points = pointsOf(prims, cfg);
    const groups = [];
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j <= Math.min(n, i + cfg.max_group); j++) {
        let point = false;
        for (let k = i; k < j; k++) point ||= points.has(k);
        if ((j === i + 1 || plausible(prims, i, j, cfg)) && !point) groups.push([i, j]);
      }
    }
    for (const [i, j] of wholeUnits(prims)) { // a wide 7 cut in 5 is still one candidate
      if (j - i > cfg.max_group && plausible(prims, i, j, cfg)) groups.push([i, j]);
    }
    // A group's 28 x 28 and scores depend only on its pixels: a second segmentation of the
    // same page reuses those of the groups it shares.
    const keys = groups.map(([i, j]) => groupKey(prims, i, j));
    const todo = [...new Set(keys.filter((k) => !cache.has(k)))];
    if (cache.size + todo.length > cfg.max_candidates) { // bounded work, whatever the ink:
      return null; // a long dash cut a hundred ways is read whole, at once
    }
    const fresh = new Map(todo.map((k) => {
      const [i, j] = groups[keys.indexOf(k)];
      return [k, normalizedGroup(page, prims, i, j, this.drawn)];
    }));
    const inked = todo.filter((k) => fresh.get(k).image !== null);
    const scores = inked.length ? await this.scoreBatch(inked.map((k) => fresh.get(k).image)) : [];
    inked.forEach((k, m) => cache.set(k, { norm: fresh.get(k), scores: scores[m] }));
    for (const k of todo) if (!cache.has(k)) cache.set(k, { norm: fresh.get(k), scores: null });
    const threshold = this.trust.not_digit ?? null;
    const score = new Map();
    const norms = [];
    groups.forEach(([i, j], g) => {
      const { norm, scores: s } = cache.get(keys[g]);
      norms.push(norm);
      score.set(i * (n + 1) + j, s === null ? -1e9 : groupScore(prims, i, j, s, threshold, cfg));
    });
    const at = new Map(groups.map(([i, j], g) => [i * (n + 1) + j, g]));
    for (const [i, j] of cfg.one_stroke_wide ? wholeUnits(prims) : []) { // a piece of its
      const g = at.get(i * (n + 1) + j); // own read surely as a digit, drawn in one stroke:
      if (g === undefined) continue; // wide, but one digit (`_paths`)
      const wide = widePenalty(prims, i, j, cfg);
      const { scores: s } = cache.get(keys[g]);
      if (wide > 0 && s !== null && sureDigit(s, threshold, cfg) && oneStroke(prims, i, j)) {
        score.set(i * (n + 1) + j, score.get(i * (n + 1) + j) + wide);
      }
    }
    await this.doubtJoins(page, prims, points, cache, score, groups, keys);
    const alone = (k) => { // the scores of stroke k alone (none: a decimal point)
      const g = at.get(k * (n + 1) + k + 1);
      return g === undefined ? null : cache.get(keys[g]).scores;
    };
    joinSureParts(prims, groups, alone, score, threshold, cfg);
    for (const k of points) score.set(k * (n + 1) + k + 1, 0.0); // a decimal point: no digit
    return {
      paths: twoBest(n, score, points), groups, norms, scores: cache, keys, score,
      points,
    };
  }

  /**
   * A group joining strokes, as wide as `join_string_aspect` and scoring at least
   * `join_string_from`, that the string model reads as several digits pays
   * `join_string_weight` per unit of log P(those digits) over log P(its one digit)
   * (`Reader._doubt_joins`). Its readings share the candidates' cache and bound.
   */
  async doubtJoins(page, prims, points, cache, score, groups, keys) {
    const cfg = this.config;
    if (this.readFrames === null || !cfg.join_string_weight) return;
    const n = prims.units.length;
    const joined = [];
    groups.forEach(([i, j], g) => {
      const s = score.get(i * (n + 1) + j);
      const [x0, y0, x1, y1] = spanOf(prims.boxes, i, j);
      let point = false;
      for (let k = i; k < j; k++) point ||= points.has(k);
      if (s >= cfg.join_string_from && joinsStrokes(prims, i, j, cfg) && !point
          && x1 - x0 >= cfg.join_string_aspect * (y1 - y0)) joined.push(g);
    });
    const skeys = joined.map((g) => `string:${keys[g]}`);
    const todo = [...new Set(skeys.filter((k) => !cache.has(k)))];
    if (cache.size + todo.length > cfg.max_candidates) return; // bounded, as the candidates
    if (todo.length) {
      const images = todo.map((k) => {
        const [i, j] = groups[joined[skeys.indexOf(k)]];
        return stringImage(groupInk(page, prims, i, j));
      });
      const frames = await this.readFrames(images);
      todo.forEach((k, m) => cache.set(k, frames[m]));
    }
    joined.forEach((g, m) => {
      const frames = cache.get(skeys[m]);
      const labels = bestLabels(frames);
      if (labels.length < 2 || labels.includes(STRING_X)) return;
      const { scores: s } = cache.get(keys[g]);
      const one = textProbability(frames, [this.classes[argmax(s.probabilities)] + 1]);
      const over = Math.log(Math.max(textProbability(frames, labels), 1e-300))
        - Math.log(Math.max(one, 1e-300));
      const [i, j] = groups[g];
      const key = i * (n + 1) + j;
      score.set(key, score.get(key) - cfg.join_string_weight * Math.max(0, over));
    });
  }

  /**
   * The ink's segmentation leaves doubt (`Reader._doubt`): a single piece, a piece cut, or a
   * digit of the best path read with under `one_confidence` (or penalised as much).
   */
  doubt(prims, found) {
    if (prims === null || found === null || new Set(prims.units).size < prims.units.length) {
      return true;
    }
    const cfg = this.config;
    return weakest(found, prims) < Math.log(cfg.one_confidence) - cfg.digit_cost;
  }

  /** The reading of the best path (`Reader._best_path`). */
  async bestPath(prims, found) {
    const cfg = this.config;
    const [total, best] = found.paths[0];
    const isPoint = ([i, j]) => found.points.has(i) && j === i + 1;
    const nDigits = best.filter((g) => !isPoint(g)).length;
    if (nDigits > cfg.max_digits) {
      throw new TooManyDigits(
        `more than ${cfg.max_digits} digits in the picture (${nDigits} found); ` +
        `read at most ${cfg.max_digits} at a time`);
    }
    if (nDigits === 1) return this.one();
    // a "." after this many digits; "1.5" is no 5: never the one-digit reading
    const points = [];
    best.forEach((g, k) => { if (isPoint(g)) points.push(k - points.length); });
    const one = points.length ? null : await this.oneDigit(prims, found);
    if (one !== null) return one;
    const reasons = [];
    // How sure the split is: the best path against the best with another number of digits,
    // their scores taken as log odds (`Reader._best_path`).
    const margin = found.paths.length > 1 ? total - found.paths[1][0] : Infinity;
    if (margin < cfg.unclear_margin) reasons.push("unclear split");
    const at = new Map(found.groups.map(([i, j], g) => [`${i},${j}`, g]));
    const digits = best.filter((g) => !isPoint(g)).map(([i, j]) => {
      const g = at.get(`${i},${j}`);
      const norm = { ...found.norms[g] };
      norm.nBlobs = countBlobs(norm.image, this.pconf); // counted for the kept digits only
      // The scores the group got in its batch: the Predictor runs the same image again.
      const { scores } = found.scores.get(found.keys[g]);
      return digitOf(norm.inkBox, judge(norm, scores, this.classes, this.trust), norm.image);
    });
    // How sure the split is: its margin as log odds, scaled (a drawing's scale: the page
    // reads drawings only).
    const split = 1 / (1 + Math.exp(-Math.min(cfg.split_scale_drawings * margin, 700)));
    return reading(digits, reasons, split, points);
  }

  /**
   * The whole drawing as the Predictor's one digit, unless the best path of several digits
   * is decisively better (`Reader._one_digit`).
   */
  async oneDigit(prims, found) {
    const cfg = this.config;
    const [total, path] = found.paths[0];
    const [x0, y0, x1, y1] = spanOf(prims.boxes, 0, prims.boxes.length);
    const [w, h] = [x1 - x0, y1 - y0];
    if (w > cfg.one_max_aspect * h) return null;
    let tall = Infinity;
    for (const [i, j] of path) {
      const b = spanOf(prims.boxes, i, j);
      tall = Math.min(tall, b[3] - b[1]);
    }
    const fragment = tall < cfg.one_fragment * h;
    const { answer } = await this.predictWhole();
    const sure = answer.confidence >= cfg.one_confidence;
    const at = new Map(found.groups.map(([i, j], g) => [`${i},${j}`, g]));
    const threshold = this.trust.not_digit ?? null;
    const parts = path.map(([i, j]) => found.scores.get(found.keys[at.get(`${i},${j}`)]).scores);
    const partsSure = parts.filter((scores) => sureDigit(scores, threshold, cfg)).length;
    const flaggedPart = parts.some((scores) => flagged(scores, threshold));
    if (answer.digit === null && ((flaggedPart && 2 * partsSure <= path.length) // "?6"
        || (w <= cfg.one_aspect * h && partsSure < path.length))) {
      // a shape the detector saw whole: not a number of "not a digit"s and unsure digits,
      // and when no wider than high, its parts read as digits only if each surely is one
      return this.one();
    }
    // sure digits apart (or a pen-up apart), none a fragment: a number, "11" however narrow,
    // and though two digits look "not a digit" whole
    const apart = partsSure === path.length && !cutBetween(prims, path) && !fragment;
    if (w <= cfg.one_narrow * h) { // else a one (or a 7) as thin as two ones: one digit,
      const spaced = path.slice(1).every(([i, j], k) => // unless "11" written apart
        spanOf(prims.boxes, i, j)[0] - spanOf(prims.boxes, ...path[k])[2]
          >= cfg.one_gap * prims.height);
      return apart && spaced ? null : this.one();
    }
    if (!(sure || fragment) || (apart && answer.digit === null)) return null;
    const wide = w > cfg.one_aspect * h;
    if (wide || (answer.digit === null && !fragment)) { // wide, or surely no digit
      const one = Math.log(Math.max(answer.confidence, 1e-9)) - cfg.digit_cost;
      if (total >= one - cfg.one_margin * (path.length - 1)) return null;
    }
    return this.one();
  }
}

/** One digit of a reading: `DigitReading.to_dict()`, with the image the model saw. */
function digitOf(box, answer, image) {
  return { box: [...box], ...answer, image };
}

/**
 * `_reading` and `Reading.to_dict()`: a one-digit reading carries the digit's fields too.
 * The confidence is the digits' times ``split``, how sure the segmentation is.
 */
function reading(digits, reasons, split = 1, points = []) {
  const chars = digits.map((d) => (d.digit === null ? "?" : String(d.digit)));
  for (const at of [...points].reverse()) chars.splice(at, 0, ".");
  const text = chars.join("");
  const confidence = (digits.length ? digits.reduce((p, d) => p * d.confidence, 1) : 0) * split;
  const why = [...new Set([...digits.flatMap((d) => d.reasons), ...reasons])];
  const unsure = digits.some((d) => d.unsure) || reasons.length > 0 || digits.length === 0;
  const out = {};
  if (digits.length === 1) {
    const { box, ...fields } = digits[0];
    Object.assign(out, fields);
  }
  return Object.assign(out, { text, digits, confidence, unsure, reasons: why });
}

/**
 * The best path through primitives 0..n, and the best one with another number of digits
 * when there is one (`_two_best`): [[total, [[i, j], ...]], ...]. ``score`` maps
 * i * (n + 1) + j to group i..j-1's score; a primitive of ``points`` alone is a decimal
 * point, no digit.
 */
function twoBest(n, score, points = new Set()) {
  const digitsOf = (i, j) => (points.has(i) && j === i + 1 ? 0 : 1);
  // best[j]: digits -> [total, back pointer], in the order found (Python's dict order)
  const best = [new Map([[0, [0.0, -1]]])];
  for (let j = 1; j <= n; j++) {
    const here = new Map();
    for (let i = 0; i < j; i++) { // (a whole piece may be more than `max_group` primitives)
      const s = score.get(i * (n + 1) + j);
      if (s === undefined || s <= -1e8) continue;
      const k = digitsOf(i, j);
      for (const [length, [total]] of best[i]) {
        const t = total + s;
        const old = here.get(length + k);
        if (old === undefined || t > old[0]) here.set(length + k, [t, i]);
      }
    }
    best.push(here);
  }
  if (best[n].size === 0) { // nothing could be read: one primitive at a time, however bad
    return [[-1e9, Array.from({ length: n }, (_, i) => [i, i + 1])]];
  }
  const ranked = [...best[n]].sort((a, b) => b[1][0] - a[1][0]).slice(0, 2);
  return ranked.map(([length, [total]]) => {
    const path = [];
    for (let j = n, k = length; j > 0;) {
      const i = best[j].get(k)[1];
      path.push([i, j]);
      k -= digitsOf(i, j);
      j = i;
    }
    return [total, path.reverse()];
  });
}

/**
 * The pieces the speck rule drops that look like a decimal point (`_point_specks`): at
 * least `point_mass` of the biggest, a dot or a short comma, small, low in the line, apart
 * from the kept ink on either side.
 */
function pointSpecks(boxes, mass, keep, heaviest, cfg) {
  const kept = boxes.filter((_, k) => keep[k]);
  const small = [];
  boxes.forEach((_, k) => { if (!keep[k] && mass[k] >= cfg.point_mass * heaviest) small.push(k); });
  if (!cfg.points || kept.length < 2 || small.length === 0) return [];
  const top = median(kept.map((b) => b[1]));
  const bottom = median(kept.map((b) => b[3]));
  const line = median(kept.map((b) => b[3] - b[1]));
  return small.slice(0, 4 * cfg.max_pieces).filter((k) => { // bounded work
    const cx = (boxes[k][0] + boxes[k][2]) / 2;
    const left = kept.filter((b) => b[2] <= cx).map((b) => b[2]);
    const right = kept.filter((b) => b[0] >= cx).map((b) => b[0]);
    return left.length > 0 && right.length > 0
      && pointShaped(boxes[k], Math.max(...left), Math.min(...right), top, bottom, line, cfg);
  });
}

/**
 * A dot or a short comma, small, low in the line, apart from the ink ending at ``left``
 * and that starting at ``right`` (`_point_shaped`).
 */
function pointShaped([x0, y0, x1, y1], left, right, top, bottom, line, cfg) {
  const [w, h, gap] = [x1 - x0, y1 - y0, cfg.point_gap * line];
  return Math.max(w, h) <= cfg.point_size * line
    && Math.max(w, h) <= cfg.point_aspect * Math.min(w, h)
    && (y0 + y1) / 2 >= top + cfg.point_low * (bottom - top)
    && x0 - left >= gap && right - x1 >= gap;
}

/**
 * The primitives that are a decimal point or comma (`_points`): a piece of its own, small,
 * low in the line, between two pieces at least half the line high and apart from both.
 */
function pointsOf(prims, cfg) {
  const n = prims.units.length;
  const H = prims.height;
  const out = new Set();
  if (!cfg.points || n < 3) return out;
  const units = new Map();
  const count = new Map();
  prims.units.forEach((u, k) => {
    const b = prims.boxes[k];
    const o = units.get(u);
    units.set(u, o === undefined ? [...b]
      : [Math.min(o[0], b[0]), Math.min(o[1], b[1]), Math.max(o[2], b[2]), Math.max(o[3], b[3])]);
    count.set(u, (count.get(u) ?? 0) + 1);
  });
  const tall = new Set([...units].filter(([, b]) => b[3] - b[1] >= 0.5 * H).map(([u]) => u));
  if (tall.size < 2) return out;
  const top = median([...tall].map((u) => units.get(u)[1]));
  const bottom = median([...tall].map((u) => units.get(u)[3]));
  for (let k = 1; k < n - 1; k++) {
    const box = prims.boxes[k];
    const [left, right] = [prims.units[k - 1], prims.units[k + 1]];
    if (count.get(prims.units[k]) === 1 && tall.has(left) && tall.has(right) && left !== right
        && units.get(left)[2] <= (box[0] + box[2]) / 2 && (box[0] + box[2]) / 2 <= units.get(right)[0]
        && pointShaped(box, prims.boxes[k - 1][2], prims.boxes[k + 1][0], top, bottom, H, cfg)) {
      out.add(k);
    }
  }
  return out;
}

// ------------------------------------------------------------------ the page

/**
 * The drawing rendered so the line is `line_height` pixels high (`_strokes_page`), with the
 * writer's pen, at most MNIST's: {ink (Float32Array, 0 = paper), w, h, scale, penPaths},
 * where a page pixel x is x * scale[0] + scale[2] on the canvas; penPaths: the strokes as
 * placed on the page and the pen, to number them by (`strokesOf`), null for a drawing of too
 * many strokes. Null when there are no points.
 */
function strokesPage(drawing, cfg) {
  const pts = drawing.strokes.flat();
  if (pts.length === 0) return null;
  let [lox, loy, hix, hiy] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [x, y] of pts) {
    lox = Math.min(lox, x); loy = Math.min(loy, y);
    hix = Math.max(hix, x); hiy = Math.max(hiy, y);
  }
  const [ex, ey] = [Math.max(hix - lox, 1e-6), Math.max(hiy - loy, 1e-6)];
  const mnistPen = cfg.line_height / 8; // MNIST's stroke: 2.5 px of a 20-px digit
  let scale = Math.min((cfg.line_height - mnistPen) / ey, (cfg.max_side - mnistPen) / ex);
  if (Math.max(ex, ey) <= 1e-6) scale = 1.0; // a dot
  // The pen the writer saw (digits that did not touch on the canvas do not touch here).
  const pen = Math.min(Math.max(drawing.pen * scale, 2.0), mnistPen);
  const w = Math.ceil((hix - lox) * scale + pen) + 2;
  const h = Math.ceil((hiy - loy) * scale + pen) + 2;
  const off = pen / 2 + 1;
  const placed = leftToRight(drawing.strokes).map((s) =>
    s.map(([x, y]) => [(x - lox) * scale + off, (y - loy) * scale + off]));
  const img = drawPage(placed, w, h, pen);
  const ink = new Float32Array(w * h);
  for (let i = 0; i < img.length; i++) ink[i] = img[i] / 255;
  const split = cfg.stroke_pieces && placed.length <= 4 * cfg.max_pieces;
  const k = 1 / scale;
  return { ink, w, h, scale: [k, k, lox - off * k, loy - off * k],
    penPaths: split ? { strokes: placed, pen } : null, pieces: null, strokes: null };
}

/**
 * A drawing's strokes ordered by the middle of each one's extent in x, ties in the order
 * drawn (`left_to_right`): a person goes back to cross a 7 or to put a 5's hat on.
 */
function leftToRight(strokes) {
  const middle = (s) => {
    if (s.length === 0) return 0.0;
    let [lo, hi] = [Infinity, -Infinity];
    for (const p of s) { lo = Math.min(lo, p[0]); hi = Math.max(hi, p[0]); }
    return lo + hi;
  };
  const keyed = strokes.map((s) => [middle(s), s]);
  return keyed.sort((a, b) => a[0] - b[0]).map(([, s]) => s); // a stable sort: ties as drawn
}

/**
 * The drawing's strokes over the page (`Page.strokes`): Int32Array, a stroke's number (1..)
 * where it inks, numbered left to right, one to the right covering one to its left; null
 * without `penPaths`. Drawn when first asked for: only a number read with doubt needs them.
 */
function strokesOf(page) {
  if (page.penPaths === null) return null;
  page.strokes ??= numberStrokes(page.penPaths.strokes, page.w, page.h, page.penPaths.pen);
  return page.strokes;
}

/**
 * `_draw`: every stroke's lines, then a round cap once per distinct point (to a quarter
 * pixel), however many strokes meet there. Pillow's pen, from preprocess.js.
 */
function drawPage(strokes, w, h, pen) {
  const img = new Uint8Array(w * h);
  const r = pen / 2;
  const width = pyRound(pen);
  for (const s of strokes) {
    if (s.length < 2 || width === 0) continue;
    for (let i = 0; i + 1 < s.length; i++) {
      const line = width <= 1 ? thinLine : wideLine;
      line(img, w, h, Math.trunc(s[i][0]), Math.trunc(s[i][1]),
        Math.trunc(s[i + 1][0]), Math.trunc(s[i + 1][1]), width);
    }
    const last = s[s.length - 1];
    if (width <= 1) point(img, w, h, Math.trunc(last[0]), Math.trunc(last[1]));
  }
  const caps = new Set();
  for (const s of strokes) for (const [x, y] of s) cap(img, w, h, x, y, r, caps);
  return img;
}

/**
 * The round cap at (x, y) to a quarter pixel, unless ``caps`` has it: (x, y) on the page, so
 * a quarter pixel's row is at most 4 h + 1, and one number names it.
 */
function cap(img, w, h, x, y, r, caps, fill = 255) {
  const [qx, qy] = [pyRound(x * 4), pyRound(y * 4)];
  const key = qx * (4 * h + 8) + qy;
  if (caps.has(key)) return;
  caps.add(key);
  [x, y] = [qx / 4, qy / 4];
  filledEllipse(img, w, h, Math.trunc(x - r), Math.trunc(y - r),
    Math.trunc(x + r), Math.trunc(y + r), fill);
}

/**
 * `_number_strokes`: `drawPage`'s strokes, each in its own number (1, 2, ...) on an Int32Array
 * (Pillow's "I" image): its lines, then its caps (to a quarter pixel, each once), stroke after
 * stroke, so a stroke covers those before it (left of it: `leftToRight`).
 */
function numberStrokes(strokes, w, h, pen) {
  const img = new Int32Array(w * h);
  const r = pen / 2;
  const width = pyRound(pen);
  strokes.forEach((s, n) => {
    const fill = n + 1;
    if (s.length > 1 && width !== 0) {
      const line = width <= 1 ? thinLine : wideLine;
      for (let i = 0; i + 1 < s.length; i++) {
        line(img, w, h, Math.trunc(s[i][0]), Math.trunc(s[i][1]),
          Math.trunc(s[i + 1][0]), Math.trunc(s[i + 1][1]), width, fill);
      }
      const last = s[s.length - 1];
      if (width <= 1) point(img, w, h, Math.trunc(last[0]), Math.trunc(last[1]), fill);
    }
    const caps = new Set();
    for (const [x, y] of s) cap(img, w, h, x, y, r, caps, fill);
  });
  return img;
}

/**
 * The writing's slant k (`estimate_slant`): upright strokes run x = x0 + k (y - y0), from the
 * gradients of the lightly blurred ink where strokes run within 45 degrees of upright.
 */
function estimateSlant(ink, w, h, maxSlant = 0.5) {
  const pw = w + 2;
  const padded = new Float64Array(pw * (h + 2));
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) padded[(y + 1) * pw + x + 1] = ink[y * w + x];
  const f = new Float64Array(w * h); // the 3 x 3 sums, added in numpy's order
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let dy = 0; dy < 3; dy++) for (let dx = 0; dx < 3; dx++) s += padded[(y + dy) * pw + x + dx];
      f[y * w + x] = s;
    }
  }
  const xx = [];
  const xy = [];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const gx = x > 0 && x < w - 1 ? f[y * w + x + 1] - f[y * w + x - 1] : 0;
      const gy = y > 0 && y < h - 1 ? f[(y + 1) * w + x] - f[(y - 1) * w + x] : 0;
      if (Math.abs(gy) < Math.abs(gx)) { xx.push(gx * gx); xy.push(gx * gy); }
    }
  }
  const sxx = pairwiseSum(xx, 0, xx.length);
  if (sxx <= 1e-9) return 0.0;
  return Math.min(Math.max(-pairwiseSum(xy, 0, xy.length) / sxx, -maxSlant), maxSlant);
}

/** numpy's sum of float64 values a[at..at+n): pairwise, eight running sums per block. */
function pairwiseSum(a, at, n) {
  if (n < 8) {
    let res = -0.0;
    for (let i = 0; i < n; i++) res += a[at + i];
    return res;
  }
  if (n <= 128) {
    const r = a.slice(at, at + 8);
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[at + i + j];
    let res = (r[0] + r[1] + (r[2] + r[3])) + (r[4] + r[5] + (r[6] + r[7]));
    for (; i < n; i++) res += a[at + i];
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, at, n2) + pairwiseSum(a, at + n2, n - n2);
}

// ------------------------------------------------------------------ pieces

/**
 * Connected components (8-neighbour) of the pixels of ``ink`` > 0: labels 1..n numbered in
 * the order of their first pixel, row by row (as `digitlab.ink.label`), 0 elsewhere.
 */
function label(ink, w, h) {
  const labels = new Int32Array(w * h);
  let n = 0;
  const stack = [];
  for (let start = 0; start < w * h; start++) {
    if (!(ink[start] > 0) || labels[start]) continue;
    labels[start] = ++n;
    stack.push(start);
    while (stack.length) {
      const i = stack.pop();
      const y = Math.floor(i / w);
      const x = i - y * w;
      for (let ny = Math.max(y - 1, 0); ny <= Math.min(y + 1, h - 1); ny++) {
        for (let nx = Math.max(x - 1, 0); nx <= Math.min(x + 1, w - 1); nx++) {
          const j = ny * w + nx;
          if (!labels[j] && ink[j] > 0) { labels[j] = n; stack.push(j); }
        }
      }
    }
  }
  return { labels, n };
}

/** Per label 1..n: its box [x0, y0, x1, y1] and its ink mass, summed row by row (`_boxes`). */
function boxesOf(labels, n, ink, w, h) {
  const boxes = Array.from({ length: n }, () => [Infinity, Infinity, -Infinity, -Infinity]);
  const mass = new Float64Array(n);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const l = labels[y * w + x];
      if (!l) continue;
      const b = boxes[l - 1];
      b[0] = Math.min(b[0], x); b[1] = Math.min(b[1], y);
      b[2] = Math.max(b[2], x + 1); b[3] = Math.max(b[3], y + 1);
      mass[l - 1] += ink[y * w + x];
    }
  }
  return { boxes, mass };
}

/**
 * Unit numbers 1.. per piece (0 for dust): pieces overlapping in x by ``overlap`` of the
 * narrower one's width are one unit, transitively (`_merge`); units numbered in piece order.
 */
function merge(boxes, keep, overlap) {
  const idx = [];
  keep.forEach((k, i) => { if (k) idx.push(i); });
  const parent = idx.map((_, i) => i);
  const find = (i) => {
    while (parent[i] !== i) { parent[i] = parent[parent[i]]; i = parent[i]; }
    return i;
  };
  for (let a = 0; a < idx.length; a++) {
    const [ba, wa] = [boxes[idx[a]], boxes[idx[a]][2] - boxes[idx[a]][0]];
    for (let c = a + 1; c < idx.length; c++) {
      const bc = boxes[idx[c]];
      const inter = Math.min(ba[2], bc[2]) - Math.max(ba[0], bc[0]);
      if (inter >= overlap * Math.min(wa, bc[2] - bc[0])) parent[find(a)] = find(c);
    }
  }
  const ids = new Map();
  const out = new Int32Array(boxes.length);
  idx.forEach((piece, i) => {
    const root = find(i);
    if (!ids.has(root)) ids.set(root, ids.size + 1);
    out[piece] = ids.get(root);
  });
  return out;
}

// ------------------------------------------------------------------ primitives

/**
 * The page's primitive segments in reading order (`_primitives`): {labels (each pixel's
 * primitive + 1, 0: paper or dust), units (per primitive, its piece of ink), boxes, height};
 * null when the page holds a single piece too small to cut, a piece longer than a line of
 * `max_digits` digits (a rule, a dash), or cuts past `max_primitives` (read whole, as the
 * Predictor reads it). ``byStrokes``: a drawing's pieces split between their strokes where
 * they can be (`strokeParts`).
 */
function primitives(page, cfg, byStrokes = false) {
  const { ink, w, h } = page;
  page.pieces ??= label(ink, w, h); // the ink's pieces, found once per page
  const found = page.pieces;
  if (found.n === 0) return null;
  const { boxes, mass } = boxesOf(found.labels, found.n, ink, w, h);
  const heaviest = Math.max(...mass);
  const keep = Array.from(mass, (m) => m >= cfg.speck_fraction * heaviest);
  pointSpecks(boxes, mass, keep, heaviest, cfg).forEach((k) => { keep[k] = true; });
  const kept = keep.filter(Boolean).length;
  if (kept > 4 * cfg.max_pieces) { // before the quadratic merge: bounded work
    throw new TooManyDigits(`${kept} separate pieces of ink: too many to read as a number of ` +
      `at most ${cfg.max_digits} digits`);
  }
  const units = merge(boxes, keep, cfg.merge_overlap); // piece -> unit (0: dust)
  const nUnits = Math.max(0, ...units);
  if (nUnits > cfg.max_pieces) {
    throw new TooManyDigits(`${nUnits} separate pieces of ink: too many to read as a number ` +
      `of at most ${cfg.max_digits} digits`);
  }
  const labels = new Int32Array(found.labels.length);
  for (let i = 0; i < labels.length; i++) if (found.labels[i]) labels[i] = units[found.labels[i] - 1];
  const ub = Array.from({ length: nUnits }, () => [Infinity, Infinity, -Infinity, -Infinity]);
  const umass = new Float64Array(nUnits);
  units.forEach((u, p) => {
    if (!u) return;
    const [b, m] = [ub[u - 1], boxes[p]];
    [b[0], b[1], b[2], b[3]] = [Math.min(b[0], m[0]), Math.min(b[1], m[1]),
      Math.max(b[2], m[2]), Math.max(b[3], m[3])];
    umass[u - 1] += mass[p];
  });
  const most = Math.max(...umass);
  const height = median(ub.filter((_, u) => umass[u] >= 0.25 * most).map((b) => b[3] - b[1]));
  const longest = Math.max(...ub.map((b) => b[2] - b[0])) / Math.max(height, 1.0);
  if (longest > cfg.max_digits * cfg.max_width) { // a rule or a dash, not a row of digits:
    return null; // read whole, as the Predictor reads it (cutting it would take long)
  }
  const wide = ub.some((b) => b[2] - b[0] > cfg.cut_width * height);
  const slant = wide ? estimateSlant(ink, w, h) : 0.0; // the writing's: cut lines follow it
  const plabels = new Int32Array(w * h);
  const punits = [];
  const lifts = new Set(); // k: primitives k - 1 and k are a piece's strokes (the pen lifted)
  const cut = []; // the primitives [i, j) of each piece cut through ink
  const order = ub.map((b, u) => u).sort((a, b) => (ub[a][0] + ub[a][2]) - (ub[b][0] + ub[b][2]));
  for (const u of order) {
    const parts = cutUnit(page, labels, ub[u], u + 1, height, slant, cfg, byStrokes);
    for (let p = 0; p < parts.at.length; p++) plabels[parts.at[p]] = punits.length + 1 + parts.part[p];
    for (let k = 1; k < parts.count; k++) if (parts.lifted) lifts.add(punits.length + k);
    if (!parts.lifted && parts.count > 1) cut.push([punits.length, punits.length + parts.count]);
    for (let k = 0; k < parts.count; k++) punits.push(u + 1);
    if (punits.length > cfg.max_primitives) { // cut past the bound: long strokes, no row
      return null; // of digits (separate digits are pieces, counted above): read whole
    }
  }
  if (punits.length === 1) return null;
  const strokeInk = strokeInkOf(page, plabels, punits.length);
  return { labels: plabels, w, units: punits,
    boxes: boxesOf(plabels, punits.length, ink, w, h).boxes, height, lifts,
    splitStrokes: splitStrokes(strokeInk, cut, height, cfg), strokeInk };
}

/**
 * Per primitive (`plabels`: each pixel's + 1), the pixels each of the drawing's strokes inks
 * in it (`_stroke_ink`): {counts, strokes}; null for a drawing of too many strokes.
 */
function strokeInkOf(page, plabels, n) {
  const strokes = strokesOf(page);
  if (strokes === null) return null;
  const nStrokes = page.penPaths.strokes.length;
  const counts = new Int32Array(n * nStrokes);
  for (let p = 0; p < plabels.length; p++) {
    if (plabels[p] > 0 && strokes[p] > 0) counts[(plabels[p] - 1) * nStrokes + strokes[p] - 1]++;
  }
  return { counts, strokes: nStrokes };
}

/**
 * Primitives [i, j) join strokes of a drawing (`_Primitives.joins_strokes`): split where the
 * pen lifted, or inked by two strokes or more (`stroke_side` H^2 each), however cut.
 */
function joinsStrokes(prims, i, j, cfg) {
  for (let k = i + 1; k < j; k++) if (prims.lifts.has(k)) return true;
  const inked = strokesIn(prims, i, j, cfg.stroke_side * prims.height ** 2);
  return inked !== null && inked >= 2;
}

/**
 * How many of a drawing's strokes ink primitives [i, j) with at least `least` pixels
 * (`_Primitives.strokes_in`); null without `strokeInk`.
 */
function strokesIn(prims, i, j, least) {
  if (prims.strokeInk === null) return null;
  const { counts, strokes } = prims.strokeInk;
  let inked = 0;
  for (let t = 0; t < strokes; t++) {
    let sum = 0;
    for (let k = i; k < j; k++) sum += counts[k * strokes + t];
    if (sum >= least) inked++;
  }
  return inked;
}

/** Each piece of ink (unit) as the primitives [i, j) it was cut into (`whole_units`). */
function wholeUnits(prims) {
  const { units } = prims;
  const out = [];
  for (let k = 0; k < units.length; k++) {
    if (k === 0 || units[k - 1] !== units[k]) {
      if (out.length) out[out.length - 1][1] = k;
      out.push([k, units.length]);
    }
  }
  return out;
}

/**
 * Some neighbouring groups of ``path`` were cut apart through ink (`_Primitives.cut_between`):
 * not separate pieces, nor a drawing's strokes split where the pen lifted.
 */
function cutBetween(prims, path) {
  return path.slice(1).some(([i]) => prims.units[i - 1] === prims.units[i] && !prims.lifts.has(i));
}

/**
 * One unit's pixels split between its strokes (`strokeParts`) or by its cuts: {at (page
 * indices), part (each one's), count}, parts numbered left to right, empty ones dropped.
 * Units no wider than `cut_width` H, not split by stroke, are one part.
 */
function cutUnit(page, labels, box, unit, height, slant, cfg, byStrokes) {
  const { w } = page;
  const [x0, y0, x1, y1] = box;
  let size = 0; // the unit's pixels, row by row
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) if (labels[y * w + x] === unit) size++;
  const [ys, xs] = [new Int32Array(size), new Int32Array(size)];
  for (let y = y0, p = 0; y < y1; y++) {
    for (let x = x0; x < x1; x++) if (labels[y * w + x] === unit) { ys[p] = y - y0; xs[p++] = x - x0; }
  }
  let part = new Int32Array(ys.length);
  const byStroke = byStrokes ? strokeParts(page, ys, xs, box, height, cfg) : null;
  if (byStroke !== null) {
    part = byStroke;
  } else if (x1 - x0 > cfg.cut_width * height) {
    const size = [x1 - x0, y1 - y0];
    const lines = cuts(ys, xs, size, height, slant, cfg);
    for (const path of bend(ys, xs, size, lines, height, cfg)) {
      for (let p = 0; p < ys.length; p++) part[p] += xs[p] >= path[ys[p]] ? 1 : 0; // right of it
    }
  }
  const [rank, count] = ranks(part);
  const at = new Int32Array(ys.length);
  for (let p = 0; p < ys.length; p++) {
    at[p] = (ys[p] + y0) * w + xs[p] + x0;
    part[p] = rank[part[p]];
  }
  return { at, part, count, lifted: byStroke !== null };
}

/**
 * The rank of each value among the distinct values of ``values`` (small integers >= 0), in
 * ascending order, and how many distinct values there are: [rank (by value), count].
 */
function ranks(values) {
  let most = 0;
  for (let p = 0; p < values.length; p++) most = Math.max(most, values[p]);
  const rank = new Int32Array(most + 1).fill(-1);
  for (let p = 0; p < values.length; p++) rank[values[p]] = 0;
  let count = 0;
  for (let v = 0; v <= most; v++) if (rank[v] === 0) rank[v] = count++;
  return [rank, count];
}

/**
 * The cuts of a drawing's pieces (`cut`: each one's primitives [i, j)) that split one of its
 * strokes (`_split_strokes`): k where a stroke inks at least `stroke_side` H^2 (its
 * `strokeInk`) on both sides of the cut between primitives k - 1 and k.
 */
function splitStrokes(strokeInk, cut, height, cfg) {
  const out = new Set();
  if (strokeInk === null) return out; // no strokes to tell
  const { counts, strokes } = strokeInk;
  const least = cfg.stroke_side * height ** 2;
  for (const [i, j] of cut) {
    for (let k = i + 1; k < j; k++) { // a stroke inks left of the cut and right of it
      for (let t = 0; t < strokes; t++) {
        let left = false;
        let right = false;
        for (let q = i; q < j; q++) {
          if (counts[q * strokes + t] >= least) (q < k ? (left = true) : (right = true));
        }
        if (left && right) { out.add(k); break; }
      }
    }
  }
  return out;
}

/**
 * A piece of a drawing split between its strokes, left to right (`_stroke_parts`): the
 * part (0, 1, ...) of each of its pixels (``ys``, ``xs`` within
 * ``box``), the rank of its stroke's number. Null (cut the ink, if wide) for a page without
 * strokes, a piece of more than `max_piece_strokes` strokes, or one holding a stroke wider
 * than `stroke_cut_width` H.
 */
function strokeParts(page, ys, xs, [x0, y0], height, cfg) {
  const strokes = strokesOf(page);
  if (strokes === null) return null;
  const order = new Int32Array(ys.length);
  for (let p = 0; p < ys.length; p++) order[p] = strokes[(ys[p] + y0) * page.w + xs[p] + x0];
  const [rank, n] = ranks(order); // stroke numbers: left to right
  if (n > cfg.max_piece_strokes) return null;
  for (let p = 0; p < order.length; p++) order[p] = rank[order[p]];
  const lo = new Float64Array(n).fill(Infinity);
  const hi = new Float64Array(n).fill(-Infinity);
  for (let p = 0; p < order.length; p++) {
    const k = order[p];
    lo[k] = Math.min(lo[k], xs[p]);
    hi[k] = Math.max(hi[k], xs[p] + 1);
  }
  for (let k = 0; k < n; k++) {
    if (hi[k] - lo[k] > cfg.stroke_cut_width * height) return null;
  }
  return order;
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Straight lines to cut a wide piece along (`_cuts`): [c, k, ymid], the line
 * x = c + k (y - ymid), each where it crosses the least ink near it, at the writing's slant
 * or `cut_slants` either side, never crossing another in the piece nor leaving a sliver.
 */
function cuts(ys, xs, [w, h], height, slant, cfg) {
  const ymid = (h - 1) / 2;
  const slants = [...new Set([0.0, ...cfg.cut_slants.map((s) => slant + s)])]
    .sort((a, b) => a - b)
    .sort((a, b) => Math.abs(a - slant) - Math.abs(b - slant)); // ties: the writing's
  const pad = Math.ceil((Math.max(...slants.map(Math.abs)) * h) / 2) + 1;
  const k = Math.max(1, pyRound(0.04 * height));
  const margin = Math.max(1, pyRound(cfg.min_digit_width * height));
  const cols = w + 2 * pad;
  const leastSide = cfg.min_cut_side * height * height; // pixels of ink either side of a line
  const profiles = slants.map((t) => sheared(ys, xs, t, ymid, pad, cols, k, margin, leastSide));
  const which = new Int32Array(cols); // per column the slant crossing the least: ties, the first
  const least = new Float64Array(cols);
  for (let c = 0; c < cols; c++) {
    for (let m = 1; m < slants.length; m++) if (profiles[m][c] < profiles[which[c]][c]) which[c] = m;
    least[c] = profiles[which[c]][c];
  }
  const win = Math.max(1, pyRound(cfg.cut_window * height));
  const spacing = Math.max(1, pyRound(cfg.cut_spacing * height));
  const minima = [];
  for (let c = 0; c < cols; c++) {
    if (!Number.isFinite(least[c])) continue;
    let low = Infinity;
    for (let d = Math.max(0, c - win); d < Math.min(cols, c + win + 1); d++) low = Math.min(low, least[d]);
    if (least[c] <= low + 1e-9) minima.push(c);
  }
  const most = Math.min(Math.max(1, Math.ceil(w / (cfg.cut_every * height)) - 1),
    cfg.max_primitives);
  const apart = (c, d) => { // the lines through c and d do not cross in the piece
    if (Math.abs(c - d) < spacing) return false;
    const [side, dk] = [c > d ? 1 : -1, slants[which[c]] - slants[which[d]]];
    return [-ymid, h - 1 - ymid].every((e) => side * ((c - d) + dk * e) >= spacing / 2);
  };
  const chosen = [];
  for (const c of minima.sort((a, b) => least[a] - least[b])) {
    if (chosen.every((d) => apart(c, d))) chosen.push(c);
    if (chosen.length === most) break;
  }
  return chosen.sort((a, b) => a - b).map((c) => [c - pad, slants[which[c]], ymid]);
}

/**
 * The ink per column of the piece sheared by slant ``t``, smoothed over 2k + 1 columns, where
 * a cut may go (Infinity elsewhere): not within ``margin`` of the ends, not leaving less than
 * ``leastSide`` of ink on either side.
 */
function sheared(ys, xs, t, ymid, pad, cols, k, margin, leastSide) {
  const raw = new Float64Array(cols);
  let [lo, hi] = [Infinity, -Infinity];
  for (let p = 0; p < ys.length; p++) {
    const x = pyRound(xs[p] - t * (ys[p] - ymid)) + pad;
    if (x < cols) raw[x] += 1;
    lo = Math.min(lo, x); hi = Math.max(hi, x);
  }
  [lo, hi] = [lo + margin, hi + 1 - margin];
  // numpy's convolve: inside, the products summed left to right (its small-kernel loop);
  // the first and last k columns are never a cut (within `margin` of the ends).
  const kernel = 1 / (2 * k + 1);
  const profile = new Float64Array(cols).fill(Infinity);
  let left = 0; // ink left of the column
  for (let c = 0; c < cols; c++) {
    if (c >= lo && c < Math.max(lo, hi) && left >= leastSide && ys.length - left >= leastSide) {
      let s = 0;
      for (let d = Math.max(0, c - k); d <= Math.min(cols - 1, c + k); d++) s += raw[d] * kernel;
      profile[c] = s;
    }
    left += raw[c];
  }
  return profile;
}

/**
 * Each straight cut line as a path, the column it runs along per row (`_bend`): the line
 * itself, or, with `drop_fall`, a drop-fall path from the top or the bottom where that
 * crosses less ink and stays within `drop_band` H of the line; each path at least a pixel
 * right of the previous one.
 */
function bend(ys, xs, [w, h], lines, height, cfg) {
  if (cfg.cut_band > 0) throw new Error("read.js: cut_band (contour-valley cuts) is not ported");
  const ink = new Uint8Array(h * w);
  for (let p = 0; p < ys.length; p++) ink[ys[p] * w + xs[p]] = 1;
  const crossing = (path) => { // ink pixels the path runs along; off the piece, none
    let n = 0;
    for (let y = 0; y < h; y++) if (path[y] >= 0 && path[y] < w) n += ink[y * w + path[y]];
    return n;
  };
  const out = [];
  for (const [c, k, ymid] of lines) {
    const line = Float64Array.from({ length: h }, (_, y) => c + k * (y - ymid));
    let path = Int32Array.from(line, Math.ceil);
    if (cfg.drop_fall) {
      const bound = cfg.drop_band * height;
      let crossed = crossing(path);
      const up = line.slice().reverse();
      const falls = [dropFall((x, y) => ink[y * w + x], w, h, line),
        dropFall((x, y) => ink[(h - 1 - y) * w + x], w, h, up).reverse()];
      for (const fall of falls) {
        let far = 0;
        for (let y = 0; y < h; y++) far = Math.max(far, Math.abs(fall[y] - line[y]));
        if (far > bound) continue;
        const n = crossing(fall);
        if (n < crossed) [path, crossed] = [fall, n];
      }
    }
    if (out.length) {
      const prev = out[out.length - 1];
      path = path.map((x, y) => Math.max(x, prev[y] + 1));
    }
    out.push(path);
  }
  return out;
}

/**
 * A ball dropped from the top of the piece where the cut line starts, rolling down through
 * paper (down, down-left, down-right, then up to 4 px sideways), cutting through ink only when
 * stuck (`_drop_fall`): per row, the column the cut runs along. ``inked(x, y)``: the piece.
 */
function dropFall(inked, w, h, line) {
  let x = Math.min(Math.max(Math.ceil(line[0]), 0), w - 1);
  const path = new Int32Array(h);
  const free = (xx, y) => !inked(xx, y);
  for (let y = 0; y < h; y++) {
    path[y] = x;
    if (y === h - 1) break;
    const below = (xx) => free(xx, y + 1);
    if (below(x)) continue;
    if (x > 0 && below(x - 1)) {
      x -= 1;
    } else if (x < w - 1 && below(x + 1)) {
      x += 1;
    } else { // sideways along this row's paper, at most a few pixels, then through
      for (let d = 2; d < 5; d++) {
        if (x - d >= 0 && below(x - d) && clear(free, x - d, x, y)) { x -= d; break; }
        if (x + d < w && below(x + d) && clear(free, x + 1, x + d + 1, y)) { x += d; break; }
      }
    }
  }
  return path;
}

/** Paper all along row y from column a up to (not including) b. */
function clear(free, a, b, y) {
  for (let x = a; x < b; x++) if (!free(x, y)) return false;
  return true;
}

// ------------------------------------------------------------------ groups of primitives

/** The box [x0, y0, x1, y1] of primitives i..j-1's boxes. */
function spanOf(boxes, i, j) {
  const out = [Infinity, Infinity, -Infinity, -Infinity];
  for (let k = i; k < j; k++) {
    const b = boxes[k];
    out[0] = Math.min(out[0], b[0]); out[1] = Math.min(out[1], b[1]);
    out[2] = Math.max(out[2], b[2]); out[3] = Math.max(out[3], b[3]);
  }
  return out;
}

/** Primitives i..j-1 might be one digit: not too wide, no wide gap inside (`plausible`). */
function plausible(prims, i, j, cfg) {
  const [x0, , x1] = spanOf(prims.boxes, i, j);
  if (x1 - x0 > cfg.max_width * prims.height) return false;
  return gapOf(prims, i, j) <= cfg.max_gap * prims.height;
}

/** The widest gap in x between primitives i..j-1 (`_gap`). */
function gapOf(prims, i, j) {
  const b = prims.boxes.slice(i, j).sort((p, q) => p[0] - q[0]); // stable: numpy's argsort here
  let [reach, gap] = [b[0][2], 0.0];
  for (const box of b.slice(1)) {
    gap = Math.max(gap, box[0] - reach);
    reach = Math.max(reach, box[2]);
  }
  return gap;
}

/** How good a digit primitives i..j-1 make: a log probability, penalised (`score`). */
function groupScore(prims, i, j, scores, threshold, cfg) {
  const [, y0, , y1] = spanOf(prims.boxes, i, j);
  const h = y1 - y0;
  let s = Math.log(Math.max(Math.max(...scores.probabilities), 1e-9)) - cfg.digit_cost;
  s -= notDigitPenalty(scores.notDigit, threshold, cfg);
  s -= widePenalty(prims, i, j, cfg);
  s -= cfg.short_weight * Math.max(0.0, cfg.short_from - h / prims.height);
  s -= (cfg.gap_weight * Math.max(0.0, gapOf(prims, i, j))) / prims.height;
  const { units } = prims;
  for (const [a, b] of [[i - 1, i], [j - 1, j]]) { // each cut through ink, half each side
    if (a >= 0 && b < units.length && units[a] === units[b]) {
      s -= (prims.lifts.has(b) ? cfg.lift_cost : cfg.cut_cost) / 2;
      if (prims.splitStrokes.has(b)) s -= cfg.stroke_cut_cost / 2;
    }
  }
  if (joinsStrokes(prims, i, j, cfg) && scores.notDigit != null) { // must look like a digit
    const over = logit(scores.notDigit) - logit(cfg.lift_not_digit_from);
    s -= cfg.lift_not_digit_weight * Math.max(0.0, over);
  }
  if (new Set(units.slice(i, j)).size > 1) { // separate pieces: likely separate digits
    s -= cfg.apart_weight * (1 - overlapOf(prims, i, j));
  }
  return s;
}

/** Primitives [i, j) are wider than a digit: likely two (`_Primitives.wide_penalty`). */
function widePenalty(prims, i, j, cfg) {
  const [x0, y0, x1, y1] = spanOf(prims.boxes, i, j);
  return cfg.wide_weight * Math.max(0.0, (x1 - x0) / Math.max(y1 - y0, 1) - cfg.wide_from);
}

/**
 * Primitives [i, j) were drawn without a pen lift we know of (`_one_stroke`): their ink is
 * one stroke's, or the drawing has too many strokes to tell.
 */
function oneStroke(prims, i, j) {
  const inked = strokesIn(prims, i, j, 1);
  return inked === null || inked <= 1;
}

/**
 * Each group of a piece's strokes (split only where the pen lifted) whose every stroke group
 * reads alone as a tall, sure digit pays `parts_join_cost` (`_join_sure_parts`); ``alone(k)``:
 * the scores of the group of stroke k alone.
 */
function joinSureParts(prims, groups, alone, score, threshold, cfg) {
  if (!cfg.parts_join_cost || prims.lifts.size === 0) return;
  const n = prims.units.length;
  const sureAndTall = prims.boxes.map(([, y0, , y1], k) =>
    sureDigit(alone(k), threshold, cfg, cfg.parts_sure) && y1 - y0 >= cfg.parts_tall * prims.height);
  for (const [i, j] of groups) {
    if (j - i < 2) continue;
    let joins = true;
    for (let k = i + 1; k < j; k++) joins &&= prims.lifts.has(k);
    for (let k = i; k < j; k++) joins &&= sureAndTall[k];
    if (joins) score.set(i * (n + 1) + j, score.get(i * (n + 1) + j) - cfg.parts_join_cost);
  }
}

/**
 * A group read as a digit with at least ``least`` (default `one_confidence`) and not flagged
 * (`_sure_digit`).
 */
function sureDigit(scores, threshold, cfg, least = cfg.one_confidence) {
  if (scores === null) return false;
  let most = -Infinity;
  for (const p of scores.probabilities) most = Math.max(most, p);
  return !flagged(scores, threshold) && most >= least;
}

/** The group's "not a digit" score is over the threshold (`_flagged`). */
function flagged(scores, threshold) {
  return scores !== null && scores.notDigit != null && threshold !== null && scores.notDigit > threshold;
}

/** A "not a digit" score over the threshold as a penalty, in log odds (`not_digit_penalty`). */
function notDigitPenalty(nd, threshold, cfg) {
  if (nd == null || threshold == null) return 0.0;
  return cfg.not_digit_weight * Math.max(0.0, logit(nd) - logit(threshold));
}

function logit(p) {
  const q = Math.min(Math.max(p, 1e-6), 1 - 1e-6);
  return Math.log(q / (1 - q));
}

/**
 * The least x-overlap of neighbouring units in primitives i..j-1, as a share of the
 * narrower (0: side by side) (`_overlap`).
 */
function overlapOf(prims, i, j) {
  const spans = new Map();
  for (let k = i; k < j; k++) {
    const b = prims.boxes[k];
    const [lo, hi] = spans.get(prims.units[k]) ?? [b[0], b[2]];
    spans.set(prims.units[k], [Math.min(lo, b[0]), Math.max(hi, b[2])]);
  }
  const s = [...spans.values()].sort((p, q) => p[0] - q[0] || p[1] - q[1]);
  let least = 1.0;
  for (let m = 1; m < s.length; m++) {
    const [[a0, a1], [b0, b1]] = [s[m - 1], s[m]];
    const shared = Math.max(0.0, Math.min(a1, b1) - Math.max(a0, b0));
    least = Math.min(least, shared / Math.max(Math.min(a1 - a0, b1 - b0), 1));
  }
  return least;
}

/**
 * Primitives i..j-1's pixels, as a string: their box and mask (`_group_key`), the mask's
 * bits row by row, 16 to a character (a short key, made without a string per pixel).
 */
function groupKey(prims, i, j) {
  const [x0, y0, x1, y1] = spanOf(prims.boxes, i, j);
  const { w } = prims;
  const words = new Uint16Array(Math.ceil((Math.max(x1 - x0, 0) * Math.max(y1 - y0, 0)) / 16));
  let bit = 0;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++, bit++) {
      const l = prims.labels[y * w + x];
      if (l > i && l <= j) words[bit >> 4] |= 1 << (bit & 15);
    }
  }
  let mask = "";
  for (let at = 0; at < words.length; at += 4096) { // a bounded number of arguments a call
    mask += String.fromCharCode.apply(null, words.subarray(at, at + 4096));
  }
  return `${x0},${y0},${x1},${y1}:${mask}`;
}

/**
 * Primitives i..j-1's ink cropped to their box, {data, w, h, any} (`_group_ink`). The crop
 * is a kept buffer (`kept`): it lives until the next call, and its readers keep none of it.
 */
function groupInk(page, prims, i, j) {
  const [x0, y0, x1, y1] = spanOf(prims.boxes, i, j);
  const [cw, ch] = [Math.max(x1 - x0, 0), Math.max(y1 - y0, 0)];
  const crop = kept("crop", cw * ch).fill(0);
  let any = false;
  for (let y = 0; y < ch; y++) {
    for (let x = 0; x < cw; x++) {
      const at = (y + y0) * page.w + x + x0;
      const l = prims.labels[at];
      if (l > i && l <= j) { crop[y * cw + x] = page.ink[at]; any ||= page.ink[at] !== 0; }
    }
  }
  return { data: crop, w: cw, h: ch, any };
}

/**
 * Primitives i..j-1 as `preprocess` makes a digit of ink (`_normalized`): crop, stroke, box,
 * centre; with the diagnostics the trust rules read (blobs counted later, if kept).
 */
function normalizedGroup(page, prims, i, j, pconf) {
  const [x0, y0, x1, y1] = spanOf(prims.boxes, i, j);
  const none = { image: null, inkBox: null, nBlobs: 0, aspect: 0, strokeWidth: 0, inkSize: 0 };
  if (x1 <= x0 || y1 <= y0) return none;
  const { data: crop, w: cw, h: ch, any } = groupInk(page, prims, i, j);
  if (!any) return none;
  const [fx, fy, ox, oy] = page.scale;
  const inkBox = [Math.floor(x0 * fx + ox), Math.floor(y0 * fy + oy),
    Math.ceil(x1 * fx + ox), Math.ceil(y1 * fy + oy)];
  const [work, strokeWidth] = adjustStroke(toWork({ data: crop, w: cw, h: ch }, pconf), pconf);
  const [left, top, right, bottom] = inkBox;
  return {
    image: fit(work, pconf),
    inkBox,
    nBlobs: 0,
    aspect: (right - left) / Math.max(bottom - top, 1),
    strokeWidth,
    inkSize: Math.max(right - left, bottom - top),
  };
}

/**
 * The crop resampled so its longer side is `work_side` (`_to_work`): Pillow's box filter
 * down, bilinear up, then the contrast stretched so the strongest ink (99th percentile) is 1.
 * The crop is the caller's no more (the stretch may be made in its pixels), and the result
 * is a kept buffer (`kept`): it lives until the next call.
 */
function toWork(crop, pconf) {
  const k = pconf.work_side / Math.max(crop.h, crop.w);
  const [w, h] = [Math.max(1, pyRound(crop.w * k)), Math.max(1, pyRound(crop.h * k))];
  const work = resize(crop, w, h, k < 1 ? boxFilter : bilinearFilter, kept("work", w * h));
  const data = work.data; // the crop's own pixels, or the kept buffer's
  const inked = kept("inked", data.length); // the values > 0, in any order: selected below
  let n = 0;
  for (let i = 0; i < data.length; i++) if (data[i] > 0) inked[n++] = data[i];
  const peak = n ? percentile99(inked, n) : 1.0;
  if (!(peak > 0 && peak < 1)) return work;
  for (let i = 0; i < data.length; i++) data[i] = Math.min(Math.max(f32(data[i] / peak), 0), 1);
  return work;
}

// Buffers kept between calls for pixels that live only within one call (a reading makes
// dozens of candidates: new ones each time would keep the garbage collector busy), one per
// use, so that no two live images share one.
const keptBuffers = new Map();

/** ``n`` float32 values on the buffer kept for ``use``, as the last call left them. */
function kept(use, n) {
  let buffer = keptBuffers.get(use);
  if (buffer === undefined || buffer.length < n) {
    buffer = new Float32Array(Math.max(n, 2 * (buffer?.length ?? 0)));
    keptBuffers.set(use, buffer);
  }
  return buffer.subarray(0, n);
}

/**
 * numpy's percentile(v, 99) of the float32 values v[0..n): a float32 linear interpolation
 * between two order statistics. Those are found as numpy finds them, by selection (``v``
 * is reordered), not a full sort: the same two values.
 */
function percentile99(v, n) {
  const at = (n - 1) * 0.99;
  if (at >= n - 1) return select(v, n, n - 1);
  const i = Math.floor(at);
  const gamma = at - i;
  const a = select(v, n, i);
  let b = Infinity; // the next order statistic: the least of those after the i-th
  for (let m = i + 1; m < n; m++) if (v[m] < b) b = v[m];
  const d = f32(b - a);
  return gamma >= 0.5 ? f32(b - f32(d * f32(1 - gamma))) : f32(a + f32(d * f32(gamma)));
}

/**
 * The k-th smallest of v[0..n) (Hoare's quickselect): afterwards v[k] holds it, none before
 * it is larger and none after it smaller.
 */
function select(v, n, k) {
  let [lo, hi] = [0, n - 1];
  while (lo < hi) {
    const pivot = v[(lo + hi) >> 1];
    let [i, j] = [lo, hi];
    while (i <= j) {
      while (v[i] < pivot) i++;
      while (v[j] > pivot) j--;
      if (i <= j) {
        const t = v[i];
        v[i++] = v[j];
        v[j--] = t;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else break; // between j and i: equal to the pivot
  }
  return v[k];
}

// Pillow's filters; each keeps the coefficients it has worked out (`weights`).
const boxFilter = { support: 0.5, at: (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0), cache: new Map() };
const bilinearFilter = { support: 1.0, at: (x) => Math.max(0, 1.0 - Math.abs(x)), cache: new Map() };

/**
 * Pillow's resize of a float image to w x h (Resample.c): a horizontal then a vertical pass,
 * each skipped when that side keeps its size, sums in double, stored as float32; into
 * ``into`` (w * h values) when given, else new pixels.
 */
function resize(img, w, h, filter, into = null) {
  if (w === img.w && h === img.h) return img; // Pillow copies the image
  let cur = img;
  if (w !== img.w) {
    const { start, count, at, k } = weights(img.w, w, filter);
    const src = img.data;
    // read by the vertical pass only, when there is one: a kept buffer (`kept`)
    const out = h !== img.h ? kept("rows", w * img.h) : into ?? new Float32Array(w * h);
    for (let y = 0; y < img.h; y++) {
      const row = y * img.w;
      for (let xx = 0; xx < w; xx++) {
        const [from, n, kat] = [row + start[xx], count[xx], at[xx]];
        let ss = 0;
        for (let i = 0; i < n; i++) ss += src[from + i] * k[kat + i];
        out[y * w + xx] = ss;
      }
    }
    cur = { data: out, w, h: img.h };
  }
  if (h !== img.h) {
    const { start, count, at, k } = weights(img.h, h, filter);
    const src = cur.data;
    const out = into ?? new Float32Array(w * h);
    for (let yy = 0; yy < h; yy++) {
      const [from, n, kat] = [start[yy] * w, count[yy], at[yy]];
      for (let x = 0; x < w; x++) {
        let ss = 0;
        for (let i = 0; i < n; i++) ss += src[from + i * w + x] * k[kat + i];
        out[yy * w + x] = ss;
      }
    }
    cur = { data: out, w, h };
  }
  return cur;
}

/**
 * Pillow's precompute_coeffs over the whole input: per output pixel xx, its first input
 * ``start[xx]`` and ``count[xx]`` weights from ``k[at[xx]]`` on. Worked out once per sizes
 * and filter: a reading resamples many crops of the same few sizes.
 */
function weights(inSize, outSize, filter) {
  const key = `${inSize},${outSize}`;
  let found = filter.cache.get(key);
  if (found !== undefined) return found;
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filter.support * filterscale;
  const ss = 1.0 / filterscale;
  const ksize = 2 * Math.ceil(support) + 1; // the most weights a pixel has (Pillow's ksize)
  const [start, count, at] = [new Int32Array(outSize), new Int32Array(outSize), new Int32Array(outSize)];
  const k = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize);
    const n = Math.max(xmax - xmin, 0);
    [start[xx], count[xx], at[xx]] = [xmin, n, xx * ksize];
    let ww = 0;
    for (let x = 0; x < n; x++) {
      const v = filter.at((x + xmin - center + 0.5) * ss);
      k[xx * ksize + x] = v;
      ww += v;
    }
    if (ww !== 0) for (let x = 0; x < n; x++) k[xx * ksize + x] /= ww;
  }
  found = { start, count, at, k };
  if (filter.cache.size >= 256) filter.cache.clear(); // bounded: sizes vary by drawing
  filter.cache.set(key, found);
  return found;
}

// ------------------------------------------------------------------ the string model

const STRING_SIZE = [32, 128]; // the picture it reads (`digitlab.strings`): height, width
const STRING_INK = [24, 120]; // the ink's height, and its widest, in that picture
const STRING_CLASSES = 12; // per frame: blank, the digits d + 1, and "x"
const STRING_X = 11;

/**
 * The 32 x 128 picture the string model reads (`string_image`): the crop scaled to 24 high
 * (narrower when over 120 wide), through twice that size first, in the middle, strongest 1.
 */
function stringImage(crop) {
  const [H, W] = STRING_SIZE;
  const out = new Float32Array(H * W);
  if (!crop.any) return out;
  const s = Math.min(STRING_INK[0] / crop.h, STRING_INK[1] / crop.w);
  const [tw, th] = [Math.max(1, pyRound(crop.w * s)), Math.max(1, pyRound(crop.h * s))];
  const work = resize(crop, 2 * tw, 2 * th, crop.w > 2 * tw ? boxFilter : bilinearFilter);
  const small = resize(work, tw, th, boxFilter);
  let peak = 0;
  for (const v of small.data) peak = Math.max(peak, v);
  const [x0, y0] = [Math.floor((W - tw) / 2), Math.floor((H - th) / 2)];
  for (let y = 0; y < th; y++) {
    for (let x = 0; x < tw; x++) {
      const v = small.data[y * tw + x];
      out[(y0 + y) * W + x0 + x] = peak > 0 ? Math.min(Math.max(f32(v / peak), 0), 1) : v;
    }
  }
  return out;
}

/** The frames' best path, repeats and blanks removed: its labels (`decode`'s text). */
function bestLabels(frames) {
  const labels = [];
  let prev = 0;
  for (let t = 0; t < frames.length / STRING_CLASSES; t++) {
    const c = argmax(frames.subarray(t * STRING_CLASSES, (t + 1) * STRING_CLASSES));
    if (c !== 0 && c !== prev) labels.push(c);
    prev = c;
  }
  return labels;
}

/** P(labels | frames) over every CTC alignment, rescaled each frame (`text_probability`). */
function textProbability(frames, labels) {
  const ext = [0];
  for (const c of labels) ext.push(c, 0);
  const n = ext.length;
  const T = frames.length / STRING_CLASSES;
  const p = (t, s) => frames[t * STRING_CLASSES + ext[s]];
  const skip = ext.map((c, s) => s >= 2 && c !== 0 && c !== ext[s - 2]);
  let alpha = new Float64Array(n);
  for (let s = 0; s < Math.min(n, 2); s++) alpha[s] = p(0, s);
  let logScale = 0.0;
  for (let t = 1; t < T; t++) {
    const total = pairwiseSum(alpha, 0, n);
    if (total <= 0) return 0.0;
    for (let s = 0; s < n; s++) alpha[s] /= total;
    logScale += Math.log(total);
    const moved = Float64Array.from(alpha);
    for (let s = 1; s < n; s++) moved[s] += alpha[s - 1];
    for (let s = 2; s < n; s++) moved[s] += skip[s] ? alpha[s - 2] : 0.0;
    alpha = moved.map((v, s) => v * p(t, s));
  }
  const end = alpha[n - 1] + (n > 1 ? alpha[n - 2] : 0.0);
  return end > 0 ? Math.exp(logScale) * end : 0.0;
}

/** The index of the largest value, the first of equals (numpy's argmax). */
function argmax(values) {
  let best = 0;
  for (let k = 1; k < values.length; k++) if (values[k] > values[best]) best = k;
  return best;
}
