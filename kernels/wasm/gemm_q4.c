// q4 weights (DT_Q4): 4-bit codes u ∈ 0..15 (value (u − 8) · d) in blocks of 32 along K with one f16 scale d per
// block, as llama.cpp's Q4_0 numbers, in a layout made for WASM SIMD. Row n of W[N, K] is ceil(K/32) blocks of 16
// bytes at w + n · 16·ceil(K/32); byte j of a block holds element j in its low nibble and element j + 16 in its high
// nibble, so one 16-byte load, an `and 15` and a `shr 4` give the block's 32 codes in order (no shuffle, no
// interleave: the activations are read in their natural order). A short last block is padded with code 8 (zero).
// In wasm memory each whole group of 4 blocks (64 bytes) is stored transposed as a 4 × 4 matrix of 32-bit words
// (runtime/backends/wasm/layout.ts): word t of block j at word 4t + j, so one 16-byte load holds codes of all 4
// blocks and decode sums a group in one vector (dot_q4i); blocks past a row's last whole group stay as they are.
// The f16 scales follow as a separate array [N][ceil(K/32)] (W->qs points at it, read as uint16_t).
//
// With int8 activations (the default): each activation row is quantised per 32-block exactly as the q8 paths do
// (q = round(x·127/amax), |q| ≤ 127) and multiplied on i16x8.relaxed_dot_i8x16_i7x16 (pairs of products summed in
// i16, several dots of a block or group summed in i16, then widened once: decode and prefill) with the activation as
// the signed operand and the codes u (0..15, inside the 7-bit range every lowering multiplies exactly: pmaddubsw cannot
// saturate, sdot is exact) as the other, so Σ q·(u − 8) = Σ q·u − 8·Σ q with the second sum taken once per activation
// block. No host probe is needed, unlike q8's u8 operands. With f32 activations (q4_int8(0)) the
// codes are widened to f32 and multiplied with x as is: the same values the reference dequantises, f32 sums.
#include "matmul.h"

#define Q4_NB(K) (((K) + Q4_BLOCK - 1) / Q4_BLOCK)
#define Q4_GROUP 4  // blocks per group: the wasm layout transposes each whole group's 16 words
#define GK 1024  // prefill K block: the unpacked panel (8 rows × GK bytes) stays in L1
#define GM 64    // prefill M block: quantised activations (GM × GK bytes) stay in L2

int32_t opaque_byte = 0;  // common.h's splat_u8/u16/u32 (defined here, once, for every file; never written)
static int32_t q4mode = 1;  // 1: int8 activations, 0: f32 activations (in linear memory: holds for every thread)

// want = 1: int8 activations (every host with relaxed SIMD); 0: f32 activations. Returns the mode now on.
EXPORT(q4_int8)
int q4_int8(int want) {
  q4mode = want != 0;
  return q4mode;
}

// f16 → f32 for a scale: the magnitude's bits moved into f32 position and scaled by 2^112 (exact for normal and
// subnormal halves; scales are never inf or NaN), then the sign.
INLINE float f16_to_f32(uint16_t h) {
  float f = bits2f((uint32_t)(h & 0x7fff) << 13) * 0x1p112f;
  return bits2f(f2bits(f) | ((uint32_t)(h & 0x8000) << 16));
}

INLINE const uint8_t *q4_codes(const WDesc *W, size_t K, size_t n) {
  return (const uint8_t *)W->w + n * 16 * Q4_NB(K);
}
INLINE const uint16_t *q4_scales(const WDesc *W, size_t K, size_t n) {
  return (const uint16_t *)(const void *)W->qs + n * Q4_NB(K);
}

// Block b of a row (nb blocks) in its own order: inside a whole group its 4 words are gathered.
INLINE v128_t q4_block(const uint8_t *row, size_t nb, size_t b) {
  if (b >= nb / Q4_GROUP * Q4_GROUP) return ld(row + 16 * b);
  const uint32_t *g = (const uint32_t *)(const void *)(row + 64 * (b / Q4_GROUP));
  size_t j = b % Q4_GROUP;
  return wasm_u32x4_make(g[j], g[4 + j], g[8 + j], g[12 + j]);
}

