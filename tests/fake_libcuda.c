// A fake CUDA driver (libcuda.so.1) for the cuda backend's host-code tests: built by clang at test time
// (tests/cuda_helpers.ts) and loaded through the same Deno.dlopen path as the real one (TRAMONTANE_LIBCUDA).
//
// Device memory is host memory here (cuMemAlloc is calloc), so copies, memsets and read-backs really move bytes
// and a test can check what reached the "device"; kernels do not run, except the weight generator's (below).
// Every call appends one line to the file named by FAKE_CUDA_LOG: the entry point's name, then its arguments as
// key=value. Behaviour is set by environment variables read at each call:
//   FAKE_CUDA_FAIL=name:code[:n]   the n-th call (from 1; default every call) of `name` returns `code`
//   FAKE_CUDA_DEVICES=n            devices cuDeviceGetCount reports (default 1)
//   FAKE_CUDA_VERSION=v            cuDriverGetVersion's answer (default 13000)
//   FAKE_CUDA_CC=major.minor       compute capability (default 9.0)
//   FAKE_CUDA_MEM=bytes            total device memory; cuMemAlloc beyond it returns CUDA_ERROR_OUT_OF_MEMORY
//   FAKE_CUDA_RUN=1                run every kernel on the CPU (a build with tests/cuda_host_shim.cpp linked in)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

static unsigned long long allocated = 0;

// Stream capture: while capturing, copies and launches are recorded (not run), and a graph launch replays them,
// reading host memory and argument blocks as a real graph does (copies read their source when they run).
typedef struct {
  int launch;
  unsigned long long dst;
  const void *src;
  size_t bytes;
  char fn[64];
  unsigned grid[3], block, smem;
  unsigned long long args[24]; // the 128-byte Args block
} CapturedOp;
typedef struct {
  CapturedOp *ops;
  int n;
} CapturedGraph;
static CapturedOp *capture_ops;
static int capture_n, capture_cap, capturing;

static void capture_push(CapturedOp op) {
  if (capture_n == capture_cap) {
    capture_cap = capture_cap ? 2 * capture_cap : 64;
    capture_ops = realloc(capture_ops, (size_t)capture_cap * sizeof(CapturedOp));
  }
  capture_ops[capture_n++] = op;
}
static int counts[64];
static const char *counted[64];

static int count_of(const char *name) {
  for (int i = 0; i < 64; i++) {
    if (!counted[i]) { counted[i] = name; counts[i] = 1; return 1; }
    if (counted[i] == name || strcmp(counted[i], name) == 0) return ++counts[i];
  }
  return 0;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void logf_(const char *fmt, ...) {
  const char *path = getenv("FAKE_CUDA_LOG");
  if (!path) return;
  FILE *f = fopen(path, "a");
  if (!f) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fclose(f);
}

// The code FAKE_CUDA_FAIL asks `name` to return at this call (0 when none).
static CUresult failure(const char *name) {
  int n = count_of(name);
  const char *spec = getenv("FAKE_CUDA_FAIL");
  if (!spec) return 0;
  size_t len = strlen(name);
  if (strncmp(spec, name, len) != 0 || spec[len] != ':') return 0;
  char *end;
  long code = strtol(spec + len + 1, &end, 10);
  if (*end == ':' && strtol(end + 1, NULL, 10) != n) return 0;
  return (CUresult)code;
}

#define ENTER(name)                        \
  CUresult fail_ = failure(name);          \
  if (fail_) {                             \
    logf_("%s failed=%d", name, fail_);    \
    return fail_;                          \
  }

static long env_long(const char *name, long fallback) {
  const char *v = getenv(name);
  return v ? strtol(v, NULL, 10) : fallback;
}

CUresult cuInit(unsigned flags) {
  ENTER("cuInit");
  logf_("cuInit flags=%u", flags);
  return 0;
}

CUresult cuDriverGetVersion(int *v) {
  ENTER("cuDriverGetVersion");
  *v = (int)env_long("FAKE_CUDA_VERSION", 13000);
  logf_("cuDriverGetVersion");
  return 0;
}

static const char *names[] = {"CUDA_SUCCESS", "CUDA_ERROR_INVALID_VALUE", "CUDA_ERROR_OUT_OF_MEMORY"};

CUresult cuGetErrorName(CUresult code, const char **out) {
  if (code >= 0 && code < 3) { *out = names[code]; return 0; }
  if (code == 700) { *out = "CUDA_ERROR_ILLEGAL_ADDRESS"; return 0; }
  return 1; // unknown here: the backend falls back to its own table
}

CUresult cuDeviceGetCount(int *n) {
  ENTER("cuDeviceGetCount");
  *n = (int)env_long("FAKE_CUDA_DEVICES", 1);
  logf_("cuDeviceGetCount n=%d", *n);
  return 0;
}

CUresult cuDeviceGet(int *dev, int ordinal) {
  ENTER("cuDeviceGet");
  if (ordinal >= env_long("FAKE_CUDA_DEVICES", 1)) return 101;
  *dev = ordinal;
  logf_("cuDeviceGet ordinal=%d", ordinal);
  return 0;
}

CUresult cuDeviceGetName(char *name, int len, int dev) {
  ENTER("cuDeviceGetName");
  snprintf(name, (size_t)len, "Fake GPU %d", dev);
  return 0;
}

CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
  ENTER("cuDeviceGetAttribute");
  const char *cc = getenv("FAKE_CUDA_CC");
  int major = 9, minor = 0;
  if (cc) sscanf(cc, "%d.%d", &major, &minor);
  switch (attr) {
    case 1: *v = 1024; break;
    case 8: *v = 49152; break;
    case 16: *v = 132; break;
    case 75: *v = major; break;
    case 76: *v = minor; break;
    default: *v = 0;
  }
  (void)dev;
  return 0;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) {
  ENTER("cuDeviceTotalMem_v2");
  *bytes = (size_t)env_long("FAKE_CUDA_MEM", 1L << 34);
  (void)dev;
  return 0;
}

