// NVFP4 weights kept as the release stores them (MODEL.md §2): per row of W, K/2 bytes of E2M1 codes (even element
// in the low nibble, bit 3 the sign) then K/16 f8e4m3 block scale codes, and one f32 global scale (a divisor) per
// row (W->qs) or per matrix (W->scale, an expert's linear): W[n, k] = e2m1 · f8(block) / global. 0.5625 bytes per
// weight against q8's 1.125, so decode, which is bound by the bytes it streams, reads half as much.
//
// Products: twice an E2M1 value is an integer in ±{0, 1, 2, 3, 4, 6, 8, 12}, so the codes become bytes through one
// byte shuffle (a 16-entry table, offset by +12 to lie in [0, 24]) and multiply int8-quantised activations (per
// 32-block, as the q8 path quantises them: q = round(x·127/amax), |q| ≤ 127) on relaxed_dot_i8x16_i7x16 with the
// weight as the 7-bit operand, exact in i32 on every host; each lane starts at −12·Σq over its elements, which takes
// the offset back out. Each 16-byte load holds a 32-block of codes: the low nibbles are its even elements and the
// high ones its odd elements, so the activations are stored split the same way (16 even, then 16 odd values per
// block) and no weight byte is moved. The dot's 4 lanes cover elements 0–7, 8–15 (the first f8 block) and 16–23,
// 24–31 (the second), so one vector [s0 s0 s1 s1] scales them all; the scale codes of four 32-blocks decode at once.
//
// Decode (M ≤ 8) always runs on int8 products; prefill as nvfp4_prefill_int8 says (by default up to 64 rows, or
// where the host runs q8 prefill on int8), in groups of 8 activation rows; otherwise mm_core's f32 panel path decodes
// rows with nvfp4_decode_row, whose values are the reference dequantisation bit for bit.
#include "matmul.h"

#define NV_BLOCK 16
#define NV_GROUP 8  // activation rows quantised at a time (stack: 8 × K bytes, and 16 bytes of corrections per 32)

// 2·E2M1 + 12 by code: the products' weights, non-negative so they are the dot's 7-bit operand (the offset comes
// back out through per-lane corrections, and the result is halved once at the end).
#define NV_OFFSET 12
static const int8_t E2M1_X2_OFF[16] __attribute__((aligned(16))) = {12, 13, 14, 15, 16, 18, 20, 24,
                                                                    12, 11, 10, 9,  8,  6,  4,  0};