// Byte p (0..15) of block b of a row, as q4_block places it.
INLINE uint8_t q4_byte(const uint8_t *row, size_t nb, size_t b, size_t p) {
  if (b >= nb / Q4_GROUP * Q4_GROUP) return row[16 * b + p];
  return row[64 * (b / Q4_GROUP) + 16 * (p / 4) + 4 * (b % Q4_GROUP) + p % 4];
}

// One block's 16 bytes → the signed values q = u − 8 of elements 0..15 (lo) and 16..31 (hi).
INLINE void q4_signed(v128_t v, v128_t *lo, v128_t *hi) {
  const v128_t eight = wasm_i8x16_splat(8);
  *lo = wasm_i8x16_sub(wasm_v128_and(v, wasm_i8x16_splat(15)), eight);
  *hi = wasm_i8x16_sub(wasm_u8x16_shr(v, 4), eight);
}

// 16 signed bytes → 4 f32x4 in order.
INLINE void i8x16_to_f32(v128_t v, f4 out[4]) {
  v128_t a = wasm_i16x8_extend_low_i8x16(v), b = wasm_i16x8_extend_high_i8x16(v);
  out[0] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(a));
  out[1] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(a));
  out[2] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(b));
  out[3] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(b));
}

void decode_row_q4(const WDesc *W, size_t K, size_t n, size_t k0, int len, float *out) {
  const uint8_t *w = q4_codes(W, K, n);
  const uint16_t *s = q4_scales(W, K, n);
  size_t k = k0, end = k0 + (size_t)len, nb = Q4_NB(K);
  while (k < end) {
    size_t b = k / Q4_BLOCK;
    float d = f16_to_f32(s[b]);
    if (k % Q4_BLOCK == 0 && k + Q4_BLOCK <= end) {
      v128_t lo, hi;
      q4_signed(q4_block(w, nb, b), &lo, &hi);
      f4 v[8], dv = splat(d);
      i8x16_to_f32(lo, v);
      i8x16_to_f32(hi, v + 4);
      for (int j = 0; j < 8; j++) st(out + (k - k0) + 4 * (size_t)j, wasm_f32x4_mul(v[j], dv));
      k += Q4_BLOCK;
      continue;
    }
    for (size_t e = (b + 1) * Q4_BLOCK < end ? (b + 1) * Q4_BLOCK : end; k < e; k++) {
      size_t j = k % Q4_BLOCK;
      int u = j < 16 ? q4_byte(w, nb, b, j) & 15 : q4_byte(w, nb, b, j - 16) >> 4;
      out[k - k0] = (float)(u - 8) * d;
    }
  }
}

// ---------------------------------------------------------------- decode (M ≤ 8): stream W once

// An activation row quantised per block (q4_quantize): q [nb·32] (zero past K; each whole group of 4 blocks permuted
// as permute_act_q4 says); per block (both padded with zeros to whole groups of 4 blocks) its scale and −8·Σq as f32
// (the correction, taken in the float domain: see dot_q4i).
typedef struct {
  const int8_t *q;
  const float *s;
  const float *corr;
} Q4Act;

