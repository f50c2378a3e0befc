// CPU sampling passes of deformable convolution.
//
// Plan (after onnxruntime's DeformConv): the bilinear corner and fractions of every
// (image, offset group, tap, output position) are computed once into a table and reused
// for all channels of the offset group. The input is padded by one zero pixel on each
// side, so every sample inside the open interval (-1, H) x (-1, W) reads its four corners
// without bounds tests: a corner outside the image lands on the zero border, which is the
// boundary rule of bilinear.h. Work is split over blocks of output positions (im2col and
// the offset gradient) or over channels (the input gradient), so no two threads write the
// same element.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../bilinear.h"
#include "../deform_conv2d.h"

namespace segdcn {
namespace {

constexpr int64_t kBlock = 128;  // output positions per task: keeps a task's table rows in L1

template <typename T>
struct Sample {
  int32_t base;  // index of the top-left corner in the padded plane
  T lh, lw;
  T m;  // modulation; zero when the sample lies outside the image
};

int64_t padded_plane(const DeformConvGeometry& g) { return (g.height + 2) * (g.width + 2); }

// table[n, og, k, p] for the images of one chunk.
template <typename T>
std::vector<Sample<T>> sampling_table(const at::Tensor& offset, const at::Tensor& mask, const DeformConvGeometry& g) {
  const int64_t n_images = offset.size(0), og_count = g.offset_groups, K = g.taps(), P = g.out_positions();
  TORCH_CHECK(padded_plane(g) < (int64_t(1) << 31), "deform_conv2d: input planes of ", g.height, "x", g.width,
              " are too large for the CPU kernel");
  std::vector<Sample<T>> table(n_images * og_count * K * P);
  const T* off = offset.data_ptr<T>();
  const T* msk = g.use_mask ? mask.data_ptr<T>() : nullptr;
  const int64_t Wp = g.width + 2;
  at::parallel_for(0, n_images * og_count * K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t k = row % K, nog = row / K;  // nog = n * og_count + og
      const int64_t i = k / g.kernel_w, j = k % g.kernel_w;
      const T* dy = off + (nog * 2 * K + 2 * k) * P;
      const T* dx = dy + P;
      const T* mk = msk ? msk + row * P : nullptr;
      Sample<T>* out = table.data() + row * P;
      for (int64_t p = 0; p < P; ++p) {
        const int64_t oh = p / g.out_w, ow = p % g.out_w;
        const T h = T(grid_position(oh, i, g.stride_h, g.pad_h, g.dilation_h)) + dy[p];
        const T w = T(grid_position(ow, j, g.stride_w, g.pad_w, g.dilation_w)) + dx[p];
        const SamplePoint<T> s = sample_point(h, w, g.height, g.width);
        out[p].base = static_cast<int32_t>((s.h0 + 1) * Wp + s.w0 + 1);
        out[p].lh = s.lh;
        out[p].lw = s.lw;
        out[p].m = s.inside ? (mk ? mk[p] : T(1)) : T(0);
        if (!s.inside) out[p].base = 0;
      }
    }
  });
  return table;
}

template <typename T>
struct Corners {
  T v[4];
  Corners(const T* plane, int32_t base, int64_t Wp) {
    v[0] = plane[base];
    v[1] = plane[base + 1];
    v[2] = plane[base + Wp];
    v[3] = plane[base + Wp + 1];
  }
};

template <typename T>
void sample_columns_impl(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                         const DeformConvGeometry& g, at::Tensor& columns) {
  const auto table = sampling_table<T>(offset, mask, g);
  const at::Tensor padded = at::constant_pad_nd(input, {1, 1, 1, 1}, 0);
  const T* xp = padded.data_ptr<T>();
  T* cols = columns.data_ptr<T>();
  const int64_t n_images = input.size(0), K = g.taps(), P = g.out_positions(), Wp = g.width + 2;
  const int64_t Cg = g.channels_per_offset_group(), blocks = (P + kBlock - 1) / kBlock;
  at::parallel_for(0, n_images * g.offset_groups * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t blk = task % blocks, nog = task / blocks, n = nog / g.offset_groups;
      const int64_t og = nog % g.offset_groups, p0 = blk * kBlock, len = std::min(kBlock, P - p0);
      for (int64_t c = og * Cg; c < (og + 1) * Cg; ++c) {
        const T* plane = xp + (n * g.in_channels + c) * padded_plane(g);
        for (int64_t k = 0; k < K; ++k) {
          const Sample<T>* s = table.data() + (nog * K + k) * P + p0;
          T* col = cols + ((n * g.in_channels + c) * K + k) * P + p0;
          for (int64_t p = 0; p < len; ++p) {
            T wt[4];
            bilinear_weights(s[p].lh, s[p].lw, wt);
            const Corners<T> x(plane, s[p].base, Wp);
            col[p] = s[p].m * (wt[0] * x.v[0] + wt[1] * x.v[1] + wt[2] * x.v[2] + wt[3] * x.v[3]);
          }
        }
      }
    }
  });
}

