// The CUDA kernels of deformable convolution and the passes that launch them, written against
// a few macros so that the same source also compiles as host code: tests/ops/cuda_emulation.cpp
// runs these kernels on the CPU (threads in sequence) and checks them against the CPU op on
// machines without a GPU. The includer defines
//   SEGDCN_LAUNCH(kernel, total, args...)  launch `kernel` over `total` work items,
//   SEGDCN_ATOMIC_ADD(address, value)      an atomic add that returns nothing,
// and, for host compilation, the CUDA keywords and thread indices.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../bilinear.h"
#include "../deform_conv2d.h"

namespace segdcn {
namespace cuda_kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t first_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t index_stride() { return int64_t(blockDim.x) * gridDim.x; }

// Where tap k of output position p lands for image-and-offset-group nog (= n * offset_groups
// + og), and its modulation (the mask, or 1).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ SamplePoint<acc_t> deformed_tap(const scalar_t* offset, const scalar_t* mask,
                                                           const DeformConvGeometry& g, int64_t nog, int64_t k,
                                                           int64_t p, acc_t& modulation) {
  const int64_t K = g.kernel_h * g.kernel_w, P = g.out_h * g.out_w;
  const scalar_t* dy = offset + (nog * 2 * K + 2 * k) * P + p;
  const acc_t h = acc_t(grid_position(p / g.out_w, k / g.kernel_w, g.stride_h, g.pad_h, g.dilation_h)) +
                  static_cast<acc_t>(dy[0]);
  const acc_t w = acc_t(grid_position(p % g.out_w, k % g.kernel_w, g.stride_w, g.pad_w, g.dilation_w)) +
                  static_cast<acc_t>(dy[P]);
  modulation = mask ? static_cast<acc_t>(mask[(nog * K + k) * P + p]) : acc_t(1);
  return sample_point(h, w, g.height, g.width);
}

// The bilinear corner and weights of a tap are computed once per (n, og, k, p) and shared by
// a slice of up to kSliceChannels channels of the offset group (the CPU plan, kept small
// enough that the grid still has many threads). Threads with consecutive p are adjacent, so
// column reads and writes coalesce.
constexpr int64_t kSliceChannels = 8;

struct SliceIndex {
  int64_t n, og, c_begin, c_end, k, p;
};

__device__ __forceinline__ SliceIndex slice_index(int64_t index, const DeformConvGeometry& g) {
  const int64_t K = g.kernel_h * g.kernel_w, P = g.out_h * g.out_w, Cg = g.in_channels / g.offset_groups;
  const int64_t slices = (Cg + kSliceChannels - 1) / kSliceChannels;
  SliceIndex s;
  s.p = index % P;
  s.k = (index / P) % K;
  const int64_t slice = (index / (K * P)) % slices, nog = index / (K * P * slices);
  s.n = nog / g.offset_groups;
  s.og = nog % g.offset_groups;
  s.c_begin = s.og * Cg + slice * kSliceChannels;
  s.c_end = s.c_begin + kSliceChannels < (s.og + 1) * Cg ? s.c_begin + kSliceChannels : (s.og + 1) * Cg;
  return s;
}

// Number of (n, og, slice, k, p) work items of a chunk of `images` images.
int64_t slice_count(const DeformConvGeometry& g, int64_t images) {
  const int64_t Cg = g.in_channels / g.offset_groups;
  return images * g.offset_groups * ((Cg + kSliceChannels - 1) / kSliceChannels) * g.taps() *
         g.out_positions();
}

// columns[n, c * K + k, p] for the channels of one slice.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    sample_columns_kernel(const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                          const DeformConvGeometry g, int64_t total, scalar_t* columns) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_h * g.kernel_w, P = g.out_h * g.out_w, plane_size = g.height * g.width;
  for (int64_t index = first_index(); index < total; index += index_stride()) {
    const SliceIndex i = slice_index(index, g);
    acc_t m;
    const SamplePoint<acc_t> s = deformed_tap(offset, mask, g, i.n * g.offset_groups + i.og, i.k, i.p, m);
    acc_t wt[4];
    bilinear_weights(s.lh, s.lw, wt);
    for (int64_t c = i.c_begin; c < i.c_end; ++c) {
      const int64_t nc = i.n * g.in_channels + c;
      acc_t value(0);
      if (s.inside) {
        acc_t x[4];
        corner_values(input + nc * plane_size, s, g.height, g.width, x);
        value = m * corner_sum(wt, x);
      }
      columns[(nc * K + i.k) * P + i.p] = static_cast<scalar_t>(value);
    }
  }
}

