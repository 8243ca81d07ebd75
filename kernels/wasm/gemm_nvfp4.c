// NVFP4 weights kept as the release stores them (MODEL.md §2): per row of W, K/2 bytes of E2M1 codes (even element
// in the low nibble, bit 3 the sign) then K/16 f8e4m3 block scale codes, and one f32 global scale (a divisor) per
// row (W->qs) or per matrix (W->scale, an expert's linear): W[n, k] = e2m1 · f8(block) / global. 0.5625 bytes per
// weight against q8's 1.125, so decode, which is bound by the bytes it streams, reads half as much.
//
// Products: twice an E2M1 value is an integer in ±{0, 1, 2, 3, 4, 6, 8, 12}, so the codes become bytes through one
// byte shuffle (a 16-entry table, offset by +12 to lie in [0, 24]) and multiply int8-quantised activations (per
// 32-block, as the q8 path quantises them: q = round(x·127/amax), |q| ≤ 127) on relaxed_dot_i8x16_i7x16 with the
// weight as the 7-bit operand, exact in i32 on every host; each lane starts at −12·Σq over its elements, which takes
// the offset back out. In wasm memory each whole group of 64 elements of a row (32 bytes of codes, 4 f8 blocks) is
// stored as two vectors (runtime/backends/wasm/layout.ts permuteNvfp4Groups): the first holds the first 4 bytes
// (elements 0–7) of each of the 4 blocks, the second their last 4 (8–15). Their low nibbles are even elements and
// their high ones odd, so the activations are stored permuted the same way, and a lane pair of the i16 dots is one
// f8 block: 4 dots sum in i16 (8 products a lane, at most 8·24·127 = 24384), one widening gives the 4 blocks' sums
// in the 4 lanes, and one conversion and one multiply-add by [s0 s1 s2 s3] take the group. Elements past a row's last
// whole group (K % 64, a multiple of 16) keep the plain order and run scalar.
//
// Decode (M ≤ 8) always runs on int8 products; prefill as nvfp4_prefill_int8 says (by default up to 64 rows, or
// where the host runs q8 prefill on int8), in groups of 8 activation rows; otherwise mm_core's f32 panel path decodes
// rows with nvfp4_decode_row, whose values are the reference dequantisation bit for bit.
#include "matmul.h"

#define NV_BLOCK 16
#define NV_GROUP 8  // activation rows quantised at a time (stack: 8 × nvfp4_act_bytes(K))

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
// Whole 64-element groups of a row, and the byte of a row's codes holding element e (see the layout above).
INLINE size_t nv_groups(size_t K) { return K / 64; }
INLINE size_t nv_code_byte(size_t K, size_t e) {
  if (e >= 64 * nv_groups(K)) return e >> 1;
  return 32 * (e / 64) + 16 * ((e / 8) & 1) + 4 * ((e / 16) & 3) + ((e / 2) & 3);
}

// W[n, k0 .. k0+len) as f32: e2m1 · fround(f8 / global), the product rounded once, as weights/codecs.ts decodes.
void nvfp4_decode_row(const WDesc *W, size_t K, size_t n, size_t k0, int len, float *out) {
  const uint8_t *row = (const uint8_t *)W->w + n * nv_row_bytes(K), *sc = row + K / 2;
  float g = nv_global(W, n);
  int k = 0;
  while (k < len) {
    size_t kk = k0 + (size_t)k, b = kk / NV_BLOCK;
    float s = f8_to_f32(sc[b]) / g;
    if (kk % NV_BLOCK == 0 && kk + NV_BLOCK <= 64 * nv_groups(K) && k + NV_BLOCK <= len) {
      // A whole block inside a group: its 8 bytes are 4 at 32·group + 4j and 4 more 16 bytes on.
      const uint8_t *p = row + 32 * (kk / 64) + 4 * ((kk / NV_BLOCK) & 3);
      for (int i = 0; i < 8; i++) {
        uint8_t byte = p[16 * (i / 4) + (i & 3)];
        out[k + 2 * i] = E2M1_F[byte & 15] * s;
        out[k + 2 * i + 1] = E2M1_F[byte >> 4] * s;
      }
      k += NV_BLOCK;
      continue;
    }
    int end = (int)((b + 1) * NV_BLOCK - k0);
    if (end > len) end = len;
    for (; k < end; k++) {
      size_t e = k0 + (size_t)k;
      uint8_t byte = row[nv_code_byte(K, e)];
      out[k] = E2M1_F[(e & 1) ? byte >> 4 : byte & 15] * s;
    }
  }
}

