// CUDA backend of the RoI pooling ops: device guard and registration. The kernels are in
// deform_roi_pool_kernels.cuh (the tests also compile it as host code), the launch
// configuration in launch.cuh.
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
  const c10::cuda::CUDAGuard device_guard(input.device());
  cuda_kernels::roi_pool_backward(grad_output, input, rois, offset, g, grad_input, grad_offset);
}

const RoiPoolPasses kCudaPasses{forward_cuda, backward_cuda};

}  // namespace
}  // namespace segdcn

SEGDCN_REGISTER_ROI_POOL(segdcn, CUDA, segdcn::kCudaPasses)