template <typename T>
void backward_columns_impl(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                           const at::Tensor& grad_columns, const DeformConvGeometry& g, at::Tensor& grad_offset,
                           at::Tensor& grad_mask, at::Tensor& columns) {
  const auto table = sampling_table<T>(offset, mask, g);
  const at::Tensor padded = at::constant_pad_nd(input, {1, 1, 1, 1}, 0);
  const T* xp = padded.data_ptr<T>();
  const T* gcols = grad_columns.data_ptr<T>();
  T* cols = columns.defined() ? columns.data_ptr<T>() : nullptr;
  T* goff = grad_offset.data_ptr<T>();
  T* gmask = g.use_mask ? grad_mask.data_ptr<T>() : nullptr;
  const int64_t n_images = input.size(0), K = g.taps(), P = g.out_positions(), Wp = g.width + 2;
  const int64_t Cg = g.channels_per_offset_group(), blocks = (P + kBlock - 1) / kBlock;
  at::parallel_for(0, n_images * g.offset_groups * blocks, 1, [&](int64_t begin, int64_t end) {
    // d loss / d h, d loss / d w and d loss / d mask of each (tap, position) of the block
    std::vector<T> acc(3 * K * kBlock);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t blk = task % blocks, nog = task / blocks, n = nog / g.offset_groups;
      const int64_t og = nog % g.offset_groups, p0 = blk * kBlock, len = std::min(kBlock, P - p0);
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t c = og * Cg; c < (og + 1) * Cg; ++c) {
        const T* plane = xp + (n * g.in_channels + c) * padded_plane(g);
        for (int64_t k = 0; k < K; ++k) {
          const Sample<T>* s = table.data() + (nog * K + k) * P + p0;
          const int64_t row = ((n * g.in_channels + c) * K + k) * P + p0;
          const T* gcol = gcols + row;
          T* acc_h = acc.data() + k * kBlock;
          T* acc_w = acc_h + K * kBlock;
          T* acc_m = acc_w + K * kBlock;
          for (int64_t p = 0; p < len; ++p) {
            T wt[4], dh[4], dw[4];
            bilinear_weights(s[p].lh, s[p].lw, wt);
            bilinear_weight_grads(s[p].lh, s[p].lw, dh, dw);
            const Corners<T> x(plane, s[p].base, Wp);
            const T value = wt[0] * x.v[0] + wt[1] * x.v[1] + wt[2] * x.v[2] + wt[3] * x.v[3];
            const T gm = gcol[p] * s[p].m;
            acc_h[p] += gm * (dh[0] * x.v[0] + dh[1] * x.v[1] + dh[2] * x.v[2] + dh[3] * x.v[3]);
            acc_w[p] += gm * (dw[0] * x.v[0] + dw[1] * x.v[1] + dw[2] * x.v[2] + dw[3] * x.v[3]);
            acc_m[p] += gcol[p] * value;
            if (cols) cols[row + p] = s[p].m * value;
          }
        }
      }
      for (int64_t k = 0; k < K; ++k) {
        T* gy = goff + (nog * 2 * K + 2 * k) * P + p0;
        T* gx = gy + P;
        const T* acc_h = acc.data() + k * kBlock;
        const T* acc_w = acc_h + K * kBlock;
        const T* acc_m = acc_w + K * kBlock;
        std::copy(acc_h, acc_h + len, gy);
        std::copy(acc_w, acc_w + len, gx);
        if (gmask) std::copy(acc_m, acc_m + len, gmask + (nog * K + k) * P + p0);
      }
    }
  });
}

