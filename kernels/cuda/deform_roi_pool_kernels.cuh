// The CUDA kernels of deformable (and position-sensitive) RoI pooling, written against the
// same macros as deform_conv2d_kernels.cuh (SEGDCN_LAUNCH, SEGDCN_ATOMIC_ADD, and the CUDA
// keywords), so tests/ops/cuda_emulation.cpp also runs them on the host. One thread per output
// element (roi, channel, bin); the per-bin arithmetic is the shared code of
// kernels/deform_roi_pool.h. In the backward, RoIs overlap and offsets are shared by the
// bins of a part cell, so both gradients are added atomically.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "../deform_roi_pool.h"

namespace segdcn {
namespace cuda_kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t roi_first_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t roi_index_stride() { return int64_t(blockDim.x) * gridDim.x; }

template <typename T>
__global__ void __launch_bounds__(kThreads)
    roi_pool_forward_kernel(const T* input, const T* rois, const T* offset, const RoiPoolGeometry g, int64_t total,
                            T* output) {
  const int64_t plane = g.height * g.width, bins = g.pooled_h * g.pooled_w;
  for (int64_t index = roi_first_index(); index < total; index += roi_index_stride()) {
    const int64_t pw = index % g.pooled_w, ph = (index / g.pooled_w) % g.pooled_h;
    const int64_t c = (index / bins) % g.out_channels, k = index / (bins * g.out_channels);
    const RoiBin<T> b = roi_bin(g, rois, offset, k, c, ph, pw);
    output[index] = roi_bin_average(b, input + (b.batch_index * g.channels + b.in_channel) * plane, g.height, g.width);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    roi_pool_backward_kernel(const T* grad_output, const T* input, const T* rois, const T* offset,
                             const RoiPoolGeometry g, int64_t total, T* grad_input, T* grad_offset) {
  const int64_t plane = g.height * g.width, bins = g.pooled_h * g.pooled_w;
  for (int64_t index = roi_first_index(); index < total; index += roi_index_stride()) {
    const int64_t pw = index % g.pooled_w, ph = (index / g.pooled_w) % g.pooled_h;
    const int64_t c = (index / bins) % g.out_channels, k = index / (bins * g.out_channels);
    const RoiBin<T> b = roi_bin(g, rois, offset, k, c, ph, pw);
    const int64_t plane_offset = (b.batch_index * g.channels + b.in_channel) * plane;
    if (grad_offset) {
      T gx, gy;
      roi_bin_offset_grad(b, input + plane_offset, g.height, g.width, grad_output[index], gx, gy);
      SEGDCN_ATOMIC_ADD(grad_offset + b.offset_index, gx);
      SEGDCN_ATOMIC_ADD(grad_offset + b.offset_index + g.part_h * g.part_w, gy);
    }
    if (grad_input) {
      const T grad = grad_output[index] * b.inv_count;
      T* dst = grad_input + plane_offset;
      for (int64_t iy = 0; iy < b.grid_h; ++iy) {
        for (int64_t ix = 0; ix < b.grid_w; ++ix) {
          const RoiSamplePoint<T> p = roi_bin_sample(b, iy, ix, g.height, g.width);
          if (!p.inside) continue;
          T wt[4];
          roi_bilinear_weights(p, wt);
          for (int corner = 0; corner < 4; ++corner)
            SEGDCN_ATOMIC_ADD(dst + roi_corner_index(p, corner, g.width), grad * wt[corner]);
        }
      }
    }
  }
}

template <typename T>
const T* roi_offset_ptr(const at::Tensor& offset) {
  return offset.defined() ? offset.const_data_ptr<T>() : nullptr;
}

void roi_pool_forward(const at::Tensor& input, const at::Tensor& rois, const at::Tensor& offset,
                      const RoiPoolGeometry& g, at::Tensor& output) {
  const int64_t total = g.output_numel();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_roi_pool_cuda", [&] {
    SEGDCN_LAUNCH(roi_pool_forward_kernel<scalar_t>, total, input.const_data_ptr<scalar_t>(),
                  rois.const_data_ptr<scalar_t>(), roi_offset_ptr<scalar_t>(offset), g, total,
                  output.mutable_data_ptr<scalar_t>());
  });
}

void roi_pool_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rois,
                       const at::Tensor& offset, const RoiPoolGeometry& g, at::Tensor& grad_input,
                       at::Tensor& grad_offset) {
  const int64_t total = g.output_numel();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_roi_pool_backward_cuda", [&] {
    SEGDCN_LAUNCH(roi_pool_backward_kernel<scalar_t>, total, grad_output.const_data_ptr<scalar_t>(),
                  input.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(), roi_offset_ptr<scalar_t>(offset),
                  g, total, grad_input.defined() ? grad_input.mutable_data_ptr<scalar_t>() : nullptr,
                  grad_offset.defined() ? grad_offset.mutable_data_ptr<scalar_t>() : nullptr);
  });
}

}  // namespace
}  // namespace cuda_kernels
}  // namespace segdcn
