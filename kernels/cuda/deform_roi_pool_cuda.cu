// CUDA backend of the RoI pooling ops: device guard and registration. The kernels are in
// deform_roi_pool_kernels.cuh (the tests also compile it as host code), the launch
// configuration in launch.cuh.
#include <ATen/Context.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launch.cuh"
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
  // Both gradients are added atomically (roi_pool_backward_kernel): RoIs overlap and the bins of a
  // part cell share its offset. One pass serves deform_roi_pool and deform_ps_roi_pool (hence both
  // names), and the driver calls it only when a gradient is wanted. Under
  // torch.use_deterministic_algorithms(True) this raises (warns with warn_only=True) before the
  // kernel runs.
  at::globalContext().alertNotDeterministic("deform_roi_pool_backward / deform_ps_roi_pool_backward (CUDA)");
  const c10::cuda::CUDAGuard device_guard(input.device());
  cuda_kernels::roi_pool_backward(grad_output, input, rois, offset, g, grad_input, grad_offset);
}

const RoiPoolPasses kCudaPasses{forward_cuda, backward_cuda};

}  // namespace
}  // namespace segdcn

SEGDCN_REGISTER_ROI_POOL(segdcn, CUDA, segdcn::kCudaPasses)