template <typename T>
void scatter_columns_impl(const at::Tensor& grad_columns, const at::Tensor& offset, const at::Tensor& mask,
                          const DeformConvGeometry& g, at::Tensor& grad_input) {
  const auto table = sampling_table<T>(offset, mask, g);
  const int64_t n_images = offset.size(0), K = g.taps(), P = g.out_positions(), Wp = g.width + 2;
  at::Tensor padded = at::zeros({n_images, g.in_channels, g.height + 2, g.width + 2}, grad_input.options());
  T* gp = padded.data_ptr<T>();
  const T* gcols = grad_columns.data_ptr<T>();
  const int64_t Cg = g.channels_per_offset_group();
  at::parallel_for(0, n_images * g.in_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / g.in_channels, c = nc % g.in_channels, og = c / Cg;
      T* plane = gp + nc * padded_plane(g);
      for (int64_t k = 0; k < K; ++k) {
        const Sample<T>* s = table.data() + ((n * g.offset_groups + og) * K + k) * P;
        const T* gcol = gcols + (nc * K + k) * P;
        for (int64_t p = 0; p < P; ++p) {
          T wt[4];
          bilinear_weights(s[p].lh, s[p].lw, wt);
          const T gm = gcol[p] * s[p].m;
          T* corner = plane + s[p].base;
          corner[0] += gm * wt[0];
          corner[1] += gm * wt[1];
          corner[Wp] += gm * wt[2];
          corner[Wp + 1] += gm * wt[3];
        }
      }
    }
  });
  grad_input.add_(padded.slice(2, 1, g.height + 1).slice(3, 1, g.width + 1));
}

void sample_columns(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                    const DeformConvGeometry& g, at::Tensor& columns) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_sample_columns",
                             [&] { sample_columns_impl<scalar_t>(input, offset, mask, g, columns); });
}

void backward_columns(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                      const at::Tensor& grad_columns, const DeformConvGeometry& g, at::Tensor& grad_offset,
                      at::Tensor& grad_mask, at::Tensor& columns) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_backward_columns", [&] {
    backward_columns_impl<scalar_t>(input, offset, mask, grad_columns, g, grad_offset, grad_mask, columns);
  });
}

void scatter_columns(const at::Tensor& grad_columns, const at::Tensor& offset, const at::Tensor& mask,
                     const DeformConvGeometry& g, at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES(grad_columns.scalar_type(), "deform_conv2d_scatter_columns",
                             [&] { scatter_columns_impl<scalar_t>(grad_columns, offset, mask, g, grad_input); });
}

const DeformConvPasses kCpuPasses{sample_columns, backward_columns, scatter_columns};

bool is_half(const at::Tensor& t) { return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16; }

c10::optional<at::Tensor> to_float(const c10::optional<at::Tensor>& t) {
  if (t.has_value() && t->defined()) return t->to(at::kFloat);
  return t;
}

// The CPU computes half-precision calls in float32 and casts the results back.
at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                       const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       int64_t offset_groups) {
  if (is_half(input)) {
    return deform_conv2d_forward(input.to(at::kFloat), weight.to(at::kFloat), offset.to(at::kFloat), to_float(mask),
                                 to_float(bias), stride, padding, dilation, groups, offset_groups, kCpuPasses)
        .to(input.scalar_type());
  }
  return deform_conv2d_forward(input, weight, offset, mask, bias, stride, padding, dilation, groups, offset_groups,
                               kCpuPasses);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
    const c10::optional<at::Tensor>& mask, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t offset_groups, std::array<bool, 3> output_mask) {
  if (is_half(input)) {
    const auto dtype = input.scalar_type();
    auto grads = deform_conv2d_backward(grad_output.to(at::kFloat), input.to(at::kFloat), weight.to(at::kFloat),
                                        offset.to(at::kFloat), to_float(mask), stride, padding, dilation, groups,
                                        offset_groups, output_mask, kCpuPasses);
    return {std::get<0>(grads).to(dtype), std::get<1>(grads).to(dtype), std::get<2>(grads).to(dtype),
            std::get<3>(grads).to(dtype)};
  }
  return deform_conv2d_backward(grad_output, input, weight, offset, mask, stride, padding, dilation, groups,
                                offset_groups, output_mask, kCpuPasses);
}

}  // namespace

TORCH_LIBRARY_IMPL(segdcn, CPU, m) {
  m.impl("deform_conv2d", &forward_cpu);
  m.impl("deform_conv2d_backward", &backward_cpu);
}

}  // namespace segdcn
