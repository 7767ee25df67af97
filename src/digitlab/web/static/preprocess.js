// The stroke path of `digitlab.preprocess`, in the browser: a drawing becomes the 28 x 28
// image the model reads, pixel for pixel as the Python package makes it.
//
//   const norm = preprocessStrokes({strokes, width, height, pen}, settings.preprocessing);
//   norm.image   // Float32Array(28 * 28), 0 = paper, 1 = ink; null when there is no ink
//   const answer = judge(norm, scores, settings.card.classes, settings.trust);
//   verdictOf(answer)   // "read", "unsure", "not a digit" or "no ink"
//
// The steps are those of `_from_strokes` and `_normalize` in preprocess.py:
//   1. render the strokes at the working size (`work_side`) with MNIST's pen, as Pillow's
//      ImageDraw does (wide lines as polygons, round caps and joins as filled ellipses);
//   2. crop to the ink;
//   3. bring the stroke width into MNIST's range (`stroke_range`, towards `stroke`);
//   4. scale the longer side to `box` keeping the aspect ratio and place the centre of mass
//      at `center` in a `canvas` x `canvas` field, in one box-filter resample (Pillow's).
// Every constant comes from `config`, the model card's `preprocessing` block (the server
// sends it; see digitlab/browser.py): none is copied here. Pillow's integer and float32
// arithmetic is followed exactly (`f32` below), so the images agree to rounding error.
// No DOM, no network: plain functions on typed arrays.

const f32 = Math.fround;

// What this module reads from the card's preprocessing block.
export const CONFIG_KEYS = [
  "canvas", "box", "center", "stroke", "stroke_range", "work_side", "blob_fraction",
  "max_points",
];

/** The constants this port needs, checked; throws naming the first missing or bad one. */
export function checkConfig(config) {
  if (!config || typeof config !== "object") throw new Error("no preprocessing constants");
  for (const key of CONFIG_KEYS) {
    const v = config[key];
    const ok = key === "stroke_range"
      ? Array.isArray(v) && v.length === 2 && v.every(Number.isFinite)
      : Number.isFinite(v);
    if (!ok) throw new Error(`preprocessing constant ${key} is missing or not a number`);
  }
  return config;
}

/** Python's round(): halves go to the even neighbour (round(2.5) == 2). */
export function pyRound(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// ------------------------------------------------------------------ the drawing -> 28 x 28

/**
 * The normalised image of a drawing {strokes: [[[x, y], ...], ...], width, height, pen}
 * (canvas pixels), and what the Predictor's trust rules look at.
 */
export function preprocessStrokes(drawing, config) {
  const c = checkConfig(config);
  const strokes = drawing.strokes.filter((s) => s.length > 0);
  const size = [drawing.width || 0, drawing.height || 0];
  let count = 0;
  for (const s of strokes) count += s.length;
  if (count > c.max_points) throw new Error(`drawing: more than ${c.max_points} points`);
  if (count === 0) return noInk(size);

  let [lox, loy, hix, hiy] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const s of strokes) {
    for (const [x, y] of s) {
      lox = Math.min(lox, x); loy = Math.min(loy, y);
      hix = Math.max(hix, x); hiy = Math.max(hiy, y);
    }
  }
  const pen = (c.stroke * c.work_side) / c.box; // MNIST's stroke, at the working size
  const extent = Math.max(hix - lox, hiy - loy);
  // A drawing narrower than a micro-pixel is a dot: dividing by its extent would overflow.
  const scale = extent > 1e-6 ? (c.work_side - pen) / extent : 1.0;
  const w = Math.ceil((hix - lox) * scale + pen) + 2;
  const h = Math.ceil((hiy - loy) * scale + pen) + 2;
  const placed = strokes.map((s) =>
    s.map(([x, y]) => [(x - lox) * scale + pen / 2 + 1, (y - loy) * scale + pen / 2 + 1]));
  const ink = drawStrokes(placed, w, h, pen);

  const half = (drawing.pen ?? 1) / 2;
  const inkBox = [Math.floor(lox - half), Math.floor(loy - half),
    Math.ceil(hix + half), Math.ceil(hiy + half)];
  const inked = new Float32Array(ink.length);
  for (let i = 0; i < ink.length; i++) inked[i] = ink[i] / 255;
  const work = crop(inked, w, h);
  if (work === null) return noInk(size); // a pen too thin to leave a pixel
  const [adjusted, strokeWidth] = adjustStroke(work, c);
  const image = fit(adjusted, c);
  const [left, top, right, bottom] = inkBox;
  return {
    image,
    sourceSize: size,
    inkBox,
    nBlobs: countBlobs(image, c),
    aspect: (right - left) / Math.max(bottom - top, 1),
    strokeWidth,
    inkSize: Math.max(right - left, bottom - top),
  };
}

