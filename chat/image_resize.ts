/**
 * Bicubic resampling that reproduces OpenCV's `cv::resize(..., INTER_CUBIC)` on a float32 image bit for bit,
 * which is what mistral-common runs on every image (`cv2.resize(np.float32 image, size, INTER_CUBIC)`).
 *
 * OpenCV's recipe, restated from `modules/imgproc/src/resize.cpp` (4.x):
 * - source coordinate of a destination pixel: `fx = float((dx + 0.5) * scale - 0.5)` with the scale in double
 *   (`1 / (dst / src)`), `sx = floor(fx)`, `fx -= sx`; the 4 taps are `sx - 1 .. sx + 2`, clamped to the image
 *   (border replicate);
 * - Keys' cubic with `A = -0.75`, coefficients evaluated in float32, the fourth being `1 - c0 - c1 - c2`;
 * - a horizontal pass into a float32 row buffer (`((p0 + p1) + p2) + p3`), then a vertical pass over 4 buffered rows.
 *   The vertical pass is SIMD for the first `width - width % 4` values of a row (`S0·b0 + (S1·b1 + (S2·b2 + S3·b3))`,
 *   no FMA in the SSE baseline build) and scalar for the rest (`((S0·b0 + S1·b1) + S2·b2) + S3·b3`); the two orders
 *   round differently, so both are kept;
 * - same size in and out is a plain copy; values are never clamped.
 *
 * Every float32 operation is emulated with `Math.fround` (a double result of one operation on float32 inputs,
 * rounded to float32, is the correctly rounded float32 result).
 *
 * @module
 */

const fround = Math.fround;
/** Keys' cubic parameter used by OpenCV's INTER_CUBIC. */
const A = -0.75;
/** SIMD width, in float lanes, of OpenCV's vertical cubic pass in the x86-64 (SSE) build. */
const LANES = 4;

/** OpenCV's `interpolateCubic` in float32 arithmetic. */
function cubicCoefficients(x: number, out: Float32Array, at: number): void {
  const x1 = fround(x + 1);
  // ((A*(x+1) - 5A)*(x+1) + 8A)*(x+1) - 4A
  let c0 = fround(fround(A * x1) - fround(5 * A));
  c0 = fround(fround(fround(c0 * x1) + fround(8 * A)) * x1);
  c0 = fround(c0 - fround(4 * A));
  // ((A+2)*x - (A+3))*x*x + 1
  let c1 = fround(fround(fround(A + 2) * x) - fround(A + 3));
  c1 = fround(fround(fround(c1 * x) * x) + 1);
  // ((A+2)*(1-x) - (A+3))*(1-x)*(1-x) + 1
  const y = fround(1 - x);
  let c2 = fround(fround(fround(A + 2) * y) - fround(A + 3));
  c2 = fround(fround(fround(c2 * y) * y) + 1);
  const c3 = fround(fround(fround(1 - c0) - c1) - c2);
  out[at] = c0;
  out[at + 1] = c1;
  out[at + 2] = c2;
  out[at + 3] = c3;
}

/** Per destination index along one axis: the 4 clamped source indices and their float32 weights. */
interface Taps {
  index: Int32Array;
  weight: Float32Array;
}

function taps(src: number, dst: number): Taps {
  const scale = 1 / (dst / src);
  const index = new Int32Array(dst * 4);
  const weight = new Float32Array(dst * 4);
  for (let d = 0; d < dst; d++) {
    let f = fround((d + 0.5) * scale - 0.5);
    const s = Math.floor(f);
    f = fround(f - s);
    cubicCoefficients(f, weight, d * 4);
    for (let k = 0; k < 4; k++) index[d * 4 + k] = Math.min(Math.max(s - 1 + k, 0), src - 1);
  }
  return { index, weight };
}

/**
 * Resizes an interleaved image (`channels` values per pixel, row-major) to `dstWidth × dstHeight` exactly as
 * OpenCV's INTER_CUBIC does on a CV_32F image. 8-bit input is treated as the float values it converts to.
 *
 * @returns The resized image, interleaved float32, unclamped.
 */
export function resizeCubic(
  src: Uint8Array | Float32Array,
  srcWidth: number,
  srcHeight: number,
  channels: number,
  dstWidth: number,
  dstHeight: number,
): Float32Array {
  const out = new Float32Array(dstWidth * dstHeight * channels);
  if (srcWidth === dstWidth && srcHeight === dstHeight) {
    out.set(src);
    return out;
  }
  const xs = taps(srcWidth, dstWidth);
  const ys = taps(srcHeight, dstHeight);
  const rowLength = dstWidth * channels;
  // Column taps expanded per output value so the horizontal loop is one flat pass over a row.
  const hIndex = new Int32Array(rowLength * 4);
  const hWeight = new Float32Array(rowLength * 4);
  for (let dx = 0; dx < dstWidth; dx++) {
    for (let c = 0; c < channels; c++) {
      const o = (dx * channels + c) * 4;
      for (let k = 0; k < 4; k++) {
        hIndex[o + k] = xs.index[dx * 4 + k] * channels + c;
        hWeight[o + k] = xs.weight[dx * 4 + k];
      }
    }
  }

  // Horizontally resized source rows, cached by source row: consecutive output rows share most of their taps.
  const cacheRow = new Int32Array(4).fill(-1);
  const cache = Array.from({ length: 4 }, () => new Float32Array(rowLength));
  let nextSlot = 0;
  const horizontal = (sy: number): Float32Array => {
    for (let i = 0; i < 4; i++) if (cacheRow[i] === sy) return cache[i];
    // Round robin evicts the oldest row. Taps only move down the image and one output row needs at most 4
    // contiguous rows, so the oldest cached row is never one the current output row still needs.
    const slot = nextSlot;
    nextSlot = (nextSlot + 1) & 3;
    const row = cache[slot];
    cacheRow[slot] = sy;
    const base = sy * srcWidth * channels;
    for (let x = 0, o = 0; x < rowLength; x++, o += 4) {
      const p0 = fround(src[base + hIndex[o]] * hWeight[o]);
      const p1 = fround(src[base + hIndex[o + 1]] * hWeight[o + 1]);
      const p2 = fround(src[base + hIndex[o + 2]] * hWeight[o + 2]);
      const p3 = fround(src[base + hIndex[o + 3]] * hWeight[o + 3]);
      row[x] = fround(fround(fround(p0 + p1) + p2) + p3);
    }
    return row;
  };

  const vectorEnd = rowLength - (rowLength % LANES);
  for (let dy = 0; dy < dstHeight; dy++) {
    const t = dy * 4;
    const s0 = horizontal(ys.index[t]);
    const s1 = horizontal(ys.index[t + 1]);
    const s2 = horizontal(ys.index[t + 2]);
    const s3 = horizontal(ys.index[t + 3]);
    const b0 = ys.weight[t], b1 = ys.weight[t + 1], b2 = ys.weight[t + 2], b3 = ys.weight[t + 3];
    const o = dy * rowLength;
    let x = 0;
    for (; x < vectorEnd; x++) {
      let v = fround(s3[x] * b3);
      v = fround(fround(s2[x] * b2) + v);
      v = fround(fround(s1[x] * b1) + v);
      out[o + x] = fround(s0[x] * b0) + v;
    }
    for (; x < rowLength; x++) {
      const v = fround(fround(s0[x] * b0) + fround(s1[x] * b1));
      out[o + x] = fround(v + fround(s2[x] * b2)) + fround(s3[x] * b3);
    }
  }
  return out;
}