static int primary_ctx;

CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) {
  ENTER("cuDevicePrimaryCtxRetain");
  *ctx = &primary_ctx;
  logf_("cuDevicePrimaryCtxRetain dev=%d", dev);
  return 0;
}

CUresult cuDevicePrimaryCtxRelease_v2(int dev) {
  ENTER("cuDevicePrimaryCtxRelease_v2");
  logf_("cuDevicePrimaryCtxRelease_v2 dev=%d", dev);
  return 0;
}

CUresult cuCtxSetCurrent(void *ctx) {
  ENTER("cuCtxSetCurrent");
  logf_("cuCtxSetCurrent ctx=%s", ctx == &primary_ctx ? "primary" : "other");
  return 0;
}

CUresult cuMemGetInfo_v2(size_t *free_, size_t *total) {
  ENTER("cuMemGetInfo_v2");
  *total = (size_t)env_long("FAKE_CUDA_MEM", 1L << 34);
  *free_ = *total - allocated;
  return 0;
}

static int streams[16], nstreams;

CUresult cuStreamCreate(void **stream, unsigned flags) {
  ENTER("cuStreamCreate");
  *stream = &streams[nstreams++ % 16];
  logf_("cuStreamCreate stream=%p flags=%u", *stream, flags);
  return 0;
}

CUresult cuStreamSynchronize(void *stream) {
  ENTER("cuStreamSynchronize");
  logf_("cuStreamSynchronize stream=%p", stream);
  return 0;
}

CUresult cuStreamQuery(void *stream) {
  ENTER("cuStreamQuery");
  logf_("cuStreamQuery stream=%p", stream);
  return 0;
}

CUresult cuStreamDestroy_v2(void *stream) {
  ENTER("cuStreamDestroy_v2");
  logf_("cuStreamDestroy_v2 stream=%p", stream);
  return 0;
}

// Each allocation carries its size before it, so cuMemFree can account for it.
CUresult cuMemAlloc_v2(CUdeviceptr *ptr, size_t bytes) {
  ENTER("cuMemAlloc_v2");
  if (allocated + bytes > (unsigned long long)env_long("FAKE_CUDA_MEM", 1L << 34)) {
    logf_("cuMemAlloc_v2 bytes=%zu oom", bytes);
    return 2;
  }
  size_t *p = calloc(1, bytes + 16);
  if (!p) return 2;
  p[0] = bytes;
  *ptr = (CUdeviceptr)(uintptr_t)(p + 2);
  allocated += bytes;
  logf_("cuMemAlloc_v2 bytes=%zu ptr=0x%llx", bytes, *ptr);
  return 0;
}

