// Deformable RoI pooling (Dai et al. 2017, section 2.2) and its position-sensitive form for
// R-FCN: the geometry both share, its checks, and the per-bin device functions the CPU
// (kernels/cpu) and CUDA (kernels/cuda) kernels are written around.
//
// One geometry covers both ops. Output (k, c, ph, pw) averages a grid of RoIAlign samples
// (bilinear.h, roi_sample_point) over bin (ph, pw) of RoI k, read from input channel
//   c_in = (c * group_h + gh) * group_w + gw,  gh = ph * group_h / pooled_h (floor), same for w;
// the plain op has group 1 x 1, so c_in = c. The bin moves by
//   (dx, dy) = gamma * (roi_width, roi_height) * (offset[k, 2 cls, i, j], offset[k, 2 cls + 1, i, j])
// with part cell i = ph * part_h / pooled_h (floor), j likewise, and class cls = c / (C_out /
// offset_classes); the plain op has parts = bins and one class. Channel 0 is x, channel 1 is y
// (mmcv's and R-FCN's order; deform_conv2d's offsets are (dy, dx)).
// Coordinates are those of roi_align(aligned=True): start = x1 * scale - 0.5, size = (x2 - x1)
// * scale, no minimum size; a bin has sampling_ratio^2 samples, or ceil(bin size) per axis
// when sampling_ratio is 0.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <cstdint>

#include "bilinear.h"

namespace segdcn {

struct RoiPoolGeometry {
  int64_t rois, batch, channels, height, width;  // rois [rois, 5]; input [batch, channels, height, width]
  int64_t out_channels, pooled_h, pooled_w;
  int64_t group_h, group_w;  // position-sensitive score maps (1 x 1: plain pooling)
  int64_t part_h, part_w, offset_classes;
  double spatial_scale, gamma;
  int64_t sampling_ratio;
  bool has_offset;

