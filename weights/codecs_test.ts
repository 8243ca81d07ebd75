import {
  bf16ToF32,
  bytesToF32,
  decodeBf16,
  decodeE2m1,
  decodeF16,
  decodeF8e4m3,
  dequantizeFp8,
  dequantizeNvfp4,
  dequantizeNvfp4Folded,
  dequantizeQ4,
  dequantizeQ8,
  encodeBf16,
  encodeE2m1,
  encodeF16,
  encodeF8e4m3,
  f16ToF32,
  f32ToBf16,
  f32ToBytes,
  f32ToF16,
  f32ToF8e4m3,
  f8e4m3ToF32,
  foldNvfp4Scales,
  nvfp4BlockScale,
  quantizeFp8,
  quantizeNvfp4,
  quantizeQ4,
  quantizeQ8,
  unfoldNvfp4Scales,
} from "./codecs.ts";

function assertEq(actual: unknown, expected: unknown, msg = ""): void {
  if (!Object.is(actual, expected)) throw new Error(`${msg} expected ${String(expected)}, got ${String(actual)}`);
}

function hex(n: number): string {
  return "0x" + n.toString(16);
}

/** An f32 from its bits, so hand cases are exact. */
function f32(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0];
}

function seeded(seed: number): () => number {
  // mulberry32: deterministic test data
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("bf16: all 65536 codes decode → encode round trip (NaN payloads kept)", () => {
  const codes = new Uint16Array(65536).map((_, i) => i);
  const back = f32ToBf16(bf16ToF32(codes));
  for (let i = 0; i < 65536; i++) if (back[i] !== i) throw new Error(`bf16 ${hex(i)} → ${hex(back[i])}`);
});

Deno.test("bf16: round to nearest even on hand cases", () => {
  // 1 + 2^-8 is halfway between 1 (even) and 1 + 2^-7: ties to 1.
  assertEq(encodeBf16(f32(0x3f808000)), 0x3f80, "tie down");
  // 1 + 3·2^-8 is halfway between 1+2^-7 (odd mantissa 1) and 1+2^-6: ties up to even 0x3f82.
  assertEq(encodeBf16(f32(0x3f818000)), 0x3f82, "tie up");
  assertEq(encodeBf16(f32(0x3f808001)), 0x3f81, "above half");
  assertEq(encodeBf16(f32(0x3f807fff)), 0x3f80, "below half");
  assertEq(encodeBf16(f32(0x7f7fffff)), 0x7f80, "max f32 rounds to inf");
  assertEq(encodeBf16(-0), 0x8000, "-0");
  assertEq(encodeBf16(Infinity), 0x7f80, "inf");
  assertEq(encodeBf16(NaN) & 0x7fc0, 0x7fc0, "NaN quiet");
  assertEq(decodeBf16(0x3f80), 1);
  assertEq(decodeBf16(0xc000), -2);
  // Signalling NaN whose payload lives only in the low half must stay NaN, not become inf.
  const sNaN = new Float32Array(new Uint32Array([0x7f800001]).buffer);
  assertEq(f32ToBf16(sNaN)[0], 0x7fc0, "low-payload NaN");
});

Deno.test("f16: all 65536 codes decode → encode round trip (NaN payloads kept)", () => {
  const codes = new Uint16Array(65536).map((_, i) => i);
  const back = f32ToF16(f16ToF32(codes));
  for (let i = 0; i < 65536; i++) if (back[i] !== i) throw new Error(`f16 ${hex(i)} → ${hex(back[i])}`);
});

Deno.test("f16: values and round to nearest even on hand cases", () => {
  assertEq(decodeF16(0x3c00), 1);
  assertEq(decodeF16(0x7bff), 65504, "max");
  assertEq(decodeF16(0x0001), 2 ** -24, "min subnormal");
  assertEq(decodeF16(0x0400), 2 ** -14, "min normal");
  assertEq(decodeF16(0xfc00), -Infinity);
  assertEq(encodeF16(1 + 2 ** -11), 0x3c00, "tie to even (down)");
  assertEq(encodeF16(1 + 3 * 2 ** -11), 0x3c02, "tie to even (up)");
  assertEq(encodeF16(65504 + 16), 0x7c00, "halfway above max rounds to inf");
  assertEq(encodeF16(65504 + 15), 0x7bff, "below halfway stays max");
  assertEq(encodeF16(2 ** -25), 0x0000, "half of min subnormal ties to zero");
  assertEq(encodeF16(3 * 2 ** -25), 0x0002, "1.5 subnormal units ties to 2");
  assertEq(encodeF16(2 ** -25 + 2 ** -40), 0x0001, "just above half rounds up");
  assertEq(encodeF16(2 ** -14 - 2 ** -25), 0x0400, "largest subnormal + half rounds to min normal");
  assertEq(encodeF16(-0), 0x8000);
  assertEq(encodeF16(1e-30), 0);
  assertEq(encodeF16(NaN) & 0x7e00, 0x7e00, "NaN quiet");
});

Deno.test("f8e4m3: all 256 codes round trip, NaN only at S.1111.111", () => {
  const codes = new Uint8Array(256).map((_, i) => i);
  const values = f8e4m3ToF32(codes);
  const back = f32ToF8e4m3(values);
  for (let i = 0; i < 256; i++) {
    if (back[i] !== i) throw new Error(`f8 ${hex(i)} → ${values[i]} → ${hex(back[i])}`);
    assertEq(Number.isNaN(values[i]), (i & 0x7f) === 0x7f, `NaN-ness of ${hex(i)}`);
  }
});

Deno.test("f8e4m3: values, ties to even, saturation", () => {
  assertEq(decodeF8e4m3(0x38), 1);
  assertEq(decodeF8e4m3(0x7e), 448, "max");
  assertEq(decodeF8e4m3(0xfe), -448);
  assertEq(decodeF8e4m3(0x01), 2 ** -9, "min subnormal");
  assertEq(decodeF8e4m3(0x08), 2 ** -6, "min normal");
  assertEq(decodeF8e4m3(0x07), 7 * 2 ** -9, "max subnormal");
  assertEq(encodeF8e4m3(1), 0x38);
  assertEq(encodeF8e4m3(1.0625), 0x38, "1 + 1/16 ties to even 1");
  assertEq(encodeF8e4m3(1.1875), 0x3a, "1 + 3/16 ties to even 1.25");
  assertEq(encodeF8e4m3(1.07), 0x39, "above half");
  assertEq(encodeF8e4m3(2 ** -10), 0x00, "half of min subnormal ties to zero");
  assertEq(encodeF8e4m3(3 * 2 ** -10), 0x02, "1.5 units ties to 2");
  assertEq(encodeF8e4m3(15 * 2 ** -10), 0x08, "7.5 units ties up to min normal");
  assertEq(encodeF8e4m3(448), 0x7e);
  assertEq(encodeF8e4m3(464), 0x7e, "halfway to 480 saturates");
  assertEq(encodeF8e4m3(1e6), 0x7e, "saturate");
  assertEq(encodeF8e4m3(-1e6), 0xfe, "saturate negative");
  assertEq(encodeF8e4m3(Infinity), 0x7e, "inf saturates");
  assertEq(encodeF8e4m3(NaN), 0x7f);
  assertEq(encodeF8e4m3(-0), 0x80);
  assertEq(encodeF8e4m3(-1e-30), 0x80);
});

Deno.test("f8e4m3: encode is the nearest code (brute force over random values)", () => {
  const finite = [...Array(256).keys()].filter((c) => (c & 0x7f) !== 0x7f).map((c) => [c, decodeF8e4m3(c)]);
  const rnd = seeded(7);
  for (let n = 0; n < 20000; n++) {
    const x = Math.fround((rnd() - 0.5) * 2 ** (rnd() * 24 - 12));
    const c = encodeF8e4m3(x);
    const err = Math.abs(decodeF8e4m3(c) - x);
    for (const [, v] of finite) if (Math.abs(v - x) < err) throw new Error(`${x}: ${hex(c)} not nearest (${v})`);
  }
});

Deno.test("bytesToF32 / f32ToBytes round trip, also from an unaligned view", () => {
  const v = new Float32Array([1, -2, 0.5, 3.25]);
  for (const dt of ["f32", "bf16", "f16", "f8e4m3"] as const) {
    const bytes = f32ToBytes(v, dt);
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    const back = bytesToF32(shifted.subarray(1), dt);
    for (let i = 0; i < v.length; i++) assertEq(back[i], v[i], `${dt}[${i}]`);
  }
});

Deno.test("scaled FP8: W = fp8 · scale, one scale per expert block", () => {
  const codes = f32ToF8e4m3(new Float32Array([1, 2, -3, 4, 1, 2, -3, 4]));
  const w = dequantizeFp8(codes, [0.5, 2]);
  const want = [0.5, 1, -1.5, 2, 2, 4, -6, 8];
  for (let i = 0; i < 8; i++) assertEq(w[i], want[i], `w[${i}]`);
  assertEq(dequantizeFp8(codes, 0.25)[3], 1, "per-tensor scalar");
  const q = quantizeFp8(new Float32Array([448, -224, 1, 0.5]), 2);
  assertEq(q.scales[0], 1);
  assertEq(q.scales[1], Math.fround(1 / 448));
  const back = dequantizeFp8(q.codes, q.scales);
  assertEq(back[0], 448);
  assertEq(back[1], -224);
  if (Math.abs(back[2] - 1) > 1e-6) throw new Error(`block 2: ${back[2]}`);
});

Deno.test("E2M1: codes, sign bit 3, RNE boundaries of cast_to_fp4", () => {
  const mags = [0, 0.5, 1, 1.5, 2, 3, 4, 6];
  for (let c = 0; c < 16; c++) assertEq(decodeE2m1(c), (c & 8 ? -1 : 1) * mags[c & 7], `code ${c}`);
  const cases: [number, number][] = [
    [0.25, 0],
    [0.26, 1],
    [0.75, 2],
    [1.25, 2],
    [1.3, 3],
    [1.75, 4],
    [2.5, 4],
    [2.6, 5],
    [3.5, 6],
    [5, 6],
    [5.01, 7],
    [100, 7],
    [-0.1, 0],
    [-1, 10],
    [-6, 15],
  ];
  for (const [x, c] of cases) assertEq(encodeE2m1(x), c, `encodeE2m1(${x})`);
});

Deno.test("NVFP4: hand-packed row decodes with scale / global divisor, even element in the low nibble", () => {
  // One row of 16: elements 0..15 alternate codes (1, 0xa) then (7, 0).
  const packed = new Uint8Array(8);
  for (let j = 0; j < 4; j++) packed[j] = 0x1 | (0xa << 4); // +0.5, -1
  for (let j = 4; j < 8; j++) packed[j] = 0x7; // +6, 0
  const scale = new Uint8Array([encodeF8e4m3(3)]); // fp8 3.0
  const w = dequantizeNvfp4({ packed, scale, globalScale: 2 }, 1, 16); // effective scale 1.5
  assertEq(w[0], 0.75);
  assertEq(w[1], -1.5);
  assertEq(w[8], 9);
  assertEq(w[9], 0);
});

Deno.test("NVFP4: folded block scales decode bit-identically and unfold to the stored f8 codes", () => {
  const rnd = seeded(11);
  const rows = 6, cols = 48, parts = 3;
  // Three source linears of very different magnitudes: each gets its own global scale.
  const v = new Float32Array(rows * cols).map((_, i) => (rnd() - 0.5) * 10 ** (Math.floor(i / (2 * cols)) - 1));
  const stored = [0, 1, 2].map((j) => quantizeNvfp4(v.subarray(j * 2 * cols, (j + 1) * 2 * cols), 2, cols));
  const codes = new Uint8Array(stored.flatMap((q) => [...q.scale]));
  const globals = stored.map((q) => q.globalScale);
  const folded = foldNvfp4Scales(codes, globals);
  assertEq(folded[0], nvfp4BlockScale(codes[0], globals[0]));
  assertEq(folded[codes.length - 1], nvfp4BlockScale(codes[codes.length - 1], globals[parts - 1]));
  const packed = new Uint8Array(stored.flatMap((q) => [...q.packed]));
  const a = dequantizeNvfp4Folded(packed, folded);
  stored.forEach((q, j) => {
    const b = dequantizeNvfp4(q, 2, cols);
    for (let i = 0; i < b.length; i++) assertEq(a[j * 2 * cols + i], b[i], `element ${j}/${i}`);
  });
  const back = unfoldNvfp4Scales(folded, globals);
  for (let b = 0; b < codes.length; b++) assertEq(back[b], codes[b], `block ${b}`);
  // Every f8 code (NaNs aside) folds and unfolds exactly, under awkward global scales too.
  for (const g of [1, 3, 0.1, 2688 / 0.37, 1e-3]) {
    const all = new Uint8Array(256).map((_, c) => c).filter((c) => (c & 0x7f) !== 0x7f);
    const round = unfoldNvfp4Scales(foldNvfp4Scales(all, [g]), [g]);
    for (let i = 0; i < all.length; i++) assertEq(round[i], all[i], `code ${hex(all[i])} under ${g}`);
  }
  let threw = false;
  try {
    unfoldNvfp4Scales(new Float32Array([0.3]), [1]); // 0.3 is no f8e4m3 value
  } catch (e) {
    threw = e instanceof RangeError;
  }
  assertEq(threw, true, "a scale no f8 code folds to");
});

Deno.test("NVFP4: quantize → dequantize stays within the block quantisation step", () => {
  const rnd = seeded(3);
  const rows = 8, cols = 64;
  const v = new Float32Array(rows * cols).map(() => (rnd() - 0.5) * 4);
  const q = quantizeNvfp4(v, rows, cols);
  const back = dequantizeNvfp4(q, rows, cols);
  const re = dequantizeNvfp4(quantizeNvfp4(back, rows, cols), rows, cols);
  for (let b = 0; b < rows * cols / 16; b++) {
    let amax = 0;
    for (let j = 0; j < 16; j++) amax = Math.max(amax, Math.abs(v[b * 16 + j]));
    for (let j = 0; j < 16; j++) {
      const i = b * 16 + j;
      // E2M1 spacing near the top is 2 (of 6): error ≤ amax/6 plus the fp8 scale error.
      if (Math.abs(back[i] - v[i]) > amax / 6 * 1.1) throw new Error(`element ${i}: ${v[i]} → ${back[i]}`);
    }
  }
  for (let i = 0; i < v.length; i++) {
    if (Math.abs(re[i] - back[i]) > 1e-6 * Math.abs(back[i]) + 1e-7) throw new Error(`requantize moved ${i}`);
  }
});

Deno.test("q8: blocks of 32 with f32 scale, round half away from zero, error ≤ scale/2", () => {
  const rnd = seeded(11);
  const rows = 3, cols = 96;
  const v = new Float32Array(rows * cols).map(() => (rnd() - 0.5) * 10);
  v.fill(0, 32, 64); // an all-zero block
  const q = quantizeQ8(v, rows, cols);
  assertEq(q.scales.length, 9);
  assertEq(q.scales[1], 0);
  const back = dequantizeQ8(q, rows, cols);
  for (let i = 0; i < v.length; i++) {
    const d = q.scales[Math.floor(i / 32)];
    if (Math.abs(back[i] - v[i]) > d / 2 + 1e-6) throw new Error(`q8 element ${i}`);
    if (Math.abs(q.values[i]) > 127) throw new Error("q8 out of range");
  }
  // Hand case: amax 127 → scale 1; 2.5 rounds away from zero to 3, -0.5 to -1.
  const h = new Float32Array(32);
  h[0] = 127;
  h[1] = 2.5;
  h[2] = -0.5;
  const hq = quantizeQ8(h, 1, 32);
  assertEq(hq.scales[0], 1);
  assertEq(hq.values[1], 3);
  assertEq(hq.values[2], -1);
});

Deno.test("q4: Q4_0's numbers (f16 scale m/−8) in split-nibble blocks, any K, error ≤ |scale|/2", () => {
  const rnd = seeded(12);
  for (const cols of [96, 17, 65]) {
    const rows = 3, nb = Math.ceil(cols / 32);
    const v = new Float32Array(rows * cols).map(() => (rnd() - 0.5) * 10);
    v.fill(0, 0, Math.min(cols, 32)); // an all-zero block
    const q = quantizeQ4(v, rows, cols);
    assertEq(q.packed.length, rows * nb * 16);
    assertEq(q.scales.length, rows * nb);
    assertEq(q.scales[0], 0);
    const back = dequantizeQ4(q, rows, cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const i = r * cols + c, d = Math.abs(q.scales[r * nb + Math.floor(c / 32)]);
        assertEq(decodeF16(encodeF16(d)), d); // the scales are f16 values
        // Values at the positive end clamp at code 15 (7·d, against 8·|d| on the side of m).
        const lim = Math.abs(v[i]) > 7 * d ? d + 1e-6 : d / 2 + 1e-6;
        if (Math.abs(back[i] - v[i]) > lim) throw new Error(`q4 ${cols} element ${i}: ${v[i]} → ${back[i]}`);
      }
      // Padding past K is code 8 (zero) in both nibbles' halves of the last block.
      const last = q.packed.subarray((r * nb + nb - 1) * 16, (r * nb + nb) * 16), used = cols - 32 * (nb - 1);
      for (let j = used; j < 32; j++) assertEq(j < 16 ? last[j] & 15 : last[j - 16] >> 4, 8);
    }
  }
  // Hand case: m = −8 → scale 1, code 0; 2.5 rounds away from zero to 3 (code 11), stored low, element 16 high.
  const h = new Float32Array(32);
  h[0] = -8;
  h[1] = 2.5;
  h[16] = 7;
  const hq = quantizeQ4(h, 1, 32);
  assertEq(hq.scales[0], 1);
  assertEq(hq.packed[0], 0 | (15 << 4)); // element 0 → 0, element 16 → 15
  assertEq(hq.packed[1] & 15, 11);
  assertEq(hq.packed[2], 8 | (8 << 4));
  // m positive: the scale is negative and m still maps to code 0 exactly.
  const p = quantizeQ4(new Float32Array(32).fill(1).fill(4, 5, 6), 1, 32);
  assertEq(p.scales[0], -0.5);
  assertEq(dequantizeQ4(p, 1, 32)[5], 4);
});

