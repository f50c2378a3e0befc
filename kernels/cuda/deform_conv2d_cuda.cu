// CUDA backend of deformable convolution: the launch configuration, the atomics and the
// registration. The kernels and passes themselves are in deform_conv2d_kernels.cuh, which
// the tests also compile as host code.
//
// Streams come from c10/cuda (c10::cuda::getCurrentCUDAStream is what at::cuda's name
// forwards to): ATen/cuda/CUDAContext.h would pull in the cuBLAS and cuSPARSE headers, which
// a bare CUDA toolkit (no math libraries) does not ship.
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

namespace segdcn {
namespace cuda_kernels {

// One wave of resident blocks on the current device; the grid-stride loops cover the rest.
unsigned int blocks_for(int64_t total, int kThreads) {
  const int device = c10::cuda::current_device();
  int sms = 0, threads_per_sm = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device));
  const int64_t wave = std::max<int64_t>(int64_t(sms) * (threads_per_sm / kThreads), 1);
  return static_cast<unsigned int>(std::min((total + kThreads - 1) / kThreads, wave));
}

}  // namespace cuda_kernels
}  // namespace segdcn

#define SEGDCN_ATOMIC_ADD(address, value) gpuAtomicAddNoReturn(address, value)
#define SEGDCN_LAUNCH(kernel, total, ...)                                                                     \
  do {                                                                                                        \
    kernel<<<blocks_for(total, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(__VA_ARGS__);     \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                                                           \
  } while (0)
#include "deform_conv2d_kernels.cuh"

namespace segdcn {
namespace {

using cuda_kernels::backward_columns;
using cuda_kernels::sample_columns;
using cuda_kernels::scatter_columns;

const DeformConvPasses kCudaPasses{sample_columns, backward_columns, scatter_columns};

// The guard makes the input's device current, so the passes and the driver's GEMMs run on
// that device's current stream.
at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                        const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        int64_t offset_groups) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  return deform_conv2d_forward(input, weight, offset, mask, bias, stride, padding, dilation, groups, offset_groups,
                               kCudaPasses);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
    const c10::optional<at::Tensor>& mask, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t offset_groups, std::array<bool, 3> output_mask) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  return deform_conv2d_backward(grad_output, input, weight, offset, mask, stride, padding, dilation, groups,
                                offset_groups, output_mask, kCudaPasses);
}

}  // namespace

TORCH_LIBRARY_IMPL(segdcn, CUDA, m) {
  m.impl("deform_conv2d", &forward_cuda);
  m.impl("deform_conv2d_backward", &backward_cuda);
}

}  // namespace segdcn
