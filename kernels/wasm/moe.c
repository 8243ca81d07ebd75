// Mixture of experts: routing (softmax → top-k → renormalise), grouping assignments per expert, grouped SwiGLU
// experts over the selected experts only, and the weighted combine. Experts run as phases over scratch buffers,
// so each output element is written by exactly one thread and the result does not depend on the thread count.
#include "matmul.h"

void swiglu_row(const float *g, const float *u, float *y, int F);

// p[0..E) = softmax(l[0..E)) in f32: the one softmax moe_route and moe_gate share.
static void router_softmax(const float *l, int E, float *p) {
  float m = -__builtin_inff(), s = 0.0f;
  for (int e = 0; e < E; e++) m = l[e] > m ? l[e] : m;
  for (int e = 0; e < E; e++) {
    p[e] = expf_(l[e] - m);
    s += p[e];
  }
  for (int e = 0; e < E; e++) p[e] /= s;
}

// Rows [r0, r1) of logits [T, E]: p = softmax(logits) in f32, the k largest (ties → lower expert id), weights
// p / (Σ p_top + 1e-20) when renorm (else p), times scale. idx [T, k] i32, w [T, k] f32 (w may be 0: ids only),
// in descending p order.
EXPORT(moe_route)
void moe_route(const float *logits, int E, int k, int renorm, float scale, int32_t *idx, float *w, int r0, int r1) {
  float p[E];
  for (int t = r0; t < r1; t++) {
    router_softmax(logits + (size_t)t * (size_t)E, E, p);
    float tot = 0.0f;
    int32_t *it = idx + (size_t)t * (size_t)k;
    for (int j = 0; j < k; j++) {
      int best = -1;
      for (int e = 0; e < E; e++) {
        int taken = 0;
        for (int i = 0; i < j; i++) taken |= it[i] == e;
        if (!taken && (best < 0 || p[e] > p[best])) best = e;
      }
      it[j] = best;
      tot += p[best];
    }
    if (!w) continue;
    float *wt = w + (size_t)t * (size_t)k;
    for (int j = 0; j < k; j++) wt[j] = (renorm ? p[it[j]] / (tot + 1e-20f) : p[it[j]]) * scale;
  }
}

// Rows [r0, r1): the combine weights of the given experts idx [T, k]: p = softmax(logits) in f32,
// w = p[idx] / (Σ_j p[idx_j] + 1e-20), the sum in idx order (moe_route's weights when idx is its choice).
EXPORT(moe_gate)
void moe_gate(const float *logits, int E, int k, const int32_t *idx, float *w, int r0, int r1) {
  float p[E];
  for (int t = r0; t < r1; t++) {
    router_softmax(logits + (size_t)t * (size_t)E, E, p);
    const int32_t *it = idx + (size_t)t * (size_t)k;
    float *wt = w + (size_t)t * (size_t)k;
    int bad = 0;
    for (int j = 0; j < k; j++) bad |= (uint32_t)it[j] >= (uint32_t)E;
    if (bad) {  // an id outside the experts: NaN weights, never a read outside p
      for (int j = 0; j < k; j++) wt[j] = __builtin_nanf("");
      continue;
    }
    float tot = 0.0f;
    for (int j = 0; j < k; j++) tot += p[it[j]];
    for (int j = 0; j < k; j++) wt[j] = p[it[j]] / (tot + 1e-20f);
  }
}

// Groups the T·k assignments by expert (stable in (t, j) order). offsets [E+1]; order [T·k]: token of each sorted
// assignment; inv [T·k]: sorted position of assignment t·k + j; active: experts with tokens. Returns their count,
// or −1 when an id is outside 0..E−1 (ids come from the device: nothing is written past the tables).
EXPORT(moe_plan)
int moe_plan(const int32_t *idx, int T, int k, int E, int32_t *offsets, int32_t *order, int32_t *inv,
             int32_t *active) {
  for (int a = 0; a < T * k; a++)
    if ((uint32_t)idx[a] >= (uint32_t)E) return -1;
  for (int e = 0; e <= E; e++) offsets[e] = 0;
  for (int a = 0; a < T * k; a++) offsets[idx[a] + 1]++;
  int na = 0;
  for (int e = 0; e < E; e++) {
    if (offsets[e + 1] > 0) active[na++] = e;
    offsets[e + 1] += offsets[e];
  }
  int32_t fill[E];
  for (int e = 0; e < E; e++) fill[e] = offsets[e];
  for (int a = 0; a < T * k; a++) {
    int pos = fill[idx[a]]++;
    order[pos] = a / k;
    inv[a] = pos;
  }
  return na;
}

typedef struct {
  const float *x;                     // [T, D]
  const int32_t *offsets, *order, *inv, *active;  // from moe_plan
  int32_t nActive;
  const void *wg, *wu, *wd;           // expert 0 of gate [F, D], up [F, D], down [D, F]
  int32_t wdt;                        // DT_* of all three
  uint32_t sg, su, sd;                // byte strides between experts
  const float *fsg, *fsu, *fsd;       // f8: per-expert scales [E] (used when qg/qu/qd are 0)
  const float *qg, *qu, *qd;          // q8, q4: block scales of expert 0; f8: 0 or per-row scales of expert 0;
                                      // nvfp4: expert 0's global scale of each (one per matrix)
  uint32_t qsg, qsu, qsd;             // element strides between experts' q8/q4 block scales (q4: f16 elements), f8
                                      // row scales, nvfp4 globals
  float *act, *up;                    // scratch [T·k, F]
  float *ys;                          // scratch [T·k, D]
  const float *w;                     // [T, k] routing weights
  const float *addend;                // [T, D] or 0 (shared expert output, residual)
  float *out;                         // [T, D]
  int32_t T, D, F, k;
  int32_t chunk;                      // output columns per work item, a multiple of 8
  const uint8_t *qx, *qact;           // q8, q4, NVFP4 decode (T ≤ 8): x and act quantised by q8_/q4_/nvfp4_quantize
                                      // (0: each product quantises its rows)
} MoeParams;

