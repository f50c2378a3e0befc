// Launch configuration and atomics shared by segdcn's CUDA backends. The kernel headers
// (*_kernels.cuh) are written against SEGDCN_LAUNCH and SEGDCN_ATOMIC_ADD, which this file
// defines for the GPU and tests/ops/cuda_emulation.h defines for the host; each kernel header
// names its block size kThreads.
//
// Streams come from c10/cuda (c10::cuda::getCurrentCUDAStream is what at::cuda's name
// forwards to): ATen/cuda/CUDAContext.h would pull in the cuBLAS and cuSPARSE headers, which
// a bare CUDA toolkit (no math libraries) does not ship.
#pragma once

#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace segdcn {
namespace cuda_kernels {

// One wave of resident blocks on the current device (at least one block); the kernels'
// grid-stride loops cover the rest.
inline unsigned int blocks_for(int64_t total, int threads) {
  const int device = c10::cuda::current_device();
  int sms = 0, threads_per_sm = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device));
  const int64_t wave = std::max<int64_t>(int64_t(sms) * (threads_per_sm / threads), 1);
  return static_cast<unsigned int>(std::max<int64_t>(std::min((total + threads - 1) / threads, wave), 1));
}

}  // namespace cuda_kernels
}  // namespace segdcn

#define SEGDCN_ATOMIC_ADD(address, value) gpuAtomicAddNoReturn(address, value)
#define SEGDCN_LAUNCH(kernel, total, ...)                                                              \
  do {                                                                                                 \
    kernel<<<blocks_for(total, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(__VA_ARGS__); \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                                                    \
  } while (0)