// Also gives each block's Σq in sum (when non-zero).
static void quantize_act_q4(const float *x, size_t K, int8_t *q, float *s, int32_t *sum) {
  size_t nb = Q4_NB(K);
  for (size_t b = 0; b < nb; b++) {
    size_t k0 = b * Q4_BLOCK, k1 = k0 + Q4_BLOCK < K ? k0 + Q4_BLOCK : K;
    if (k1 - k0 == Q4_BLOCK) {
      // In SIMD: with int8 products this is no longer small next to the GEMM (prefill quantises per work piece).
      f4 m = wasm_f32x4_abs(ld(x + k0));
      for (int j = 1; j < 8; j++) m = wasm_f32x4_max(m, wasm_f32x4_abs(ld(x + k0 + 4 * (size_t)j)));
      float amax = hmax(m), id = amax > 0.0f ? 127.0f / amax : 0.0f;  // max is exact: absmax's value
      s[b] = amax / 127.0f;
      f4 idv = splat(id);
      v128_t q0 = quant16(x + k0, idv), q1 = quant16(x + k0 + 16, idv);
      st(q + k0, q0);
      st(q + k0 + 16, q1);
      if (sum) {
        v128_t h = wasm_i16x8_add(wasm_i16x8_extadd_pairwise_i8x16(q0), wasm_i16x8_extadd_pairwise_i8x16(q1));
        v128_t t = wasm_i32x4_extadd_pairwise_i16x8(h);
        sum[b] = wasm_i32x4_extract_lane(t, 0) + wasm_i32x4_extract_lane(t, 1) + wasm_i32x4_extract_lane(t, 2) +
                 wasm_i32x4_extract_lane(t, 3);
      }
      continue;
    }
    float amax = absmax(x + k0, (int)(k1 - k0)), id = amax > 0.0f ? 127.0f / amax : 0.0f;
    s[b] = amax / 127.0f;
    int32_t t = 0;
    for (size_t k = k0; k < k0 + Q4_BLOCK; k++) {
      float v = k < k1 ? __builtin_nearbyintf(x[k] * id) : 0.0f;
      q[k] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
      t += q[k];
    }
    if (sum) sum[b] = t;
  }
}

// Decode reads each whole group of 4 activation blocks in the weights' order: vector 2t holds word t (elements
// 4t .. 4t+3) of the 4 blocks and vector 2t + 1 their word 4 + t (elements 16+4t ..), as the codes' low and high
// nibbles of one transposed 16-byte load. Two 4 × 4 word transposes a group.
static void permute_act_q4(int8_t *q, size_t nb) {
  for (size_t g = 0; g < nb / Q4_GROUP; g++) {
    int8_t *p = q + 128 * g;
    v128_t lo[4], hi[4];
    for (int j = 0; j < 4; j++) {
      lo[j] = ld(p + 32 * j);
      hi[j] = ld(p + 32 * j + 16);
    }
    transpose4(&lo[0], &lo[1], &lo[2], &lo[3]);
    transpose4(&hi[0], &hi[1], &hi[2], &hi[3]);
    for (int t = 0; t < 4; t++) {
      st(p + 32 * t, lo[t]);
      st(p + 32 * t + 16, hi[t]);
    }
  }
}

// f16 scales → f32, 4 at a time (as f16_to_f32, lane-wise): the sign-extended half shifted into f32 position keeps
// its sign in bit 31 and its magnitude in bits 27..13 once bits 30..28 are cleared, then × 2^112 rebiases the
// exponent (exact for normal and subnormal halves).
INLINE f4 f16x4_to_f32(const uint16_t *h) {
  v128_t v = wasm_i32x4_shl(wasm_i32x4_extend_low_i16x8(wasm_v128_load64_zero(h)), 13);
  return wasm_f32x4_mul(wasm_v128_and(v, splat_u32(0x8fffe000u)), splat_u32(0x77800000u));  // × 2^112
}