function noInk(size) {
  return { image: null, sourceSize: size, inkBox: null, nBlobs: 0, aspect: 0, strokeWidth: 0,
    inkSize: 0 };
}

// An image here: {data: Float32Array (row-major), w, h}.

/** The part of an image inside the bounding box of its pixels > 0 (null when none). */
function crop(data, w, h) {
  let [left, top, right, bottom] = [w, h, -1, -1];
  for (let y = 0; y < h; y++) { // each row's first and last pixel > 0, from either end
    const row = y * w;
    let x0 = 0;
    while (x0 < w && !(data[row + x0] > 0)) x0++;
    if (x0 === w) continue; // paper
    let x1 = w - 1;
    while (!(data[row + x1] > 0)) x1--;
    left = Math.min(left, x0); right = Math.max(right, x1);
    top = Math.min(top, y); bottom = y;
  }
  if (right < 0) return null;
  const cw = right - left + 1;
  const ch = bottom - top + 1;
  const out = new Float32Array(cw * ch);
  for (let y = 0; y < ch; y++) {
    out.set(data.subarray((top + y) * w + left, (top + y) * w + left + cw), y * cw);
  }
  return { data: out, w: cw, h: ch };
}

// ------------------------------------------------------------------ stroke width

/**
 * Quantiles of the stroke width of the pixels >= 0.5, weighted by stroke length
 * (`digitlab.ink.stroke_widths`): a pixel's width is the shorter of its horizontal and
 * vertical runs of ink, and each pixel counts 1 / width.
 */
export function strokeWidths(img, quantiles) {
  const { data, w, h } = img;
  // Only the pixels >= 0.5 are read back, and the horizontal pass writes each of them: the
  // buffer, kept between calls, needs no clearing.
  const across = intBuffer(w * h);
  for (let y = 0; y < h; y++) { // horizontal runs
    const row = y * w;
    for (let x = 0; x < w;) {
      if (!(data[row + x] >= 0.5)) { x++; continue; }
      let end = x;
      while (end < w && data[row + end] >= 0.5) end++;
      for (let k = x; k < end; k++) across[row + k] = end - x;
      x = end;
    }
  }
  // The widths in ascending order, as counts per width (a sort of small integers), counted
  // run by run in the vertical pass.
  const count = new Int32Array(Math.max(w, h) + 1);
  let any = false;
  for (let x = 0; x < w; x++) { // vertical runs: the shorter one wins
    for (let y = 0; y < h;) {
      if (!(data[y * w + x] >= 0.5)) { y++; continue; }
      let end = y;
      while (end < h && data[end * w + x] >= 0.5) end++;
      for (let k = y; k < end; k++) count[Math.min(across[k * w + x], end - y)]++;
      any = true;
      y = end;
    }
  }
  if (!any) return quantiles.map(() => 0);
  // numpy's cumsum of 1 / width over the sorted widths, added one by one in that order; kept
  // where each width's block ends (``cum[v]``): the running sum only grows, so the first one
  // to reach a target is in the block of the first width whose end reaches it.
  const cum = new Float64Array(count.length);
  let total = 0;
  for (let v = 1; v < count.length; v++) {
    for (let c = 0; c < count[v]; c++) total += 1 / v;
    cum[v] = total;
  }
  return quantiles.map((q) => {
    const target = q * total;
    let v = 1;
    while (count[v] === 0 || cum[v] < target) v++; // numpy's searchsorted, side="left"
    return v;
  });
}

// `strokeWidths`' run lengths, kept between calls (a reading measures dozens of digits).
let intScratch = new Int32Array(0);

function intBuffer(n) {
  if (intScratch.length < n) intScratch = new Int32Array(Math.max(n, 2 * intScratch.length));
  return intScratch;
}

/**
 * Thicken or thin strokes outside MNIST's range (`_adjust_stroke`); [image, width as drawn],
 * the width in output pixels.
 */
