// Host build of the CUDA kernels (kernels/cuda/deform_conv2d_kernels.cuh, see cuda_emulation.h).
// Registered as torch.ops.segdcn_cuda_emulation.* on the CPU, with the shared driver, so that
// the tests can compare the CUDA code paths with the CPU op on a machine without a GPU.
#include "cuda_emulation.h"
#include "../../kernels/cuda/deform_conv2d_kernels.cuh"

namespace segdcn {
namespace {

const DeformConvPasses kEmulatedPasses{cuda_kernels::sample_columns, cuda_kernels::backward_columns,
                                       cuda_kernels::scatter_columns, cuda_kernels::direct_forward,
                                       cuda_kernels::direct_backward};

at::Tensor forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                   const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& bias,
                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                   int64_t offset_groups) {
  return deform_conv2d_forward(input, weight, offset, mask, bias, stride, padding, dilation, groups, offset_groups,
                               kEmulatedPasses);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
    const c10::optional<at::Tensor>& mask, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t offset_groups, std::array<bool, 3> output_mask) {
  return deform_conv2d_backward(grad_output, input, weight, offset, mask, stride, padding, dilation, groups,
                                offset_groups, output_mask, kEmulatedPasses);
}

// This library's own plan setting (its copy of kernels/deform_conv2d.cpp), so the tests run both
// plans' kernels on every shape.
std::string force_plan(const std::string& name) {
  for (auto plan : {DeformConvPlan::kAuto, DeformConvPlan::kIm2col, DeformConvPlan::kDirect})
    if (name == plan_name(plan)) return plan_name(force_deform_conv2d_plan(plan));
  TORCH_CHECK(false, "plan must be auto, im2col or direct, got ", name);
}

}  // namespace
}  // namespace segdcn

TORCH_LIBRARY(segdcn_cuda_emulation, m) {
  SEGDCN_DEFINE_DEFORM_CONV2D_OPS(m);
  m.def("force_plan(str plan) -> str", &segdcn::force_plan);
}

TORCH_LIBRARY_IMPL(segdcn_cuda_emulation, CPU, m) {
  m.impl("deform_conv2d", &segdcn::forward);
  m.impl("deform_conv2d_backward", &segdcn::backward);
}