// grad_offset (dy, dx) and grad_mask of tap k of position p for nog from the sums over the offset
// group's channels of grad column * corner value, one per corner: the gradients are linear in them.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_offset_grads(const acc_t per_corner[4], const SamplePoint<acc_t>& s, acc_t m,
                                                   const DeformConvGeometry& g, int64_t nog, int64_t k, int64_t p,
                                                   scalar_t* grad_offset, scalar_t* grad_mask) {
  const int64_t K = g.kernel_h * g.kernel_w, P = g.out_h * g.out_w;
  acc_t wt[4], dh[4], dw[4];
  bilinear_weights(s.lh, s.lw, wt);
  bilinear_weight_grads(s.lh, s.lw, dh, dw);
  scalar_t* gy = grad_offset + (nog * 2 * K + 2 * k) * P + p;
  gy[0] = static_cast<scalar_t>(m * corner_sum(dh, per_corner));
  gy[P] = static_cast<scalar_t>(m * corner_sum(dw, per_corner));
  if (grad_mask) grad_mask[(nog * K + k) * P + p] = static_cast<scalar_t>(corner_sum(wt, per_corner));
}

// Each (n, og, k, p) sums over the channels of its offset group in one iteration, so the
// offset and mask gradients need no atomics. The three gradients are linear in the corner
// values, so the loop sums grad_column * corner per corner and the weights apply once.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    backward_columns_kernel(const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                            const scalar_t* grad_columns, const DeformConvGeometry g, int64_t total,
                            scalar_t* grad_offset, scalar_t* grad_mask, scalar_t* columns) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_h * g.kernel_w, P = g.out_h * g.out_w;
  const int64_t Cg = g.in_channels / g.offset_groups, plane_size = g.height * g.width;
  for (int64_t index = first_index(); index < total; index += index_stride()) {
    const int64_t p = index % P, k = (index / P) % K, nog = index / (K * P);
    const int64_t n = nog / g.offset_groups, og = nog % g.offset_groups;
    acc_t m;
    const SamplePoint<acc_t> s = deformed_tap(offset, mask, g, nog, k, p, m);
    acc_t wt[4];
    bilinear_weights(s.lh, s.lw, wt);
    acc_t per_corner[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
    for (int64_t c = og * Cg; c < (og + 1) * Cg; ++c) {
      const int64_t row = ((n * g.in_channels + c) * K + k) * P + p;
      acc_t value(0);
      if (s.inside) {
        acc_t x[4];
        corner_values(input + (n * g.in_channels + c) * plane_size, s, g.height, g.width, x);
        value = corner_sum(wt, x);
        const acc_t gcol = static_cast<acc_t>(grad_columns[row]);
        for (int j = 0; j < 4; ++j) per_corner[j] += gcol * x[j];
      }
      if (columns) columns[row] = static_cast<scalar_t>(m * value);
    }
    store_offset_grads(per_corner, s, m, g, nog, k, p, grad_offset, grad_mask);
  }
}

// Each entry of grad_columns adds its share to the four corners; acc_t is also the element
// type of grad_input (float32 for half inputs, see deform_conv2d.cpp).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    scatter_columns_kernel(const scalar_t* grad_columns, const scalar_t* offset, const scalar_t* mask,
                           const DeformConvGeometry g, int64_t total, at::opmath_type<scalar_t>* grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_h * g.kernel_w, P = g.out_h * g.out_w, plane_size = g.height * g.width;
  for (int64_t index = first_index(); index < total; index += index_stride()) {
    const SliceIndex i = slice_index(index, g);
    acc_t m;
    const SamplePoint<acc_t> s = deformed_tap(offset, mask, g, i.n * g.offset_groups + i.og, i.k, i.p, m);
    if (!s.inside) continue;
    acc_t wt[4];
    bilinear_weights(s.lh, s.lw, wt);
    for (int64_t c = i.c_begin; c < i.c_end; ++c) {
      const int64_t nc = i.n * g.in_channels + c;
      const acc_t gm = static_cast<acc_t>(grad_columns[(nc * K + i.k) * P + i.p]) * m;
      acc_t* plane = grad_input + nc * plane_size;
      for (int corner = 0; corner < 4; ++corner) {
        const int64_t h = s.h0 + corner_dh(corner), w = s.w0 + corner_dw(corner);
        if (corner_in_image(h, w, g.height, g.width)) SEGDCN_ATOMIC_ADD(plane + h * g.width + w, gm * wt[corner]);
      }
    }
  }
}