// One activation row quantised per 32-block (q8's rounding), laid out for dot_nv: per whole 64-element group, 4
// vectors (the even then odd elements 0–7 of each f8 block, then the same of 8–15), its 4 lane corrections
// −12·Σq (one per f8 block) and its 4 scales (the 32-block scale of each f8 block); past the groups, the plain q
// (zero up to a multiple of 32) and the 32-block scales.
typedef struct {
  const int8_t *q;   // [64·ng] permuted, then [Kp − 64·ng] plain
  const int32_t *c;  // [ng][4]
  const float *s;    // [ng][4]
  const float *s32;  // [Kp/32] scale per 32-block (the tail's)
} NvAct;

static void nv_quant_act(const float *x, size_t K, int8_t *q, int32_t *c, float *s, float *s32) {
  size_t nb = (K + 31) / 32, ng = nv_groups(K);
  int8_t t[32] __attribute__((aligned(16)));
  for (size_t b = 0; b < nb; b++) {
    size_t k0 = b * 32, k1 = k0 + 32 < K ? k0 + 32 : K;
    float amax = absmax(x + k0, (int)(k1 - k0)), id = amax > 0.0f ? 127.0f / amax : 0.0f;
    s32[b] = amax / 127.0f;
    if (k1 - k0 == 32) {
      f4 idv = splat(id);
      st(t, quant16(x + k0, idv));
      st(t + 16, quant16(x + k0 + 16, idv));
    } else {  // a 16-element last block (K is a multiple of 16): the rest is zero
      for (size_t k = k0; k < k0 + 32; k++) {
        float v = k < k1 ? __builtin_nearbyintf(x[k] * id) : 0.0f;
        t[k - k0] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
      }
    }
    if (b / 2 >= ng) {  // past the whole groups: plain
      st(q + 32 * b, ld(t));
      st(q + 32 * b + 16, ld(t + 16));
      continue;
    }
    // f8 blocks j0 = 2(b % 2), j0 + 1 of group g = b / 2: their even/odd elements of 0–7 and of 8–15.
    size_t g = b / 2, j0 = 2 * (b % 2);
    int8_t *p = q + 64 * g;
    for (int jj = 0; jj < 2; jj++) {
      const int8_t *e = t + 16 * jj;
      size_t j = j0 + (size_t)jj;
      int32_t sum = 0;
      for (int i = 0; i < 4; i++) {
        p[4 * j + (size_t)i] = e[2 * i];               // elements 0, 2, 4, 6
        p[16 + 4 * j + (size_t)i] = e[2 * i + 1];      // 1, 3, 5, 7
        p[32 + 4 * j + (size_t)i] = e[8 + 2 * i];      // 8, 10, 12, 14
        p[48 + 4 * j + (size_t)i] = e[8 + 2 * i + 1];  // 9, 11, 13, 15
      }
      for (int i = 0; i < 16; i++) sum += e[i];
      c[4 * g + j] = -NV_OFFSET * sum;
      s[4 * g + j] = s32[b];
    }
  }
}

// Four f8 block scale codes → f32, lane j from byte j, exact for every code (0x7f/0xff: ±480, as every decoder here
// reads the NaN codes weights never hold): the sign-extended code shifted into bits 20–27, its sign moved to bit 31
// (the mask clears the extension's copies in bits 27–30), then × 2^120 rebiases the exponent; a subnormal code lands
// on an f32 denormal, which that multiply scales exactly where f32x4.mul keeps denormals, as the spec requires (x86,
// AArch64; 32-bit ARM NEON flushes them, so there a subnormal scale would read 0, as a subnormal f16 scale already
// does in gemm_q4.c f16x4_to_f32). That multiply is slow on x86 only when a lane is a denormal
// (a microcode assist, common.h): a group with a subnormal block scale, which real checkpoints almost never hold. No
// per-group test of the codes: it cost as much as the decode itself (≈ 15% of the decode kernel, measured).
// The mask and the multiplier are splats the compiler cannot fold (common.h, splat_u32).
INLINE f4 nv_scales4(const uint8_t *sc) {
  v128_t c = wasm_i32x4_extend_low_i16x8(wasm_i16x8_extend_low_i8x16(wasm_v128_load32_zero(sc)));
  return wasm_f32x4_mul(wasm_v128_and(wasm_i32x4_shl(c, 20), splat_u32(0x87f00000u)), splat_u32(0x7b800000u));  // 2^120
}