Deno.test("bf16 / f16: encode is the nearest code, ties to even (random f32 bit patterns)", () => {
  const rnd = seeded(5);
  const bits = new Uint32Array(1);
  const x32 = new Float32Array(bits.buffer);
  const check = (name: string, enc: (x: number) => number, dec: (c: number) => number, x: number) => {
    const c = enc(x);
    const v = dec(c);
    if (!Number.isFinite(v)) return; // overflow to inf is covered by the hand cases
    const mag = c & 0x7fff;
    const sign = c & 0x8000;
    for (const m of [mag - 1, mag + 1]) {
      if (m < 0 || !Number.isFinite(dec(sign | m))) continue;
      const d = Math.abs(dec(sign | m) - x), e = Math.abs(v - x);
      if (d < e || (d === e && (c & 1) === 1)) throw new Error(`${name}(${x}) = ${hex(c)}, neighbour ${hex(m)} wins`);
    }
  };
  for (let n = 0; n < 50000; n++) {
    bits[0] = Math.floor(rnd() * 2 ** 32);
    const x = x32[0];
    if (!Number.isFinite(x)) continue;
    check("bf16", encodeBf16, decodeBf16, x);
    // Keep f16 inputs mostly in range: scale the exponent down.
    check("f16", encodeF16, decodeF16, Math.fround(x * 2 ** -Math.floor(Math.log2(Math.abs(x) || 1) * 0.9)));
  }
});