export function adjustStroke(work, c) {
  const side = Math.max(work.w, work.h);
  const [typical, thin] = strokeWidths(work, [0.5, 0.1]);
  const width = (typical * c.box) / side;
  const [lo, hi] = c.stroke_range;
  const target = c.stroke;
  let r;
  if (width < lo) r = (target * side - c.box * typical) / (2 * c.box - 2 * target);
  else if (width > hi) r = -(thin - (target * side) / c.box) / 2;
  else return [work, width];
  if (pyRound(Math.abs(r)) === 0 || (width > hi && r >= 0)) return [work, width];
  const grown = morph(work, pyRound(Math.abs(r)), r > 0);
  const cropped = crop(grown.data, grown.w, grown.h);
  return [cropped ?? work, width];
}

/**
 * Grey dilation (grow) or erosion with a disc of ``radius``, on a zero border of that width.
 * The disc row by row: per row offset dy, the max (min) over the run |dx| <= a(dy) of the
 * disc, from running maxima (minima) of the rows. Max and min are exact in any order, so
 * this is the max (min) over the disc's shifted copies, as `_morph`, in O(radius) per pixel.
 * No shift reaches past the zero border, and ink is never under 0: paper shifted in at the
 * edges would change nothing, so each shift takes only where it overlaps.
 * The result is a buffer kept for the next call: `adjustStroke` crops it (a copy) at once.
 */
function morph(img, radius, grow) {
  const w = img.w + 2 * radius;
  const h = img.h + 2 * radius;
  const n = w * h;
  const buffers = morphBuffers(radius + 2, n);
  const src = buffers[0];
  src.fill(0);
  for (let y = 0; y < img.h; y++) {
    src.set(img.data.subarray(y * img.w, (y + 1) * img.w), (y + radius) * w + radius);
  }
  const reach = []; // per dy + radius: the disc's half-width on that row
  for (let dy = -radius; dy <= radius; dy++) {
    let a = 0;
    while (a < radius && dy * dy + (a + 1) * (a + 1) <= (radius + 0.5) ** 2) a++;
    reach.push(a);
  }
  const runs = [src]; // runs[a]: op over columns x - a .. x + a of a row
  for (let a = 1; a <= radius; a++) { // the run a - 1 wide, and the pixels a left and right
    const next = buffers[a];
    for (let row = 0; row < n; row += w) spreadInto(next, runs[a - 1], src, row, row + w, a, grow);
    runs.push(next);
  }
  // From the disc's row dy = 0 (the whole run, reach radius: it holds the pixel itself), the
  // rows dy and -dy, a pair at a time.
  let out = runs[radius];
  for (let dy = 1; dy <= radius; dy++) {
    spreadInto(buffers[radius + 1], out, runs[reach[dy + radius]], 0, n, dy * w, grow);
    out = buffers[radius + 1];
  }
  return { data: out, w, h };
}

// `morph`'s images, kept between calls (a reading thickens dozens of digits).
const morphPool = [];

/** ``count`` Float32Array views of length ``n`` on the kept buffers (their contents stale). */
function morphBuffers(count, n) {
  const out = [];
  for (let k = 0; k < count; k++) {
    if (k === morphPool.length || morphPool[k].length < n) {
      morphPool[k] = new Float32Array(Math.max(n, 2 * (morphPool[k]?.length ?? 0)));
    }
    out.push(morphPool[k].subarray(0, n));
  }
  return out;
}

/**
 * out[i] = the max (grow) or min of prev[i], src[i - off] and src[i + off], for lo <= i < hi,
 * the shifted ones where they fall in [lo, hi). ``out`` may be ``prev``. In three stretches,
 * so that the middle one, most of the pixels, tests no bounds: the first ``off`` pixels have
 * none to the left, the last ``off`` none to the right.
 */
function spreadInto(out, prev, src, lo, hi, off, grow) {
  const mid0 = Math.min(lo + off, hi);
  const mid1 = Math.max(hi - off, mid0);
  if (grow) {
    for (let i = lo; i < mid0; i++) {
      let v = prev[i];
      if (i + off < hi && src[i + off] > v) v = src[i + off];
      out[i] = v;
    }
    for (let i = mid0; i < mid1; i++) {
      let v = prev[i];
      if (src[i - off] > v) v = src[i - off];
      if (src[i + off] > v) v = src[i + off];
      out[i] = v;
    }
    for (let i = mid1; i < hi; i++) {
      let v = prev[i];
      if (i - off >= lo && src[i - off] > v) v = src[i - off];
      out[i] = v;
    }
  } else {
    for (let i = lo; i < mid0; i++) {
      let v = prev[i];
      if (i + off < hi && src[i + off] < v) v = src[i + off];
      out[i] = v;
    }
    for (let i = mid0; i < mid1; i++) {
      let v = prev[i];
      if (src[i - off] < v) v = src[i - off];
      if (src[i + off] < v) v = src[i + off];
      out[i] = v;
    }
    for (let i = mid1; i < hi; i++) {
      let v = prev[i];
      if (i - off >= lo && src[i - off] < v) v = src[i - off];
      out[i] = v;
    }
  }
}