CUresult cuMemFree_v2(CUdeviceptr ptr) {
  ENTER("cuMemFree_v2");
  size_t *p = (size_t *)(uintptr_t)ptr - 2;
  allocated -= p[0];
  logf_("cuMemFree_v2 ptr=0x%llx", ptr);
  free(p);
  return 0;
}

CUresult cuMemAllocHost_v2(void **ptr, size_t bytes) {
  ENTER("cuMemAllocHost_v2");
  *ptr = malloc(bytes);
  logf_("cuMemAllocHost_v2 bytes=%zu host=%p", bytes, *ptr);
  return *ptr ? 0 : 2;
}

CUresult cuMemFreeHost(void *ptr) {
  ENTER("cuMemFreeHost");
  logf_("cuMemFreeHost host=%p", ptr);
  free(ptr);
  return 0;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t bytes, void *stream) {
  ENTER("cuMemcpyHtoDAsync_v2");
  logf_("cuMemcpyHtoDAsync_v2 dst=0x%llx src=%p bytes=%zu stream=%p", dst, src, bytes, stream);
  if (capturing) {
    CapturedOp op = {0};
    op.dst = dst, op.src = src, op.bytes = bytes;
    capture_push(op);
    return 0;
  }
  memcpy((void *)(uintptr_t)dst, src, bytes);
  return 0;
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t bytes, void *stream) {
  ENTER("cuMemcpyDtoHAsync_v2");
  if (capturing) return 900; // not captured by the backend: a test would see it
  memcpy(dst, (void *)(uintptr_t)src, bytes);
  logf_("cuMemcpyDtoHAsync_v2 dst=%p src=0x%llx bytes=%zu stream=%p", dst, src, bytes, stream);
  return 0;
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, void *stream) {
  ENTER("cuMemcpyDtoDAsync_v2");
  if (capturing) return 900; // not captured by the backend: a test would see it
  memmove((void *)(uintptr_t)dst, (void *)(uintptr_t)src, bytes);
  logf_("cuMemcpyDtoDAsync_v2 dst=0x%llx src=0x%llx bytes=%zu stream=%p", dst, src, bytes, stream);
  return 0;
}

CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, void *stream) {
  ENTER("cuMemsetD8Async");
  if (capturing) return 900; // not captured by the backend: a test would see it
  memset((void *)(uintptr_t)dst, value, n);
  logf_("cuMemsetD8Async dst=0x%llx value=%u n=%zu stream=%p", dst, value, n, stream);
  return 0;
}

static int module_;

CUresult cuModuleLoadData(void **module, const void *image) {
  ENTER("cuModuleLoadData");
  const char *ptx = image;
  *module = &module_;
  if (memcmp(ptx, "\177ELF", 4) == 0) {
    logf_("cuModuleLoadData target=cubin");
    return 0;
  }
  const char *target = strstr(ptx, ".target ");
  char t[16] = "?";
  if (target) sscanf(target + 8, "%15s", t);
  logf_("cuModuleLoadData bytes=%zu target=%s", strlen(ptx), t);
  return 0;
}

CUresult cuModuleUnload(void *module) {
  ENTER("cuModuleUnload");
  logf_("cuModuleUnload module=%p", module);
  return 0;
}

// A function handle is a copy of its name.
CUresult cuModuleGetFunction(void **fn, void *module, const char *name) {
  ENTER("cuModuleGetFunction");
  (void)module;
  *fn = strdup(name);
  logf_("cuModuleGetFunction name=%s", name);
  return 0;
}

// The kernels built for the CPU, when they are linked in (tests/cuda_host_shim.cpp); absent otherwise.
extern int shim_launch(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned smem,
                       const void *args) __attribute__((weak));

// The weight generator's kernels run here (kernels/cuda/random.cu's loops over random.cuh, on the host), so a test
// can compare device-made weights with the host's; every other kernel only logs its launch.
#include "../kernels/cuda/random.cuh"

static double dbits(unsigned lo, unsigned hi) {
  uint64_t u = ((uint64_t)hi << 32) | lo;
  double d;
  memcpy(&d, &u, 8);
  return d;
}

