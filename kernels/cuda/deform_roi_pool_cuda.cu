// CUDA backend of the RoI pooling ops: the launch configuration, the atomics and the
// registration. The kernels are in deform_roi_pool_kernels.cuh, which the tests also
// compile as host code (tests/cuda_emulation.cpp).
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

namespace segdcn {
namespace cuda_kernels {
namespace {

// One wave of resident blocks on the current device; the grid-stride loops cover the rest.
unsigned int roi_blocks_for(int64_t total, int threads) {
  const int device = c10::cuda::current_device();
  int sms = 0, threads_per_sm = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device));
  const int64_t wave = std::max<int64_t>(int64_t(sms) * (threads_per_sm / threads), 1);
  return static_cast<unsigned int>(std::max<int64_t>(std::min((total + threads - 1) / threads, wave), 1));
}

}  // namespace
}  // namespace cuda_kernels
}  // namespace segdcn

#define SEGDCN_ATOMIC_ADD(address, value) gpuAtomicAddNoReturn(address, value)
#define SEGDCN_LAUNCH(kernel, total, ...)                                                                         \
  do {                                                                                                            \
    kernel<<<roi_blocks_for(total, kRoiThreads), kRoiThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(__VA_ARGS__); \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                                                               \
  } while (0)
#include "deform_roi_pool_kernels.cuh"

namespace segdcn {
namespace {

void forward_cuda(const at::Tensor& input, const at::Tensor& rois, const at::Tensor& offset, const RoiPoolGeometry& g,
                  at::Tensor& output) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  cuda_kernels::roi_pool_forward(input, rois, offset, g, output);
}

void backward_cuda(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rois,
                   const at::Tensor& offset, const RoiPoolGeometry& g, at::Tensor& grad_input,
                   at::Tensor& grad_offset) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  cuda_kernels::roi_pool_backward(grad_output, input, rois, offset, g, grad_input, grad_offset);
}

const RoiPoolPasses kCudaPasses{forward_cuda, backward_cuda};

}  // namespace
}  // namespace segdcn

SEGDCN_REGISTER_ROI_POOL(segdcn, CUDA, segdcn::kCudaPasses)