template <typename scalar_t>
const scalar_t* mask_ptr(const at::Tensor& mask, const DeformConvGeometry& g) {
  return g.use_mask ? mask.const_data_ptr<scalar_t>() : nullptr;
}

void sample_columns(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                    const DeformConvGeometry& g, at::Tensor& columns) {
  const int64_t total = slice_count(g, offset.size(0));
  if (total == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_sample_columns", [&] {
    SEGDCN_LAUNCH(sample_columns_kernel<scalar_t>, total, input.const_data_ptr<scalar_t>(),
                  offset.const_data_ptr<scalar_t>(), mask_ptr<scalar_t>(mask, g), g, total,
                  columns.mutable_data_ptr<scalar_t>());
  });
}

void backward_columns(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                      const at::Tensor& grad_columns, const DeformConvGeometry& g, at::Tensor& grad_offset,
                      at::Tensor& grad_mask, at::Tensor& columns) {
  const int64_t total = offset.numel() / 2;  // (n, og, k, p)
  if (total == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_backward_columns", [&] {
    SEGDCN_LAUNCH(backward_columns_kernel<scalar_t>, total, input.const_data_ptr<scalar_t>(),
                  offset.const_data_ptr<scalar_t>(), mask_ptr<scalar_t>(mask, g),
                  grad_columns.const_data_ptr<scalar_t>(), g, total, grad_offset.mutable_data_ptr<scalar_t>(),
                  grad_mask.defined() ? grad_mask.mutable_data_ptr<scalar_t>() : nullptr,
                  columns.defined() ? columns.mutable_data_ptr<scalar_t>() : nullptr);
  });
}

void scatter_columns(const at::Tensor& grad_columns, const at::Tensor& offset, const at::Tensor& mask,
                     const DeformConvGeometry& g, at::Tensor& grad_input) {
  const int64_t total = slice_count(g, offset.size(0));
  if (total == 0) return;
  const auto dtype = grad_columns.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "deform_conv2d_scatter_columns", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    TORCH_CHECK(grad_input.scalar_type() == c10::CppTypeToScalarType<acc_t>::value,
                "deform_conv2d: the input gradient of a ", dtype, " call must be ",
                c10::CppTypeToScalarType<acc_t>::value, ", got ", grad_input.scalar_type());
    SEGDCN_LAUNCH(scatter_columns_kernel<scalar_t>, total, grad_columns.const_data_ptr<scalar_t>(),
                  offset.const_data_ptr<scalar_t>(), mask_ptr<scalar_t>(mask, g), g, total,
                  grad_input.mutable_data_ptr<acc_t>());
  });
}

// ---------------------------------------------------------------------------------------
// The direct plan (deform_conv2d_plan: grouped and depthwise layers with thin per-group GEMMs):
// no columns and no GEMMs. Each output element sums its group's channels and taps, each tap's
// bilinear corner and weights computed once per offset group of the channels it reads. The
// three backward kernels own disjoint outputs: grad_offset / grad_mask per (n, og, k, p), the
// weight gradient per weight element (a sum over the batch and positions), and the input
// gradient scattered with atomics, as scatter_columns_kernel does.

// output[n, o, p] = sum over the input channels c of o's group and taps k of
// weight[o, c, k] * mask * bilinear(input[n, c], tap k of p for c's offset group).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    direct_forward_kernel(const scalar_t* input, const scalar_t* weight, const scalar_t* offset, const scalar_t* mask,
                          const DeformConvGeometry g, int64_t total, scalar_t* output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_h * g.kernel_w, P = g.out_h * g.out_w, plane_size = g.height * g.width;
  const int64_t per_group = g.in_channels / g.groups, per_out = g.out_channels / g.groups;
  const int64_t Cg = g.in_channels / g.offset_groups;
  for (int64_t index = first_index(); index < total; index += index_stride()) {
    const int64_t p = index % P, o = (index / P) % g.out_channels, n = index / (P * g.out_channels);
    const int64_t c0 = (o / per_out) * per_group;
    acc_t sum(0);
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t c = c0; c < c0 + per_group;) {
        // the channels of one offset group share the tap
        const int64_t og = c / Cg, c_end = (og + 1) * Cg < c0 + per_group ? (og + 1) * Cg : c0 + per_group;
        acc_t m;
        const SamplePoint<acc_t> s = deformed_tap(offset, mask, g, n * g.offset_groups + og, k, p, m);
        if (s.inside) {
          acc_t wt[4];
          bilinear_weights(s.lh, s.lw, wt);
          for (; c < c_end; ++c) {
            acc_t x[4];
            corner_values(input + (n * g.in_channels + c) * plane_size, s, g.height, g.width, x);
            sum += static_cast<acc_t>(weight[(o * per_group + c - c0) * K + k]) * m * corner_sum(wt, x);
          }
        }
        c = c_end;
      }
    }
    output[index] = static_cast<scalar_t>(sum);
  }
}