static void run_random(const char *fn, const unsigned long long *ptrs, const unsigned *w) {
  uint64_t n = w[0], first = ((uint64_t)w[2] << 32) | w[1], run = ((uint64_t)w[9] << 32) | w[8];
  double mean = dbits(w[4], w[5]), width = dbits(w[6], w[7]);
  if (strcmp(fn, "random_nvfp4") == 0) {
    for (uint64_t b = 0; b < n / 16; b++) {
      float v[16];
      for (int j = 0; j < 16; j++) v[j] = rnd_value(w[3], first + 16 * b + j, mean, width);
      float g = rnd_nvfp4_global(rnd_bits_f32(((const uint32_t *)(uintptr_t)ptrs[1])[(first + 16 * b) / run]));
      ((float *)(uintptr_t)ptrs[2])[b] = rnd_nvfp4_block(v, g, (uint8_t *)(uintptr_t)ptrs[0] + 8 * b);
    }
    return;
  }
  for (uint64_t i = 0; i < n; i++) {
    float v = rnd_value(w[3], first + i, mean, width);
    uint32_t b = rnd_f32_bits(v);
    if (strcmp(fn, "random_fill") == 0) {
      if (w[8] == 0) ((uint32_t *)(uintptr_t)ptrs[0])[i] = b;
      else ((uint16_t *)(uintptr_t)ptrs[0])[i] = (uint16_t)(w[8] == 1 ? rnd_bf16(b) : rnd_f16(b));
    } else if (strcmp(fn, "random_amax") == 0) {
      uint32_t *amax = (uint32_t *)(uintptr_t)ptrs[0] + (first + i) / run;
      if ((b & 0x7fffffffu) > *amax) *amax = b & 0x7fffffffu;
    } else if (strcmp(fn, "random_fp8") == 0) {
      float s = rnd_fp8_scale(rnd_bits_f32(((const uint32_t *)(uintptr_t)ptrs[1])[(first + i) / run]));
      ((uint8_t *)(uintptr_t)ptrs[0])[i] = (uint8_t)rnd_fp8_code(v, s);
      if (i % w[10] == 0) ((float *)(uintptr_t)ptrs[2])[i / w[10]] = s;
    }
  }
}

// Runs a kernel where the fake can: every one on the CPU with FAKE_CUDA_RUN=1 in a build with the kernels linked
// in, else the weight generator's only.
static CUresult run_kernel(const char *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned smem,
                           const unsigned long long *ptrs) {
  const char *run = getenv("FAKE_CUDA_RUN");
  if (shim_launch && run && strcmp(run, "1") == 0) {
    if (shim_launch(fn, gx, gy, gz, bx, smem, ptrs) != 0) {
      logf_("cuLaunchKernel fn=%s failed=no kernel", fn);
      return 500;
    }
  } else if (strncmp(fn, "random_", 7) == 0) {
    run_random(fn, ptrs, (const unsigned *)(ptrs + 8));
  }
  return 0;
}

// The argument block every kernel takes (kernels/cuda/common.cuh `Args`): 8 pointers, then 16 words.
CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned smem, void *stream, void **params, void **extra) {
  ENTER("cuLaunchKernel");
  const unsigned long long *ptrs = params[0];
  const unsigned *words = (const unsigned *)(ptrs + 8);
  char p[512], w[256];
  int o = 0;
  for (int i = 0; i < 8; i++) o += snprintf(p + o, sizeof p - (size_t)o, "%s0x%llx", i ? "," : "", ptrs[i]);
  o = 0;
  for (int i = 0; i < 16; i++) o += snprintf(w + o, sizeof w - (size_t)o, "%s%u", i ? "," : "", words[i]);
  logf_("cuLaunchKernel fn=%s grid=%u,%u,%u block=%u,%u,%u smem=%u stream=%p extra=%p ptrs=%s words=%s",
        (const char *)fn, gx, gy, gz, bx, by, bz, smem, stream, (void *)extra, p, w);
  (void)by, (void)bz;
  if (capturing) {
    CapturedOp op = {0};
    op.launch = 1;
    snprintf(op.fn, sizeof op.fn, "%s", (const char *)fn);
    op.grid[0] = gx, op.grid[1] = gy, op.grid[2] = gz, op.block = bx, op.smem = smem;
    memcpy(op.args, ptrs, 128);
    capture_push(op);
    return 0;
  }
  return run_kernel((const char *)fn, gx, gy, gz, bx, smem, ptrs);
}

