// CUDA backend of deformable convolution: device guard and registration. The kernels and
// passes are in deform_conv2d_kernels.cuh (the tests also compile it as host code), the
// launch configuration in launch.cuh.
#include <ATen/Context.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launch.cuh"
#include "deform_conv2d_kernels.cuh"

namespace segdcn {
namespace {

using cuda_kernels::backward_columns;
using cuda_kernels::direct_backward;
using cuda_kernels::direct_forward;
using cuda_kernels::sample_columns;
using cuda_kernels::scatter_columns;

const DeformConvPasses kCudaPasses{sample_columns, backward_columns, scatter_columns, direct_forward, direct_backward};

// The guard makes the input's device current, so the passes and the driver's GEMMs run on
// that device's current stream; both kernels run below autograd, as the CPU ones (see there).
at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                        const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        int64_t offset_groups) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return deform_conv2d_forward(input, weight, offset, mask, bias, stride, padding, dilation, groups, offset_groups,
                               kCudaPasses);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
    const c10::optional<at::Tensor>& mask, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t offset_groups, std::array<bool, 3> output_mask) {
  // The input gradient's scatter (scatter_columns_kernel, direct_input_grad_kernel) adds into shared pixels with atomics, so
  // its rounding depends on the order of the adds; the weight, offset and mask gradients do not.
  // Under torch.use_deterministic_algorithms(True) this raises (warns with warn_only=True) before
  // any kernel runs.
  if (output_mask[0]) at::globalContext().alertNotDeterministic("deform_conv2d_backward (CUDA)");
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return deform_conv2d_backward(grad_output, input, weight, offset, mask, stride, padding, dilation, groups,
                                offset_groups, output_mask, kCudaPasses);
}

}  // namespace

TORCH_LIBRARY_IMPL(segdcn, CUDA, m) {
  m.impl("deform_conv2d", &forward_cuda);
  m.impl("deform_conv2d_backward", &backward_cuda);
}

}  // namespace segdcn
