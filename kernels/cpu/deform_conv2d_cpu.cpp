// CPU sampling passes of deformable convolution.
//
// Plan: the input of a chunk is copied once to a channels-last buffer with a one-pixel zero
// border. A tap of one position then reads its four corners as four contiguous runs of
// channels, so every pass is a vectorised loop over channels, with the bilinear corner and
// weights (kernels/bilinear.h) computed once per (image, offset group, tap, position) and
// shared by all channels of the offset group. Corners outside the image land on the zero
// border, which is the boundary rule of bilinear.h without a test per channel. The columns
// are positions-major ([P, groups, taps, C / groups], see deform_conv2d.h), so the driver's
// GEMMs are large and the columns of one position are written contiguously.
// Parallelism: over positions for the columns and the offset gradient (each position owns
// its row and its offset gradient), over channel blocks for the input gradient (each block
// owns its channels of every pixel), so no two threads write the same element.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../bilinear.h"
#include "../deform_conv2d.h"

// The channel loops are compiled twice, for AVX2+FMA and for the baseline, and picked at
// load time by the CPU, so one build runs fast on current x86 and still runs everywhere.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SEGDCN_SIMD_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define SEGDCN_SIMD_CLONES
#endif

namespace segdcn {
namespace {

// Four corners of a sample in a channels-last padded buffer: `x` points at channel c of the
// top-left corner; the others are one pixel right, one row down, and both.
template <typename T>
struct Corners {
  const T* x;
  int64_t right;  // = C
  int64_t down;   // = (W + 2) * C
};

template <typename T>
inline __attribute__((always_inline)) void blend_body(Corners<T> s, const T* coeff, T* dst, int64_t len) {
  const T c0 = coeff[0], c1 = coeff[1], c2 = coeff[2], c3 = coeff[3];
  const T *x0 = s.x, *x1 = s.x + s.right, *x2 = s.x + s.down, *x3 = s.x + s.down + s.right;
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) dst[i] = c0 * x0[i] + c1 * x1[i] + c2 * x2[i] + c3 * x3[i];
}

// Sums over channels of g * (d sample / dh), g * (d sample / dw) and g * sample; writes the
// columns (mask * sample) too when `cols` is not null.
template <typename T>
inline __attribute__((always_inline)) void gather_grads_body(Corners<T> s, T lh, T lw, T m, const T* gcol, T* cols,
                                                             int64_t len, T sums[3]) {
  T wt[4], dh[4], dw[4];
  bilinear_weights(lh, lw, wt);
  bilinear_weight_grads(lh, lw, dh, dw);
  const T *x0 = s.x, *x1 = s.x + s.right, *x2 = s.x + s.down, *x3 = s.x + s.down + s.right;
  T sum_h = 0, sum_w = 0, sum_v = 0;
  if (cols) {
#pragma omp simd reduction(+ : sum_h, sum_w, sum_v)
    for (int64_t i = 0; i < len; ++i) {
      const T v[4] = {x0[i], x1[i], x2[i], x3[i]};
      const T value = corner_sum(wt, v);
      sum_h += gcol[i] * corner_sum(dh, v);
      sum_w += gcol[i] * corner_sum(dw, v);
      sum_v += gcol[i] * value;
      cols[i] = m * value;
    }
  } else {
#pragma omp simd reduction(+ : sum_h, sum_w, sum_v)
    for (int64_t i = 0; i < len; ++i) {
      const T v[4] = {x0[i], x1[i], x2[i], x3[i]};
      sum_h += gcol[i] * corner_sum(dh, v);
      sum_w += gcol[i] * corner_sum(dw, v);
      sum_v += gcol[i] * corner_sum(wt, v);
    }
  }
  sums[0] += sum_h;
  sums[1] += sum_w;
  sums[2] += sum_v;
}

// The transpose of blend: each corner gets coeff * src.
template <typename T>
inline __attribute__((always_inline)) void spread_body(T* x, int64_t right, int64_t down, const T* coeff,
                                                       const T* src, int64_t len) {
  const T c0 = coeff[0], c1 = coeff[1], c2 = coeff[2], c3 = coeff[3];
  T *x0 = x, *x1 = x + right, *x2 = x + down, *x3 = x + down + right;
  // x0..x3 are distinct pixels, so the four updates of one channel never alias
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    const T g = src[i];
    x0[i] += c0 * g;
    x1[i] += c1 * g;
    x2[i] += c2 * g;
    x3[i] += c3 * g;
  }
}