// out[m][r] = Σ_k x_m[k] · W[row r, k] · 2 · global for MR activation rows and NR weight rows rs bytes apart.
INLINE void dot_nv(int MR, int NR, const NvAct *xa, const uint8_t *w, size_t K, size_t rs, float out[4][4]) {
  const size_t ng = nv_groups(K);
  const v128_t lut = ld(E2M1_X2_OFF), lo4 = splat_u8(0x0f);
  f4 acc[4][4];
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) acc[m][r] = splat(0.0f);
  for (size_t g = 0; g < ng; g++) {
    for (int r = 0; r < NR; r++) {
      const uint8_t *p = w + (size_t)r * rs + 32 * g, *sc = w + (size_t)r * rs + K / 2 + 4 * g;
      v128_t a = ld(p), b = ld(p + 16);
      v128_t ae = wasm_i8x16_relaxed_swizzle(lut, wasm_v128_and(a, lo4));
      v128_t ao = wasm_i8x16_relaxed_swizzle(lut, wasm_v128_and(wasm_u16x8_shr(a, 4), lo4));
      v128_t be = wasm_i8x16_relaxed_swizzle(lut, wasm_v128_and(b, lo4));
      v128_t bo = wasm_i8x16_relaxed_swizzle(lut, wasm_v128_and(wasm_u16x8_shr(b, 4), lo4));
      f4 ws = nv_scales4(sc);
      for (int m = 0; m < MR; m++) {
        const int8_t *q = xa[m].q + 64 * g;
        v128_t h = wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(ld(q), ae),
                                  wasm_i16x8_relaxed_dot_i8x16_i7x16(ld(q + 16), ao));
        h = wasm_i16x8_add(h, wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(ld(q + 32), be),
                                             wasm_i16x8_relaxed_dot_i8x16_i7x16(ld(q + 48), bo)));
        v128_t d = wasm_i32x4_add(wasm_i32x4_extadd_pairwise_i16x8(h), ld(xa[m].c + 4 * g));
        acc[m][r] = madd(wasm_f32x4_convert_i32x4(d), wasm_f32x4_mul(ws, ld(xa[m].s + 4 * g)), acc[m][r]);
      }
    }
  }
  for (int m = 0; m < MR; m++)
    for (int r = 0; r < NR; r++) out[m][r] = hsum(acc[m][r]);
  // Past the whole groups (K % 64: one to three f8 blocks), plain order, scalar: the same integer products.
  for (size_t k0 = 64 * ng; k0 < K; k0 += NV_BLOCK) {
    for (int r = 0; r < NR; r++) {
      const uint8_t *row = w + (size_t)r * rs;
      float ws = f8_to_f32(row[K / 2 + k0 / NV_BLOCK]);
      for (int m = 0; m < MR; m++) {
        int32_t isum = 0;
        for (size_t k = k0; k < k0 + NV_BLOCK; k++) {
          uint8_t byte = row[k >> 1];
          isum += (int32_t)xa[m].q[k] * (E2M1_X2_OFF[(k & 1) ? byte >> 4 : byte & 15] - NV_OFFSET);
        }
        out[m][r] += (float)isum * (ws * xa[m].s32[k0 / 32]);
      }
    }
  }
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

// Quantised activation rows in one buffer, nvfp4_act_bytes(K) bytes a row: NvAct's q [Kp], c [4·ng], s [4·ng] and
// s32 [Kp/32], each 16-byte aligned.
INLINE size_t nv_act_stride(size_t K) {
  size_t kp = (K + 31) & ~(size_t)31;
  return kp + 32 * nv_groups(K) + ((kp / 32 * 4 + 15) & ~(size_t)15);
}
EXPORT(nvfp4_act_bytes)
int nvfp4_act_bytes(int K) { return (int)nv_act_stride((size_t)K); }

