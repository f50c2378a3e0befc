// Host build of the CUDA kernels of the RoI pooling ops (kernels/cuda/deform_roi_pool_kernels.cuh,
// see cuda_emulation.h), registered as torch.ops.segdcn_cuda_emulation_roi.* on the CPU with the
// shared driver, so the tests compare the CUDA code paths with the CPU op without a GPU.
#include "cuda_emulation.h"

#include "../../kernels/cuda/deform_roi_pool_kernels.cuh"

namespace segdcn {
namespace {
const RoiPoolPasses kEmulatedRoiPasses{cuda_kernels::roi_pool_forward, cuda_kernels::roi_pool_backward};
}  // namespace
}  // namespace segdcn

TORCH_LIBRARY(segdcn_cuda_emulation_roi, m) { SEGDCN_DEFINE_ROI_POOL_OPS(m); }

SEGDCN_REGISTER_ROI_POOL(segdcn_cuda_emulation_roi, CPU, segdcn::kEmulatedRoiPasses)