SEGDCN_SIMD_CLONES void blend(Corners<float> s, const float* coeff, float* dst, int64_t len) {
  blend_body(s, coeff, dst, len);
}
SEGDCN_SIMD_CLONES void blend(Corners<double> s, const double* coeff, double* dst, int64_t len) {
  blend_body(s, coeff, dst, len);
}
SEGDCN_SIMD_CLONES void gather_grads(Corners<float> s, float lh, float lw, float m, const float* gcol, float* cols,
                                     int64_t len, float sums[3]) {
  gather_grads_body(s, lh, lw, m, gcol, cols, len, sums);
}
SEGDCN_SIMD_CLONES void gather_grads(Corners<double> s, double lh, double lw, double m, const double* gcol,
                                     double* cols, int64_t len, double sums[3]) {
  gather_grads_body(s, lh, lw, m, gcol, cols, len, sums);
}
SEGDCN_SIMD_CLONES void spread(float* x, int64_t right, int64_t down, const float* coeff, const float* src,
                               int64_t len) {
  spread_body(x, right, down, coeff, src, len);
}
SEGDCN_SIMD_CLONES void spread(double* x, int64_t right, int64_t down, const double* coeff, const double* src,
                               int64_t len) {
  spread_body(x, right, down, coeff, src, len);
}

// A run of channels [begin, end) inside one offset group and one weight group, and where
// its tap-0 entries start in a position's row of the columns.
struct Segment {
  int64_t begin, end, offset_group, column;
};

// Runs of channels that share offset group and weight group, split further at multiples of
// `block` (the input gradient's unit of parallel work).
std::vector<Segment> channel_segments(const DeformConvGeometry& g, int64_t block) {
  const int64_t per_og = g.channels_per_offset_group(), per_group = g.in_channels / g.groups;
  std::vector<Segment> out;
  for (int64_t c = 0; c < g.in_channels;) {
    const int64_t og = c / per_og, group = c / per_group;
    const int64_t end = std::min({(og + 1) * per_og, (group + 1) * per_group, (c / block + 1) * block});
    out.push_back({c, end, og, group * g.taps() * per_group + (c - group * per_group)});
    c = end;
  }
  return out;
}

// Where tap k of position p of image n lands for offset group og.
template <typename T>
struct Tap {
  int64_t pixel;  // top-left corner in the padded plane
  T lh, lw;
  T m;  // the mask, or 1; 0 outside the image
  bool inside;
};

template <typename T>
struct TapReader {
  const DeformConvGeometry& g;
  const T* offset;
  const T* mask;

  Tap<T> operator()(int64_t n, int64_t og, int64_t k, int64_t p) const {
    const int64_t K = g.taps(), P = g.out_positions(), nog = n * g.offset_groups + og;
    const T* dy = offset + (nog * 2 * K + 2 * k) * P + p;
    const T h = T(grid_position(p / g.out_w, k / g.kernel_w, g.stride_h, g.pad_h, g.dilation_h)) + dy[0];
    const T w = T(grid_position(p % g.out_w, k % g.kernel_w, g.stride_w, g.pad_w, g.dilation_w)) + dy[P];
    const SamplePoint<T> s = sample_point(h, w, g.height, g.width);
    Tap<T> tap;
    tap.inside = s.inside;
    tap.pixel = (s.h0 + 1) * (g.width + 2) + (s.w0 + 1);
    tap.lh = s.lh;
    tap.lw = s.lw;
    tap.m = s.inside ? (mask ? mask[(nog * K + k) * P + p] : T(1)) : T(0);
    return tap;
  }
};

// [m, H + 2, W + 2, C] with a zero border.
at::Tensor padded_channels_last(const at::Tensor& input) {
  at::Tensor out = at::zeros({input.size(0), input.size(2) + 2, input.size(3) + 2, input.size(1)}, input.options());
  out.narrow(1, 1, input.size(2)).narrow(2, 1, input.size(3)).copy_(input.permute({0, 2, 3, 1}));
  return out;
}

// Positions per parallel task: enough work per task to amortise scheduling.
int64_t position_grain(const DeformConvGeometry& g) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, g.in_channels * g.taps()));
}

