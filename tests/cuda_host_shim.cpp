// The scheduler of tests/cuda_host_shim.h: a launch runs its blocks one after another; a block's threads are
// fibers (ucontext) on this thread, each running until it reaches a barrier or ends. __syncthreads releases when
// every thread of the block still running waits at it; a warp shuffle writes the lane's value, waits for the
// warp's live lanes, reads its partner's, and waits again, so values are not overwritten early.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include "cuda_host_shim.h"
#include "../kernels/cuda/common.cuh"

shim_dim3 threadIdx, blockIdx, blockDim, gridDim;

// Switching fibers: on x86-64 a few instructions (callee-saved registers and the stack pointer), since ucontext's
// swapcontext makes a system call per switch and a kernel's warp shuffles switch millions of times; elsewhere
// ucontext.
#if defined(__x86_64__)
extern "C" void shim_switch(void **save, void *to);
asm(R"(
.text
.globl shim_switch
.type shim_switch,@function
shim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
)");
#endif

namespace {
enum State { RUN, BAR, WARP, DONE };
struct Fiber {
#if defined(__x86_64__)
  void *sp;
#else
  ucontext_t ctx;
#endif
  char *stack;
  State state;
};
const size_t STACK = 256 * 1024;
#if defined(__x86_64__)
void *sched;
#else
ucontext_t sched;
#endif
Fiber *fibers;
int nfibers, cap, cur;
void (*kernel)(const Args);
const Args *kargs;
unsigned lanes[1024];
alignas(16) float dyn[64 * 1024];

void toScheduler() {
#if defined(__x86_64__)
  shim_switch(&fibers[cur].sp, sched);
#else
  swapcontext(&fibers[cur].ctx, &sched);
#endif
}

void enter() {
  kernel(*kargs);
  fibers[cur].state = DONE;
  toScheduler();
  abort(); // a finished fiber is never resumed
}

void wait(State s) {
  fibers[cur].state = s;
  toScheduler();
}

void start(Fiber &f) {
#if defined(__x86_64__)
  // The first switch pops six registers and returns into enter() with the stack as after a call (rsp ≡ 8 mod 16).
  uintptr_t top = ((uintptr_t)(f.stack + STACK)) & ~(uintptr_t)15;
  void **sp = (void **)(top - 16);
  sp[1] = nullptr;
  sp[0] = (void *)&enter;
  sp -= 6;
  for (int i = 0; i < 6; i++) sp[i] = nullptr;
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = STACK;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, enter, 0);
#endif
  f.state = RUN;
}

void resume(int i) {
  cur = i;
  threadIdx = {(unsigned)i, 0, 0};
#if defined(__x86_64__)
  shim_switch(&sched, fibers[i].sp);
#else
  swapcontext(&sched, &fibers[i].ctx);
#endif
}

void runBlock() {
  for (int i = 0; i < nfibers; i++) start(fibers[i]);
  for (;;) {
    for (int i = 0; i < nfibers; i++) {
      if (fibers[i].state == RUN) resume(i);
    }
    bool released = false, allDone = true, allBar = true;
    for (int w = 0; w * 32 < nfibers; w++) {
      bool warpReady = true, any = false;
      for (int i = 32 * w; i < nfibers && i < 32 * w + 32; i++) {
        if (fibers[i].state == DONE) continue;
        any = true;
        if (fibers[i].state != WARP) warpReady = false;
      }
      if (any && warpReady) {
        for (int i = 32 * w; i < nfibers && i < 32 * w + 32; i++) {
          if (fibers[i].state == WARP) fibers[i].state = RUN;
        }
        released = true;
      }
    }
    for (int i = 0; i < nfibers; i++) {
      if (fibers[i].state != DONE) allDone = false;
      if (fibers[i].state != DONE && fibers[i].state != BAR) allBar = false;
    }
    if (allDone) return;
    if (released) continue;
    if (allBar) {
      for (int i = 0; i < nfibers; i++) {
        if (fibers[i].state == BAR) fibers[i].state = RUN;
      }
      continue;
    }
    fprintf(stderr, "cuda_host_shim: deadlock in block %u (threads wait at different barriers)\n", blockIdx.x);
    abort();
  }
}
}  // namespace

