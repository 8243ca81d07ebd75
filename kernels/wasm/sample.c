// Token selection on the CPU: argmax and temperature / top-k / top-p sampling from a given uniform number.
#include "common.h"

// out[t] = the first index of the largest logit of row t, rows [r0, r1).
EXPORT(argmax)
void argmax(const float *logits, int V, int32_t *out, int r0, int r1) {
  for (int t = r0; t < r1; t++) {
    const float *l = logits + (size_t)t * (size_t)V;
    int best = 0;
    for (int i = 1; i < V; i++)
      if (l[i] > l[best]) best = i;
    out[t] = best;
  }
}

// Max-heap of token ids ordered by (probability desc, id asc).
INLINE int better(const float *p, int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); }
static void sift_down(const float *p, int32_t *h, int n, int i) {
  for (;;) {
    int l = 2 * i + 1, r = l + 1, b = i;
    if (l < n && better(p, h[l], h[b])) b = l;
    if (r < n && better(p, h[r], h[b])) b = r;
    if (b == i) return;
    int32_t tmp = h[i];
    h[i] = h[b];
    h[b] = tmp;
    i = b;
  }
}

// Pops the best id off the heap h[0..n) into h[n−1] (so popped ids collect at the end, best last-most).
#define POP(p, h, n)                  \
  do {                                \
    int32_t top_ = (h)[0];            \
    (h)[0] = (h)[--(n)];              \
    (h)[n] = top_;                    \
    sift_down((p), (h), (n), 0);      \
  } while (0)

// Rows [r0, r1) of logits [T, V], each with its own temperature, top-k (≤ 0: off), top-p (≥ 1: off) and uniform
// u in [0, 1). temp ≤ 0 → argmax. Otherwise p_i = exp((l_i − max)/temp) (f32); candidates in order of p desc,
// id asc (the `sample` op's order); keep the top-k, then the shortest prefix of them whose f32 running sum
// reaches top_p · Σ kept; pick the first token whose running sum exceeds u · Σ prefix. Candidates come off a heap
// only as far as the walk goes, so a peaked distribution costs O(V), not a sort. scratch: 8·V bytes per row
// (row t at scratch + 8·V·t).
EXPORT(sample)
void sample(const float *logits, int V, const float *temps, const int32_t *topk, const float *topp, const float *u,
            int32_t *out, void *scratch, int r0, int r1) {
  for (int t = r0; t < r1; t++) {
    const float *l = logits + (size_t)t * (size_t)V;
    if (!(temps[t] > 0.0f)) {
      argmax(logits, V, out, t, t + 1);
      continue;
    }
    float *p = (float *)((uint8_t *)scratch + (size_t)8 * (size_t)V * (size_t)t);
    int32_t *h = (int32_t *)(p + V);
    float m = l[0];
    for (int i = 1; i < V; i++) m = l[i] > m ? l[i] : m;
    float inv = 1.0f / temps[t];
    for (int i = 0; i < V; i++) p[i] = expf_((l[i] - m) * inv);
    int K = topk[t] > 0 && topk[t] < V ? topk[t] : V;
    float P = topp[t];
    float rnd = u[t];
    // sorted(j) = h[V − 1 − j], the j-th best, available once popped.
    for (int i = 0; i < V; i++) h[i] = i;
    for (int i = V / 2 - 1; i >= 0; i--) sift_down(p, h, V, i);
    int n = V;
    float z = 0.0f;
    if (K < V) {
      for (int j = 0; j < K; j++) {
        POP(p, h, n);
        z += p[h[n]];
      }
    } else {
      for (int i = 0; i < V; i++) z += p[i];
    }
    int keep = K;
    if (P < 1.0f) {
      float target = P * z, cum = 0.0f;
      keep = 0;
      for (;;) {
        if (keep == V - n) POP(p, h, n);
        cum += p[h[V - 1 - keep]];
        keep++;
        if (cum >= target || keep == K) break;
      }
    }
    // Mass of the kept prefix: all of it when nothing was cut (then nothing need be popped yet).
    float zk = 0.0f;
    if (keep <= V - n) {
      for (int j = 0; j < keep; j++) zk += p[h[V - 1 - j]];
    } else {
      zk = z;
    }
    float target = rnd * zk, cum = 0.0f;
    int pick = -1;
    for (int j = 0; j < keep; j++) {
      if (j == V - n) POP(p, h, n);
      cum += p[h[V - 1 - j]];
      if (target < cum) { pick = h[V - 1 - j]; break; }
    }
    out[t] = pick >= 0 ? pick : h[V - keep];  // rounding left the target unreached: the last kept
  }
}