INLINE NvAct nv_act_at(const uint8_t *buf, size_t K, size_t row) {
  const uint8_t *p = buf + row * nv_act_stride(K);
  size_t kp = (K + 31) & ~(size_t)31, ng = nv_groups(K);
  const int32_t *c = (const int32_t *)(const void *)(p + kp);
  const float *s = (const float *)(const void *)(c + 4 * ng);
  NvAct a = {(const int8_t *)p, c, s, s + 4 * ng};
  return a;
}

// Rows [r0, r1) of x (ldx apart) quantised into rows r0.. of buf, once for all the threads of a decode matmul.
EXPORT(nvfp4_quantize)
void nvfp4_quantize(const float *x, int ldx, int K, uint8_t *buf, int r0, int r1) {
  for (int m = r0; m < r1; m++) {
    NvAct a = nv_act_at(buf, (size_t)K, (size_t)m);
    nv_quant_act(x + (size_t)m * (size_t)ldx, (size_t)K, (int8_t *)a.q, (int32_t *)a.c, (float *)a.s,
                 (float *)a.s32);
  }
}

// Output rows [n0, n1) for mc ≤ NV_GROUP quantised activation rows xa, written at y rows m0 …; as mm_decode does,
// a step's rows are q rows apart so each of its streams reads memory in order.
static void nv_all(const WDesc *W, int mc, const NvAct *xa, size_t K, float *y, size_t ldy, size_t m0, int n0,
                   int n1) {
  int nrmax = mc <= 2 ? 4 : 2;
  int q = (n1 - n0) / nrmax, tail = n0 + q * nrmax;
  for (int i = 0; i < q; i++) nv_rows(W, mc, xa, (size_t)(n0 + i), nrmax, (size_t)q, K, y, ldy, m0);
  for (int n = tail; n < n1; n++) nv_rows(W, mc, xa, (size_t)n, 1, 0, K, y, ldy, m0);
}

// y[m*ldy + n] = Σ_k x[row(m)*ldx + k] · W[n, k] for n in [n0, n1), int8 products, NV_GROUP rows at a time.
void mm_nvfp4(const WDesc *W, const float *x, const int32_t *xidx, size_t ldx, float *y, size_t ldy, int M,
              size_t K, int n0, int n1) {
  uint8_t buf[NV_GROUP * nv_act_stride(K)] __attribute__((aligned(16)));
  NvAct xa[NV_GROUP];
  for (int mg = 0; mg < M; mg += NV_GROUP) {
    int mc = M - mg < NV_GROUP ? M - mg : NV_GROUP;
    for (int m = 0; m < mc; m++) {
      const float *xr = x + (xidx ? (size_t)xidx[mg + m] : (size_t)(mg + m)) * ldx;
      nvfp4_quantize(xr, 0, (int)K, buf + (size_t)m * nv_act_stride(K), 0, 1);
      xa[m] = nv_act_at(buf, K, (size_t)m);
    }
    nv_all(W, mc, xa, K, y, ldy, (size_t)mg, n0, n1);
  }
}

void mm_nvfp4_quantised(const WDesc *W, const uint8_t *xq, const int32_t *ridx, int base, int M, size_t K, float *y,
                        size_t ldy, int n0, int n1) {
  NvAct xa[NV_GROUP];
  for (int m = 0; m < M; m++) xa[m] = nv_act_at(xq, K, (size_t)(ridx ? ridx[m] : base + m));
  nv_all(W, M, xa, K, y, ldy, 0, n0, n1);
}

// y[:, r0 .. r1) = x · Wᵀ for an NVFP4 W (per-row globals at wqs) and M ≤ 8 rows already quantised by
// nvfp4_quantize into xq.
EXPORT(matmul_nvfp4_act)
void matmul_nvfp4_act(const uint8_t *xq, const void *w, const float *wqs, float *y, int M, int N, int K, int r0,
                      int r1) {
  WDesc W = {w, wqs, 1.0f, DT_NVFP4};
  mm_nvfp4_quantised(&W, xq, 0, 0, M, (size_t)K, y, (size_t)N, r0, r1);
}