// The gradient of tap k's modulated sample of channel c at (n, p): sum over the output channels o of
// c's group of weight[o, c, k] * grad_output[n, o, p].
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t direct_grad_column(const scalar_t* grad_output, const scalar_t* weight,
                                                    const DeformConvGeometry& g, int64_t n, int64_t c, int64_t k,
                                                    int64_t p) {
  const int64_t K = g.kernel_h * g.kernel_w, P = g.out_h * g.out_w;
  const int64_t per_group = g.in_channels / g.groups, per_out = g.out_channels / g.groups;
  const int64_t group = c / per_group;
  acc_t sum(0);
  for (int64_t o = group * per_out; o < (group + 1) * per_out; ++o) {
    sum += static_cast<acc_t>(weight[(o * per_group + c - group * per_group) * K + k]) *
           static_cast<acc_t>(grad_output[(n * g.out_channels + o) * P + p]);
  }
  return sum;
}

// Offset and mask gradients per (n, og, k, p), summing the offset group's channels (no atomics).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    direct_offset_grad_kernel(const scalar_t* input, const scalar_t* weight, const scalar_t* offset,
                              const scalar_t* mask, const scalar_t* grad_output, const DeformConvGeometry g,
                              int64_t total, scalar_t* grad_offset, scalar_t* grad_mask) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_h * g.kernel_w, P = g.out_h * g.out_w, plane_size = g.height * g.width;
  const int64_t Cg = g.in_channels / g.offset_groups;
  for (int64_t index = first_index(); index < total; index += index_stride()) {
    const int64_t p = index % P, k = (index / P) % K, nog = index / (K * P);
    const int64_t n = nog / g.offset_groups, og = nog % g.offset_groups;
    acc_t m;
    const SamplePoint<acc_t> s = deformed_tap(offset, mask, g, nog, k, p, m);
    acc_t per_corner[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
    if (s.inside) {
      for (int64_t c = og * Cg; c < (og + 1) * Cg; ++c) {
        const acc_t gcol = direct_grad_column<scalar_t, acc_t>(grad_output, weight, g, n, c, k, p);
        acc_t x[4];
        corner_values(input + (n * g.in_channels + c) * plane_size, s, g.height, g.width, x);
        for (int j = 0; j < 4; ++j) per_corner[j] += gcol * x[j];
      }
    }
    store_offset_grads(per_corner, s, m, g, nog, k, p, grad_offset, grad_mask);
  }
}

// The weight gradient per element (o, c, k): a sum over the batch and the output positions, in a
// fixed order (no atomics).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    direct_weight_grad_kernel(const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                              const scalar_t* grad_output, const DeformConvGeometry g, int64_t total,
                              scalar_t* grad_weight) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_h * g.kernel_w, P = g.out_h * g.out_w, plane_size = g.height * g.width;
  const int64_t per_group = g.in_channels / g.groups, per_out = g.out_channels / g.groups;
  const int64_t Cg = g.in_channels / g.offset_groups;
  for (int64_t index = first_index(); index < total; index += index_stride()) {
    const int64_t k = index % K, c_local = (index / K) % per_group, o = index / (K * per_group);
    const int64_t c = (o / per_out) * per_group + c_local, og = c / Cg;
    acc_t sum(0);
    for (int64_t n = 0; n < g.batch; ++n) {
      for (int64_t p = 0; p < P; ++p) {
        acc_t m;
        const SamplePoint<acc_t> s = deformed_tap(offset, mask, g, n * g.offset_groups + og, k, p, m);
        if (!s.inside) continue;
        acc_t wt[4], x[4];
        bilinear_weights(s.lh, s.lw, wt);
        corner_values(input + (n * g.in_channels + c) * plane_size, s, g.height, g.width, x);
        sum += static_cast<acc_t>(grad_output[(n * g.out_channels + o) * P + p]) * m * corner_sum(wt, x);
      }
    }
    grad_weight[index] = static_cast<scalar_t>(sum);
  }
}