// ------------------------------------------------------------------ fit and centre

/**
 * Scale the longer side to ``box`` and put the centre of mass at ``center`` (`_fit`): one
 * box-filter resample of the padded image, as Pillow's resize with a source box.
 */
export function fit(work, c) {
  const { data, w, h } = work;
  const scale = c.box / Math.max(h, w);
  let mass = 0;
  let my = 0;
  let mx = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = data[y * w + x];
      mass += v; my += v * y; mx += v * x;
    }
  }
  const cy = my / mass + 0.5; // pixel i covers [i, i + 1): its centre is i + 0.5
  const cx = mx / mass + 0.5;
  const span = c.canvas / scale; // the output field, in working pixels
  const pad = Math.ceil(span); // the image padded with paper by this much on every side
  const x0 = cx + pad - (c.center + 0.5) / scale;
  const y0 = cy + pad - (c.center + 0.5) / scale;
  const out = resizePadded(work, pad, c.canvas, c.canvas, [x0, y0, x0 + span, y0 + span]);
  for (let i = 0; i < out.length; i++) out[i] = out[i] < 1e-3 ? 0 : Math.min(out[i], 1);
  return out;
}

/**
 * Pillow's resize of a float image with the BOX filter and a source box (Resample.c): a
 * horizontal then a vertical pass, weights of 1 for the input pixels whose centres fall in
 * each output pixel's span, sums in double precision, stored as float32.
 */
export function resizeBox(img, outW, outH, box) {
  return resizePadded(img, 0, outW, outH, box);
}

/**
 * `resizeBox` of the image padded with ``pad`` pixels of paper on every side (``box`` in
 * the padded image's pixels), without making the padded image: the paper's terms of a sum
 * are +0 (0 times a weight), and adding +0 to a sum that starts at +0 leaves it as it is,
 * so they are left out.
 */
function resizePadded(img, pad, outW, outH, box) {
  const { data, w, h } = img;
  const [bx0, by0, bx1, by1] = box.map(f32); // Pillow takes the box as C floats
  const horiz = coefficients(w + 2 * pad, bx0, bx1, outW);
  const vert = coefficients(h + 2 * pad, by0, by1, outH);
  // the rows the vertical pass reads (Pillow's ybox), those of the image only: paper is 0
  const first = Math.max(vert.start[0], pad);
  const last = Math.min(vert.start[outH - 1] + vert.count[outH - 1], pad + h);
  const temp = new Float32Array(outW * Math.max(last - first, 0)); // row y at y - first
  for (let y = first; y < last; y++) {
    const row = (y - pad) * w - pad; // the padded image's (x, y) is data[row + x]
    for (let xx = 0; xx < outW; xx++) {
      const [start, n, at] = [horiz.start[xx], horiz.count[xx], horiz.at[xx]];
      const [i0, i1] = [Math.max(pad - start, 0), Math.min(pad + w - start, n)];
      let ss = 0;
      for (let i = i0; i < i1; i++) ss += data[row + start + i] * horiz.k[at + i];
      temp[(y - first) * outW + xx] = ss;
    }
  }
  const out = new Float32Array(outW * outH);
  for (let yy = 0; yy < outH; yy++) {
    const [start, n, at] = [vert.start[yy], vert.count[yy], vert.at[yy]];
    const [i0, i1] = [Math.max(first - start, 0), Math.min(last - start, n)];
    for (let xx = 0; xx < outW; xx++) {
      let ss = 0;
      for (let i = i0; i < i1; i++) ss += temp[(start + i - first) * outW + xx] * vert.k[at + i];
      out[yy * outW + xx] = ss;
    }
  }
  return out;
}

/**
 * Pillow's precompute_coeffs for the BOX filter: per output pixel xx, its first input
 * ``start[xx]`` and ``count[xx]`` weights from ``k[at[xx]]`` on.
 */