// out[m][r] = Σ_k x_m[k] · W[r·dr, k] for MR activation rows (int8, group-permuted: q4_quantize) and NR weight
// rows dr rows apart. Per group of 4 blocks and (row, activation row): 4 loads of codes, 8 i16x8 dots (pmaddubsw)
// summed in i16 — lane pair 2j, 2j+1 is block j, at most 8 · 2·15·127 = 30480 per lane, so no overflow — then one
// pairwise widening gives the 4 blocks' sums in the 4 lanes: one conversion and one multiply-add by the 4 combined
// scales d·s, and one more for the correction Σ d·s·(−8·Σq). Blocks past the last whole group run one at a time.
INLINE void dot_q4i(int MR, int NR, const Q4Act *xa, const uint8_t *w, const uint16_t *ws, size_t nb, size_t dr,
                    float out[4][4]) {
  const size_t rs = dr * nb * 16, rsb = dr * nb, ng = nb / Q4_GROUP;
  const v128_t mask = splat_u8(15);
  f4 acc[4][4];
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) acc[m][r] = splat(0.0f);
  for (size_t g = 0; g < ng; g++) {
    v128_t sum[4][4];
    for (int t = 0; t < 4; t++) {
      v128_t qa[4], qb[4];
      for (int m = 0; m < MR; m++) {
        qa[m] = ld(xa[m].q + 128 * g + 32 * (size_t)t);
        qb[m] = ld(xa[m].q + 128 * g + 32 * (size_t)t + 16);
      }
      for (int r = 0; r < NR; r++) {
        v128_t v = ld(w + r * rs + 64 * g + 16 * (size_t)t);
        v128_t lo = wasm_v128_and(v, mask), hi = wasm_v128_and(wasm_u16x8_shr(v, 4), mask);
        for (int m = 0; m < MR; m++) {
          v128_t d = wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(qa[m], lo),
                                    wasm_i16x8_relaxed_dot_i8x16_i7x16(qb[m], hi));
          sum[m][r] = t == 0 ? d : wasm_i16x8_add(sum[m][r], d);
        }
      }
    }
    for (int r = 0; r < NR; r++) {
      f4 d = f16x4_to_f32(ws + r * rsb + Q4_GROUP * g);
      for (int m = 0; m < MR; m++) {
        f4 c = wasm_f32x4_mul(d, ld(xa[m].s + Q4_GROUP * g));
        acc[m][r] = madd(wasm_f32x4_convert_i32x4(wasm_i32x4_extadd_pairwise_i16x8(sum[m][r])), c, acc[m][r]);
        acc[m][r] = madd(c, ld(xa[m].corr + Q4_GROUP * g), acc[m][r]);
      }
    }
  }
  for (size_t b = ng * Q4_GROUP; b < nb; b++) {
    for (int r = 0; r < NR; r++) {
      v128_t v = ld(w + r * rs + 16 * b);
      v128_t lo = wasm_v128_and(v, mask), hi = wasm_v128_and(wasm_u16x8_shr(v, 4), mask);
      float d = f16_to_f32(ws[r * rsb + b]);
      for (int m = 0; m < MR; m++) {
        v128_t h = wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(ld(xa[m].q + 32 * b), lo),
                                  wasm_i16x8_relaxed_dot_i8x16_i7x16(ld(xa[m].q + 32 * b + 16), hi));
        f4 i = wasm_f32x4_convert_i32x4(wasm_i32x4_extadd_pairwise_i16x8(h));
        float c = d * xa[m].s[b];
        acc[m][r] = madd(i, splat(c), acc[m][r]);
        acc[m][r] = madd(splat(c), wasm_f32x4_make(xa[m].corr[b], 0.0f, 0.0f, 0.0f), acc[m][r]);
      }
    }
  }
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) out[m][r] = hsum(acc[m][r]);
}

// f32 activations: xr[m] holds the full blocks, xt[m] the last block zero-padded to 32 (when K % 32 ≠ 0).
INLINE void dot_q4f(int MR, int NR, const float *const *xr, const float *const *xt, const uint8_t *w,
                    const uint16_t *ws, size_t K, size_t dr, float out[4][4]) {
  const size_t nb = Q4_NB(K), nfull = K / Q4_BLOCK, rs = dr * nb * 16, rsb = dr * nb;
  f4 acc[4][4];
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) acc[m][r] = splat(0.0f);
  for (size_t b = 0; b < nb; b++) {
    for (int r = 0; r < NR; r++) {
      v128_t lo, hi;
      q4_signed(q4_block(w + r * rs, nb, b), &lo, &hi);
      f4 v[8];
      i8x16_to_f32(lo, v);
      i8x16_to_f32(hi, v + 4);
      f4 d = splat(f16_to_f32(ws[r * rsb + b]));
      for (int m = 0; m < MR; m++) {
        const float *x = b < nfull ? xr[m] + 32 * b : xt[m];
        f4 s0 = wasm_f32x4_mul(ld(x), v[0]), s1 = wasm_f32x4_mul(ld(x + 4), v[1]);
        for (int j = 2; j < 8; j += 2) {
          s0 = madd(ld(x + 4 * j), v[j], s0);
          s1 = madd(ld(x + 4 * j + 4), v[j + 1], s1);
        }
        acc[m][r] = madd(wasm_f32x4_add(s0, s1), d, acc[m][r]);
      }
    }
  }
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) out[m][r] = hsum(acc[m][r]);
}

