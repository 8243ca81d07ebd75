// Token selection on the CPU: argmax and temperature / top-k / top-p sampling from a given uniform number.
#include "common.h"

// out[t] = the first index of the largest logit of row t, rows [r0, r1); NaNs are never largest (a row whose
// logit 0 is NaN gives 0, as a scalar `l[i] > l[best]` walk would). Two SIMD passes: the maximum, then its first
// index; a scalar walk reloads l[best] every step and costs several times more over a 131k vocabulary.
EXPORT(argmax)
void argmax(const float *logits, int V, int32_t *out, int r0, int r1) {
  for (int t = r0; t < r1; t++) {
    const float *l = logits + (size_t)t * (size_t)V;
    if (V <= 0 || l[0] != l[0]) {
      out[t] = 0;
      continue;
    }
    f4 m4 = splat(l[0]);
    int i = 0;
    for (; i + 4 <= V; i += 4) m4 = wasm_f32x4_pmax(m4, ld(l + i));  // pmax keeps m4 when the new lane is NaN
    float m = hmax(m4);
    for (; i < V; i++) m = l[i] > m ? l[i] : m;
    int best = 0;
    f4 mv = splat(m);
    for (i = 0; i + 4 <= V; i += 4)
      if (wasm_v128_any_true(wasm_f32x4_eq(ld(l + i), mv))) break;
    for (; i < V; i++)
      if (l[i] == m) {
        best = i;
        break;
      }
    out[t] = best;
  }
}

// Candidates are token ids ordered by (probability desc, id asc): a strict total order, so every selection below
// is well defined however many probabilities tie.
INLINE int better(const float *p, int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); }
INLINE void swap_ids(int32_t *h, int i, int j) {
  int32_t t = h[i];
  h[i] = h[j];
  h[j] = t;
}

// Partitions h[lo, hi) around a median-of-three pivot: h[lo, q) better than it, h[q] the pivot, h(q, hi) worse.
static int partition(const float *p, int32_t *h, int lo, int hi) {
  int mid = lo + (hi - lo) / 2, last = hi - 1;
  if (better(p, h[mid], h[lo])) swap_ids(h, mid, lo);
  if (better(p, h[last], h[lo])) swap_ids(h, last, lo);
  if (better(p, h[mid], h[last])) swap_ids(h, mid, last);  // h[last]: the median
  int32_t pivot = h[last];
  int q = lo;
  for (int i = lo; i < last; i++)
    if (better(p, h[i], pivot)) swap_ids(h, i, q++);
  swap_ids(h, q, last);
  return q;
}

static void sort_small(const float *p, int32_t *h, int lo, int hi) {
  for (int i = lo + 1; i < hi; i++) {
    int32_t x = h[i];
    int j = i;
    for (; j > lo && better(p, x, h[j - 1]); j--) h[j] = h[j - 1];
    h[j] = x;
  }
}

// Rearranges h[0, n) so that h[0, k) are the k best (in no particular order). Expected O(n).
static void select_top(const float *p, int32_t *h, int n, int k) {
  int lo = 0, hi = n;
  while (hi - lo > 16) {
    int q = partition(p, h, lo, hi);
    if (q == k || q + 1 == k) return;
    if (q > k) hi = q;
    else lo = q + 1;
  }
  sort_small(p, h, lo, hi);
}

// The shortest prefix, in candidate order, of h[0, n) whose running sum of p passes `target` (strict: > target,
// else ≥): rearranges h so that its j members come first, the last of them (the one that passed) at h[j − 1], and
// returns j, with the prefix's mass in *mass. Returns 0 (and the whole mass) when rounding leaves the target
// unreached. Quickselect on mass, expected O(n): a walk over a sorted order would cost O(n log n) on the flat
// rows of a random or high-temperature model.
static int select_mass(const float *p, int32_t *h, int n, float target, int strict, float *mass) {
  int lo = 0, hi = n;
  float acc = 0.0f;  // mass of h[0, lo): members for sure
#define PASSES(x) (strict ? (x) > target : (x) >= target)
  while (hi - lo > 16) {
    int q = partition(p, h, lo, hi);
    float m = 0.0f;
    for (int i = lo; i < q; i++) m += p[h[i]];
    if (PASSES(acc + m)) {
      hi = q;
      continue;
    }
    acc += m + p[h[q]];
    if (PASSES(acc)) {
      *mass = acc;
      return q + 1;
    }
    lo = q + 1;
  }
  sort_small(p, h, lo, hi);
  for (int j = lo; j < hi; j++) {
    acc += p[h[j]];
    if (PASSES(acc)) {
      *mass = acc;
      return j + 1;
    }
  }
#undef PASSES
  *mass = acc;
  return 0;
}