function coefficients(inSize, in0, in1, outSize) {
  const scale = f32(in1 - in0) / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 0.5 * filterscale;
  const ksize = 2 * Math.ceil(support) + 1; // the most weights a pixel has (Pillow's ksize)
  const [start, count, at] = [new Int32Array(outSize), new Int32Array(outSize), new Int32Array(outSize)];
  const k = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize);
    const n = Math.max(xmax - xmin, 0);
    [start[xx], count[xx], at[xx]] = [xmin, n, xx * ksize];
    let ww = 0;
    const ss = 1 / filterscale;
    for (let x = 0; x < n; x++) {
      const t = (x + xmin - center + 0.5) * ss;
      const weight = t > -0.5 && t <= 0.5 ? 1 : 0;
      k[xx * ksize + x] = weight;
      ww += weight;
    }
    if (ww !== 0) for (let x = 0; x < n; x++) k[xx * ksize + x] /= ww;
  }
  return { start, count, at, k };
}

// ------------------------------------------------------------------ blobs

/** Connected blobs (8-neighbour) of pixels > 0.3 holding at least ``blob_fraction`` of the ink. */
export function countBlobs(image, c) {
  const side = c.canvas;
  const on = (i) => image[i] > INKED; // numpy compares a float32 image with float32(0.3)
  const labels = new Int32Array(side * side);
  let n = 0; // blobs are numbered in the order their first pixel comes, row by row
  for (let start = 0; start < side * side; start++) {
    if (!on(start) || labels[start]) continue;
    labels[start] = ++n;
    const stack = [start];
    while (stack.length) {
      const i = stack.pop();
      const [y, x] = [Math.floor(i / side), i % side];
      for (let ny = Math.max(y - 1, 0); ny <= Math.min(y + 1, side - 1); ny++) {
        for (let nx = Math.max(x - 1, 0); nx <= Math.min(x + 1, side - 1); nx++) {
          const j = ny * side + nx;
          if (on(j) && !labels[j]) {
            labels[j] = n;
            stack.push(j);
          }
        }
      }
    }
  }
  if (n <= 1) return n;
  const mass = new Float64Array(n); // summed row by row, as numpy's bincount does
  labels.forEach((id, i) => { if (id) mass[id - 1] += image[i]; });
  const total = pairwiseSum(mass);
  return mass.filter((m) => m >= c.blob_fraction * total).length;
}

const INKED = f32(0.3);