  int64_t bins() const { return pooled_h * pooled_w; }
  int64_t output_numel() const { return rois * out_channels * bins(); }
};

// Checked geometries of the two ops; they throw naming the argument on a mismatch.
RoiPoolGeometry deform_roi_pool_geometry(const at::Tensor& input, const at::Tensor& rois,
                                         const c10::optional<at::Tensor>& offset, int64_t pooled_h, int64_t pooled_w,
                                         double spatial_scale, int64_t sampling_ratio, double gamma);
RoiPoolGeometry deform_ps_roi_pool_geometry(const at::Tensor& input, const at::Tensor& rois,
                                            const c10::optional<at::Tensor>& offset, int64_t output_dim,
                                            int64_t group_size, int64_t pooled_size, int64_t part_size,
                                            double spatial_scale, int64_t sample_per_part, double trans_std);

// Where the samples of bin (ph, pw) of output channel c of RoI k lie.
template <typename T>
struct RoiBin {
  int64_t batch_index, in_channel, offset_index;  // offset_index: of the x offset, -1 without offsets
  T start_y, start_x;                             // first sample minus half a step
  T step_y, step_x;                               // distance between samples
  int64_t grid_h, grid_w;
  T inv_count;                                    // 1 / number of samples
  T scale_y, scale_x;                             // d start / d offset: gamma * RoI size
};

// The input channel that output channel c reads at bin (ph, pw): its score map (gh, gw).
SEGDCN_HOST_DEVICE int64_t roi_in_channel(const RoiPoolGeometry& g, int64_t c, int64_t ph, int64_t pw) {
  const int64_t gh = ph * g.group_h / g.pooled_h, gw = pw * g.group_w / g.pooled_w;
  return (c * g.group_h + gh) * g.group_w + gw;
}

template <typename T>
SEGDCN_HOST_DEVICE RoiBin<T> roi_bin(const RoiPoolGeometry& g, const T* rois, const T* offset, int64_t k, int64_t c,
                                     int64_t ph, int64_t pw) {
  RoiBin<T> b;
  const T* roi = rois + k * 5;
  b.batch_index = static_cast<int64_t>(roi[0]);
  const T scale = static_cast<T>(g.spatial_scale);
  const T roi_start_x = roi[1] * scale - T(0.5), roi_start_y = roi[2] * scale - T(0.5);
  const T roi_w = roi[3] * scale - T(0.5) - roi_start_x, roi_h = roi[4] * scale - T(0.5) - roi_start_y;
  const T bin_h = roi_h / static_cast<T>(g.pooled_h), bin_w = roi_w / static_cast<T>(g.pooled_w);
  b.grid_h = g.sampling_ratio > 0 ? g.sampling_ratio : static_cast<int64_t>(ceil(roi_h / static_cast<T>(g.pooled_h)));
  b.grid_w = g.sampling_ratio > 0 ? g.sampling_ratio : static_cast<int64_t>(ceil(roi_w / static_cast<T>(g.pooled_w)));
  // Negative sizes (x2 < x1) are rejected in Python; here they only must not divide by zero.
  if (b.grid_h < 0) b.grid_h = 0;
  if (b.grid_w < 0) b.grid_w = 0;
  const int64_t count = b.grid_h * b.grid_w;
  b.inv_count = T(1) / static_cast<T>(count > 0 ? count : 1);
  b.step_y = b.grid_h > 0 ? bin_h / static_cast<T>(b.grid_h) : T(0);
  b.step_x = b.grid_w > 0 ? bin_w / static_cast<T>(b.grid_w) : T(0);
  b.start_y = roi_start_y + static_cast<T>(ph) * bin_h;
  b.start_x = roi_start_x + static_cast<T>(pw) * bin_w;
  b.in_channel = roi_in_channel(g, c, ph, pw);
  b.scale_y = static_cast<T>(g.gamma) * roi_h;
  b.scale_x = static_cast<T>(g.gamma) * roi_w;
  b.offset_index = -1;
  if (g.has_offset) {
    const int64_t cls = c / (g.out_channels / g.offset_classes);
    const int64_t i = ph * g.part_h / g.pooled_h, j = pw * g.part_w / g.pooled_w;
    b.offset_index = ((k * g.offset_classes + cls) * 2 * g.part_h + i) * g.part_w + j;
    const int64_t y_stride = g.part_h * g.part_w;
    b.start_x += b.scale_x * offset[b.offset_index];
    b.start_y += b.scale_y * offset[b.offset_index + y_stride];
  }
  return b;
}

template <typename T>
SEGDCN_HOST_DEVICE RoiSamplePoint<T> roi_bin_sample(const RoiBin<T>& b, int64_t iy, int64_t ix, int64_t height,
                                                    int64_t width) {
  const T y = b.start_y + (static_cast<T>(iy) + T(0.5)) * b.step_y;
  const T x = b.start_x + (static_cast<T>(ix) + T(0.5)) * b.step_x;
  return roi_sample_point(y, x, height, width);
}

// The average of the bin's samples in one input plane.
template <typename T, typename V>
SEGDCN_HOST_DEVICE T roi_bin_average(const RoiBin<T>& b, const V* plane, int64_t height, int64_t width) {
  T sum(0);
  for (int64_t iy = 0; iy < b.grid_h; ++iy) {
    for (int64_t ix = 0; ix < b.grid_w; ++ix) {
      const RoiSamplePoint<T> p = roi_bin_sample(b, iy, ix, height, width);
      if (!p.inside) continue;
      T wt[4], x[4];
      roi_bilinear_weights(p, wt);
      roi_corner_values(plane, p, width, x);
      sum += corner_sum(wt, x);
    }
  }
  return sum * b.inv_count;
}

// grad_output * d average / d offset, as (x, y): the offset moves every sample of the bin.
template <typename T, typename V>
SEGDCN_HOST_DEVICE void roi_bin_offset_grad(const RoiBin<T>& b, const V* plane, int64_t height, int64_t width,
                                            T grad_output, T& grad_x, T& grad_y) {
  T sum_y(0), sum_x(0);
  for (int64_t iy = 0; iy < b.grid_h; ++iy) {
    for (int64_t ix = 0; ix < b.grid_w; ++ix) {
      const RoiSamplePoint<T> p = roi_bin_sample(b, iy, ix, height, width);
      if (!p.inside) continue;
      T dy[4], dx[4], x[4];
      roi_bilinear_weight_grads(p, dy, dx);
      roi_corner_values(plane, p, width, x);
      sum_y += corner_sum(dy, x);
      sum_x += corner_sum(dx, x);
    }
  }
  const T g = grad_output * b.inv_count;
  grad_x = g * b.scale_x * sum_x;
  grad_y = g * b.scale_y * sum_y;
}

}  // namespace segdcn

namespace segdcn {

// The two device passes; every tensor handed to them is contiguous and output / gradients
// arrive zeroed. grad_input or grad_offset is undefined when not wanted.
struct RoiPoolPasses {
  void (*forward)(const at::Tensor& input, const at::Tensor& rois, const at::Tensor& offset,
                  const RoiPoolGeometry& g, at::Tensor& output);
  void (*backward)(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rois,
                   const at::Tensor& offset, const RoiPoolGeometry& g, at::Tensor& grad_input,
                   at::Tensor& grad_offset);
};

// Drivers shared by the backends: check, make contiguous, allocate, run the passes.
at::Tensor roi_pool_forward(const at::Tensor& input, const at::Tensor& rois, const c10::optional<at::Tensor>& offset,
                            const RoiPoolGeometry& g, const RoiPoolPasses& passes);
// Returns (grad_input, grad_offset); one not asked for by output_mask, or grad_offset
// without an offset, is an empty tensor.
std::tuple<at::Tensor, at::Tensor> roi_pool_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                     const at::Tensor& rois, const c10::optional<at::Tensor>& offset,
                                                     const RoiPoolGeometry& g, std::array<bool, 2> output_mask,
                                                     const RoiPoolPasses& passes);

}  // namespace segdcn