NOINLINE void dec_q4i(int mr, int nr, const Q4Act *qa, const uint8_t *w, const uint16_t *ws, size_t nb, size_t dr,
                      float out[4][4]) {
#define CALL(A, B) dot_q4i(A, B, qa, w, ws, nb, dr, out)
  DECODE_CASES(CALL)
#undef CALL
}
NOINLINE void dec_q4f(int mr, int nr, const float *const *xr, const float *const *xt, const uint8_t *w,
                      const uint16_t *ws, size_t K, size_t dr, float out[4][4]) {
#define CALL(A, B) dot_q4f(A, B, xr, xt, w, ws, K, dr, out)
  DECODE_CASES(CALL)
#undef CALL
}

// y[:, n + r·dr] for r < nr, every activation row (groups of ≤ 4).
static void dec_rows_q4(const WDesc *W, int M, const Q4Act *qa, const float *const *xr, const float *const *xt,
                        size_t n, int nr, size_t dr, size_t K, float *y, size_t ldy) {
  const uint8_t *w = q4_codes(W, K, n);
  const uint16_t *ws = q4_scales(W, K, n);
  for (int mg = 0; mg < M; mg += 4) {
    int mr = M - mg < 4 ? M - mg : 4;
    float out[4][4];
    if (qa) dec_q4i(mr, nr, qa + mg, w, ws, Q4_NB(K), dr, out);
    else dec_q4f(mr, nr, xr + mg, xt + mg, w, ws, K, dr, out);
    for (int m = 0; m < mr; m++)
      for (int r = 0; r < nr; r++) y[(size_t)(mg + m) * ldy + n + (size_t)r * dr] = out[m][r];
  }
}

// The output rows [n0, n1) of a decode step: int8 activations qa, or (qa = 0) f32 rows xr with their zero-padded
// last blocks xt. As mm_decode (matmul.c): the rows of a step are q rows apart, so each stream reads its rows in order.
static void dec_all_q4(const WDesc *W, int M, const Q4Act *qa, const float *const *xr, const float *const *xt, size_t K,
                       float *y, size_t ldy, int n0, int n1) {
  int nrmax = M <= 2 ? 4 : 2;
  int q = (n1 - n0) / nrmax, tail_n = n0 + q * nrmax;
  for (int i = 0; i < q; i++) dec_rows_q4(W, M, qa, xr, xt, (size_t)(n0 + i), nrmax, (size_t)q, K, y, ldy);
  for (int n = tail_n; n < n1; n++) dec_rows_q4(W, M, qa, xr, xt, (size_t)n, 1, 0, K, y, ldy);
}

// Quantised activation rows in one buffer, q4_act_bytes(K) bytes a row: the row's codes q [nb·32] (group-permuted),
// then per block, zero-padded to whole groups of 4, its scale and its correction −8·Σq as f32.
INLINE size_t q4_nb4(size_t K) { return (Q4_NB(K) + 3) & ~(size_t)3; }

EXPORT(q4_act_bytes)
int q4_act_bytes(int K) { return (int)(32 * Q4_NB((size_t)K) + 8 * q4_nb4((size_t)K)); }

INLINE Q4Act q4_act_at(const uint8_t *buf, size_t K, size_t row) {
  const uint8_t *p = buf + row * (size_t)q4_act_bytes((int)K);
  const float *s = (const float *)(const void *)(p + 32 * Q4_NB(K));
  Q4Act a = {(const int8_t *)p, s, s + q4_nb4(K)};
  return a;
}