/** numpy's sum of a float64 array (pairwise: eight running sums from eight values up). */
function pairwiseSum(a) {
  if (a.length < 8) return a.reduce((s, v) => s + v, 0);
  const r = Array.from(a.subarray(0, 8));
  let i = 8;
  for (; i < a.length - (a.length % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[i + j];
  let res = (r[0] + r[1] + (r[2] + r[3])) + (r[4] + r[5] + (r[6] + r[7]));
  for (; i < a.length; i++) res += a[i];
  return res;
}

// ------------------------------------------------------------------ Pillow's pen

/**
 * Strokes of [x, y] points drawn with a round pen ``pen`` pixels wide on a w x h grey image
 * (ink 255 on 0), as `digitlab.preprocess.draw_strokes` draws them with Pillow: each stroke
 * a wide polyline (segments as polygons), and a filled circle at every point.
 */
export function drawStrokes(strokes, w, h, pen) {
  const img = new Uint8Array(w * h);
  const r = pen / 2;
  const width = pyRound(pen);
  for (const stroke of strokes) {
    // Pillow truncates coordinates to integers (C casts) before drawing.
    if (stroke.length > 1 && width !== 0) {
      const line = width <= 1 ? thinLine : wideLine;
      for (let i = 0; i + 1 < stroke.length; i++) {
        const [p, q] = [stroke[i], stroke[i + 1]];
        line(img, w, h, Math.trunc(p[0]), Math.trunc(p[1]), Math.trunc(q[0]), Math.trunc(q[1]), width);
      }
      const last = stroke[stroke.length - 1];
      if (width <= 1) point(img, w, h, Math.trunc(last[0]), Math.trunc(last[1]));
    }
    for (const [x, y] of stroke) {
      filledEllipse(img, w, h, Math.trunc(x - r), Math.trunc(y - r),
        Math.trunc(x + r), Math.trunc(y + r));
    }
  }
  return img;
}

// The pen's primitives below draw 255 by default; ``fill`` draws another value (on an
// Int32Array: a Pillow "I" image, as read.js numbers a drawing's strokes).

export function point(img, w, h, x, y, fill = 255) {
  if (x >= 0 && x < w && y >= 0 && y < h) img[y * w + x] = fill;
}

function hline(img, w, h, x0, y, x1, fill = 255) {
  if (y < 0 || y >= h || x0 >= w || x1 < 0 || x1 < x0) return;
  const end = y * w + Math.min(x1, w - 1); // a loop: spans are short, shorter than a call to fill
  for (let i = y * w + Math.max(x0, 0); i <= end; i++) img[i] = fill;
}

// Draw.c's rounding macros: ROUND_UP(f) on a C float adds 0.5F in float arithmetic.
const roundUp = (f) => (f >= 0 ? Math.floor(f32(f + 0.5)) : -Math.floor(Math.abs(f) + 0.5));
const roundDown = (f) => (f >= 0 ? Math.ceil(f32(f - 0.5)) : -Math.ceil(Math.abs(f) - 0.5));
// The same on C doubles.
const roundUpD = (f) => (f >= 0 ? Math.floor(f + 0.5) : -Math.floor(Math.abs(f) + 0.5));
const roundDownD = (f) => (f >= 0 ? Math.ceil(f - 0.5) : -Math.ceil(Math.abs(f) - 0.5));
const roundf = (f) => Math.sign(f) * Math.floor(Math.abs(f) + 0.5); // C roundf: half away from 0

/**
 * Draw.c's line8: Bresenham, without the last point (for pens of one pixel). ``width`` is
 * not read: the signature is `wideLine`'s, so either draws a segment.
 */
export function thinLine(img, w, h, x0, y0, x1, y1, width = 1, fill = 255) {
  let dx = Math.abs(x1 - x0);
  let dy = Math.abs(y1 - y0);
  const xs = x1 >= x0 ? 1 : -1;
  const ys = y1 >= y0 ? 1 : -1;
  if (dx === 0 || dy === 0) {
    for (let i = 0; i < Math.max(dx, dy); i++) {
      point(img, w, h, x0, y0, fill);
      if (dx === 0) y0 += ys; else x0 += xs;
    }
  } else if (dx > dy) {
    const n = dx;
    dy += dy;
    let e = dy - dx;
    dx += dx;
    for (let i = 0; i < n; i++) {
      point(img, w, h, x0, y0, fill);
      if (e >= 0) { y0 += ys; e -= dx; }
      e += dy;
      x0 += xs;
    }
  } else {
    const n = dy;
    dx += dx;
    let e = dx - dy;
    dy += dy;
    for (let i = 0; i < n; i++) {
      point(img, w, h, x0, y0, fill);
      if (e >= 0) { x0 += xs; e -= dy; }
      e += dx;
      y0 += ys;
    }
  }
}

/** Draw.c's ImagingDrawWideLine: the segment as a filled quadrilateral. */
export function wideLine(img, w, h, x0, y0, x1, y1, width, fill = 255) {
  const dx = x1 - x0;
  const dy = y1 - y0;
  if (dx === 0 && dy === 0) {
    point(img, w, h, x0, y0, fill);
    return;
  }
  const big = Math.sqrt(dx * dx + dy * dy);
  const small = (width - 1) / 2;
  const ratioMax = roundUpD(small) / big;
  const ratioMin = roundDownD(small) / big;
  const dxmin = roundDownD(ratioMin * dy);
  const dxmax = roundDownD(ratioMax * dy);
  const dymin = roundDownD(ratioMin * dx);
  const dymax = roundDownD(ratioMax * dx);
  const v = [x0 - dxmin, y0 + dymax, x1 - dxmin, y1 + dymax, // the corners: x, y, x, y, ...
    x1 + dxmax, y1 - dymin, x0 + dxmax, y0 - dymin];
  const edges = [];
  for (let i = 0; i < 8; i += 2) edges.push(edge(v[i], v[i + 1], v[(i + 2) % 8], v[(i + 3) % 8]));
  fillPolygon(img, w, h, edges, fill);
}

/** The edge from (x0, y0) to (x1, y1), as Draw.c's add_edge makes it. */
function edge(x0, y0, x1, y1) {
  return {
    x0, y0,
    xmin: Math.min(x0, x1), xmax: Math.max(x0, x1),
    ymin: Math.min(y0, y1), ymax: Math.max(y0, y1),
    dx: y0 === y1 ? 0 : f32((x1 - x0) / (y1 - y0)),
  };
}

/** Draw.c's polygon_generic (no alpha): a scan-line fill in float32 arithmetic. */
function fillPolygon(img, w, h, edges, fill = 255) {
  let ymin = h - 1;
  let ymax = 0;
  const table = [];
  for (const e of edges) {
    ymin = Math.min(ymin, e.ymin);
    ymax = Math.max(ymax, e.ymax);
    if (e.ymin === e.ymax) hline(img, w, h, e.xmin, e.ymin, e.xmax, fill);
    else table.push(e);
  }
  ymin = Math.max(ymin, 0);
  ymax = Math.min(ymax, h);
  const at = edgeAt;
  const xx = new Float64Array(2 * table.length); // a scan line's crossings: n of them
  for (let y = ymin; y <= ymax; y++) {
    let n = 0;
    for (let i = 0; i < table.length; i++) {
      const cur = table[i];
      if (y < cur.ymin || y > cur.ymax) continue;
      xx[n++] = at(cur, y);
      const j = n - 1;
      if (y === cur.ymax && y < ymax) {
        xx[n++] = xx[j]; // needed to draw consistent polygons
      } else if ((y === cur.ymin || y === cur.ymax) && cur.dx !== 0) {
        for (let k = 0; k < i; k++) { // connect discontiguous corners
          const other = table[k];
          if ((y !== other.ymin && y !== other.ymax) || other.dx === 0) continue;
          if (roundf(xx[j]) !== roundf(at(other, y))) continue;
          const offset = y === cur.ymax ? -1 : 1;
          const adjacent = at(cur, y + offset);
          if (y + offset < other.ymin || y + offset > other.ymax) continue;
          const adjacentOther = at(other, y + offset);
          if (xx[j] > f32(adjacent + 1) && xx[j] > f32(adjacentOther + 1)) {
            xx[j] = roundf(Math.max(adjacent, adjacentOther)) + 1;
          } else if (xx[j] < f32(adjacent - 1) && xx[j] < f32(adjacentOther - 1)) {
            xx[j] = roundf(Math.min(adjacent, adjacentOther)) - 1;
          }
          break;
        }
      }
    }
    sortFew(xx, n);
    for (let i = 1; i < n; i += 2) {
      hline(img, w, h, roundUp(xx[i - 1]), y, roundDown(xx[i]), fill);
    }
  }
}

/** Where edge ``e`` crosses row ``y``, in float32 arithmetic (polygon_generic's). */
function edgeAt(e, y) {
  return f32(f32((y - e.y0) * e.dx) + e.x0);
}

/**
 * A scan line's few crossings xx[0..n) sorted ascending in place, as sort((a, b) => a - b)
 * sorts them (stable: equal values keep their order), by insertion: no comparator calls.
 */
function sortFew(xx, n) {
  for (let i = 1; i < n; i++) {
    const v = xx[i];
    let j = i - 1;
    for (; j >= 0 && xx[j] > v; j--) xx[j + 1] = xx[j];
    xx[j + 1] = v;
  }
}

/** Draw.c's ellipseNew, filled: spans from a Bresenham walk of the quarter ellipse. */
export function filledEllipse(img, w, h, x0, y0, x1, y1, fill = 255) {
  const a = x1 - x0;
  const b = y1 - y0;
  if (a < 0 || b < 0) return;
  for (const [left, dy, right] of ellipseOffsets(a, b)) {
    hline(img, w, h, x0 + left, y0 + dy, x0 + right, fill);
  }
}

// A drawing's dots are all the same size: their spans are worked out once.
const offsetCache = new Map();

function ellipseOffsets(a, b) {
  const key = `${a},${b}`;
  if (!offsetCache.has(key)) {
    const spans = [];
    for (const [l, y, r] of ellipseSpans(a, b, a + b)) {
      spans.push([Math.trunc((l + a) / 2), Math.trunc((y + b) / 2), Math.trunc((r + a) / 2)]);
    }
    if (offsetCache.size > 64) offsetCache.clear();
    offsetCache.set(key, spans);
  }
  return offsetCache.get(key);
}

// A quarter of an ellipse with semi-axes a, b on the grid of step 2 (Draw.c's quarter_*).
function quarter(a, b) {
  if (a < 0 || b < 0) return { next: () => null };
  const [a2, b2] = [a * a, b * b];
  const delta = (x, y) => Math.abs(a2 * y * y + b2 * x * x - a2 * b2);
  let [cx, cy, finished] = [a, b % 2, false];
  const [ex, ey] = [a % 2, b];
  return {
    next() {
      if (finished) return null;
      const at = [cx, cy];
      if (cx === ex && cy === ey) {
        finished = true;
      } else {
        let [nx, ny] = [cx, cy + 2];
        let nd = delta(nx, ny);
        if (nx > 1) {
          const d1 = delta(cx - 2, cy + 2);
          if (nd > d1) { [nx, ny, nd] = [cx - 2, cy + 2, d1]; }
          const d2 = delta(cx - 2, cy);
          if (nd > d2) { [nx, ny] = [cx - 2, cy]; }
        }
        [cx, cy] = [nx, ny];
      }
      return at;
    },
  };
}

// The horizontal spans [left, y, right] of an ellipse ring ``w`` thick (Draw.c's ellipse_*).
function* ellipseSpans(a, b, w) {
  const leftmost = a % 2;
  const outer = quarter(a, b);
  const first = w < 1 ? null : outer.next();
  if (first === null) return;
  let [pr, py] = first;
  const inner = quarter(a - 2 * (w - 1), b - 2 * (w - 1));
  let pl = leftmost;
  let finished = false;
  while (!finished) {
    const [y, r] = [py, pr];
    let l = pl;
    let p;
    while ((p = outer.next()) !== null && p[1] <= y) { /* skip to the next row */ }
    if (p === null) finished = true;
    else [pr, py] = p;
    while ((p = inner.next()) !== null && p[1] <= y) l = p[0];
    pl = p === null ? leftmost : p[0];
    // Draw.c buffers these four and hands them out last first.
    const spans = [];
    if ((l > 0 || l < r) && y > 0) spans.push([l === 0 ? 2 : l, y, r]);
    if (y > 0) spans.push([-r, y, -l]);
    if (l > 0 || l < r) spans.push([l === 0 ? 2 : l, -y, r]);
    spans.push([-r, -y, -l]);
    yield* spans.reverse();
  }
}

// ------------------------------------------------------------------ the Predictor's verdict
// The page's only copy of the Predictor's trust rules (`Predictor.judge` in predict.py):
// app.js reads with `judge` and shows what `verdictOf` says. tests/test_js_parity.py runs
// both, in Node, against what the Python Predictor says on the same drawings and scores.

/**
 * What the Predictor says about a drawing: the digit (null: no ink, or not a digit), its
 * probability, and why it should not be trusted, by the server's trust rules
 * (settings.trust). ``scores`` is what the model gave for ``norm.image``
 * ({probabilities, notDigit}, as `BrowserModel.scores`), null when there was no ink to read.
 */
export function judge(norm, scores, classes, trust) {
  if (norm.image === null || scores === null) {
    return { digit: null, confidence: 0, unsure: true, reasons: ["no ink"],
      probabilities: classes.map(() => 0) };
  }
  const { probabilities, notDigit: score } = scores;
  let best = 0; // the first of equal maxima, as numpy's argmax
  for (let i = 1; i < probabilities.length; i++) if (probabilities[i] > probabilities[best]) best = i;
  const confidence = probabilities[best];
  // A model without a detector scores null; settings without a threshold leave it out. The
  // Predictor compares its float32 score with the threshold in float32 (numpy's rule for a
  // float32 and a Python float), so a score a hair over the threshold may equal it there.
  const notADigit = score != null && trust.not_digit != null
    && f32(score) > f32(trust.not_digit);
  const reasons = [
    ["not a digit", notADigit],
    ["low confidence", confidence < trust.min_confidence],
    ["several blobs", norm.nBlobs > trust.max_blobs],
    ["too wide for a digit", norm.aspect > trust.max_aspect],
    ["too small", norm.inkSize < trust.min_ink_size],
  ].filter(([, bad]) => bad).map(([why]) => why);
  return { digit: notADigit ? null : classes[best], confidence, unsure: reasons.length > 0,
    reasons, probabilities: Array.from(probabilities) };
}

/**
 * How the page reads an answer, `judge`'s or the server's (POST api/predict): "no ink",
 * "not a digit" (a letter, a shape, a face, a scribble), "unsure" or "read".
 */
export function verdictOf(answer) {
  if (answer.reasons.includes("not a digit")) return "not a digit";
  if (answer.digit === null) return "no ink";
  return answer.unsure ? "unsure" : "read";
}