// Registers the four ops' implementations for `dispatch_key` on `passes` (a file-scope constant).
#define SEGDCN_REGISTER_ROI_POOL(library, dispatch_key, passes)                                                     \
  namespace {                                                                                                       \
  at::Tensor roi_pool_fw(const at::Tensor& input, const at::Tensor& rois, const c10::optional<at::Tensor>& offset, \
                         int64_t pooled_h, int64_t pooled_w, double spatial_scale, int64_t sampling_ratio,         \
                         double gamma) {                                                                            \
    return segdcn::roi_pool_forward(input, rois, offset,                                                            \
                                    segdcn::deform_roi_pool_geometry(input, rois, offset, pooled_h, pooled_w,       \
                                                                     spatial_scale, sampling_ratio, gamma),         \
                                    passes);                                                                        \
  }                                                                                                                 \
  std::tuple<at::Tensor, at::Tensor> roi_pool_bw(const at::Tensor& grad_output, const at::Tensor& input,            \
                                                 const at::Tensor& rois, const c10::optional<at::Tensor>& offset,   \
                                                 int64_t pooled_h, int64_t pooled_w, double spatial_scale,          \
                                                 int64_t sampling_ratio, double gamma, std::array<bool, 2> mask) {  \
    return segdcn::roi_pool_backward(grad_output, input, rois, offset,                                              \
                                     segdcn::deform_roi_pool_geometry(input, rois, offset, pooled_h, pooled_w,      \
                                                                      spatial_scale, sampling_ratio, gamma),        \
                                     mask, passes);                                                                 \
  }                                                                                                                 \
  at::Tensor ps_roi_pool_fw(const at::Tensor& input, const at::Tensor& rois, const c10::optional<at::Tensor>& offset, \
                            int64_t output_dim, int64_t group_size, int64_t pooled_size, int64_t part_size,         \
                            double spatial_scale, int64_t sample_per_part, double trans_std) {                      \
    return segdcn::roi_pool_forward(                                                                                \
        input, rois, offset,                                                                                        \
        segdcn::deform_ps_roi_pool_geometry(input, rois, offset, output_dim, group_size, pooled_size, part_size,    \
                                            spatial_scale, sample_per_part, trans_std),                             \
        passes);                                                                                                    \
  }                                                                                                                 \
  std::tuple<at::Tensor, at::Tensor> ps_roi_pool_bw(                                                                \
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rois,                               \
      const c10::optional<at::Tensor>& offset, int64_t output_dim, int64_t group_size, int64_t pooled_size,         \
      int64_t part_size, double spatial_scale, int64_t sample_per_part, double trans_std,                           \
      std::array<bool, 2> mask) {                                                                                   \
    return segdcn::roi_pool_backward(                                                                               \
        grad_output, input, rois, offset,                                                                           \
        segdcn::deform_ps_roi_pool_geometry(input, rois, offset, output_dim, group_size, pooled_size, part_size,    \
                                            spatial_scale, sample_per_part, trans_std),                             \
        mask, passes);                                                                                              \
  }                                                                                                                 \
  }                                                                                                                 \
  TORCH_LIBRARY_IMPL(library, dispatch_key, m) {                                                                    \
    m.impl("deform_roi_pool", &roi_pool_fw);                                                                        \
    m.impl("deform_roi_pool_backward", &roi_pool_bw);                                                               \
    m.impl("deform_ps_roi_pool", &ps_roi_pool_fw);                                                                  \
    m.impl("deform_ps_roi_pool_backward", &ps_roi_pool_bw);                                                         \
  }

// The schemas, for TORCH_LIBRARY blocks (kernels/ops.cpp and the tests' CUDA emulation).
#define SEGDCN_DEFINE_ROI_POOL_OPS(m)                                                                              \
  m.def(                                                                                                           \
      "deform_roi_pool(Tensor input, Tensor rois, Tensor? offset, int pooled_h, int pooled_w, float spatial_scale, " \
      "int sampling_ratio, float gamma) -> Tensor");                                                               \
  m.def(                                                                                                           \
      "deform_roi_pool_backward(Tensor grad_output, Tensor input, Tensor rois, Tensor? offset, int pooled_h, "      \
      "int pooled_w, float spatial_scale, int sampling_ratio, float gamma, bool[2] output_mask) -> (Tensor, Tensor)"); \
  m.def(                                                                                                           \
      "deform_ps_roi_pool(Tensor input, Tensor rois, Tensor? offset, int output_dim, int group_size, "              \
      "int pooled_size, int part_size, float spatial_scale, int sample_per_part, float trans_std) -> Tensor");      \
  m.def(                                                                                                           \
      "deform_ps_roi_pool_backward(Tensor grad_output, Tensor input, Tensor rois, Tensor? offset, int output_dim, " \
      "int group_size, int pooled_size, int part_size, float spatial_scale, int sample_per_part, float trans_std, " \
      "bool[2] output_mask) -> (Tensor, Tensor)")