// The input gradient: each (n, c, k, p) adds its grad column times the modulated corner weights
// to the four corners; acc_t is also grad_input's element type (float32 for half inputs).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    direct_input_grad_kernel(const scalar_t* weight, const scalar_t* offset, const scalar_t* mask,
                             const scalar_t* grad_output, const DeformConvGeometry g, int64_t total,
                             at::opmath_type<scalar_t>* grad_input) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_h * g.kernel_w, P = g.out_h * g.out_w, plane_size = g.height * g.width;
  const int64_t Cg = g.in_channels / g.offset_groups;
  for (int64_t index = first_index(); index < total; index += index_stride()) {
    const int64_t p = index % P, k = (index / P) % K, nc = index / (K * P);
    const int64_t n = nc / g.in_channels, c = nc % g.in_channels;
    acc_t m;
    const SamplePoint<acc_t> s = deformed_tap(offset, mask, g, n * g.offset_groups + c / Cg, k, p, m);
    if (!s.inside) continue;
    const acc_t gm = direct_grad_column<scalar_t, acc_t>(grad_output, weight, g, n, c, k, p) * m;
    acc_t wt[4];
    bilinear_weights(s.lh, s.lw, wt);
    acc_t* plane = grad_input + nc * plane_size;
    for (int corner = 0; corner < 4; ++corner) {
      const int64_t h = s.h0 + corner_dh(corner), w = s.w0 + corner_dw(corner);
      if (corner_in_image(h, w, g.height, g.width)) SEGDCN_ATOMIC_ADD(plane + h * g.width + w, gm * wt[corner]);
    }
  }
}

void direct_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                    const at::Tensor& mask, const DeformConvGeometry& g, at::Tensor& output) {
  const int64_t total = output.numel();
  if (total == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_direct_forward", [&] {
    SEGDCN_LAUNCH(direct_forward_kernel<scalar_t>, total, input.const_data_ptr<scalar_t>(),
                  weight.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(), mask_ptr<scalar_t>(mask, g), g,
                  total, output.mutable_data_ptr<scalar_t>());
  });
}

void direct_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                     const at::Tensor& offset, const at::Tensor& mask, const DeformConvGeometry& g,
                     at::Tensor& grad_input, at::Tensor& grad_weight, at::Tensor& grad_offset, at::Tensor& grad_mask) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_direct_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
    const scalar_t* msk = mask_ptr<scalar_t>(mask, g);
    if (grad_offset.defined() && grad_offset.numel() > 0) {
      const int64_t total = grad_offset.numel() / 2;  // (n, og, k, p)
      SEGDCN_LAUNCH(direct_offset_grad_kernel<scalar_t>, total, input.const_data_ptr<scalar_t>(),
                    weight.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(), msk, go, g, total,
                    grad_offset.mutable_data_ptr<scalar_t>(),
                    grad_mask.defined() ? grad_mask.mutable_data_ptr<scalar_t>() : nullptr);
    }
    if (grad_weight.defined() && grad_weight.numel() > 0) {
      const int64_t total = grad_weight.numel();
      SEGDCN_LAUNCH(direct_weight_grad_kernel<scalar_t>, total, input.const_data_ptr<scalar_t>(),
                    offset.const_data_ptr<scalar_t>(), msk, go, g, total, grad_weight.mutable_data_ptr<scalar_t>());
    }
    if (grad_input.defined() && grad_input.numel() > 0) {
      TORCH_CHECK(grad_input.scalar_type() == c10::CppTypeToScalarType<acc_t>::value,
                  "deform_conv2d: the input gradient of a ", input.scalar_type(), " call must be ",
                  c10::CppTypeToScalarType<acc_t>::value, ", got ", grad_input.scalar_type());
      const int64_t total = grad_input.numel() / (g.height * g.width) * g.taps() * g.out_positions();
      SEGDCN_LAUNCH(direct_input_grad_kernel<scalar_t>, total, weight.const_data_ptr<scalar_t>(),
                    offset.const_data_ptr<scalar_t>(), msk, go, g, total, grad_input.mutable_data_ptr<acc_t>());
    }
  });
}

}  // namespace
}  // namespace cuda_kernels
}  // namespace segdcn
