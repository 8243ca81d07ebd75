// Row movement: copy_rows (reshape, slice, concat, gather_rows, scatter_rows, write_rows as 32-bit word copies),
// the embedding gather per table dtype, and patch_merge. One thread per output word or element.
#include "common.cuh"

// O[dst · p4 + p5 + c] = X[src · p2 + p3 + c] for word c < p1 of row r; p6 mode: 0 plain (src = dst = r),
// 1 gather (src = I[r] − p7, skipped outside 0..p8 − 1), 2 scatter (dst = I[r], skipped when negative).
// p0 words in all; ptr0 X, ptr1 I, ptr2 O.
KERNEL(copy_rows) {
  u32 i = flat();
  if (i >= a.p[0]) return;
  u32 w = a.p[1], r = i / w, c = i - r * w, src = r, dst = r;
  const int *idx = ptr<const int>(a, 1);
  if (a.p[6] == 1) {
    int s = idx[r] - (int)a.p[7];
    if (s < 0 || (u32)s >= a.p[8]) return;
    src = (u32)s;
  } else if (a.p[6] == 2) {
    int d = idx[r];
    if (d < 0) return;
    dst = (u32)d;
  }
  ptr<u32>(a, 2)[(u64)dst * a.p[4] + a.p[5] + c] = ptr<const u32>(a, 0)[(u64)src * a.p[2] + a.p[3] + c];
}

// Embedding rows of a table part (rows row0..row0 + rows − 1 of the whole table) for the ids that fall in it:
// O[t, c] = T[id_t − row0, c]. p0 T · width, p1 width, p2 row0, p3 rows; ptr0 codes, ptr1 scales, ptr2 ids, ptr3 O.
template <int D> __device__ void gather(const Args &a) {
  u32 i = flat();
  if (i >= a.p[0]) return;
  u32 w = a.p[1], r = i / w, c = i - r * w;
  int s = ptr<const int>(a, 2)[r] - (int)a.p[2];
  if (s < 0 || (u32)s >= a.p[3]) return;
  W t{ptr<const unsigned char>(a, 0), ptr<const void>(a, 1), w};
  ptr<float>(a, 3)[i] = at<D>(t, (u64)s * w + c);
}
FOR_WEIGHT_DTYPES(gather)

// out[t, ch · K + j] = x[index[t, j], ch] (0 for an index outside the rows). p0 M · C · K, p1 C, p2 K, p3 rows;
// ptr0 x, ptr1 index, ptr2 out.
KERNEL(patch_merge) {
  u32 n = flat();
  if (n >= a.p[0]) return;
  u32 c = a.p[1], k = a.p[2], t = n / (c * k), r = n - t * c * k, ch = r / k, j = r - ch * k;
  int row = ptr<const int>(a, 1)[t * k + j];
  ptr<float>(a, 2)[n] = row < 0 || (u32)row >= a.p[3] ? 0.0f : ptr<const float>(a, 0)[(u32)row * c + ch];
}