// Rows [r0, r1) of x (ldx apart) quantised into rows r0.. of buf, once for all the threads of a decode matmul
// (each would otherwise quantise the row again for every piece it takes).
EXPORT(q4_quantize)
void q4_quantize(const float *x, int ldx, int K, uint8_t *buf, int r0, int r1) {
  const size_t nb = Q4_NB((size_t)K), nb4 = q4_nb4((size_t)K);
  int32_t sum[nb];
  for (int m = r0; m < r1; m++) {
    Q4Act a = q4_act_at(buf, (size_t)K, (size_t)m);
    float *s = (float *)a.s, *corr = (float *)a.corr;
    quantize_act_q4(x + (size_t)m * (size_t)ldx, (size_t)K, (int8_t *)a.q, s, sum);
    permute_act_q4((int8_t *)a.q, nb);
    for (size_t b = 0; b < nb4; b++) {
      if (b >= nb) s[b] = 0.0f;
      corr[b] = b < nb ? (float)(-8 * sum[b]) : 0.0f;
    }
  }
}

static void mm_decode_q4(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M,
                         size_t K, int n0, int n1) {
  const float *xr[8], *xt[8];
  for (int m = 0; m < M; m++) xr[m] = x + (xidx ? (size_t)xidx[m] : (size_t)m) * ldx;
  if (q4mode) {
    uint8_t buf[(size_t)M * (size_t)q4_act_bytes((int)K)] __attribute__((aligned(16)));
    Q4Act qa[8];
    for (int m = 0; m < M; m++) {
      q4_quantize(xr[m], 0, (int)K, buf + (size_t)m * (size_t)q4_act_bytes((int)K), 0, 1);
      qa[m] = q4_act_at(buf, K, (size_t)m);
    }
    dec_all_q4(W, M, qa, xr, xt, K, y, ldy, n0, n1);
    return;
  }
  float tail[8 * Q4_BLOCK] __attribute__((aligned(16)));
  size_t k0 = K / Q4_BLOCK * Q4_BLOCK;
  for (int m = 0; m < M; m++) {
    xt[m] = tail + m * Q4_BLOCK;
    for (size_t k = 0; k < Q4_BLOCK; k++) tail[m * Q4_BLOCK + (int)k] = k0 + k < K ? xr[m][k0 + k] : 0.0f;
  }
  dec_all_q4(W, M, 0, xr, xt, K, y, ldy, n0, n1);
}

void mm_q4_quantised(const WDesc *W, const uint8_t *xq, const int32_t *ridx, int base, int M, size_t K, float *y,
                     size_t ldy, int n0, int n1) {
  Q4Act qa[8];
  for (int m = 0; m < M; m++) qa[m] = q4_act_at(xq, K, (size_t)(ridx ? ridx[m] : base + m));
  dec_all_q4(W, M, qa, 0, 0, K, y, ldy, n0, n1);
}

// y[:, r0 .. r1) = x · Wᵀ for a q4 W and M ≤ 8 activation rows already quantised by q4_quantize into xq.
EXPORT(matmul_q4_act)
void matmul_q4_act(const uint8_t *xq, const void *w, const float *wqs, float *y, int M, int N, int K, int r0, int r1) {
  WDesc W = {w, wqs, 1.0f, DT_Q4};
  mm_q4_quantised(&W, xq, 0, 0, M, (size_t)K, y, (size_t)N, r0, r1);
}

// ---------------------------------------------------------------- prefill (M > 8) on int8 products

// Rows x[row(m)] for m in [0, mr), columns [k0, k0 + kc) → A[m][kcp] (q, zero past kc), S[m][b] scales and
// C[m][b] = −8·Σq per block.
static void quantize_rows_q4(const float *x, const int32_t *xidx, size_t ldx, int m0, int mr, size_t k0, int kc,
                             int kcp, int8_t *A, float *S, int32_t *C) {
  int nblk = kcp / Q4_BLOCK;
  for (int m = 0; m < mr; m++) {
    const float *xr = x + (xidx ? (size_t)xidx[m0 + m] : (size_t)(m0 + m)) * ldx + k0;
    int32_t sum[GK / Q4_BLOCK];
    quantize_act_q4(xr, (size_t)kc, A + (size_t)m * (size_t)kcp, S + m * nblk, sum);
    for (int b = 0; b < nblk; b++) C[m * nblk + b] = -8 * sum[b];
  }
}