static const float E2M1_F[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                 -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// Prefill (M > 8) on int8 products: 1 always (exact on every host: the weight is the 7-bit operand), 0 never (f32
// panels), −1 where the host runs q8 prefill on int8 or for at most NV_INT8_MAX_M rows (measured on a 2-core EPYC
// without VNNI: int8 1.3–1.6× the f32 panels at 16–64 rows, 0.8× at 512, where the panels' reuse wins). Lives in
// linear memory, so it holds for every thread.
#define NV_INT8_MAX_M 64
static int32_t prefill_mode = -1;

EXPORT(nvfp4_prefill_int8)
int nvfp4_prefill_int8(int mode) {
  prefill_mode = mode < 0 ? -1 : mode > 0;
  return prefill_mode;
}

int nvfp4_gemm_int8(int M) { return prefill_mode < 0 ? (M <= NV_INT8_MAX_M || q8_gemm_usable()) : prefill_mode; }

INLINE size_t nv_row_bytes(size_t K) { return K / 2 + K / NV_BLOCK; }
// The global scale (divisor) of row n: per row when the backend laid them out so, else the matrix's.
INLINE float nv_global(const WDesc *W, size_t n) { return W->qs ? W->qs[n] : W->scale; }

// W[n, k0 .. k0+len) as f32: e2m1 · fround(f8 / global), the product rounded once, as weights/codecs.ts decodes.
void nvfp4_decode_row(const WDesc *W, size_t K, size_t n, size_t k0, int len, float *out) {
  const uint8_t *row = (const uint8_t *)W->w + n * nv_row_bytes(K), *sc = row + K / 2;
  float g = nv_global(W, n);
  int k = 0;
  while (k < len) {
    size_t kk = k0 + (size_t)k, b = kk / NV_BLOCK;
    float s = f8_to_f32(sc[b]) / g;
    int end = (int)((b + 1) * NV_BLOCK - k0);
    if (end > len) end = len;
    for (; k < end; k++) {
      size_t e = k0 + (size_t)k;
      uint8_t byte = row[e >> 1];
      out[k] = E2M1_F[(e & 1) ? byte >> 4 : byte & 15] * s;
    }
  }
}

// One activation row quantised per 32-block (q8's rounding), each block stored as its 16 even then 16 odd elements.
typedef struct {
  const int8_t *q;     // q [Kp], Kp = K rounded up to 32 (zero past K)
  const int32_t *c;    // per 32-block, per dot lane: −12 · Σ q over the lane's 8 elements [Kp/32][4]
  const float *s;      // scale per 32-block
} NvAct;

static void nv_quant_act(const float *x, size_t K, int8_t *q, int32_t *c, float *s) {
  size_t nb = (K + 31) / 32;
  const v128_t ones = wasm_i8x16_splat(1), zero = wasm_i32x4_splat(0);
  for (size_t b = 0; b < nb; b++) {
    size_t k0 = b * 32, k1 = k0 + 32 < K ? k0 + 32 : K;
    float amax = absmax(x + k0, (int)(k1 - k0)), id = amax > 0.0f ? 127.0f / amax : 0.0f;
    s[b] = amax / 127.0f;
    v128_t q0, q1;
    if (k1 - k0 == 32) {
      f4 idv = splat(id);
      q0 = quant16(x + k0, idv);
      q1 = quant16(x + k0 + 16, idv);
    } else {  // a 16-element last block (K is a multiple of 16): the rest is zero
      int8_t t[32] __attribute__((aligned(16))) = {0};
      for (size_t k = k0; k < k1; k++) {
        float v = __builtin_nearbyintf(x[k] * id);
        t[k - k0] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
      }
      q0 = ld(t);
      q1 = ld(t + 16);
    }
    v128_t ev = wasm_i8x16_shuffle(q0, q1, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    v128_t od = wasm_i8x16_shuffle(q0, q1, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    st(q + 32 * b, ev);
    st(q + 32 * b + 16, od);
    // Lane j of the block's dots covers elements 8j … 8j+7 (bytes 4j … 4j+3 of both halves).
    v128_t sum = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(ev, ones, zero);
    sum = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(od, ones, sum);
    st(c + 4 * b, wasm_i32x4_mul(sum, wasm_i32x4_splat(-NV_OFFSET)));
  }
}

// f8 codes in the top byte of each lane → f32, for codes with exponent ≥ 1 only: the exponent rebiased by an integer
// add (f8_top_exact without its exponent-0 fix).
INLINE f4 f8_top_normal(v128_t t) {
  v128_t mag = wasm_i32x4_add(wasm_v128_and(wasm_u32x4_shr(t, 4), wasm_i32x4_splat(0x07f00000)),
                              wasm_i32x4_splat(120 << 23));
  return wasm_v128_or(mag, wasm_v128_and(t, wasm_i32x4_splat((int32_t)0x80000000)));
}

// The f8 block scales of 32-blocks b … b+3 of a row (8 codes at sc): two vectors [s0 s1 s2 s3], [s4 … s7]. Block
// scales are normal f8 values in practice; a zero or subnormal one takes the exact decoder.
INLINE void nv_scales8(const uint8_t *sc, f4 *lo, f4 *hi) {
  v128_t v = wasm_v128_load64_zero(sc), z = wasm_i32x4_splat(0);
  v128_t a = wasm_i8x16_shuffle(v, z, 16, 16, 16, 0, 16, 16, 16, 1, 16, 16, 16, 2, 16, 16, 16, 3);
  v128_t b = wasm_i8x16_shuffle(v, z, 16, 16, 16, 4, 16, 16, 16, 5, 16, 16, 16, 6, 16, 16, 16, 7);
  v128_t e0 = wasm_i8x16_eq(wasm_v128_and(v, wasm_i8x16_splat(0x78)), z);
  if (__builtin_expect(wasm_i64x2_extract_lane(e0, 0) != 0, 0)) {
    *lo = f8_top_exact(a);
    *hi = f8_top_exact(b);
  } else {
    *lo = f8_top_normal(a);
    *hi = f8_top_normal(b);
  }
}

// acc[m][r] += the products of 32-block b (packed codes at w + r·rs + 16b; sc[r] = [s s s' s'] its two f8 scales).
// The codes go in as 2·e2m1 + 12 ∈ [0, 24] (the 7-bit operand, exact on every host); the lane corrections −12·Σq
// take the offset back out.
INLINE void nv_block(int MR, int NR, const NvAct *xa, const uint8_t *w, size_t rs, size_t b, int half,
                     const f4 *sc, f4 acc[4][4]) {
  const v128_t lut = ld(E2M1_X2_OFF), lo4 = wasm_i8x16_splat(0x0f);
  v128_t wl[4], wh[4];
  for (int r = 0; r < NR; r++) {
    const uint8_t *p = w + (size_t)r * rs + 16 * b;
    v128_t v = half ? wasm_v128_load64_zero(p) : ld(p);
    wl[r] = wasm_i8x16_relaxed_swizzle(lut, wasm_v128_and(v, lo4));
    wh[r] = wasm_i8x16_relaxed_swizzle(lut, wasm_v128_and(wasm_u16x8_shr(v, 4), lo4));
  }
  for (int m = 0; m < MR; m++) {
    v128_t qe = ld(xa[m].q + 32 * b), qo = ld(xa[m].q + 32 * b + 16), c = ld(xa[m].c + 4 * b);
    f4 xs = splat(xa[m].s[b]);
    for (int r = 0; r < NR; r++) {
      v128_t d = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(qe, wl[r], c);
      d = wasm_i32x4_relaxed_dot_i8x16_i7x16_add(qo, wh[r], d);
      acc[m][r] = madd(wasm_f32x4_convert_i32x4(d), wasm_f32x4_mul(sc[r], xs), acc[m][r]);
    }
  }
}

// out[m][r] = Σ_k x_m[k] · W[row r, k] · 2 · global for MR activation rows and NR weight rows rs bytes apart.
INLINE void dot_nv(int MR, int NR, const NvAct *xa, const uint8_t *w, size_t K, size_t rs, float out[4][4]) {
  size_t nb = (K + 31) / 32, full = K / 32;
  f4 acc[4][4];
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) acc[m][r] = splat(0.0f);
  size_t b = 0;
  // Four 32-blocks at a time: their 8 scale codes decode together.
  for (; b + 4 <= full; b += 4) {
    f4 slo[4], shi[4], sc[4];
    for (int r = 0; r < NR; r++) nv_scales8(w + (size_t)r * rs + K / 2 + 2 * b, &slo[r], &shi[r]);
    for (int r = 0; r < NR; r++) sc[r] = wasm_i32x4_shuffle(slo[r], slo[r], 0, 0, 1, 1);
    nv_block(MR, NR, xa, w, rs, b, 0, sc, acc);
    for (int r = 0; r < NR; r++) sc[r] = wasm_i32x4_shuffle(slo[r], slo[r], 2, 2, 3, 3);
    nv_block(MR, NR, xa, w, rs, b + 1, 0, sc, acc);
    for (int r = 0; r < NR; r++) sc[r] = wasm_i32x4_shuffle(shi[r], shi[r], 0, 0, 1, 1);
    nv_block(MR, NR, xa, w, rs, b + 2, 0, sc, acc);
    for (int r = 0; r < NR; r++) sc[r] = wasm_i32x4_shuffle(shi[r], shi[r], 2, 2, 3, 3);
    nv_block(MR, NR, xa, w, rs, b + 3, 0, sc, acc);
  }
  for (; b < nb; b++) {  // the rest, one 32-block (or a last 16-element one) at a time
    f4 sc[4];
    for (int r = 0; r < NR; r++) {
      const uint8_t *c = w + (size_t)r * rs + K / 2 + 2 * b;
      int32_t c0 = (int32_t)((uint32_t)c[0] << 24), c1 = b < full ? (int32_t)((uint32_t)c[1] << 24) : 0;
      sc[r] = f8_top_exact(wasm_i32x4_make(c0, c0, c1, c1));
    }
    nv_block(MR, NR, xa, w, rs, b, b >= full, sc, acc);
  }
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) out[m][r] = hsum(acc[m][r]);
}

// One function per (MR, NR) shape mm_nvfp4 asks for, so the accumulators stay in registers.
NOINLINE void dec_nv(int mr, int nr, const NvAct *xa, const uint8_t *w, size_t K, size_t rs, float out[4][4]) {
#define CALL(A, B) dot_nv(A, B, xa, w, K, rs, out)
  DECODE_CASES(CALL)
#undef CALL
}

// y[:, n + r·dr] for r < nr against the M quantised rows xa (groups of ≤ 4).
static void nv_rows(const WDesc *W, int M, const NvAct *xa, size_t n, int nr, size_t dr, size_t K, float *y,
                    size_t ldy, size_t m0) {
  size_t rb = nv_row_bytes(K);
  const uint8_t *w = (const uint8_t *)W->w + n * rb;
  for (int mg = 0; mg < M; mg += 4) {
    int mr = M - mg < 4 ? M - mg : 4;
    float out[4][4];
    dec_nv(mr, nr, xa + mg, w, K, dr * rb, out);
    for (int r = 0; r < nr; r++) {
      float f = 0.5f / nv_global(W, n + (size_t)r * dr);  // the doubled codes, and the divisor
      for (int m = 0; m < mr; m++) y[(m0 + (size_t)(mg + m)) * ldy + n + (size_t)r * dr] = out[m][r] * f;
    }
  }
}

// y[m*ldy + n] = Σ_k x[row(m)*ldx + k] · W[n, k] for n in [n0, n1), int8 products, NV_GROUP rows at a time.
// As mm_decode does, a step's rows are q rows apart so each of its streams reads memory in order.
void mm_nvfp4(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M,
              size_t K, int n0, int n1) {
  size_t kp = (K + 31) & ~(size_t)31, nb = kp / 32;
  int8_t qbuf[NV_GROUP * kp] __attribute__((aligned(16)));
  int32_t cbuf[NV_GROUP * 4 * nb] __attribute__((aligned(16)));
  float sbuf[NV_GROUP * nb];
  NvAct xa[NV_GROUP];
  for (int mg = 0; mg < M; mg += NV_GROUP) {
    int mc = M - mg < NV_GROUP ? M - mg : NV_GROUP;
    for (int m = 0; m < mc; m++) {
      const float *xr = x + (xidx ? (size_t)xidx[mg + m] : (size_t)(mg + m)) * ldx;
      int8_t *q = qbuf + (size_t)m * kp;
      int32_t *c = cbuf + (size_t)m * 4 * nb;
      xa[m] = (NvAct){q, c, sbuf + (size_t)m * nb};
      nv_quant_act(xr, K, q, c, sbuf + (size_t)m * nb);
    }
    int nrmax = mc <= 2 ? 4 : 2;
    int q = (n1 - n0) / nrmax, tail = n0 + q * nrmax;
    for (int i = 0; i < q; i++) nv_rows(W, mc, xa, (size_t)(n0 + i), nrmax, (size_t)q, K, y, ldy, (size_t)mg);
    for (int n = tail; n < n1; n++) nv_rows(W, mc, xa, (size_t)n, 1, 0, K, y, ldy, (size_t)mg);
  }
}
