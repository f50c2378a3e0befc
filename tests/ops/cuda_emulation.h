// Host emulation of CUDA for the kernel headers in kernels/cuda: CUDA's keywords become plain
// C++, a launch runs every thread of a small grid in sequence (so the grid-stride loops wrap),
// and atomics become plain adds. Included by tests/ops/cuda_emulation*.cpp before a kernel header.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>

namespace segdcn {
namespace cuda_kernels {
namespace emulation {
struct Dim3 {
  unsigned int x;
};
Dim3 blockIdx, blockDim, threadIdx, gridDim;  // the emulated thread

template <typename Kernel>
void launch(Kernel run_thread) {
  gridDim.x = 3;  // few threads, so that every thread strides over many items
  blockDim.x = 5;
  for (blockIdx.x = 0; blockIdx.x < gridDim.x; ++blockIdx.x)
    for (threadIdx.x = 0; threadIdx.x < blockDim.x; ++threadIdx.x) run_thread();
}
}  // namespace emulation
using emulation::blockDim;
using emulation::blockIdx;
using emulation::gridDim;
using emulation::threadIdx;
}  // namespace cuda_kernels
}  // namespace segdcn

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(threads)
#define SEGDCN_ATOMIC_ADD(address, value) (*(address) += (value))
#define SEGDCN_LAUNCH(kernel, total, ...) emulation::launch([&] { kernel(__VA_ARGS__); })

