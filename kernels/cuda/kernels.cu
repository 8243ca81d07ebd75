// Every kernel of the `cuda` backend in one module (one PTX file per target): kernels/cuda/build.sh compiles this.
#include "elementwise.cu"
#include "rows.cu"
#include "norm.cu"
#include "matmul.cu"
#include "moe.cu"
#include "mla.cu"
#include "attention.cu"
#include "sample.cu"