void __syncthreads() { wait(BAR); }
void shim_warp_barrier() { wait(WARP); }
float *shim_dyn_shared() { return dyn; }

unsigned shim_lane_exchange(unsigned v, int lane) {
  unsigned base = threadIdx.x & ~31u;
  lanes[threadIdx.x] = v;
  wait(WARP);
  unsigned r = lanes[base + (unsigned)lane];
  wait(WARP);
  return r;
}

// mma.sync m16n8k16 bf16 → f32 (kernels/cuda/common.cuh mma_bf16_16816): every lane posts its A and B fragments
// and C, waits for its warp, rebuilds the whole 16 × 16 A and 16 × 8 B from the PTX ISA's fragment layout (the one
// common.cuh states), computes its own four outputs, and waits again before the scratch can be reused. Each output
// is c + s with s = Σ_{k = 0..15} A[r][k]·B[k][n] summed in f32 in increasing k (every product of two bf16 is exact
// in f32; the tensor core sums with more internal precision and its own order, so hardware may differ by f32
// rounding of that sum).
namespace {
unsigned mmaA[1024][4], mmaB[1024][2];
float bf16Half(unsigned reg, unsigned k) { return __uint_as_float(k & 1 ? reg & 0xffff0000u : reg << 16); }
}  // namespace

void shim_mma_bf16_16816(float *d, const unsigned *a, const unsigned *b, const float *c) {
  unsigned me = threadIdx.x, base = me & ~31u, lane = me & 31u, g = lane >> 2, t = lane & 3u;
  memcpy(mmaA[me], a, sizeof mmaA[me]);
  memcpy(mmaB[me], b, sizeof mmaB[me]);
  float cin[4] = {c[0], c[1], c[2], c[3]};
  wait(WARP);
  auto A = [&](unsigned r, unsigned k) {  // lane (r % 8)·4 + (k % 8) / 2, register (r ≥ 8) + 2·(k ≥ 8)
    return bf16Half(mmaA[base + (r & 7u) * 4 + ((k & 7u) >> 1)][(r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k);
  };
  auto B = [&](unsigned k, unsigned n) {  // lane n·4 + (k % 8) / 2, register (k ≥ 8)
    return bf16Half(mmaB[base + n * 4 + ((k & 7u) >> 1)][k >= 8 ? 1 : 0], k);
  };
  for (unsigned i = 0; i < 4; i++) {
    unsigned r = g + (i >= 2 ? 8 : 0), n = 2 * t + (i & 1u);
    float s = 0.0f;
    for (unsigned k = 0; k < 16; k++) s += A(r, k) * B(k, n);
    d[i] = cin[i] + s;
  }
  wait(WARP);
}

// Runs kernel `name` of this library over the grid; returns 0, or -1 when there is no such kernel.
extern "C" int shim_launch(const char *name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned smem,
                           const void *args) {
  Dl_info info;
  if (!dladdr((void *)&shim_launch, &info)) return -1;
  void *self = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  void *fn = self ? dlsym(self, name) : nullptr;
  if (self) dlclose(self);
  if (!fn || bx > 1024 || smem > sizeof dyn) return -1;
  if ((int)bx > cap) {
    fibers = (Fiber *)realloc(fibers, bx * sizeof(Fiber));
    for (int i = cap; i < (int)bx; i++) fibers[i].stack = (char *)malloc(STACK);
    cap = (int)bx;
  }
  kernel = (void (*)(const Args))fn;
  kargs = (const Args *)args;
  nfibers = (int)bx;
  blockDim = {bx, 1, 1};
  gridDim = {gx, gy, gz};
  for (unsigned z = 0; z < gz; z++) {
    for (unsigned y = 0; y < gy; y++) {
      for (unsigned x = 0; x < gx; x++) {
        blockIdx = {x, y, z};
        runBlock();
      }
    }
  }
  return 0;
}