// Whether `mask` (0: none, every id allowed) allows id i: bit i & 31 of word i >> 5.
INLINE int allows(const uint32_t *mask, int i) { return !mask || ((mask[i >> 5] >> (i & 31)) & 1u); }

// The first index of the largest allowed logit of l[0, V), or −1 when the mask allows none. Zero words are skipped
// whole, so a mask allowing a handful of ids costs V / 32 word tests; bits at ids ≥ V are ignored.
static int32_t argmax_masked(const float *l, int V, const uint32_t *mask) {
  int32_t best = -1;
  for (int w = 0; w * 32 < V; w++) {
    for (uint32_t bits = mask[w]; bits; bits &= bits - 1) {
      int i = w * 32 + __builtin_ctz(bits);
      if (i >= V) break;
      if (best < 0 || l[i] > l[best]) best = i;
    }
  }
  return best;
}

// Rows [r0, r1) of logits [T, V], each with its own temperature, top-k (≤ 0: off), top-p (≥ 1: off), uniform
// u in [0, 1) and mask: row t obeys masks[mask_row[t]] (ceil(V/32) words; mask_row 0 or a negative entry: no mask).
// Disallowed ids are dropped before anything else: they are no candidates, have p = 0, and a row allowing none
// gives −1. temp ≤ 0 → argmax. Otherwise p_i = exp((l_i − max)/temp) (f32); candidates in order of p desc, id asc
// (the `sample` op's order); keep the top-k, then the shortest prefix of them whose f32 sum reaches top_p · Σ kept;
// pick the first token whose running sum exceeds u · Σ prefix. Each cut is a quickselect (expected O(V) per row,
// flat or peaked); sums are f32 in partition order, so a draw can differ from a sorted walk only where u lands
// within rounding of a boundary. scratch: 8·V bytes per row (row t at scratch + 8·V·t).
EXPORT(sample)
void sample(const float *logits, int V, const float *temps, const int32_t *topk, const float *topp, const float *u,
            const int32_t *mask_row, const uint32_t *masks, int32_t *out, void *scratch, int r0, int r1) {
  const size_t W = ((size_t)V + 31) / 32;
  for (int t = r0; t < r1; t++) {
    const float *l = logits + (size_t)t * (size_t)V;
    const uint32_t *mask = mask_row && mask_row[t] >= 0 ? masks + W * (size_t)mask_row[t] : 0;
    if (!(temps[t] > 0.0f)) {
      if (mask) out[t] = argmax_masked(l, V, mask);
      else argmax(logits, V, out, t, t + 1);
      continue;
    }
    float *p = (float *)((uint8_t *)scratch + (size_t)8 * (size_t)V * (size_t)t);
    int32_t *h = (int32_t *)(p + V);
    // The candidates h[0, N): every id, or the allowed ones.
    int N = 0;
    float m = 0.0f;
    for (int i = 0; i < V; i++) {
      if (!allows(mask, i)) continue;
      m = N == 0 || l[i] > m ? l[i] : m;
      h[N++] = i;
    }
    if (N == 0) {
      out[t] = -1;
      continue;
    }
    float inv = 1.0f / temps[t];
    float z = 0.0f;
    for (int j = 0; j < N; j++) z += p[h[j]] = expf_((l[h[j]] - m) * inv);
    int keep = topk[t] > 0 && topk[t] < N ? topk[t] : N;
    if (keep < N) {
      select_top(p, h, N, keep);
      z = 0.0f;
      for (int j = 0; j < keep; j++) z += p[h[j]];
    }
    if (topp[t] < 1.0f) {
      float mass;
      int j = select_mass(p, h, keep, topp[t] * z, 0, &mass);
      if (j > 0) {
        keep = j;
        z = mass;
      }
    }
    float mass;
    int j = select_mass(p, h, keep, u[t] * z, 1, &mass);
    if (j > 0) {
      out[t] = h[j - 1];
    } else {  // rounding left the target unreached: the last kept candidate
      int32_t worst = h[0];
      for (int i = 1; i < keep; i++)
        if (better(p, worst, h[i])) worst = h[i];
      out[t] = worst;
    }
  }
}