static int events[1024], nevents;

CUresult cuEventCreate(void **event, unsigned flags) {
  ENTER("cuEventCreate");
  *event = &events[nevents++ % 1024];
  logf_("cuEventCreate event=%p flags=%u", *event, flags);
  return 0;
}

CUresult cuEventRecord(void *event, void *stream) {
  ENTER("cuEventRecord");
  logf_("cuEventRecord event=%p stream=%p", event, stream);
  return 0;
}

CUresult cuEventSynchronize(void *event) {
  ENTER("cuEventSynchronize");
  logf_("cuEventSynchronize event=%p", event);
  return 0;
}

CUresult cuEventElapsedTime(float *ms, void *start, void *end) {
  ENTER("cuEventElapsedTime");
  (void)start;
  (void)end;
  *ms = 1.5f;
  return 0;
}

CUresult cuEventDestroy_v2(void *event) {
  ENTER("cuEventDestroy_v2");
  logf_("cuEventDestroy_v2 event=%p", event);
  return 0;
}

// The graph entry points (left out with -DFAKE_NO_GRAPHS: a driver without them).
#ifndef FAKE_NO_GRAPHS

CUresult cuStreamBeginCapture_v2(void *stream, int mode) {
  capturing = 1; // before ENTER: a failing capture still ends with cuStreamEndCapture
  capture_n = 0;
  ENTER("cuStreamBeginCapture_v2");
  logf_("cuStreamBeginCapture_v2 stream=%p mode=%d", stream, mode);
  return 0;
}

CUresult cuStreamEndCapture(void *stream, void **graph) {
  capturing = 0;
  ENTER("cuStreamEndCapture");
  CapturedGraph *g = malloc(sizeof *g);
  g->n = capture_n;
  g->ops = malloc((size_t)(capture_n ? capture_n : 1) * sizeof(CapturedOp));
  memcpy(g->ops, capture_ops, (size_t)capture_n * sizeof(CapturedOp));
  *graph = g;
  logf_("cuStreamEndCapture stream=%p graph=%p ops=%d", stream, *graph, g->n);
  return 0;
}

// An executable graph is its graph here.
CUresult cuGraphInstantiateWithFlags(void **exec, void *graph, unsigned long long flags) {
  ENTER("cuGraphInstantiateWithFlags");
  CapturedGraph *g = graph, *e = malloc(sizeof *e);
  e->n = g->n;
  e->ops = malloc((size_t)(g->n ? g->n : 1) * sizeof(CapturedOp));
  memcpy(e->ops, g->ops, (size_t)g->n * sizeof(CapturedOp));
  *exec = e;
  logf_("cuGraphInstantiateWithFlags graph=%p exec=%p flags=%llu", graph, *exec, flags);
  return 0;
}

CUresult cuGraphLaunch(void *exec, void *stream) {
  ENTER("cuGraphLaunch");
  logf_("cuGraphLaunch exec=%p stream=%p", exec, stream);
  CapturedGraph *e = exec;
  for (int i = 0; i < e->n; i++) {
    CapturedOp *op = &e->ops[i];
    if (!op->launch) {
      memcpy((void *)(uintptr_t)op->dst, op->src, op->bytes);
      continue;
    }
    CUresult r = run_kernel(op->fn, op->grid[0], op->grid[1], op->grid[2], op->block, op->smem, op->args);
    if (r) return r;
  }
  return 0;
}

CUresult cuGraphExecDestroy(void *exec) {
  ENTER("cuGraphExecDestroy");
  logf_("cuGraphExecDestroy exec=%p", exec);
  free(((CapturedGraph *)exec)->ops);
  free(exec);
  return 0;
}

CUresult cuGraphDestroy(void *graph) {
  ENTER("cuGraphDestroy");
  logf_("cuGraphDestroy graph=%p", graph);
  free(((CapturedGraph *)graph)->ops);
  free(graph);
  return 0;
}
#endif
