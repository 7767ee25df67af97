// The 28 x 28 image the model saw, as the server sends it: an 8-bit grey PNG, ink white,
// base64 (`digitlab.preprocess.normalized_png`). Used for the model's-eye view and for the
// corrections a static site keeps in the browser, so they export exactly as the server's do.

import { pyRound } from "./preprocess.js";

/** Base64 of the grey PNG of a float image in [0, 1] (row-major, ``side`` x ``side``). */
export function normalizedPng(image, side) {
  // As the server: np.round(np.clip(image, 0, 1) * 255) in float32, halves to even.
  const pixels = new Uint8Array(image.length);
  for (let i = 0; i < image.length; i++) {
    pixels[i] = pyRound(Math.fround(Math.min(Math.max(image[i], 0), 1) * 255));
  }
  return toBase64(greyPng(pixels, side, side));
}

/** A PNG file of 8-bit grey pixels; the image data in stored (uncompressed) deflate blocks. */
export function greyPng(pixels, width, height) {
  const raw = new Uint8Array((width + 1) * height); // each row: filter type 0, then the row
  for (let y = 0; y < height; y++) raw.set(pixels.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 0, 0, 0, 0], 8); // 8 bits, grey, deflate, no filter choice, no interlace
  return concat([
    Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a),
    chunk("IHDR", header),
    chunk("IDAT", zlibStored(raw)),
    chunk("IEND", new Uint8Array(0)),
  ]);
}

function zlibStored(data) {
  const parts = [Uint8Array.of(0x78, 0x01)]; // zlib header: deflate, no dictionary
  for (let at = 0; at < data.length; at += 65535) {
    const block = data.subarray(at, at + 65535);
    const n = block.length;
    const last = at + n >= data.length ? 1 : 0;
    parts.push(Uint8Array.of(last, n & 255, n >> 8, ~n & 255, (~n >> 8) & 255), block);
  }
  parts.push(uint32(adler32(data)));
  return concat(parts);
}

function chunk(type, data) {
  const body = concat([new TextEncoder().encode(type), data]);
  return concat([uint32(data.length), body, uint32(crc32(body))]);
}

const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 255] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function adler32(bytes) {
  let [a, b] = [1, 0];
  for (let i = 0; i < bytes.length; i++) {
    a = (a + bytes[i]) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
}

function uint32(v) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, v);
  return out;
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function toBase64(bytes) {
  let text = ""; // the bytes as characters, some thousands a call (a bounded argument list)
  for (let at = 0; at < bytes.length; at += 4096) {
    text += String.fromCharCode.apply(null, bytes.subarray(at, at + 4096));
  }
  return btoa(text);
}