// The decode product on pre-quantised rows: q8, q4 or NVFP4 (the dtypes with a *_quantize export).
static void mm_quantised(const WDesc *W, const uint8_t *xq, const int32_t *ridx, int base, int M, size_t K, float *y,
                         size_t ldy, int n0, int n1) {
  if (W->dt == DT_NVFP4) mm_nvfp4_quantised(W, xq, ridx, base, M, K, y, ldy, n0, n1);
  else if (W->dt == DT_Q8) mm_q8_quantised(W, xq, ridx, base, M, K, y, ldy, n0, n1);
  else mm_q4_quantised(W, xq, ridx, base, M, K, y, ldy, n0, n1);
}

static WDesc expert(const MoeParams *p, const void *w, uint32_t stride, const float *fs, const float *qs,
                    uint32_t qstride, int e) {
  WDesc d = {(const uint8_t *)w + (size_t)stride * (size_t)e, 0, 1.0f, p->wdt};
  if (p->wdt == DT_NVFP4) d.scale = qs[(size_t)qstride * (size_t)e];  // the expert linear's global scale
  else if (p->wdt == DT_Q4)
    d.qs = (const float *)(const void *)((const uint16_t *)(const void *)qs + (size_t)qstride * e);
  else if ((p->wdt == DT_Q8 || p->wdt == DT_F8E4M3) && qs) d.qs = qs + (size_t)qstride * (size_t)e;
  else if (p->wdt == DT_F8E4M3) d.scale = fs[e];
  return d;
}

// Phase 1, rows = nActive · ceil(F / chunk): act = silu(x·Wgᵀ) · (x·Wuᵀ) for each expert's tokens. Items are
// chunk-major so contiguous row ranges give every thread the same share of every expert.
EXPORT(moe_gate_up)
void moe_gate_up(const MoeParams *p, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    int a = r % p->nActive, c = r / p->nActive, e = p->active[a];
    int f0 = c * p->chunk, f1 = f0 + p->chunk < p->F ? f0 + p->chunk : p->F;
    int off = p->offsets[e], M = p->offsets[e + 1] - off;
    WDesc g = expert(p, p->wg, p->sg, p->fsg, p->qg, p->qsg, e);
    WDesc u = expert(p, p->wu, p->su, p->fsu, p->qu, p->qsu, e);
    float *act = p->act + (size_t)off * (size_t)p->F, *up = p->up + (size_t)off * (size_t)p->F;
    if (p->qx && M <= 8) {  // the decode product takes ≤ 8 rows (an expert listed twice by a token gets more)
      mm_quantised(&g, p->qx, p->order + off, 0, M, (size_t)p->D, act, (size_t)p->F, f0, f1);
      mm_quantised(&u, p->qx, p->order + off, 0, M, (size_t)p->D, up, (size_t)p->F, f0, f1);
    } else {
      mm_core(&g, p->x, p->order + off, (size_t)p->D, act, (size_t)p->F, M, (size_t)p->D, f0, f1);
      mm_core(&u, p->x, p->order + off, (size_t)p->D, up, (size_t)p->F, M, (size_t)p->D, f0, f1);
    }
    for (int m = 0; m < M; m++) {
      size_t o = (size_t)m * (size_t)p->F + (size_t)f0;
      swiglu_row(act + o, up + o, act + o, f1 - f0);
    }
  }
}

// Phase 2, rows = nActive · ceil(D / chunk): ys = act · Wdᵀ per expert.
EXPORT(moe_down)
void moe_down(const MoeParams *p, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    int a = r % p->nActive, c = r / p->nActive, e = p->active[a];
    int d0 = c * p->chunk, d1 = d0 + p->chunk < p->D ? d0 + p->chunk : p->D;
    int off = p->offsets[e], M = p->offsets[e + 1] - off;
    WDesc d = expert(p, p->wd, p->sd, p->fsd, p->qd, p->qsd, e);
    float *ys = p->ys + (size_t)off * (size_t)p->D;
    if (p->qact && M <= 8) mm_quantised(&d, p->qact, 0, off, M, (size_t)p->F, ys, (size_t)p->D, d0, d1);
    else mm_core(&d, p->act + (size_t)off * (size_t)p->F, 0, (size_t)p->F, ys, (size_t)p->D, M, (size_t)p->F, d0, d1);
  }
}

// Phase 3, rows = T: out[t] = addend[t] + Σ_j w[t, j] · ys[inv[t·k + j]], j ascending, in f32.
EXPORT(moe_combine)
void moe_combine(const MoeParams *p, int r0, int r1) {
  const int D = p->D, k = p->k;
  for (int t = r0; t < r1; t++) {
    float *o = p->out + (size_t)t * (size_t)D;
    const float *ad = p->addend ? p->addend + (size_t)t * (size_t)D : 0;
    int c = 0;
    for (; c + 4 <= D; c += 4) {
      f4 acc = ad ? ld(ad + c) : splat(0.0f);
      for (int j = 0; j < k; j++) {
        const float *y = p->ys + (size_t)p->inv[t * k + j] * (size_t)D;
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(splat(p->w[t * k + j]), ld(y + c)));
      }
      st(o + c, acc);
    }
    for (; c < D; c++) {
      float acc = ad ? ad[c] : 0.0f;
      for (int j = 0; j < k; j++) acc += p->w[t * k + j] * p->ys[(size_t)p->inv[t * k + j] * (size_t)D + (size_t)c];
      o[c] = acc;
    }
  }
}