// Weight rows [n, n + nr) (nr ≤ 8), blocks [b0, b0 + nblk) → P[step][group] (step = k/4, group = rows 4g..4g+3, one
// vector of 4 codes u per row) and per (block, group) the 4 rows' scales. Rows past nr are zero.
static void pack_weights_q4(const WDesc *W, size_t K, int n, int nr, size_t b0, int nblk, v128_t *P, f4 *ws) {
  const v128_t zero = wasm_i32x4_splat(0), mask = wasm_i8x16_splat(15);
  for (int g = 0; g < 2; g++) {
    for (int b = 0; b < nblk; b++) {
      v128_t lo[4], hi[4];
      float sc[4];
      for (int i = 0; i < 4; i++) {
        int r = 4 * g + i;
        if (r >= nr) {
          lo[i] = hi[i] = zero;
          sc[i] = 0.0f;
          continue;
        }
        v128_t v = q4_block(q4_codes(W, K, (size_t)(n + r)), Q4_NB(K), b0 + (size_t)b);
        lo[i] = wasm_v128_and(v, mask);
        hi[i] = wasm_v128_and(wasm_u16x8_shr(v, 4), mask);
        sc[i] = f16_to_f32(q4_scales(W, K, (size_t)(n + r))[b0 + (size_t)b]);
      }
      transpose4(&lo[0], &lo[1], &lo[2], &lo[3]);  // vector j: k 4j .. 4j+3 of each of the 4 rows
      transpose4(&hi[0], &hi[1], &hi[2], &hi[3]);
      for (int j = 0; j < 4; j++) {
        P[(b * 8 + j) * 2 + g] = lo[j];
        P[(b * 8 + 4 + j) * 2 + g] = hi[j];
      }
      ws[b * 2 + g] = ld(sc);
    }
  }
}

// y rows c0 (and c1 when mr = 2), columns 0 .. nc (+)= the tile of 2 activation rows × 8 weight rows over nblk
// blocks: per block 8 dot steps summed in i16 (a lane pair is one row's 4 k; each step adds at most 2·127·15, so 8
// steps stay below 2^15), widened once and started at −8·Σq, then scaled into the f32 accumulators. The i16 dot is
// one pmaddubsw on x86 where the i32 dot-add without AVX-VNNI is that, a multiply by a rebuilt ones vector and an add.
NOINLINE void ukr_q4(const int8_t *a0, const int8_t *a1, const float *s0, const float *s1, const int32_t *c0s,
                     const int32_t *c1s, const v128_t *P, const f4 *ws, int nblk, float *c0, float *c1, int mr, int nc,
                     int acc) {
  f4 y00 = splat(0.0f), y01 = y00, y10 = y00, y11 = y00;
  for (int b = 0; b < nblk; b++) {
    v128_t h00, h01, h10, h11;
    const v128_t *p = P + b * 16;
    const int8_t *x0 = a0 + b * Q4_BLOCK, *x1 = a1 + b * Q4_BLOCK;
    for (int j = 0; j < 8; j++) {
      v128_t w0 = p[2 * j], w1 = p[2 * j + 1];
      v128_t u0 = wasm_v128_load32_splat(x0 + 4 * j), u1 = wasm_v128_load32_splat(x1 + 4 * j);
      v128_t t00 = wasm_i16x8_relaxed_dot_i8x16_i7x16(u0, w0), t01 = wasm_i16x8_relaxed_dot_i8x16_i7x16(u0, w1);
      v128_t t10 = wasm_i16x8_relaxed_dot_i8x16_i7x16(u1, w0), t11 = wasm_i16x8_relaxed_dot_i8x16_i7x16(u1, w1);
      h00 = j ? wasm_i16x8_add(h00, t00) : t00;
      h01 = j ? wasm_i16x8_add(h01, t01) : t01;
      h10 = j ? wasm_i16x8_add(h10, t10) : t10;
      h11 = j ? wasm_i16x8_add(h11, t11) : t11;
    }
    v128_t c0v = wasm_i32x4_splat(c0s[b]), c1v = wasm_i32x4_splat(c1s[b]);
    v128_t d00 = wasm_i32x4_add(wasm_i32x4_extadd_pairwise_i16x8(h00), c0v);
    v128_t d01 = wasm_i32x4_add(wasm_i32x4_extadd_pairwise_i16x8(h01), c0v);
    v128_t d10 = wasm_i32x4_add(wasm_i32x4_extadd_pairwise_i16x8(h10), c1v);
    v128_t d11 = wasm_i32x4_add(wasm_i32x4_extadd_pairwise_i16x8(h11), c1v);
    f4 e0 = splat(s0[b]), e1 = splat(s1[b]);
    y00 = madd(wasm_f32x4_convert_i32x4(d00), wasm_f32x4_mul(ws[2 * b], e0), y00);
    y01 = madd(wasm_f32x4_convert_i32x4(d01), wasm_f32x4_mul(ws[2 * b + 1], e0), y01);
    y10 = madd(wasm_f32x4_convert_i32x4(d10), wasm_f32x4_mul(ws[2 * b], e1), y10);
    y11 = madd(wasm_f32x4_convert_i32x4(d11), wasm_f32x4_mul(ws[2 * b + 1], e1), y11);
  }
  store8(c0, y00, y01, nc, acc);
  if (mr == 2) store8(c1, y10, y11, nc, acc);
}