template <typename T>
void sample_columns_impl(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                         const DeformConvGeometry& g, at::Tensor& columns) {
  const at::Tensor padded = padded_channels_last(input);
  const T* xp = padded.const_data_ptr<T>();
  T* cols = columns.mutable_data_ptr<T>();
  const TapReader<T> tap_at{g, offset.const_data_ptr<T>(), g.use_mask ? mask.const_data_ptr<T>() : nullptr};
  const auto segments = channel_segments(g, g.in_channels);
  const int64_t C = g.in_channels, K = g.taps(), P = g.out_positions(), plane = (g.height + 2) * (g.width + 2);
  const int64_t per_group = C / g.groups, row = C * K;
  at::parallel_for(0, input.size(0) * P, position_grain(g), [&](int64_t begin, int64_t end) {
    for (int64_t np = begin; np < end; ++np) {
      const int64_t n = np / P, p = np % P;
      T* out = cols + np * row;
      for (int64_t k = 0; k < K; ++k) {
        for (size_t si = 0; si < segments.size();) {
          const int64_t og = segments[si].offset_group;
          const Tap<T> tap = tap_at(n, og, k, p);
          T coeff[4];
          bilinear_weights(tap.lh, tap.lw, coeff);
          for (int j = 0; j < 4; ++j) coeff[j] *= tap.m;
          for (; si < segments.size() && segments[si].offset_group == og; ++si) {
            const Segment& s = segments[si];
            T* dst = out + s.column + k * per_group;
            if (!tap.inside) {
              std::fill(dst, dst + (s.end - s.begin), T(0));
              continue;
            }
            blend(Corners<T>{xp + (n * plane + tap.pixel) * C + s.begin, C, (g.width + 2) * C}, coeff, dst,
                  s.end - s.begin);
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
  const at::Tensor padded = padded_channels_last(input);
  const T* xp = padded.const_data_ptr<T>();
  const T* gcols = grad_columns.const_data_ptr<T>();
  T* cols = columns.defined() ? columns.mutable_data_ptr<T>() : nullptr;
  T* goff = grad_offset.mutable_data_ptr<T>();
  T* gmask = grad_mask.defined() ? grad_mask.mutable_data_ptr<T>() : nullptr;
  const TapReader<T> tap_at{g, offset.const_data_ptr<T>(), g.use_mask ? mask.const_data_ptr<T>() : nullptr};
  const auto segments = channel_segments(g, g.in_channels);
  const int64_t C = g.in_channels, K = g.taps(), P = g.out_positions(), plane = (g.height + 2) * (g.width + 2);
  const int64_t per_group = C / g.groups, row = C * K;
  at::parallel_for(0, input.size(0) * P, position_grain(g), [&](int64_t begin, int64_t end) {
    for (int64_t np = begin; np < end; ++np) {
      const int64_t n = np / P, p = np % P;
      for (int64_t k = 0; k < K; ++k) {
        for (size_t si = 0; si < segments.size();) {
          const int64_t og = segments[si].offset_group;
          const Tap<T> tap = tap_at(n, og, k, p);
          T sums[3] = {0, 0, 0};
          for (; si < segments.size() && segments[si].offset_group == og; ++si) {
            const Segment& s = segments[si];
            const int64_t at = np * row + s.column + k * per_group;
            if (!tap.inside) {
              if (cols) std::fill(cols + at, cols + at + (s.end - s.begin), T(0));
              continue;
            }
            gather_grads(Corners<T>{xp + (n * plane + tap.pixel) * C + s.begin, C, (g.width + 2) * C}, tap.lh,
                         tap.lw, tap.m, gcols + at, cols ? cols + at : nullptr, s.end - s.begin, sums);
          }
          const int64_t nog = n * g.offset_groups + og;
          goff[(nog * 2 * K + 2 * k) * P + p] = tap.m * sums[0];
          goff[(nog * 2 * K + 2 * k + 1) * P + p] = tap.m * sums[1];
          if (gmask) gmask[(nog * K + k) * P + p] = sums[2];
        }
      }
    }
  });
}

template <typename T>
void scatter_columns_impl(const at::Tensor& grad_columns, const at::Tensor& offset, const at::Tensor& mask,
                          const DeformConvGeometry& g, at::Tensor& grad_input) {
  const int64_t n_images = offset.size(0), C = g.in_channels, K = g.taps(), P = g.out_positions();
  const int64_t plane = (g.height + 2) * (g.width + 2), per_group = C / g.groups, row = C * K;
  const TapReader<T> tap_at{g, offset.const_data_ptr<T>(), g.use_mask ? mask.const_data_ptr<T>() : nullptr};
  const int64_t og_count = g.offset_groups;

  // The taps are needed by every channel block: computed once.
  std::vector<Tap<T>> taps(n_images * P * K * og_count);
  at::parallel_for(0, n_images * P, position_grain(g), [&](int64_t begin, int64_t end) {
    for (int64_t np = begin; np < end; ++np)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t og = 0; og < og_count; ++og) taps[(np * K + k) * og_count + og] = tap_at(np / P, og, k, np % P);
  });

  at::Tensor padded = at::zeros({n_images, g.height + 2, g.width + 2, C}, grad_input.options());
  T* gx = padded.mutable_data_ptr<T>();
  const T* gcols = grad_columns.const_data_ptr<T>();
  const int64_t threads = at::get_num_threads();
  const int64_t block = std::max<int64_t>(8, (C + threads - 1) / threads);
  const auto segments = channel_segments(g, block);
  const int64_t blocks = (C + block - 1) / block;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t np = 0; np < n_images * P; ++np) {
        const int64_t n = np / P;
        for (int64_t k = 0; k < K; ++k) {
          for (const Segment& s : segments) {
            if (s.begin / block != b) continue;
            const Tap<T>& tap = taps[(np * K + k) * og_count + s.offset_group];
            if (!tap.inside) continue;
            T coeff[4];
            bilinear_weights(tap.lh, tap.lw, coeff);
            for (int j = 0; j < 4; ++j) coeff[j] *= tap.m;
            spread(gx + (n * plane + tap.pixel) * C + s.begin, C, (g.width + 2) * C, coeff,
                   gcols + np * row + s.column + k * per_group, s.end - s.begin);
          }
        }
      }
    }
  });
  grad_input.add_(padded.narrow(1, 1, g.height).narrow(2, 1, g.width).permute({0, 3, 1, 2}));
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

const DeformConvPasses kCpuPasses{ColumnsLayout::kPositionsMajor, sample_columns, backward_columns, scatter_columns};
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