static void mm_prefill_q4(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy,
                          int M, size_t K, int n0, int n1) {
  int8_t A[GM * GK] __attribute__((aligned(16)));
  float S[GM * (GK / Q4_BLOCK)];
  int32_t C[GM * (GK / Q4_BLOCK)];
  v128_t P[GK / 4 * 2];
  f4 ws[GK / Q4_BLOCK * 2];
  for (int mb = 0; mb < M; mb += GM) {
    int mr = M - mb < GM ? M - mb : GM;
    for (size_t kb = 0; kb < K; kb += GK) {
      int kc = (int)(K - kb < GK ? K - kb : GK), kcp = (kc + Q4_BLOCK - 1) / Q4_BLOCK * Q4_BLOCK;
      int nblk = kcp / Q4_BLOCK;
      quantize_rows_q4(x, xidx, ldx, mb, mr, kb, kc, kcp, A, S, C);
      for (int nb = n0; nb < n1; nb += 8) {
        int nc = n1 - nb < 8 ? n1 - nb : 8;
        pack_weights_q4(W, K, nb, nc, kb / Q4_BLOCK, nblk, P, ws);
        for (int m = 0; m < mr; m += 2) {
          int r = mr - m < 2 ? mr - m : 2, m1 = r == 2 ? m + 1 : m;
          float *c0 = y + (size_t)(mb + m) * ldy + nb, *c1 = y + (size_t)(mb + m1) * ldy + nb;
          ukr_q4(A + (size_t)m * kcp, A + (size_t)m1 * kcp, S + m * nblk, S + m1 * nblk, C + m * nblk, C + m1 * nblk,
                 P, ws, nblk, c0, c1, r, nc, kb > 0);
        }
      }
    }
  }
}

// The q4 matmul when these kernels take it (returns 1): decode shapes, and prefill with int8 activations. Else (0)
// mm_core's f32 prefill runs, on rows decode_row_q4 dequantises.
int mm_q4(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M, size_t K,
          int n0, int n1) {
  if (M <= 8 && K <= 16384) mm_decode_q4(W, x, xidx, ldx, y, ldy, M, K, n0, n1);
  else if (q4mode) mm_prefill_q4(W, x, xidx, ldx, y, ldy, M, K, n0, n1);
  else return 0;
  return 1;
}
