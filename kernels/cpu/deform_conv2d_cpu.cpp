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
// Parallelism: over positions everywhere. Each position owns its row of the columns and its
// offset gradient; for the input gradient each thread adds into its own buffer (chunk-sized,
// so the extra memory grows with the threads, not the batch), summed once per chunk. No two
// threads write the same element.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <limits>
#include <mutex>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../bilinear.h"
#include "../deform_conv2d.h"

// The channel loops are compiled twice, for AVX2+FMA and for the baseline, and picked at
// load time by the CPU, so one build runs fast on current x86 and still runs everywhere.
// The clone is named by ISA level (x86-64-v3: AVX2, FMA, BMI2), which GCC's resolver tests by
// feature: "arch=haswell" is resolved by CPU model, true on Haswell only, so every later CPU
// (this machine's Xeon included) ran the baseline SSE2 loops.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 12
#define SEGDCN_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SEGDCN_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
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

// sums += (d/dh, d/dw, value) of the bilinear sample applied to per-corner sums g * corner.
template <typename T>
inline void add_corner_sums(T lh, T lw, const T per_corner[4], T sums[3]) {
  T wt[4], dh[4], dw[4];
  bilinear_weights(lh, lw, wt);
  bilinear_weight_grads(lh, lw, dh, dw);
  sums[0] += corner_sum(dh, per_corner);
  sums[1] += corner_sum(dw, per_corner);
  sums[2] += corner_sum(wt, per_corner);
}

// Sums over channels of g * (d sample / dh), g * (d sample / dw) and g * sample; writes the
// columns (mask * sample) too when `cols` is not null. All three sums are linear in the four
// corner values, so the channel loop only accumulates g * corner (four products per channel)
// and the corner weights are applied once per tap.
template <typename T>
inline __attribute__((always_inline)) void gather_grads_body(Corners<T> s, T lh, T lw, T m, const T* gcol, T* cols,
                                                             int64_t len, T sums[3]) {
  const T *x0 = s.x, *x1 = s.x + s.right, *x2 = s.x + s.down, *x3 = s.x + s.down + s.right;
  T wt[4];
  bilinear_weights(lh, lw, wt);
  T g0 = 0, g1 = 0, g2 = 0, g3 = 0;
  if (cols) {
    const T c0 = m * wt[0], c1 = m * wt[1], c2 = m * wt[2], c3 = m * wt[3];
#pragma omp simd reduction(+ : g0, g1, g2, g3)
    for (int64_t i = 0; i < len; ++i) {
      g0 += gcol[i] * x0[i];
      g1 += gcol[i] * x1[i];
      g2 += gcol[i] * x2[i];
      g3 += gcol[i] * x3[i];
      cols[i] = c0 * x0[i] + c1 * x1[i] + c2 * x2[i] + c3 * x3[i];
    }
  } else {
#pragma omp simd reduction(+ : g0, g1, g2, g3)
    for (int64_t i = 0; i < len; ++i) {
      g0 += gcol[i] * x0[i];
      g1 += gcol[i] * x1[i];
      g2 += gcol[i] * x2[i];
      g3 += gcol[i] * x3[i];
    }
  }
  const T per_corner[4] = {g0, g1, g2, g3};
  add_corner_sums(lh, lw, per_corner, sums);
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

// A run of channels [begin, end) inside one offset group and one weight group, and where
// its tap-0 entries start in a position's row of the columns.
struct Segment {
  int64_t begin, end, offset_group, column;
};

// blend of one tap for the segments [first, last) of one offset group, which share its corners and
// coefficients: `s.x` points at channel 0 of the top-left corner, `row` at the tap's entries of a
// position's row (channel c of segment i at row[i.column + c - i.begin]). One call per offset group:
// a call per segment, with its coefficients and corners set up again, cost as much as the blends
// themselves with 32 channels a weight group (perf: a grouped forward's sampling loop).
template <typename T>
inline __attribute__((always_inline)) void blend_segments_body(Corners<T> s, const T* coeff, const Segment* first,
                                                               const Segment* last, T* row) {
  for (const Segment* i = first; i != last; ++i)
    blend_body({s.x + i->begin, s.right, s.down}, coeff, row + i->column, i->end - i->begin);
}
SEGDCN_SIMD_CLONES void blend_segments(Corners<float> s, const float* coeff, const Segment* first,
                                       const Segment* last, float* row) {
  blend_segments_body(s, coeff, first, last, row);
}
SEGDCN_SIMD_CLONES void blend_segments(Corners<double> s, const double* coeff, const Segment* first,
                                       const Segment* last, double* row) {
  blend_segments_body(s, coeff, first, last, row);
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

// Runs of channels that share offset group and weight group.
std::vector<Segment> channel_segments(const DeformConvGeometry& g) {
  const int64_t per_og = g.channels_per_offset_group(), per_group = g.in_channels / g.groups;
  std::vector<Segment> out;
  for (int64_t c = 0; c < g.in_channels;) {
    const int64_t og = c / per_og, group = c / per_group;
    const int64_t end = std::min((og + 1) * per_og, (group + 1) * per_group);
    out.push_back({c, end, og, group * g.taps() * per_group + (c - group * per_group)});
    c = end;
  }
  return out;
}

// Where each offset group's segments start in channel_segments' list; the last entry is the list's end.
std::vector<int64_t> offset_group_starts(const std::vector<Segment>& segments, int64_t offset_groups) {
  std::vector<int64_t> starts(offset_groups + 1, int64_t(segments.size()));
  for (int64_t i = int64_t(segments.size()) - 1; i >= 0; --i) starts[segments[i].offset_group] = i;
  return starts;
}

// Where tap k of position p of image n lands for offset group og.
template <typename T>
struct Tap {
  int64_t pixel;  // top-left corner in the padded plane
  T lh, lw;
  T m;  // the mask, or 1; 0 outside the image
  bool inside;
};

// Where output position p sits on the input grid before the taps and offsets. Computed once per
// position: the integer divisions cost as much as a tap's bilinear arithmetic.
struct GridRow {
  int64_t p, h, w;
};

template <typename T>
struct TapReader {
  const DeformConvGeometry& g;
  const T* offset;
  const T* mask;
  std::vector<int64_t> tap_h, tap_w;  // grid_position of each tap relative to its position's row

  TapReader(const DeformConvGeometry& geometry, const T* offset_, const T* mask_)
      : g(geometry), offset(offset_), mask(mask_) {
    for (int64_t k = 0; k < g.taps(); ++k) {
      tap_h.push_back(grid_position(0, k / g.kernel_w, g.stride_h, 0, g.dilation_h));
      tap_w.push_back(grid_position(0, k % g.kernel_w, g.stride_w, 0, g.dilation_w));
    }
  }

  GridRow row(int64_t p) const {
    return {p, grid_position(p / g.out_w, 0, g.stride_h, g.pad_h, g.dilation_h),
            grid_position(p % g.out_w, 0, g.stride_w, g.pad_w, g.dilation_w)};
  }

  Tap<T> operator()(int64_t n, int64_t og, int64_t k, const GridRow& at) const {
    const int64_t K = g.taps(), P = g.out_positions(), nog = n * g.offset_groups + og;
    const T* dy = offset + (nog * 2 * K + 2 * k) * P + at.p;
    const T h = T(at.h + tap_h[k]) + dy[0];
    const T w = T(at.w + tap_w[k]) + dy[P];
    const SamplePoint<T> s = sample_point(h, w, g.height, g.width);
    Tap<T> tap;
    tap.inside = s.inside;
    tap.pixel = (s.h0 + 1) * (g.width + 2) + (s.w0 + 1);
    tap.lh = s.lh;
    tap.lw = s.lw;
    tap.m = s.inside ? (mask ? mask[(nog * K + k) * P + at.p] : T(1)) : T(0);
    return tap;
  }
};

// The bilinear weights of a tap's four corners times its mask.
template <typename T>
void modulated_weights(const Tap<T>& tap, T coeff[4]) {
  bilinear_weights(tap.lh, tap.lw, coeff);
  for (int j = 0; j < 4; ++j) coeff[j] *= tap.m;
}

// Items per parallel task for items of `work` elements each: at least kMinTaskWork elements a task.
// Every at::parallel_for with more than one task opens an OpenMP region, which waits for both
// threads; on small maps a call's dozen regions cost more than its arithmetic (measured: a 4x5
// map took 0.4-0.7 ms a call, nearly all of it in libgomp), and on a shared machine the wait for
// a descheduled thread is longer still. So small work runs on the calling thread.
constexpr int64_t kMinTaskWork = int64_t(1) << 15;

int64_t grain_for(int64_t work) { return std::max<int64_t>(1, kMinTaskWork / std::max<int64_t>(1, work)); }

// Transposes: dst[o * dst_stride + p] = src[p * src_stride + o] for p < rows, o < cols.
// at::Tensor::copy_ of a transposed view moves one element at a time; these go in 32 x 32
// blocks, and cost a fraction of it.
template <typename T>
void transpose_block(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows, int64_t cols) {
  for (int64_t p = 0; p < rows; ++p)
    for (int64_t o = 0; o < cols; ++o) dst[o * dst_stride + p] = src[p * src_stride + o];
}

std::atomic<CpuKernels> forced_cpu_kernels{CpuKernels::kAuto};

#if defined(__GNUC__) && defined(__x86_64__)
// Whether the loops written in AVX2 intrinsics (target("avx2") below) may run: the CPU is asked once.
bool has_avx2() {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2 && forced_cpu_kernels.load(std::memory_order_relaxed) != CpuKernels::kPortable;
}

// Eight rows of eight floats transposed in registers: the scalar loop moves one element per
// instruction and was a quarter of a depthwise forward.
__attribute__((target("avx2"))) void transpose_block_avx2(const float* src, int64_t src_stride, float* dst,
                                                            int64_t dst_stride, int64_t rows, int64_t cols) {
  const int64_t rows8 = rows - rows % 8, cols8 = cols - cols % 8;
  for (int64_t p = 0; p < rows8; p += 8) {
    for (int64_t o = 0; o < cols8; o += 8) {
      __m256 r[8], t[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + (p + i) * src_stride + o);
      for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
      }
      for (int i = 0; i < 2; ++i) {
        r[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
      }
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(dst + (o + i) * dst_stride + p, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(dst + (o + i + 4) * dst_stride + p, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
      }
    }
  }
  // the ragged edges
  for (int64_t p = 0; p < rows; ++p)
    for (int64_t o = p < rows8 ? cols8 : 0; o < cols; ++o) dst[o * dst_stride + p] = src[p * src_stride + o];
}

void transpose_block(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
                     int64_t cols) {
  if (has_avx2()) {
    transpose_block_avx2(src, src_stride, dst, dst_stride, rows, cols);
  } else {
    transpose_block<float>(src, src_stride, dst, dst_stride, rows, cols);
  }
}
#endif

constexpr int64_t kTransposeBlock = 32;

template <typename T>
void transpose_tiles(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows, int64_t cols) {
  constexpr int64_t B = kTransposeBlock;
  for (int64_t p = 0; p < rows; p += B)
    for (int64_t o = 0; o < cols; o += B)
      transpose_block(src + p * src_stride + o, src_stride, dst + o * dst_stride + p, dst_stride, std::min(B, rows - p),
                      std::min(B, cols - o));
}

// Temporaries kept between calls, one set per calling thread. A fresh buffer is new pages from the
// kernel, a page fault per 4 KiB touched: in scripts/bench_ops.py, where other allocations come
// between the calls, that made a depthwise forward at 2 threads take twice as long as with warm
// buffers. A slot keeps its largest buffer up to kMaxCachedBytes (larger ones are allocated per
// call), so a thread that ran the op holds a few tens of MiB; the slots hold a call's temporaries
// only, never a tensor returned to the caller, and no call uses a slot twice.
enum Slot {
  kPaddedInput,
  kColumns,
  kGradColumns,
  kProducts,
  kRows,
  kGradPadded,
  kGradWeight,
  kTapProducts,
  kTapGradOutputs,
  kWeightGrad,
  kPanel,
  kSlots
};
constexpr int64_t kMaxCachedBytes = int64_t(64) << 20;

at::Tensor workspace(Slot slot, at::IntArrayRef shape, const at::TensorOptions& options) {
  thread_local std::array<at::Tensor, kSlots> cache;
  const int64_t numel = c10::multiply_integers(shape);
  if (numel * int64_t(options.dtype().itemsize()) > kMaxCachedBytes) return at::empty(shape, options);
  at::Tensor& buffer = cache[slot];
  if (!buffer.defined() || buffer.dtype() != options.dtype() || buffer.numel() < numel) {
    buffer = at::Tensor();  // the old one goes first, so the peak is not both
    // A normal tensor even when this call runs under torch.inference_mode: an inference tensor kept
    // here would make the next call outside it fail on its first in-place write.
    c10::InferenceMode normal(false);
    buffer = at::empty({numel}, options);
  }
  return buffer.narrow(0, 0, numel).view(shape);
}

// A channels-last buffer [images, H + 2, W + 2, C] in a workspace slot, refilled per chunk. A
// gradient buffer is all zeros; an input buffer only gets its zero border (fill_padded writes the
// inside), which saves a pass over it, noticeable on small maps and depthwise layers.
at::Tensor padded_buffer(const DeformConvGeometry& g, int64_t images, const at::TensorOptions& options, Slot slot,
                         bool border_only = false) {
  at::Tensor buffer = workspace(slot, {images, g.height + 2, g.width + 2, g.in_channels}, options);
  if (!border_only) return buffer.zero_();
  buffer.select(1, 0).zero_();
  buffer.select(1, g.height + 1).zero_();
  buffer.select(2, 0).zero_();
  buffer.select(2, g.width + 1).zero_();
  return buffer;
}

// The first m images of `buffer` hold `input` (m images, NCHW, contiguous) inside their zero
// border; one task per input row.
template <typename T>
at::Tensor fill_padded(at::Tensor& buffer, const at::Tensor& input) {
  const int64_t m = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  at::Tensor padded = buffer.narrow(0, 0, m);
  const T* src = input.const_data_ptr<T>();
  T* dst = padded.mutable_data_ptr<T>();
  at::parallel_for(0, m * H, grain_for(C * W), [&](int64_t begin, int64_t end) {
    for (int64_t nh = begin; nh < end; ++nh) {
      const int64_t n = nh / H, h = nh % H;
      transpose_tiles(src + n * C * H * W + h * W, H * W, dst + ((n * (H + 2) + h + 1) * (W + 2) + 1) * C, C, C, W);
    }
  });
  return padded;
}

// The inverse: `out` (m images, NCHW, contiguous) = the inside of the first m padded images.
template <typename T>
void unpad_into(const at::Tensor& padded, at::Tensor out) {
  const int64_t m = out.size(0), C = out.size(1), H = out.size(2), W = out.size(3);
  const T* src = padded.const_data_ptr<T>();
  T* dst = out.mutable_data_ptr<T>();
  at::parallel_for(0, m * H, grain_for(C * W), [&](int64_t begin, int64_t end) {
    for (int64_t nh = begin; nh < end; ++nh) {
      const int64_t n = nh / H, h = nh % H;
      transpose_tiles(src + ((n * (H + 2) + h + 1) * (W + 2) + 1) * C, C, dst + n * C * H * W + h * W, H * W, W, C);
    }
  });
}

// Rows of columns per tile: ~8 MB, so a tile is written and read back by the GEMM while
// still in cache, and large enough for MKL to run at full speed.
constexpr int64_t kTileBytes = int64_t(8) << 20;

// One chunk of images as the passes read it. Rows r of its columns are (image r / P,
// position r % P); a row holds [groups, taps, C / groups] entries.
template <typename T>
struct Chunk {
  const DeformConvGeometry& g;
  const T* xp;  // padded channels-last input of the chunk
  TapReader<T> tap_at;
  std::vector<Segment> segments;
  std::vector<int64_t> og_starts;  // offset_group_starts(segments): the im2col plan's, empty in the direct plan's

  int64_t row_size() const { return g.in_channels * g.taps(); }
  int64_t plane() const { return (g.height + 2) * (g.width + 2); }
  // The corners of channel 0 (blend_segments), and of a segment's first channel.
  Corners<T> corners(int64_t n, int64_t pixel) const {
    return {xp + (n * plane() + pixel) * g.in_channels, g.in_channels, (g.width + 2) * g.in_channels};
  }
  Corners<T> corners(int64_t n, int64_t pixel, const Segment& s) const {
    Corners<T> at = corners(n, pixel);
    at.x += s.begin;
    return at;
  }
  Corners<T> corners(int64_t n, const Tap<T>& tap, const Segment& s) const { return corners(n, tap.pixel, s); }
  int64_t column(const Segment& s, int64_t k) const { return s.column + k * (g.in_channels / g.groups); }
};

// Positions per parallel task: enough work per task to amortise scheduling.
int64_t row_grain(const DeformConvGeometry& g) { return grain_for(g.in_channels * g.taps()); }

// cols[r - r0] = mask * bilinear samples of rows [r0, r1). With `slot` (TapRows::slot), the columns are
// compact instead, the per-tap GEMMs' operands: (row, tap)'s C_in samples, channels in order, at row
// slot[(r - r0) * taps + k] of cols, and nothing for the pairs outside. Written full and then
// gathered tap by tap, an 8x8 map's columns were mostly zeros written and copies read again.
template <typename T>
void sample_rows(const Chunk<T>& c, int64_t r0, int64_t r1, T* cols, const int64_t* slot = nullptr) {
  const int64_t K = c.g.taps(), P = c.g.out_positions();
  at::parallel_for(r0, r1, row_grain(c.g), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / P, p = r % P;
      const GridRow grid = c.tap_at.row(p);
      T* row = cols + (r - r0) * c.row_size();
      for (int64_t k = 0; k < K; ++k) {
        const int64_t compact = slot ? slot[(r - r0) * K + k] : -1;
        if (slot && compact < 0) continue;
        for (size_t si = 0; si < c.segments.size();) {
          const int64_t og = c.segments[si].offset_group;
          const Tap<T> tap = c.tap_at(n, og, k, grid);
          T coeff[4];
          modulated_weights(tap, coeff);
          for (; si < c.segments.size() && c.segments[si].offset_group == og; ++si) {
            const Segment& s = c.segments[si];
            T* dst = slot ? cols + compact * c.g.in_channels + s.begin : row + c.column(s, k);
            if (tap.inside) {
              blend(c.corners(n, tap, s), coeff, dst, s.end - s.begin);
            } else {
              std::fill(dst, dst + (s.end - s.begin), T(0));
            }
          }
        }
      }
    }
  });
}

// Offset and mask gradients of rows [r0, r1) from their grad columns, on the calling thread; fills
// their columns too when `cols` is not null, and adds their input gradient into `gxp` (a padded
// channels-last buffer, as scatter_rows) when that is not null. One visit per tap for all three:
// with 64 channels a tap, computing each tap again in a pass of its own cost as much as its channel
// loops.
// With `slot`, the grad columns and columns are compact, as sample_rows writes them with it.
template <typename T>
void backward_rows(const Chunk<T>& c, int64_t r0, int64_t r1, const T* gcols, T* cols, T* goff, T* gmask, T* gxp,
                   const int64_t* slot = nullptr) {
  const int64_t K = c.g.taps(), P = c.g.out_positions(), C = c.g.in_channels;
  const int64_t down = (c.g.width + 2) * C;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / P, p = r % P, at_row = (r - r0) * c.row_size();
    const GridRow grid = c.tap_at.row(p);
    for (int64_t k = 0; k < K; ++k) {
      // compact: a pair without a row is outside for every offset group, its gradients 0
      const int64_t compact = slot ? slot[(r - r0) * K + k] : -1;
      for (size_t si = 0; si < c.segments.size();) {
        const int64_t og = c.segments[si].offset_group;
        const Tap<T> tap = c.tap_at(n, og, k, grid);
        T sums[3] = {0, 0, 0};
        T coeff[4];
        if (gxp) modulated_weights(tap, coeff);
        for (; si < c.segments.size() && c.segments[si].offset_group == og; ++si) {
          const Segment& s = c.segments[si];
          if (slot && compact < 0) continue;
          const int64_t at = slot ? compact * C + s.begin : at_row + c.column(s, k);
          if (tap.inside) {
            gather_grads(c.corners(n, tap, s), tap.lh, tap.lw, tap.m, gcols + at, cols ? cols + at : nullptr,
                         s.end - s.begin, sums);
            if (gxp) spread(gxp + (n * c.plane() + tap.pixel) * C + s.begin, C, down, coeff, gcols + at, s.end - s.begin);
          } else if (cols) {
            std::fill(cols + at, cols + at + (s.end - s.begin), T(0));
          }
        }
        const int64_t nog = n * c.g.offset_groups + og;
        goff[(nog * 2 * K + 2 * k) * P + p] = tap.m * sums[0];
        goff[(nog * 2 * K + 2 * k + 1) * P + p] = tap.m * sums[1];
        if (gmask) gmask[(nog * K + k) * P + p] = sums[2];
      }
    }
  }
}

// The transpose of sample_rows applied to the grad columns of rows [r0, r1), accumulated into a
// padded channels-last buffer like the chunk's input, `gxp` ([images, H + 2, W + 2, C]), on the
// calling thread: the backward gives each thread its own buffer and its own rows, so no two
// threads write the same element. Splitting channels among threads instead visits every tap once
// per thread, and the visits, not the channel arithmetic, are what this pass spends its time on
// (measured: two channel halves on one thread take twice as long as all channels at once).
template <typename T>
void scatter_rows(const Chunk<T>& c, int64_t r0, int64_t r1, const T* gcols, T* gxp, const int64_t* slot = nullptr) {
  const int64_t K = c.g.taps(), P = c.g.out_positions(), C = c.g.in_channels;
  const int64_t down = (c.g.width + 2) * C;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / P, p = r % P;
    const GridRow grid = c.tap_at.row(p);
    const T* grow = gcols + (r - r0) * c.row_size();
    for (int64_t k = 0; k < K; ++k) {
      for (size_t si = 0; si < c.segments.size();) {
        const int64_t og = c.segments[si].offset_group;
        const Tap<T> tap = c.tap_at(n, og, k, grid);
        T coeff[4];
        modulated_weights(tap, coeff);
        for (; si < c.segments.size() && c.segments[si].offset_group == og; ++si) {
          const Segment& s = c.segments[si];
          if (tap.inside) {  // inside: the pair has a compact row
            const T* src = slot ? gcols + slot[(r - r0) * K + k] * C + s.begin : grow + c.column(s, k);
            spread(gxp + (n * c.plane() + tap.pixel) * C + s.begin, C, down, coeff, src, s.end - s.begin);
          }
        }
      }
    }
  }
}

// Calls fn(image, first position, count, first row in the tile) for each image's share of
// rows [r0, r1).
template <typename Fn>
void for_each_image(int64_t r0, int64_t r1, int64_t P, Fn fn) {
  for (int64_t r = r0; r < r1;) {
    const int64_t n = r / P, p = r % P, len = std::min(P - p, r1 - r);
    fn(n, p, len, r - r0);
    r += len;
  }
}

// ---------------------------------------------------------------------------------------
// GEMMs per tap. On a small map much of a dilated kernel lies in the padding: at 8x8 with
// dilation 4, 5 of a position's 9 taps sample only zeros (F.conv2d skips them), yet the
// whole-row GEMM multiplies their zero columns like any other. Per tap, the rows where the tap
// samples inside the image for some offset group are multiplied by that tap's weights alone, and
// the products added back to their rows: the GEMMs shrink to the share of (position, tap) pairs
// inside, at the cost of K GEMMs with a K-times smaller inner dimension. Their columns are sampled
// compact (sample_rows with TapRows::slot), tap after tap. Which pairs are inside follows the
// offsets, so it is decided per tile.

// Up to this share of (position, tap) pairs inside, a tile takes the per-tap GEMMs: measured with
// scripts/bench_ops.py at 2 threads (docs/operator.md, "Plans").
constexpr double kTapGemmsMaxInside = 0.75;

std::atomic<TapGemms> forced_tap_gemms{TapGemms::kAuto};

// The tile rows where each tap samples inside the image, tap after tap.
struct TapRows {
  std::vector<int64_t> start;  // taps + 1 entries: tap k's rows are rows[start[k], start[k + 1])
  std::vector<int64_t> rows;
  std::vector<int64_t> slot;  // [row * taps + k]: where (row, tap k) is in `rows`, or -1 outside

  int64_t count(int64_t k) const { return start[k + 1] - start[k]; }
  const int64_t* of(int64_t k) const { return rows.data() + start[k]; }
};

// Whether each (row, tap) of rows [r0, r1) of a chunk samples inside the image for some offset group,
// at [(r - r0) * taps + k] (TapReader's test, so exactly the pairs whose columns the passes fill and
// read): the per-tap GEMMs' rows, known before the passes that fill their columns.
template <typename T>
std::vector<uint8_t> inside_taps(const Chunk<T>& c, int64_t r0, int64_t r1) {
  const int64_t K = c.g.taps(), P = c.g.out_positions(), OG = c.g.offset_groups;
  std::vector<uint8_t> inside((r1 - r0) * K);
  at::parallel_for(r0, r1, grain_for(K * OG * 16), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / P;
      const GridRow grid = c.tap_at.row(r % P);
      for (int64_t k = 0; k < K; ++k) {
        bool any = false;
        for (int64_t og = 0; og < OG && !any; ++og) any = c.tap_at(n, og, k, grid).inside;
        inside[(r - r0) * K + k] = any;
      }
    }
  });
  return inside;
}

// The rows where each of `taps` taps is inside, from those flags.
TapRows tap_rows(const std::vector<uint8_t>& inside, int64_t K) {
  const int64_t rows = int64_t(inside.size()) / K;
  TapRows t;
  t.start.resize(K + 1);
  t.rows.reserve(rows * K);
  t.slot.assign(rows * K, -1);
  for (int64_t k = 0; k < K; ++k) {
    t.start[k] = int64_t(t.rows.size());
    for (int64_t r = 0; r < rows; ++r) {
      if (!inside[r * K + k]) continue;
      t.slot[r * K + k] = int64_t(t.rows.size());
      t.rows.push_back(r);
    }
  }
  t.start[K] = int64_t(t.rows.size());
  return t;
}

// Whether a test forced the whole-row products (by MKL or by the panel kernel): then no tile needs
// the inside flags.
bool rows_forced() {
  const TapGemms mode = forced_tap_gemms.load();
  return mode == TapGemms::kRows || mode == TapGemms::kPanels;
}

// Whether a tile with `inside` of its `pairs` (position, tap) pairs inside takes the per-tap GEMMs.
bool use_tap_gemms(int64_t inside, int64_t pairs) {
  switch (forced_tap_gemms.load()) {
    case TapGemms::kRows:
    case TapGemms::kPanels:
      return false;
    case TapGemms::kTaps:
      return true;
    default:
      return double(inside) <= kTapGemmsMaxInside * double(pairs);
  }
}

// dst[i, :len] = src[rows[i] * src_stride, :len] for i < n.
template <typename T>
void gather_rows(const T* src, int64_t src_stride, const int64_t* rows, int64_t n, int64_t len, T* dst) {
  at::parallel_for(0, n, grain_for(len), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) std::copy(src + rows[i] * src_stride, src + rows[i] * src_stride + len, dst + i * len);
  });
}

// dst[rows[i] * dst_stride, :len] += src[i, :len] for i < n; the rows are distinct.
template <typename T>
void add_rows(const T* src, const int64_t* rows, int64_t n, int64_t len, T* dst, int64_t dst_stride) {
  at::parallel_for(0, n, grain_for(len), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T* d = dst + rows[i] * dst_stride;
      const T* v = src + i * len;
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) d[j] += v[j];
    }
  });
}

// The panel kernel: the forward's whole-row products of layers of small depth by segdcn's own
// kernel instead of MKL's GEMM. MKL copies its operand into a packed layout in a pass of its own
// before it multiplies, and on a layer of 64 channels (the demo's res4, 16x16) that copy took half
// as long as the products (perf: mkl_blas_def_sgemm_scopy_right4_bdz), on columns the sampling had
// just written to memory. Here the sampling writes kPanelRows rows at a time, which are transposed
// in cache into a panel, [row entries, kPanelRows]: a step of the kernel loads the kPanelRows samples
// of one entry and multiplies them with kPanelOuts weights into kPanelOuts x kPanelRows
// accumulators held in registers (12 of AVX2's 16), which land in the output's [C_out, positions]
// layout with no transpose. The order of the sums is fixed: the same bits at any thread count.
constexpr int64_t kPanelRows = 16;
constexpr int64_t kPanelOuts = 6;
// Up to this many entries per group's row ((C_in / groups) x taps), auto takes the AVX2 panel kernel
// for whole-row tiles of float layers, and the AVX-512 one at any depth: scripts/bench_ops.py at 2
// threads with the whole rows forced to each way (docs/operator.md, "Plans"; docs/results/
// bench_ops_rows*.md and bench_ops_panels*.md). In AVX2 the kernel does half of MKL's AVX-512 work
// per instruction, which MKL's packing costs do not make up for on res5's 4608 entries.
constexpr int64_t kPanelMaxDepth = 2304;

bool has_fma() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return fma && forced_cpu_kernels.load(std::memory_order_relaxed) != CpuKernels::kPortable;
#else
  return false;
#endif
}

bool has_avx512() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512 && forced_cpu_kernels.load(std::memory_order_relaxed) == CpuKernels::kAuto;
#else
  return false;
#endif
}

// out[o * out_stride + q] = bias[o] + sum_j panel[j * kPanelRows + q] * w[j * kPanelOuts + o], for
// o < outs and q < count; bias may be null (zero).
template <typename T>
inline __attribute__((always_inline)) void panel_block_body(const T* panel, const T* w, int64_t depth, const T* bias,
                                                            int64_t outs, int64_t count, T* out, int64_t out_stride) {
  T acc[kPanelOuts][kPanelRows];
  for (int64_t o = 0; o < kPanelOuts; ++o)
    for (int64_t q = 0; q < kPanelRows; ++q) acc[o][q] = bias && o < outs ? bias[o] : T(0);
  for (int64_t j = 0; j < depth; ++j) {
    const T *a = panel + j * kPanelRows, *wj = w + j * kPanelOuts;
    for (int64_t o = 0; o < kPanelOuts; ++o) {
#pragma omp simd
      for (int64_t q = 0; q < kPanelRows; ++q) acc[o][q] += a[q] * wj[o];
    }
  }
  for (int64_t o = 0; o < outs; ++o) std::copy(acc[o], acc[o] + count, out + o * out_stride);
}

SEGDCN_SIMD_CLONES void panel_block(const double* panel, const double* w, int64_t depth, const double* bias,
                                    int64_t outs, int64_t count, double* out, int64_t out_stride) {
  panel_block_body(panel, w, depth, bias, outs, count, out, out_stride);
}

#if defined(__GNUC__) && defined(__x86_64__)
// The float kernel in AVX2 and FMA, its accumulators named one by one: kept in an array, GCC moved
// them through the stack at every step, at a third of the speed.
__attribute__((target("avx2,fma"))) void panel_block_fma(const float* panel, const float* w, int64_t depth,
                                                          const float* bias, int64_t outs, int64_t count, float* out,
                                                          int64_t out_stride) {
  static_assert(kPanelRows == 16 && kPanelOuts == 6, "the kernel below is written for 6 x 16");
  // (lambdas do not inherit the target attribute, so no helpers here)
  float first[kPanelOuts];
  for (int64_t o = 0; o < kPanelOuts; ++o) first[o] = bias && o < outs ? bias[o] : 0.0f;
  __m256 a00 = _mm256_set1_ps(first[0]), a01 = a00, a10 = _mm256_set1_ps(first[1]), a11 = a10;
  __m256 a20 = _mm256_set1_ps(first[2]), a21 = a20, a30 = _mm256_set1_ps(first[3]), a31 = a30;
  __m256 a40 = _mm256_set1_ps(first[4]), a41 = a40, a50 = _mm256_set1_ps(first[5]), a51 = a50;
  for (int64_t j = 0; j < depth; ++j) {
    const __m256 x0 = _mm256_loadu_ps(panel + j * kPanelRows), x1 = _mm256_loadu_ps(panel + j * kPanelRows + 8);
    const float* wj = w + j * kPanelOuts;
    // output channel o's step, on its two registers of accumulators
#define SEGDCN_PANEL_STEP(o)                      \
  {                                               \
    const __m256 b = _mm256_broadcast_ss(wj + o); \
    a##o##0 = _mm256_fmadd_ps(x0, b, a##o##0);    \
    a##o##1 = _mm256_fmadd_ps(x1, b, a##o##1);    \
  }
    SEGDCN_PANEL_STEP(0) SEGDCN_PANEL_STEP(1) SEGDCN_PANEL_STEP(2)
    SEGDCN_PANEL_STEP(3) SEGDCN_PANEL_STEP(4) SEGDCN_PANEL_STEP(5)
#undef SEGDCN_PANEL_STEP
  }
  // a partial block goes through `part`, so that nothing is written past the output's block
  const bool whole = outs == kPanelOuts && count == kPanelRows;
  alignas(32) float part[kPanelOuts * kPanelRows];
  float* dst = whole ? out : part;
  const int64_t stride = whole ? out_stride : kPanelRows;
#define SEGDCN_PANEL_STORE(o)                  \
  _mm256_storeu_ps(dst + o * stride, a##o##0); \
  _mm256_storeu_ps(dst + o * stride + 8, a##o##1);
  SEGDCN_PANEL_STORE(0) SEGDCN_PANEL_STORE(1) SEGDCN_PANEL_STORE(2)
  SEGDCN_PANEL_STORE(3) SEGDCN_PANEL_STORE(4) SEGDCN_PANEL_STORE(5)
#undef SEGDCN_PANEL_STORE
  if (!whole) {
    for (int64_t o = 0; o < outs; ++o)
      std::copy(part + o * kPanelRows, part + o * kPanelRows + count, out + o * out_stride);
  }
}
#endif

#if defined(__GNUC__) && defined(__x86_64__)
// The float kernel in AVX-512 on two blocks of output channels at once (w: the first; the second
// follows it, as panel_weights lays them out), for outs <= 2 * kPanelOuts; one block when outs <=
// kPanelOuts. A panel's kPanelRows = 16 positions are one register, so a step is one load and 12
// multiply-adds into 12 accumulators, twice the AVX2 kernel's work per instruction on a CPU with
// 512-bit FMA units (AMD Zen 5, Intel's server cores), in the same order: the same bits.
__attribute__((target("avx512f"))) void panel_block_avx512(const float* panel, const float* w, int64_t depth,
                                                             const float* bias, int64_t outs, int64_t count,
                                                             float* out, int64_t out_stride) {
  static_assert(kPanelRows == 16 && kPanelOuts == 6, "the kernel below is written for 2 x 6 x 16");
  float first[2 * kPanelOuts];
  for (int64_t o = 0; o < 2 * kPanelOuts; ++o) first[o] = bias && o < outs ? bias[o] : 0.0f;
  // a short block's lanes past `count` are not stored, so nothing is written past the output's block
  const __mmask16 lanes = __mmask16((1u << count) - 1);
  __m512 a0 = _mm512_set1_ps(first[0]), a1 = _mm512_set1_ps(first[1]), a2 = _mm512_set1_ps(first[2]);
  __m512 a3 = _mm512_set1_ps(first[3]), a4 = _mm512_set1_ps(first[4]), a5 = _mm512_set1_ps(first[5]);
#define SEGDCN_PANEL_STEP(acc, wj, o) acc = _mm512_fmadd_ps(x, _mm512_set1_ps(wj[o]), acc);
#define SEGDCN_PANEL_STORE(acc, o) \
  if (o < outs) _mm512_mask_storeu_ps(out + (o) * out_stride, lanes, acc);
  if (outs > kPanelOuts) {
    __m512 b0 = _mm512_set1_ps(first[6]), b1 = _mm512_set1_ps(first[7]), b2 = _mm512_set1_ps(first[8]);
    __m512 b3 = _mm512_set1_ps(first[9]), b4 = _mm512_set1_ps(first[10]), b5 = _mm512_set1_ps(first[11]);
    const float* w1 = w + depth * kPanelOuts;
    for (int64_t j = 0; j < depth; ++j) {
      const __m512 x = _mm512_loadu_ps(panel + j * kPanelRows);
      const float *wj = w + j * kPanelOuts, *vj = w1 + j * kPanelOuts;
      SEGDCN_PANEL_STEP(a0, wj, 0) SEGDCN_PANEL_STEP(a1, wj, 1) SEGDCN_PANEL_STEP(a2, wj, 2)
      SEGDCN_PANEL_STEP(a3, wj, 3) SEGDCN_PANEL_STEP(a4, wj, 4) SEGDCN_PANEL_STEP(a5, wj, 5)
      SEGDCN_PANEL_STEP(b0, vj, 0) SEGDCN_PANEL_STEP(b1, vj, 1) SEGDCN_PANEL_STEP(b2, vj, 2)
      SEGDCN_PANEL_STEP(b3, vj, 3) SEGDCN_PANEL_STEP(b4, vj, 4) SEGDCN_PANEL_STEP(b5, vj, 5)
    }
    SEGDCN_PANEL_STORE(b0, 6) SEGDCN_PANEL_STORE(b1, 7) SEGDCN_PANEL_STORE(b2, 8)
    SEGDCN_PANEL_STORE(b3, 9) SEGDCN_PANEL_STORE(b4, 10) SEGDCN_PANEL_STORE(b5, 11)
  } else {
    for (int64_t j = 0; j < depth; ++j) {
      const __m512 x = _mm512_loadu_ps(panel + j * kPanelRows);
      const float* wj = w + j * kPanelOuts;
      SEGDCN_PANEL_STEP(a0, wj, 0) SEGDCN_PANEL_STEP(a1, wj, 1) SEGDCN_PANEL_STEP(a2, wj, 2)
      SEGDCN_PANEL_STEP(a3, wj, 3) SEGDCN_PANEL_STEP(a4, wj, 4) SEGDCN_PANEL_STEP(a5, wj, 5)
    }
  }
  SEGDCN_PANEL_STORE(a0, 0) SEGDCN_PANEL_STORE(a1, 1) SEGDCN_PANEL_STORE(a2, 2)
  SEGDCN_PANEL_STORE(a3, 3) SEGDCN_PANEL_STORE(a4, 4) SEGDCN_PANEL_STORE(a5, 5)
#undef SEGDCN_PANEL_STEP
#undef SEGDCN_PANEL_STORE
}
#endif

// How many output channels one panel_block call of this type takes: two blocks with AVX-512.
template <typename T>
int64_t panel_call_outs() {
  return std::is_same<T, float>::value && has_avx512() ? 2 * kPanelOuts : kPanelOuts;
}

// outs <= panel_call_outs<float>(), asked before the call.
void panel_block(const float* panel, const float* w, int64_t depth, const float* bias, int64_t outs, int64_t count,
                 float* out, int64_t out_stride) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (outs > kPanelOuts || has_avx512()) return panel_block_avx512(panel, w, depth, bias, outs, count, out, out_stride);
#endif
#if defined(__GNUC__) && defined(__x86_64__)
  if (has_fma()) return panel_block_fma(panel, w, depth, bias, outs, count, out, out_stride);
#endif
  panel_block_body(panel, w, depth, bias, outs, count, out, out_stride);
}

// Whether the forward's whole-row tiles of this layer take the panel kernel.
template <typename T>
bool use_panels(const DeformConvGeometry& g) {
  switch (forced_tap_gemms.load()) {
    case TapGemms::kPanels:
      return true;
    case TapGemms::kRows:
    case TapGemms::kTaps:
      return false;
    default:
      return std::is_same<T, float>::value && has_fma() &&
             (has_avx512() || g.in_channels / g.groups * g.taps() <= kPanelMaxDepth);
  }
}

// The weights as the panel kernel reads them, from the driver's [groups, C_out / groups, depth]:
// [groups, blocks, depth, kPanelOuts], a group's output channels in blocks of kPanelOuts (zero past its
// last).
at::Tensor panel_weights(const at::Tensor& reordered) {
  const int64_t per_out = reordered.size(1), blocks = (per_out + kPanelOuts - 1) / kPanelOuts;
  const at::Tensor padded = at::constant_pad_nd(reordered, {0, 0, 0, blocks * kPanelOuts - per_out});
  return padded.view({reordered.size(0), blocks, kPanelOuts, reordered.size(2)}).permute({0, 1, 3, 2}).contiguous();
}

// Positions per block of the grouped products: their accumulators are independent, so the
// multiply-adds of one weight row into a block's outputs overlap instead of waiting on each other.
constexpr int64_t kBlock = 16;

// The taps of a block of positions, and the functions that compute and read them (the direct plan's,
// below; the panels use them too).
template <typename T>
struct BlockTaps;
template <typename T>
void block_taps(const Chunk<T>& c, int64_t r0, int64_t count, GridRow* grid, BlockTaps<T>& taps);
template <typename T>
void sample_block(const Chunk<T>& c, int64_t n, int64_t count, const BlockTaps<T>& taps, T* rows);

// The driver: chunks of whole images (a padded copy of each chunk's input), tiles of rows
// within a chunk, and per tile the passes and the GEMMs against the weight reordered to
// [groups, C_out / groups, taps * C_in / groups] (the order of a row's entries).
template <typename T>
struct TiledDeformConv {
  const DeformConvGeometry& g;
  at::Tensor weight;  // reordered
  bool panels;  // whether the forward's whole-row tiles take the panel kernel
  // panel_weights(weight), made by the first tile that takes the panels: on the 8x8 map every tile
  // takes the per-tap GEMMs, and a copy of the weights per call would be a tenth of its forward
  mutable std::once_flag panel_once;
  mutable at::Tensor panel_weight;
  int64_t chunk_images;
  int64_t threads;      // at::get_num_threads() when the call began: the per-thread buffers' count
  int64_t thread_rows;  // rows per tile of one thread: a tile of about kTileBytes shared by the threads

  TiledDeformConv(const DeformConvGeometry& geometry, const at::Tensor& w) : g(geometry) {
    const int64_t per_group = g.in_channels / g.groups, K = g.taps();
    // [C_out, C_in / groups, taps] -> [C_out, taps, C_in / groups] by a parallel loop over
    // output channels: at::Tensor::contiguous() on the transposed view is several times slower
    // and runs on every call.
    weight = at::empty({g.groups, g.out_channels / g.groups, K * per_group}, w.options());
    const at::Tensor src_weight = w.contiguous();
    const T* src = src_weight.const_data_ptr<T>();
    T* dst = weight.mutable_data_ptr<T>();
    at::parallel_for(0, g.out_channels, grain_for(K * per_group), [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o)
        transpose_block(src + o * per_group * K, K, dst + o * K * per_group, per_group, per_group, K);
    });
    panels = use_panels<T>(g);
    const int64_t row_bytes = g.in_channels * g.taps() * int64_t(sizeof(T));
    int64_t tile_rows = std::max<int64_t>(16, kTileBytes / row_bytes);
    chunk_images = std::max<int64_t>(1, tile_rows / g.out_positions());
    // No larger than a call needs: every call's buffers come fresh from the kernel, a page fault
    // per 4 KiB touched, which on small maps cost as much as a GEMM (perf: exc_page_fault).
    tile_rows = std::min(tile_rows, std::min(chunk_images, g.batch) * g.out_positions());
    threads = std::max<int64_t>(1, at::get_num_threads());
    thread_rows = std::max<int64_t>(16, (tile_rows + threads - 1) / threads);
  }

  Chunk<T> chunk(const at::Tensor& padded, const at::Tensor& offset, const at::Tensor& mask) const {
    std::vector<Segment> segments = channel_segments(g);
    std::vector<int64_t> starts = offset_group_starts(segments, g.offset_groups);
    return Chunk<T>{g, padded.const_data_ptr<T>(),
                    TapReader<T>(g, offset.const_data_ptr<T>(), g.use_mask ? mask.const_data_ptr<T>() : nullptr),
                    std::move(segments), std::move(starts)};
  }

  at::Tensor group(const at::Tensor& rows, int64_t k) const {
    return rows.view({rows.size(0), g.groups, -1}).select(1, k);
  }

  // Whether a tile with these inside flags (none: the whole-row GEMMs are forced) takes the per-tap
  // GEMMs; if so, `taps` says which rows each tap has.
  bool tile_by_tap(const std::vector<uint8_t>& inside, TapRows& taps) const {
    if (inside.empty()) return false;
    // the rows by tap only where they are used: on a 16x16 map, listed for every tile, they cost a
    // third as much as the flags
    if (!use_tap_gemms(std::count(inside.begin(), inside.end(), uint8_t(1)), int64_t(inside.size()))) return false;
    taps = tap_rows(inside, g.taps());
    return true;
  }

  // A product's rows start as the bias (of one weight group), or zeros: added to the output in a
  // pass of its own, the bias cost a pass over the output, a few percent of a small map's forward.
  static void starting_product(const at::Tensor& bias, at::Tensor& product) {
    if (bias.defined()) {
      product.copy_(bias.expand_as(product));
    } else {
      product.zero_();
    }
  }

  // The forward GEMM of weight group k by tap: product = bias + sum over taps t of tap t's compact
  // columns (sample_rows with TapRows::slot: [inside pairs, C_in]) x the tap's weights, over the rows
  // where t is inside (the others' columns are zero).
  void tap_products(const at::Tensor& compact, const TapRows& taps, int64_t k, const at::Tensor& bias,
                    at::Tensor& product) const {
    const int64_t per_group = g.in_channels / g.groups, per_out = g.out_channels / g.groups;
    starting_product(bias, product);
    for (int64_t t = 0; t < g.taps(); ++t) {
      const int64_t n = taps.count(t);
      if (n == 0) continue;
      at::Tensor p = workspace(kTapProducts, {n, per_out}, compact.options());
      at::mm_out(p, tap_columns(compact, taps, k, t), weight[k].narrow(1, t * per_group, per_group).t());
      add_rows(p.const_data_ptr<T>(), taps.of(t), n, per_out, product.mutable_data_ptr<T>(), product.stride(0));
    }
  }

  // grad_output's rows where each tap is inside, tap after tap, from the tile's grad_output
  // positions-major (gt, [rows, C_out]): [taps.rows.size(), C_out], tap t's at rows
  // [taps.start[t], taps.start[t + 1]). Gathered once per tile for both per-tap passes.
  at::Tensor tap_grad_outputs(const at::Tensor& gt, const TapRows& taps) const {
    at::Tensor out = workspace(kTapGradOutputs, {int64_t(taps.rows.size()), g.out_channels}, gt.options());
    for (int64_t t = 0; t < g.taps(); ++t) {
      gather_rows(gt.const_data_ptr<T>(), gt.stride(0), taps.of(t), taps.count(t), g.out_channels,
                  out.mutable_data_ptr<T>() + taps.start[t] * g.out_channels);
    }
    return out;
  }

  // Weight group k's block of tap t's rows of tap_grad_outputs: [count(t), C_out / groups].
  at::Tensor tap_grad_output(const at::Tensor& gouts, const TapRows& taps, int64_t k, int64_t t) const {
    const int64_t per_out = g.out_channels / g.groups;
    return gouts.narrow(0, taps.start[t], taps.count(t)).narrow(1, k * per_out, per_out);
  }

  // The compact columns ([inside pairs, C_in]) in a tile's buffer, which holds more.
  at::Tensor compact_in(const at::Tensor& tile, const TapRows& taps) const {
    return tile.view({-1}).narrow(0, 0, int64_t(taps.rows.size()) * g.in_channels).view({-1, g.in_channels});
  }

  // Weight group k's block of tap t's compact columns ([inside pairs, C_in], as sample_rows writes
  // them with TapRows::slot): [count(t), C_in / groups].
  at::Tensor tap_columns(const at::Tensor& compact, const TapRows& taps, int64_t k, int64_t t) const {
    const int64_t per_group = g.in_channels / g.groups;
    return compact.narrow(0, taps.start[t], taps.count(t)).narrow(1, k * per_group, per_group);
  }

  // The compact grad columns by tap, from tap_grad_outputs.
  void tap_grad_columns(const at::Tensor& gouts, const TapRows& taps, at::Tensor& gcompact) const {
    const int64_t per_group = g.in_channels / g.groups;
    for (int64_t k = 0; k < g.groups; ++k) {
      for (int64_t t = 0; t < g.taps(); ++t) {
        if (taps.count(t) == 0) continue;
        at::Tensor block = tap_columns(gcompact, taps, k, t);
        at::mm_out(block, tap_grad_output(gouts, taps, k, t), weight[k].narrow(1, t * per_group, per_group));
      }
    }
  }

  // The weight gradient by tap: grad_weight[k] rows of tap t += compact columns^T x grad_output over the
  // rows where t is inside (grad_output from tap_grad_outputs).
  void tap_weight_grads(const at::Tensor& compact, const at::Tensor& gouts, const TapRows& taps,
                        at::Tensor& grad_weight) const {
    const int64_t per_group = g.in_channels / g.groups;
    for (int64_t k = 0; k < g.groups; ++k) {
      for (int64_t t = 0; t < g.taps(); ++t) {
        if (taps.count(t) == 0) continue;
        grad_weight[k].narrow(0, t * per_group, per_group)
            .addmm_(tap_columns(compact, taps, k, t).t(), tap_grad_output(gouts, taps, k, t));
      }
    }
  }

  // The forward runs one parallel region per chunk: each thread takes a contiguous share of the
  // chunk's rows and runs the whole pipeline on it, tile by tile (sampling, GEMMs, output), with
  // MKL single-threaded inside the region. A region per pass and per GEMM, as the plan had before,
  // costs a barrier each (two dozen a call with the per-tap GEMMs), and on small maps those waits
  // were a quarter of the call (perf: libgomp).
  void forward(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask, const at::Tensor& bias,
               at::Tensor& output) const {
    const int64_t P = g.out_positions(), per_out = g.out_channels / g.groups;
    at::Tensor padded_input = padded_buffer(g, std::min(chunk_images, g.batch), input.options(), kPaddedInput, true);
    for (int64_t n0 = 0; n0 < g.batch; n0 += chunk_images) {
      const int64_t m = std::min(chunk_images, g.batch - n0);
      const at::Tensor padded = fill_padded<T>(padded_input, input.narrow(0, n0, m));
      const Chunk<T> c = chunk(padded, offset.narrow(0, n0, m), g.use_mask ? mask.narrow(0, n0, m) : mask);
      at::Tensor out = output.narrow(0, n0, m).view({m, g.groups, per_out, P});
      at::parallel_for(0, m * P, row_grain(g), [&](int64_t begin, int64_t end) {
        // OpenMP's workers do not inherit the caller's dispatch state (forward_cpu's guard)
        const at::AutoDispatchBelowADInplaceOrView below_autograd;
        const int64_t tile = std::min(thread_rows, end - begin);
        at::Tensor cols = workspace(kColumns, {tile, g.in_channels * g.taps()}, input.options());
        at::Tensor products = workspace(kProducts, {tile, per_out}, input.options());
        for (int64_t r0 = begin; r0 < end; r0 += tile) {
          const int64_t r1 = std::min(r0 + tile, end);
          forward_tile(c, r0, r1, bias, cols.narrow(0, 0, r1 - r0), products.narrow(0, 0, r1 - r0), out);
        }
      });
    }
  }

  // Rows [r0, r1) of a chunk into `out` ([images, groups, C_out / groups, P]), on the calling thread;
  // `bias` ([C_out]) may be undefined.
  void forward_tile(const Chunk<T>& c, int64_t r0, int64_t r1, const at::Tensor& bias, const at::Tensor& tile,
                    at::Tensor product, at::Tensor& out) const {
    const int64_t P = g.out_positions(), per_out = g.out_channels / g.groups;
    // The taps' inside flags come first (as in the backward), so that the per-tap GEMMs' columns are
    // sampled compact into the tile's buffer; the whole-row GEMMs' are full rows.
    TapRows taps;
    const bool by_tap = tile_by_tap(rows_forced() ? std::vector<uint8_t>() : inside_taps(c, r0, r1), taps);
    if (!by_tap && panels) return panel_products(c, r0, r1, bias, out);
    const at::Tensor compact = by_tap ? compact_in(tile, taps) : at::Tensor();
    sample_rows(c, r0, r1, tile.mutable_data_ptr<T>(), by_tap ? taps.slot.data() : nullptr);
    // One GEMM per tile and group (or per tap), positions-major ([rows, C_out / groups]): MKL runs
    // this orientation 5-15% faster than the output's [C_out, positions] one, which pays for the
    // transposed copy of the (cache-resident) product into the output.
    for (int64_t k = 0; k < g.groups; ++k) {
      const at::Tensor bias_k = bias.defined() ? bias.narrow(0, k * per_out, per_out) : at::Tensor();
      if (by_tap) {
        tap_products(compact, taps, k, bias_k, product);
      } else if (bias_k.defined()) {
        at::addmm_out(product, bias_k, group(tile, k), weight[k].t());
      } else {
        at::mm_out(product, group(tile, k), weight[k].t());
      }
      for_each_image(r0, r1, P, [&](int64_t n, int64_t p, int64_t len, int64_t t) {
        transpose_tiles(product.const_data_ptr<T>() + t * per_out, per_out, out[n][k].mutable_data_ptr<T>() + p, P,
                        len, per_out);
      });
    }
  }

  // Rows [r0, r1) of a chunk by the panel kernel into `out` (as forward_tile): kPanelRows rows of one
  // image at a time, sampled, transposed into a panel and multiplied by every block of output channels.
  void panel_products(const Chunk<T>& c, int64_t r0, int64_t r1, const at::Tensor& bias, at::Tensor& out) const {
    const int64_t P = g.out_positions(), per_out = g.out_channels / g.groups, row = c.row_size();
    const int64_t depth = row / g.groups, blocks = (per_out + kPanelOuts - 1) / kPanelOuts;
    const int64_t call_outs = panel_call_outs<T>();  // once: a test may change the setting meanwhile
    at::Tensor scratch = workspace(kPanel, {2, kPanelRows, row}, out.options());
    T* rows = scratch[0].mutable_data_ptr<T>();
    T* panel = scratch[1].mutable_data_ptr<T>();
    std::call_once(panel_once, [&] { panel_weight = panel_weights(weight); });
    const T* w = panel_weight.const_data_ptr<T>();
    const T* b = bias.defined() ? bias.const_data_ptr<T>() : nullptr;
    T* dst = out.mutable_data_ptr<T>();
    BlockTaps<T> taps(g.offset_groups * g.taps());
    GridRow grid[kBlock];
    static_assert(kPanelRows <= kBlock, "a panel's rows are one block of taps");
    for (int64_t q0 = r0; q0 < r1;) {
      const int64_t n = q0 / P, p = q0 % P, count = std::min({kPanelRows, r1 - q0, P - p});
      block_taps(c, q0, count, grid, taps);
      sample_block(c, n, count, taps, rows);
      // a short block's other lanes are multiplied but not stored: zeros, not stale values
      if (count < kPanelRows) std::fill(panel, panel + row * kPanelRows, T(0));
      transpose_tiles(rows, row, panel, kPanelRows, count, row);
      for (int64_t k = 0; k < g.groups; ++k) {
        for (int64_t block = 0; block < blocks; block += call_outs / kPanelOuts) {
          const int64_t o = block * kPanelOuts;
          panel_block(panel + k * depth * kPanelRows, w + (k * blocks + block) * depth * kPanelOuts, depth,
                      b ? b + k * per_out + o : nullptr, std::min(call_outs, per_out - o), count,
                      dst + ((n * g.groups + k) * per_out + o) * P + p, P);
        }
      }
      q0 += count;
    }
  }

  // The backward runs like the forward, one parallel region per chunk with each thread on its own
  // share of the rows, tile by tile; each thread adds its input gradient into its own padded buffer
  // and its weight gradient into its own buffer (thread 0 into grad_weight), summed in thread order,
  // so the sums' order is fixed at a fixed thread count.
  void backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
                const at::Tensor& mask, at::Tensor& grad_input, at::Tensor& grad_weight, at::Tensor& grad_offset,
                at::Tensor& grad_mask) const {
    const int64_t P = g.out_positions();
    const bool need_input = grad_input.defined(), need_weight = grad_weight.defined();
    const bool need_offset = grad_offset.defined();
    const int64_t images = std::min(chunk_images, g.batch);
    at::Tensor padded_input = padded_buffer(g, images, input.options(), kPaddedInput, true);
    at::Tensor padded_grads =
        need_input ? padded_buffer(g, threads * images, input.options(), kGradPadded).view({threads, images, g.height + 2, g.width + 2, g.in_channels})
                   : at::Tensor();
    at::Tensor thread_weight_grads =
        need_weight && threads > 1
            ? workspace(kGradWeight, {threads - 1, grad_weight.numel()}, input.options()).zero_()
            : at::Tensor();
    for (int64_t n0 = 0; n0 < g.batch; n0 += chunk_images) {
      const int64_t m = std::min(chunk_images, g.batch - n0);
      const at::Tensor padded = fill_padded<T>(padded_input, input.narrow(0, n0, m));
      const Chunk<T> c = chunk(padded, offset.narrow(0, n0, m), g.use_mask ? mask.narrow(0, n0, m) : mask);
      if (need_input && n0 > 0) padded_grads.zero_();
      Grads grads{grad_output.narrow(0, n0, m).view({m, g.out_channels, P}),
                  need_offset ? grad_offset.narrow(0, n0, m).mutable_data_ptr<T>() : nullptr,
                  need_offset && g.use_mask ? grad_mask.narrow(0, n0, m).mutable_data_ptr<T>() : nullptr,
                  need_input, need_weight, need_offset, P < thread_rows};
      at::parallel_for(0, m * P, row_grain(g), [&](int64_t begin, int64_t end) {
        // OpenMP's workers do not inherit the caller's dispatch state (forward_cpu's guard)
        const at::AutoDispatchBelowADInplaceOrView below_autograd;
        const int64_t thread = at::get_thread_num();
        TORCH_INTERNAL_ASSERT(thread < threads, "deform_conv2d backward: thread ", thread, " has no buffer");
        T* gxp = need_input ? padded_grads[thread].mutable_data_ptr<T>() : nullptr;
        at::Tensor gw = !need_weight ? at::Tensor()
                        : thread == 0 ? grad_weight
                                      : thread_weight_grads[thread - 1].view(grad_weight.sizes());
        const int64_t tile = std::min(thread_rows, end - begin), row = g.in_channels * g.taps();
        at::Tensor gcols = workspace(kGradColumns, {tile, row}, input.options());
        at::Tensor cols = need_weight ? workspace(kColumns, {tile, row}, input.options()) : at::Tensor();
        for (int64_t r0 = begin; r0 < end; r0 += tile) {
          const int64_t r1 = std::min(r0 + tile, end);
          backward_tile(c, grads, r0, r1, gcols.narrow(0, 0, r1 - r0),
                        need_weight ? cols.narrow(0, 0, r1 - r0) : at::Tensor(), gxp, gw);
        }
      });
      if (need_input) {
        at::Tensor summed = padded_grads[0].narrow(0, 0, m);
        for (int64_t t = 1; t < threads; ++t) summed.add_(padded_grads[t].narrow(0, 0, m));
        unpad_into<T>(summed, grad_input.narrow(0, n0, m));
      }
    }
    if (thread_weight_grads.defined()) {
      at::Tensor flat = grad_weight.view({-1});
      for (int64_t t = 0; t + 1 < threads; ++t) flat.add_(thread_weight_grads[t]);
    }
  }

  // What a chunk's backward reads and writes besides the columns.
  struct Grads {
    at::Tensor gout;  // the chunk's grad_output, [images, C_out, P]
    T* goff;
    T* gmask;
    bool need_input, need_weight, need_offset;
    // When a tile holds several images (small maps), its grad_output is first copied positions-major,
    // [rows, C_out], so that one GEMM per group covers the tile: read in place, image by image, the
    // GEMMs' inner dimension is one image's positions (64 on an 8x8 map), where MKL runs at a fraction
    // of its speed, and there are two per image.
    bool many_images;
  };

  // Rows [r0, r1) of a chunk's backward on the calling thread: their offset and mask gradients, their
  // input gradient added into gxp and their weight gradient into gw.
  void backward_tile(const Chunk<T>& c, const Grads& d, int64_t r0, int64_t r1, at::Tensor gcol_tile,
                     at::Tensor col_tile, T* gxp, at::Tensor& gw) const {
    const int64_t P = g.out_positions(), per_out = g.out_channels / g.groups, rows = r1 - r0;
    const bool need_columns = d.need_input || d.need_offset;
    const at::Tensor& gout = d.gout;
    // The GEMMs read grad_output's [C_out, positions] blocks transposed in place.
    auto gout_block = [&](int64_t n, int64_t k, int64_t p, int64_t len) {
      return gout[n].narrow(0, k * per_out, per_out).narrow(1, p, len);
    };
    TapRows taps;
    const bool by_tap = tile_by_tap(rows_forced() ? std::vector<uint8_t>() : inside_taps(c, r0, r1), taps);
    // the per-tap GEMMs gather rows of grad_output, so they read it positions-major too
    const bool gathered = d.many_images || by_tap;
    at::Tensor gt = gathered ? workspace(kProducts, {rows, g.out_channels}, gcol_tile.options()) : at::Tensor();
    if (gathered) {
      const T* src = gout.const_data_ptr<T>();
      T* dst = gt.mutable_data_ptr<T>();
      for_each_image(r0, r1, P, [&](int64_t n, int64_t p, int64_t len, int64_t t) {
        transpose_tiles(src + n * g.out_channels * P + p, P, dst + t * g.out_channels, g.out_channels,
                        g.out_channels, len);
      });
    }
    const at::Tensor gouts = by_tap ? tap_grad_outputs(gt, taps) : at::Tensor();
    // per tap, the grad columns and the columns are compact in the tile's buffers
    const int64_t* slot = by_tap ? taps.slot.data() : nullptr;
    if (need_columns && by_tap) {
      at::Tensor gcompact = compact_in(gcol_tile, taps);
      tap_grad_columns(gouts, taps, gcompact);
    } else if (need_columns && gathered) {
      for (int64_t k = 0; k < g.groups; ++k) {
        at::Tensor block = group(gcol_tile, k);
        at::mm_out(block, gt.narrow(1, k * per_out, per_out), weight[k]);
      }
    } else if (need_columns) {
      for (int64_t k = 0; k < g.groups; ++k) {
        for_each_image(r0, r1, P, [&](int64_t n, int64_t p, int64_t len, int64_t t) {
          at::Tensor block = group(gcol_tile, k).narrow(0, t, len);
          at::mm_out(block, gout_block(n, k, p, len).t(), weight[k]);
        });
      }
    }
    if (d.need_offset) {
      backward_rows(c, r0, r1, gcol_tile.const_data_ptr<T>(), d.need_weight ? col_tile.mutable_data_ptr<T>() : nullptr,
                    d.goff, d.gmask, d.need_input ? gxp : nullptr, slot);
    } else {
      if (d.need_weight) sample_rows(c, r0, r1, col_tile.mutable_data_ptr<T>(), slot);
      if (d.need_input) scatter_rows(c, r0, r1, gcol_tile.const_data_ptr<T>(), gxp, slot);
    }
    if (d.need_weight && by_tap) {
      tap_weight_grads(compact_in(col_tile, taps), gouts, taps, gw);
    } else if (d.need_weight && gathered) {
      for (int64_t k = 0; k < g.groups; ++k) gw[k].addmm_(group(col_tile, k).t(), gt.narrow(1, k * per_out, per_out));
    } else if (d.need_weight) {
      for (int64_t k = 0; k < g.groups; ++k) {
        for_each_image(r0, r1, P, [&](int64_t n, int64_t p, int64_t len, int64_t t) {
          gw[k].addmm_(group(col_tile, k).narrow(0, t, len).t(), gout_block(n, k, p, len).t());
        });
      }
    }
  }

  // The weight gradient accumulates transposed, [groups, taps * C_in / groups, C_out / groups]:
  // MKL runs that GEMM orientation 5-15% faster than the weight's own.
  at::Tensor zero_weight_grad() const {
    return at::zeros({g.groups, weight.size(2), weight.size(1)}, weight.options());
  }

  // The transposed weight gradient -> [C_out, C_in / groups, kh, kw]: per group, [taps x C_in / groups,
  // C_out / groups] -> [C_out / groups, taps x C_in / groups] in transposed blocks, then per output
  // channel [taps, C_in / groups] -> [C_in / groups, taps]. Element by element, the first step read
  // with a stride of C_out / groups and took a tenth of a dense layer's forward+backward (perf).
  at::Tensor weight_shaped(const at::Tensor& grad) const {
    const int64_t per_group = g.in_channels / g.groups, per_out = g.out_channels / g.groups, K = g.taps();
    const int64_t row = K * per_group;
    at::Tensor out = at::empty({g.out_channels, per_group, g.kernel_h, g.kernel_w}, grad.options());
    at::Tensor by_out = workspace(kWeightGrad, {g.out_channels, row}, grad.options());
    const T* src = grad.const_data_ptr<T>();
    T* mid = by_out.mutable_data_ptr<T>();
    T* dst = out.mutable_data_ptr<T>();
    constexpr int64_t B = kTransposeBlock;
    const int64_t bands = (row + B - 1) / B;
    at::parallel_for(0, g.groups * bands, grain_for(B * per_out), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t k = i / bands, r0 = (i % bands) * B;
        transpose_tiles(src + (k * row + r0) * per_out, per_out, mid + k * per_out * row + r0, row,
                        std::min(B, row - r0), per_out);
      }
    });
    at::parallel_for(0, g.out_channels, grain_for(row), [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) transpose_block(mid + o * row, per_group, dst + o * row, K, K, per_group);
    });
    return out;
  }
};

// ---------------------------------------------------------------------------------------
// The direct plan, for grouped and depthwise convolution. With C_in / groups and C_out / groups
// small, the im2col plan's per-group GEMMs are thin ([rows, taps * C_in / groups] x [..., C_out /
// groups]) and run far below MKL's speed, while the columns still cost a full dense layer's
// sampling and memory traffic. Here no columns exist: per output position and tap, the bilinear
// corners and weights of each offset group are computed once (as in the im2col plan) and the
// group's channels are blended and multiplied by the weights in the same pass over the padded
// channels-last input, accumulating a channels-last output row. Depthwise layers (one input and
// one output channel per group) multiply per channel inside the blend loop; other grouped
// layers blend every tap of a block of positions into a scratch block, then add each channel's
// products with the C_out / groups weights of its group (a short vector loop over output channels),
// all taps into accumulators held in registers.
// Backward: the same pass in reverse per position and tap (grad column = weights x grad_output,
// then the offset and mask sums, the input-gradient spread and the weight-gradient products),
// over a fixed number of slices of the positions, each adding into its own input- and
// weight-gradient buffers, summed in slice order: deterministic at a fixed thread count.

// All taps of one depthwise position for `len` channels: acc[i] += sum_k w[k * w_stride + i] * sum_j
// coeff[(4k + j) * coeff_stride] * corner_j of tap k. The taps are the inner loop, so each channel's accumulator
// stays in a register and the weights apply in the blend's pass; an outside tap points at zeros
// with zero coefficients instead of branching.
template <typename T>
inline __attribute__((always_inline)) void depthwise_taps_body(const T* const* corner, const T* coeff,
                                                               int64_t coeff_stride, int64_t taps, int64_t right,
                                                               int64_t down, const T* w, int64_t w_stride, T* acc,
                                                               int64_t len) {
  const int64_t cs = coeff_stride;
  // runs of a fixed width, so the accumulators of a run are registers the compiler can keep
  constexpr int64_t kRun = 32 / sizeof(T) * 2;
  int64_t i0 = 0;
  for (; i0 + kRun <= len; i0 += kRun) {
    T a[kRun];
    for (int64_t i = 0; i < kRun; ++i) a[i] = acc[i0 + i];
    for (int64_t k = 0; k < taps; ++k) {
      const T *x = corner[k] + i0, *wk = w + k * w_stride + i0;
      const T *ck = coeff + 4 * k * cs, c0 = ck[0], c1 = ck[cs], c2 = ck[2 * cs], c3 = ck[3 * cs];
#pragma omp simd
      for (int64_t i = 0; i < kRun; ++i)
        a[i] += wk[i] * (c0 * x[i] + c1 * x[i + right] + c2 * x[i + down] + c3 * x[i + down + right]);
    }
    for (int64_t i = 0; i < kRun; ++i) acc[i0 + i] = a[i];
  }
  for (int64_t k = 0; k < taps; ++k) {
    const T *x = corner[k], *wk = w + k * w_stride;
    const T *ck = coeff + 4 * k * cs, c0 = ck[0], c1 = ck[cs], c2 = ck[2 * cs], c3 = ck[3 * cs];
    for (int64_t i = i0; i < len; ++i)
      acc[i] += wk[i] * (c0 * x[i] + c1 * x[i + right] + c2 * x[i + down] + c3 * x[i + down + right]);
  }
}

// Taps of a grouped layer for a block of `count` positions: dst[q, g * len + i] += src_t[q, j] * w_t[j, i]
// summed over the taps t < taps (src_t = src + t * count * src row, w_t = w + t * w_tap_stride) and the
// src channels j of each group g (src_per_group of them). The forward's products (src = the samples
// of every tap, w = [taps, C_in, C_out / groups]) and the backward's grad columns of one tap (src =
// grad_output, w = [C_out, C_in / groups]).
template <typename T>
inline __attribute__((always_inline)) void group_products_any(const T* src, int64_t src_per_group, const T* w,
                                                              int64_t taps, int64_t w_tap_stride, T* dst, int64_t len,
                                                              int64_t count, int64_t groups) {
  const int64_t src_stride = groups * src_per_group, dst_stride = groups * len;
  for (int64_t t = 0; t < taps; ++t) {
    const T* src_t = src + t * count * src_stride;
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t j = g * src_per_group; j < (g + 1) * src_per_group; ++j) {
        const T* wj = w + t * w_tap_stride + j * len;
        for (int64_t q = 0; q < count; ++q) {
          T* d = dst + q * dst_stride + g * len;
          const T v = src_t[q * src_stride + j];
#pragma omp simd
          for (int64_t i = 0; i < len; ++i) d[i] += v * wj[i];
        }
      }
    }
  }
}

// The same for a common group width kLen, known when compiled: the accumulators of kRun positions
// (kRun * kLen values) stay in registers through every tap and src channel of a group, and the
// multiply-adds of different positions are independent. With a run-time width the loop re-loads
// and stores them for every channel, a third of the speed. Held across the taps, they are loaded
// and stored once per block rather than once per tap, which at 8 output channels a group had been
// a third of the products' loads and stores.
template <typename T, int64_t kLen>
inline __attribute__((always_inline)) void group_products_fixed(const T* src, int64_t src_per_group, const T* w,
                                                                int64_t taps, int64_t w_tap_stride, T* dst,
                                                                int64_t count, int64_t groups) {
  constexpr int64_t kRun = kLen >= 16 ? 4 : 8;
  const int64_t src_stride = groups * src_per_group, dst_stride = groups * kLen;
  const int64_t src_tap_stride = count * src_stride;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t q0 = 0; q0 < count; q0 += kRun) {
      const int64_t run = std::min(kRun, count - q0);
      T a[kRun][kLen];
      const T* v[kRun];
      for (int64_t q = 0; q < kRun; ++q) {
        // a short run repeats its last position; only the first `run` are stored
        const int64_t at = q0 + std::min(q, run - 1);
        v[q] = src + at * src_stride + g * src_per_group;
        for (int64_t i = 0; i < kLen; ++i) a[q][i] = dst[at * dst_stride + g * kLen + i];
      }
      for (int64_t t = 0; t < taps; ++t) {
        const T* wg = w + t * w_tap_stride + g * src_per_group * kLen;
        for (int64_t j = 0; j < src_per_group; ++j) {
          const T* wj = wg + j * kLen;
          for (int64_t q = 0; q < kRun; ++q) {
            const T x = v[q][t * src_tap_stride + j];
#pragma omp simd
            for (int64_t i = 0; i < kLen; ++i) a[q][i] += x * wj[i];
          }
        }
      }
      for (int64_t q = 0; q < run; ++q)
        for (int64_t i = 0; i < kLen; ++i) dst[(q0 + q) * dst_stride + g * kLen + i] = a[q][i];
    }
  }
}

template <typename T>
inline __attribute__((always_inline)) void group_products_body(const T* src, int64_t src_per_group, const T* w,
                                                               int64_t taps, int64_t w_tap_stride, T* dst, int64_t len,
                                                               int64_t count, int64_t groups) {
  switch (len) {
    case 4:
      return group_products_fixed<T, 4>(src, src_per_group, w, taps, w_tap_stride, dst, count, groups);
    case 8:
      return group_products_fixed<T, 8>(src, src_per_group, w, taps, w_tap_stride, dst, count, groups);
    case 16:
      return group_products_fixed<T, 16>(src, src_per_group, w, taps, w_tap_stride, dst, count, groups);
    default:
      return group_products_any(src, src_per_group, w, taps, w_tap_stride, dst, len, count, groups);
  }
}

// The weight gradient of a grouped tap at one position: gw[c, o] += sample[c] * gout[g * per_out + o].
template <typename T>
inline __attribute__((always_inline)) void group_weight_grads_body(const T* sample, const T* gout, T* gw,
                                                                   int64_t groups, int64_t per_group,
                                                                   int64_t per_out) {
  for (int64_t g = 0; g < groups; ++g) {
    const T* go = gout + g * per_out;
    for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
      T* dst = gw + c * per_out;
      const T v = sample[c];
#pragma omp simd
      for (int64_t o = 0; o < per_out; ++o) dst[o] += v * go[o];
    }
  }
}

// One depthwise tap backward, for the channels of one offset group: with gcol = w * gout (the
// gradient of the modulated sample), accumulates gcol * corner per corner (for the offset and mask
// gradients, as gather_grads), gout * sample into the weight gradient `gw` and coeff * gcol into
// the four corners of the input gradient `gx` (as spread); gw or gx may be null.
template <typename T, bool kWeight, bool kInput>
inline __attribute__((always_inline)) void depthwise_backward_body(Corners<T> s, const T* coeff, const T* w,
                                                                   const T* gout, T* gw, T* gx, int64_t len,
                                                                   T per_corner[4]) {
  const T c0 = coeff[0], c1 = coeff[1], c2 = coeff[2], c3 = coeff[3];
  const T *x0 = s.x, *x1 = s.x + s.right, *x2 = s.x + s.down, *x3 = s.x + s.down + s.right;
  T *g0 = gx, *g1 = gx + s.right, *g2 = gx + s.down, *g3 = gx + s.down + s.right;
  T p0 = 0, p1 = 0, p2 = 0, p3 = 0;
#pragma omp simd reduction(+ : p0, p1, p2, p3)
  for (int64_t i = 0; i < len; ++i) {
    const T gcol = w[i] * gout[i];
    p0 += gcol * x0[i];
    p1 += gcol * x1[i];
    p2 += gcol * x2[i];
    p3 += gcol * x3[i];
    if (kWeight) gw[i] += gout[i] * (c0 * x0[i] + c1 * x1[i] + c2 * x2[i] + c3 * x3[i]);
    if (kInput) {
      // the corners are distinct pixels, and gx is another buffer than the input
      g0[i] += c0 * gcol;
      g1[i] += c1 * gcol;
      g2[i] += c2 * gcol;
      g3[i] += c3 * gcol;
    }
  }
  per_corner[0] += p0;
  per_corner[1] += p1;
  per_corner[2] += p2;
  per_corner[3] += p3;
}

template <typename T>
inline __attribute__((always_inline)) void depthwise_backward_any(Corners<T> s, const T* coeff, const T* w,
                                                                  const T* gout, T* gw, T* gx, int64_t len,
                                                                  T per_corner[4]) {
  if (gw && gx) {
    depthwise_backward_body<T, true, true>(s, coeff, w, gout, gw, gx, len, per_corner);
  } else if (gw) {
    depthwise_backward_body<T, true, false>(s, coeff, w, gout, gw, gx, len, per_corner);
  } else if (gx) {
    depthwise_backward_body<T, false, true>(s, coeff, w, gout, gw, gx, len, per_corner);
  } else {
    depthwise_backward_body<T, false, false>(s, coeff, w, gout, gw, gx, len, per_corner);
  }
}

SEGDCN_SIMD_CLONES void depthwise_taps(const float* const* corner, const float* coeff, int64_t coeff_stride,
                                       int64_t taps, int64_t right, int64_t down, const float* w, int64_t w_stride,
                                       float* acc, int64_t len) {
  depthwise_taps_body(corner, coeff, coeff_stride, taps, right, down, w, w_stride, acc, len);
}
SEGDCN_SIMD_CLONES void depthwise_taps(const double* const* corner, const double* coeff, int64_t coeff_stride,
                                       int64_t taps, int64_t right, int64_t down, const double* w, int64_t w_stride,
                                       double* acc, int64_t len) {
  depthwise_taps_body(corner, coeff, coeff_stride, taps, right, down, w, w_stride, acc, len);
}
SEGDCN_SIMD_CLONES void group_products(const float* src, int64_t src_per_group, const float* w, int64_t taps,
                                       int64_t w_tap_stride, float* dst, int64_t len, int64_t count, int64_t groups) {
  group_products_body(src, src_per_group, w, taps, w_tap_stride, dst, len, count, groups);
}
SEGDCN_SIMD_CLONES void group_products(const double* src, int64_t src_per_group, const double* w, int64_t taps,
                                       int64_t w_tap_stride, double* dst, int64_t len, int64_t count, int64_t groups) {
  group_products_body(src, src_per_group, w, taps, w_tap_stride, dst, len, count, groups);
}
SEGDCN_SIMD_CLONES void group_weight_grads(const float* sample, const float* gout, float* gw, int64_t groups, int64_t per_group, int64_t per_out) {
  group_weight_grads_body(sample, gout, gw, groups, per_group, per_out);
}
SEGDCN_SIMD_CLONES void group_weight_grads(const double* sample, const double* gout, double* gw, int64_t groups, int64_t per_group, int64_t per_out) {
  group_weight_grads_body(sample, gout, gw, groups, per_group, per_out);
}
SEGDCN_SIMD_CLONES void depthwise_backward(Corners<float> s, const float* coeff, const float* w, const float* gout,
                                           float* gw, float* gx, int64_t len, float per_corner[4]) {
  depthwise_backward_any(s, coeff, w, gout, gw, gx, len, per_corner);
}
SEGDCN_SIMD_CLONES void depthwise_backward(Corners<double> s, const double* coeff, const double* w,
                                           const double* gout, double* gw, double* gx, int64_t len,
                                           double per_corner[4]) {
  depthwise_backward_any(s, coeff, w, gout, gw, gx, len, per_corner);
}

// The taps of `count` consecutive positions of one image for one offset group and tap, exactly as
// TapReader gives them (the boundary rule is bilinear.h's split_sample), in arrays over the
// positions and without branches: dy, dx (and the mask, or null) are those positions' offsets,
// contiguous in the offset tensor; h[q] + dh and w[q] + dw their places on the input grid.
// coeff[j * count + q] is corner j's bilinear weight times the mask, as modulated_weights gives it. With 8
// offset groups a depthwise position has 72 taps for 32 channels each, and computed one by one, with
// a branch per tap, their arithmetic took as long as the channel loops. GCC keeps this loop scalar
// under its default -ftrapping-math (built with -fno-trapping-math every loop vectorised and the
// depthwise backward got slower), so float has tap_run_avx2 below.
template <typename T, bool kMask>
inline __attribute__((always_inline)) void tap_run_loop(const T* dy, const T* dx, const T* mask, const int32_t* h,
                                                        const int32_t* w, int32_t dh, int32_t dw, int64_t count,
                                                        int64_t height, int64_t width, int32_t* pixel, T* lh, T* lw,
                                                        T* m, int32_t* inside, T* coeff, int64_t coeff_stride) {
  const int32_t row = int32_t(width + 2);
#pragma omp simd
  for (int64_t q = 0; q < count; ++q) {
    const T y = T(h[q] + dh) + dy[q], x = T(w[q] + dw) + dx[q];
    T fy, fx, ly, lx;
    const bool in = split_sample(y, x, height, width, fy, fx, ly, lx);  // outside: corner (0, 0)
    pixel[q] = (int32_t(fy) + 1) * row + int32_t(fx) + 1;
    lh[q] = ly;
    lw[q] = lx;
    const T mq = in ? (kMask ? mask[q] : T(1)) : T(0);
    m[q] = mq;
    inside[q] = in;
    const T hh = T(1) - ly, hw = T(1) - lx;  // bilinear_weights, then the mask
    coeff[q] = (hh * hw) * mq;
    coeff[coeff_stride + q] = (hh * lx) * mq;
    coeff[2 * coeff_stride + q] = (ly * hw) * mq;
    coeff[3 * coeff_stride + q] = (ly * lx) * mq;
  }
}

template <typename T>
inline __attribute__((always_inline)) void tap_run_body(const T* dy, const T* dx, const T* mask, const int32_t* h,
                                                        const int32_t* w, int32_t dh, int32_t dw, int64_t count,
                                                        int64_t height, int64_t width, int32_t* pixel, T* lh, T* lw,
                                                        T* m, int32_t* inside, T* coeff, int64_t coeff_stride) {
  if (mask) {
    tap_run_loop<T, true>(dy, dx, mask, h, w, dh, dw, count, height, width, pixel, lh, lw, m, inside, coeff,
                          coeff_stride);
  } else {
    tap_run_loop<T, false>(dy, dx, mask, h, w, dh, dw, count, height, width, pixel, lh, lw, m, inside, coeff,
                           coeff_stride);
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
// tap_run_loop for float in AVX2, eight positions at a time: the same IEEE operations (an add, a
// floor, a subtraction, compares and selects), so the same bits. Scalar, the loop was 12% of a
// depthwise forward with 8 offset groups (perf), three quarters of its channel loops' time.
__attribute__((target("avx2"))) void tap_run_avx2(const float* dy, const float* dx, const float* mask,
                                                    const int32_t* h, const int32_t* w, int32_t dh, int32_t dw,
                                                    int64_t count, int64_t height, int64_t width, int32_t* pixel,
                                                    float* lh, float* lw, float* m, int32_t* inside, float* coeff) {
  const __m256 minus_one = _mm256_set1_ps(-1.0f), one = _mm256_set1_ps(1.0f);
  const __m256 fheight = _mm256_set1_ps(float(height)), fwidth = _mm256_set1_ps(float(width));
  const __m256i vdh = _mm256_set1_epi32(dh), vdw = _mm256_set1_epi32(dw), ione = _mm256_set1_epi32(1);
  const __m256i row = _mm256_set1_epi32(int32_t(width + 2));
  int64_t q = 0;
  for (; q + 8 <= count; q += 8) {
    const __m256 y = _mm256_add_ps(
        _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + q)), vdh)),
        _mm256_loadu_ps(dy + q));
    const __m256 x = _mm256_add_ps(
        _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + q)), vdw)),
        _mm256_loadu_ps(dx + q));
    const __m256 in = _mm256_and_ps(
        _mm256_and_ps(_mm256_cmp_ps(y, minus_one, _CMP_GT_OQ), _mm256_cmp_ps(x, minus_one, _CMP_GT_OQ)),
        _mm256_and_ps(_mm256_cmp_ps(y, fheight, _CMP_LT_OQ), _mm256_cmp_ps(x, fwidth, _CMP_LT_OQ)));
    const __m256 floor_y = _mm256_round_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m256 floor_x = _mm256_round_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m256 fy = _mm256_and_ps(in, floor_y), fx = _mm256_and_ps(in, floor_x);  // outside: corner (0, 0)
    const __m256 ly = _mm256_and_ps(in, _mm256_sub_ps(y, floor_y)), lx = _mm256_and_ps(in, _mm256_sub_ps(x, floor_x));
    _mm256_storeu_ps(lh + q, ly);
    _mm256_storeu_ps(lw + q, lx);
    const __m256i top = _mm256_add_epi32(_mm256_cvttps_epi32(fy), ione);
    const __m256i left = _mm256_add_epi32(_mm256_cvttps_epi32(fx), ione);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pixel + q), _mm256_add_epi32(_mm256_mullo_epi32(top, row), left));
    const __m256 mq = _mm256_and_ps(in, mask ? _mm256_loadu_ps(mask + q) : one);
    _mm256_storeu_ps(m + q, mq);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(inside + q), _mm256_srli_epi32(_mm256_castps_si256(in), 31));
    const __m256 hh = _mm256_sub_ps(one, ly), hw = _mm256_sub_ps(one, lx);  // bilinear_weights, then the mask
    _mm256_storeu_ps(coeff + q, _mm256_mul_ps(_mm256_mul_ps(hh, hw), mq));
    _mm256_storeu_ps(coeff + count + q, _mm256_mul_ps(_mm256_mul_ps(hh, lx), mq));
    _mm256_storeu_ps(coeff + 2 * count + q, _mm256_mul_ps(_mm256_mul_ps(ly, hw), mq));
    _mm256_storeu_ps(coeff + 3 * count + q, _mm256_mul_ps(_mm256_mul_ps(ly, lx), mq));
  }
  if (q < count) {
    tap_run_body(dy + q, dx + q, mask ? mask + q : nullptr, h + q, w + q, dh, dw, count - q, height, width, pixel + q,
                 lh + q, lw + q, m + q, inside + q, coeff + q, count);
  }
}
#endif

void tap_run(const float* dy, const float* dx, const float* mask, const int32_t* h, const int32_t* w, int32_t dh,
             int32_t dw, int64_t count, int64_t height, int64_t width, int32_t* pixel, float* lh, float* lw, float* m,
             int32_t* inside, float* coeff) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (has_avx2())
    return tap_run_avx2(dy, dx, mask, h, w, dh, dw, count, height, width, pixel, lh, lw, m, inside, coeff);
#endif
  tap_run_body(dy, dx, mask, h, w, dh, dw, count, height, width, pixel, lh, lw, m, inside, coeff, count);
}
SEGDCN_SIMD_CLONES void tap_run(const double* dy, const double* dx, const double* mask, const int32_t* h,
                                const int32_t* w, int32_t dh, int32_t dw, int64_t count, int64_t height, int64_t width,
                                int32_t* pixel, double* lh, double* lw, double* m, int32_t* inside,
                                double* coeff) {
  tap_run_body(dy, dx, mask, h, w, dh, dw, count, height, width, pixel, lh, lw, m, inside, coeff, count);
}

// Channels-last copies: dst[n, b, a] = src[n, a, b] for m images, parallel over images and bands
// of rows of the destination.
template <typename T>
void transpose_images(const T* src, T* dst, int64_t m, int64_t a, int64_t b) {
  constexpr int64_t B = kTransposeBlock;
  const int64_t bands = (b + B - 1) / B;
  at::parallel_for(0, m * bands, grain_for(B * a), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / bands, b0 = (i % bands) * B;
      transpose_tiles(src + n * a * b + b0, b, dst + n * a * b + b0 * a, a, a, std::min(B, b - b0));
    }
  });
}

// Upper bound on one padded channels-last buffer of the direct plan (input, or one slice's input
// gradient); a chunk holds at least one image.
constexpr int64_t kDirectChunkBytes = int64_t(32) << 20;

// The taps of a block of `count` positions as block_taps computes them, one array per field:
// entry e = t * count + q for t = og * K + k (offset group og, tap k) and position q. The
// coefficients (corner j's bilinear weight times the mask, 0 outside) are at
// coeff[(4 * t + j) * count + q]: tap_run computes them eight positions at a time. Computed per
// (position, tap) beside the channel loops, and copied into an array of Tap structs, the taps took
// half as long as the depthwise blends of 32 channels they feed (perf, 8 offset groups); this way,
// a quarter.
template <typename T>
struct BlockTaps {
  int64_t count = 0;
  std::vector<int64_t> pixel;  // top-left corner in the padded plane
  std::vector<int32_t> inside;
  std::vector<T> lh, lw, m, coeff;

  explicit BlockTaps(int64_t taps)
      : pixel(taps * kBlock), inside(taps * kBlock), lh(taps * kBlock), lw(taps * kBlock), m(taps * kBlock),
        coeff(4 * taps * kBlock) {}

  // The coefficients of (t, q): corner j's at [j * count].
  const T* coeffs(int64_t t, int64_t q) const { return coeff.data() + 4 * t * count + q; }
  T* coeffs(int64_t t, int64_t q) { return coeff.data() + 4 * t * count + q; }
  void coefficients(int64_t t, int64_t q, T out[4]) const {
    const T* c = coeffs(t, q);
    for (int j = 0; j < 4; ++j) out[j] = c[j * count];
  }
};

// How far block_taps reads the offsets ahead: two blocks of positions.
constexpr int64_t kPrefetchAhead = 2 * kBlock;

// The taps of a block of `count` (<= kBlock) consecutive positions of one image, from row r0 of the chunk.
// They are computed in the offsets' own order (positions fastest), so the reads are contiguous;
// position by position, each (offset group, tap) is another cache line and page, and with 8
// offset groups those misses cost more than the channel loops.
template <typename T>
void block_taps(const Chunk<T>& c, int64_t r0, int64_t count, GridRow* grid, BlockTaps<T>& taps) {
  const DeformConvGeometry& g = c.g;
  const int64_t K = g.taps(), P = g.out_positions(), OG = g.offset_groups;
  const int64_t n = r0 / P, p0 = r0 % P;
  taps.count = count;
  if (c.plane() > std::numeric_limits<int32_t>::max() / 2) {  // tap_run's indices are 32-bit
    for (int64_t q = 0; q < count; ++q) grid[q] = c.tap_at.row(p0 + q);
    for (int64_t t = 0; t < OG * K; ++t) {
      for (int64_t q = 0; q < count; ++q) {
        const Tap<T> tap = c.tap_at(n, t / K, t % K, grid[q]);
        const int64_t e = t * count + q;
        taps.pixel[e] = tap.pixel;
        taps.inside[e] = tap.inside;
        taps.lh[e] = tap.lh;
        taps.lw[e] = tap.lw;
        taps.m[e] = tap.m;
        T coeff[4];
        modulated_weights(tap, coeff);
        T* cq = taps.coeffs(t, q);
        for (int j = 0; j < 4; ++j) cq[j * count] = coeff[j];
      }
    }
    return;
  }
  int32_t h[kBlock], w[kBlock], pixel[kBlock];
  for (int64_t q = 0; q < count; ++q) {
    grid[q] = c.tap_at.row(p0 + q);
    h[q] = int32_t(grid[q].h);
    w[q] = int32_t(grid[q].w);
  }
  const TapReader<T>& at = c.tap_at;
  for (int64_t og = 0; og < OG; ++og) {
    const int64_t nog = n * OG + og;
    for (int64_t k = 0; k < K; ++k) {
      const T* dy = at.offset + (nog * 2 * K + 2 * k) * P + p0;
      const T* mask = at.mask ? at.mask + (nog * K + k) * P + p0 : nullptr;
      // Each (offset group, tap) is a stream of its own through the offsets (144 with 8 offset
      // groups), more than the hardware prefetcher follows: unprefetched, tap_run waited on memory.
      __builtin_prefetch(dy + kPrefetchAhead);
      __builtin_prefetch(dy + P + kPrefetchAhead);
      if (mask) __builtin_prefetch(mask + kPrefetchAhead);
      const int64_t t = og * K + k, e = t * count;
      tap_run(dy, dy + P, mask, h, w, int32_t(at.tap_h[k]), int32_t(at.tap_w[k]), count, g.height, g.width,
              pixel, taps.lh.data() + e, taps.lw.data() + e, taps.m.data() + e, taps.inside.data() + e,
              taps.coeffs(t, 0));
      for (int64_t q = 0; q < count; ++q) taps.pixel[e + q] = pixel[q];
    }
  }
}

// Rows of image n of a chunk's columns, full (as sample_rows writes them), from the taps of their
// block: the panels' sampling, whose taps block_taps computes eight positions at a time. Computed one
// (position, tap) at a time in sample_rows, they were a sixth of a 16x16 forward (perf).
template <typename T>
void sample_block(const Chunk<T>& c, int64_t n, int64_t count, const BlockTaps<T>& taps, T* rows) {
  const int64_t K = c.g.taps(), per_group = c.g.in_channels / c.g.groups;
  const Segment* segments = c.segments.data();
  for (int64_t q = 0; q < count; ++q) {
    T* row = rows + q * c.row_size();
    for (int64_t k = 0; k < K; ++k) {
      T* tap_row = row + k * per_group;
      for (int64_t og = 0; og < c.g.offset_groups; ++og) {
        const Segment *first = segments + c.og_starts[og], *last = segments + c.og_starts[og + 1];
        const int64_t t = og * K + k, e = t * count + q;
        if (!taps.inside[e]) {
          for (const Segment* s = first; s != last; ++s)
            std::fill(row + c.column(*s, k), row + c.column(*s, k) + (s->end - s->begin), T(0));
          continue;
        }
        T coeff[4];
        taps.coefficients(t, q, coeff);
        blend_segments(c.corners(n, taps.pixel[e]), coeff, first, last, tap_row);
      }
    }
  }
}

template <typename T>
struct DirectDeformConv {
  const DeformConvGeometry& g;
  int64_t per_group, per_out, K, P, C, OG, Cg, chunk_images;
  bool depthwise;
  at::Tensor weight;    // [taps, C_in, C_out / groups]: the forward's and the weight gradient's layout
  at::Tensor weight_t;  // [taps, C_out, C_in / groups]: the grad columns' (grouped layers only)

  DirectDeformConv(const DeformConvGeometry& geometry, const at::Tensor& w) : g(geometry) {
    per_group = g.in_channels / g.groups;
    per_out = g.out_channels / g.groups;
    K = g.taps();
    P = g.out_positions();
    C = g.in_channels;
    OG = g.offset_groups;
    Cg = g.channels_per_offset_group();
    depthwise = per_group == 1 && per_out == 1;
    const int64_t plane_bytes = (g.height + 2) * (g.width + 2) * C * int64_t(sizeof(T));
    chunk_images = std::max<int64_t>(1, std::min<int64_t>(g.batch, kDirectChunkBytes / plane_bytes));
    const at::Tensor by_group = w.contiguous().view({g.groups, per_out, per_group, K});
    weight = by_group.permute({3, 0, 2, 1}).contiguous();
    if (!depthwise) weight_t = by_group.permute({3, 0, 1, 2}).contiguous();
  }

  Chunk<T> chunk(const at::Tensor& padded, const at::Tensor& offset, const at::Tensor& mask) const {
    return Chunk<T>{g, padded.const_data_ptr<T>(),
                    TapReader<T>(g, offset.const_data_ptr<T>(), g.use_mask ? mask.const_data_ptr<T>() : nullptr),
                    {}};
  }

  int64_t down() const { return (g.width + 2) * C; }

  // Corners of a tap for the channels of offset group og, in a padded buffer like the chunk's input.
  Corners<T> corners(const T* base, const Chunk<T>& c, int64_t n, int64_t pixel, int64_t og) const {
    return {base + (n * c.plane() + pixel) * C + og * Cg, C, down()};
  }

  // Calls fn(r0, count) for blocks of up to kBlock rows of [begin, end) that stay in one image.
  template <typename Fn>
  void for_each_block(int64_t begin, int64_t end, Fn fn) const {
    for (int64_t r0 = begin; r0 < end;) {
      const int64_t count = std::min({kBlock, end - r0, P - r0 % P});
      fn(r0, count);
      r0 += count;
    }
  }

  // One block of a grouped layer's forward: the samples of the block's positions at every tap
  // (sample: [taps, count, C]), then their products with the weights.
  void grouped_block(const Chunk<T>& c, int64_t n, int64_t count, const BlockTaps<T>& taps, const T* wf, T* sample,
                     T* acc) const {
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t q = 0; q < count; ++q) {
        for (int64_t og = 0; og < OG; ++og) {
          const int64_t t = og * K + k, e = t * count + q;
          T* dst = sample + (k * count + q) * C + og * Cg;
          if (!taps.inside[e]) {
            std::fill(dst, dst + Cg, T(0));
            continue;
          }
          T coeff[4];
          taps.coefficients(t, q, coeff);
          blend(corners(c.xp, c, n, taps.pixel[e], og), coeff, dst, Cg);
        }
      }
    }
    group_products(sample, per_group, wf, K, C * per_out, acc, per_out, count, g.groups);
  }

  // The bias (contiguous, as forward_float passes it, or undefined) starts the accumulators: a
  // separate pass costs as much as a depthwise tap.
  void forward(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask, const at::Tensor& bias,
               at::Tensor& output) const {
    const int64_t Cout = g.out_channels;
    const T* wf = weight.const_data_ptr<T>();
    const at::Tensor bias_c = bias.defined() ? bias : at::zeros({Cout}, input.options());
    const T* b = bias_c.const_data_ptr<T>();
    at::Tensor padded_input = padded_buffer(g, chunk_images, input.options(), kPaddedInput, true);
    // Where a depthwise tap outside the image reads its four corners: zeros, so that it adds exactly
    // 0 whatever the input holds (0 x inf would not), as the im2col plan's zero columns do.
    const at::Tensor zero_corners = depthwise ? at::zeros({down() + 2 * C}, input.options()) : at::Tensor();
    // The outputs channels-last, transposed once per chunk. (Transposing each block of positions
    // into the output while in cache was slower: its writes are partial cache lines.)
    at::Tensor rows = workspace(kRows, {chunk_images, P, Cout}, input.options());
    for (int64_t n0 = 0; n0 < g.batch; n0 += chunk_images) {
      const int64_t m = std::min(chunk_images, g.batch - n0);
      const at::Tensor padded = fill_padded<T>(padded_input, input.narrow(0, n0, m));
      const Chunk<T> c = chunk(padded, offset.narrow(0, n0, m), g.use_mask ? mask.narrow(0, n0, m) : mask);
      T* out_rows = rows.mutable_data_ptr<T>();
      at::parallel_for(0, m * P, std::max(kBlock, grain_for(K * C)), [&](int64_t begin, int64_t end) {
        BlockTaps<T> taps(OG * K);
        std::vector<T> sample(depthwise ? 0 : K * kBlock * C);
        std::vector<const T*> corner(K);
        GridRow grid[kBlock];
        for_each_block(begin, end, [&](int64_t r0, int64_t count) {
          const int64_t n = r0 / P;
          block_taps(c, r0, count, grid, taps);
          T* acc = out_rows + r0 * Cout;
          for (int64_t q = 0; q < count; ++q) std::copy(b, b + Cout, acc + q * Cout);
          if (depthwise) {
            for (int64_t q = 0; q < count; ++q) {
              for (int64_t og = 0; og < OG; ++og) {
                for (int64_t k = 0; k < K; ++k) {
                  const int64_t e = (og * K + k) * count + q;
                  corner[k] = taps.inside[e] ? c.xp + (n * c.plane() + taps.pixel[e]) * C + og * Cg
                                             : zero_corners.const_data_ptr<T>();
                }
                // the coefficients are zero outside: m is 0 there
                depthwise_taps(corner.data(), taps.coeffs(og * K, q), count, K, C, down(), wf + og * Cg, C,
                               acc + q * C + og * Cg, Cg);
              }
            }
          } else {
            grouped_block(c, n, count, taps, wf, sample.data(), acc);
          }
        });
      });
      transpose_images(rows.const_data_ptr<T>(), output.narrow(0, n0, m).mutable_data_ptr<T>(), m, P, Cout);
    }
  }

  void backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
                const at::Tensor& mask, at::Tensor& grad_input, at::Tensor& grad_weight, at::Tensor& grad_offset,
                at::Tensor& grad_mask) const {
    const int64_t Cout = g.out_channels;
    const bool need_input = grad_input.defined(), need_weight = grad_weight.defined();
    const bool need_offset = grad_offset.defined();
    const T* wf = weight.const_data_ptr<T>();
    const T* wt = depthwise ? nullptr : weight_t.const_data_ptr<T>();
    // Slices of the positions, each with its own gradient buffers: their number is the thread
    // count, not the scheduler's choice, so the order of the sums is fixed.
    const int64_t slices = std::max<int64_t>(
        1, std::min<int64_t>(at::get_num_threads(), chunk_images * P / std::max(kBlock, grain_for(K * C))));
    at::Tensor padded_input = padded_buffer(g, chunk_images, input.options(), kPaddedInput, true);
    at::Tensor gout_rows = workspace(kRows, {chunk_images, P, Cout}, input.options());
    at::Tensor grad_padded = need_input ? padded_buffer(g, slices * chunk_images, input.options(), kGradPadded)
                                              .view({slices, chunk_images, g.height + 2, g.width + 2, C})
                                        : at::Tensor();
    at::Tensor grad_w =
        need_weight ? workspace(kGradWeight, {slices, weight.numel()}, input.options()).zero_() : at::Tensor();
    for (int64_t n0 = 0; n0 < g.batch; n0 += chunk_images) {
      const int64_t m = std::min(chunk_images, g.batch - n0);
      const at::Tensor padded = fill_padded<T>(padded_input, input.narrow(0, n0, m));
      const Chunk<T> c = chunk(padded, offset.narrow(0, n0, m), g.use_mask ? mask.narrow(0, n0, m) : mask);
      transpose_images(grad_output.narrow(0, n0, m).const_data_ptr<T>(), gout_rows.mutable_data_ptr<T>(), m, Cout,
                       P);
      if (need_input && n0 > 0) grad_padded.zero_();
      const T* go_rows = gout_rows.const_data_ptr<T>();
      T* goff = need_offset ? grad_offset.narrow(0, n0, m).mutable_data_ptr<T>() : nullptr;
      T* gmask = need_offset && g.use_mask ? grad_mask.narrow(0, n0, m).mutable_data_ptr<T>() : nullptr;
      const int64_t rows = m * P, per_slice = (rows + slices - 1) / slices;
      at::parallel_for(0, slices, 1, [&](int64_t s_begin, int64_t s_end) {
        BlockTaps<T> taps(OG * K);
        std::vector<T> gcol(depthwise ? 0 : kBlock * C), col(depthwise ? 0 : kBlock * C);
        GridRow grid[kBlock];
        for (int64_t slice = s_begin; slice < s_end; ++slice) {
          T* gx = need_input ? grad_padded[slice].mutable_data_ptr<T>() : nullptr;
          T* gw = need_weight ? grad_w[slice].mutable_data_ptr<T>() : nullptr;
          for_each_block(slice * per_slice, std::min(rows, (slice + 1) * per_slice), [&](int64_t r0, int64_t count) {
            const int64_t n = r0 / P;
            block_taps(c, r0, count, grid, taps);
            const T* go = go_rows + r0 * Cout;
            for (int64_t k = 0; k < K; ++k) {
              const T* wk = wf + k * C * per_out;
              if (!depthwise) {
                std::fill(gcol.begin(), gcol.begin() + count * C, T(0));
                group_products(go, per_out, wt + k * Cout * per_group, 1, 0, gcol.data(), per_group, count, g.groups);
              }
              for (int64_t q = 0; q < count; ++q) {
                for (int64_t og = 0; og < OG; ++og) {
                  const int64_t t = og * K + k, e = t * count + q;
                  const T lh = taps.lh[e], lw = taps.lw[e], tap_m = taps.m[e];
                  T sums[3] = {0, 0, 0};  // d/dh, d/dw and d/dmask of the tap (before the mask's factor)
                  T* col_og = depthwise ? nullptr : col.data() + q * C + og * Cg;
                  if (taps.inside[e]) {
                    T coeff[4];
                    taps.coefficients(t, q, coeff);
                    const Corners<T> x = corners(c.xp, c, n, taps.pixel[e], og);
                    T* gx_tap = gx ? gx + (n * c.plane() + taps.pixel[e]) * C + og * Cg : nullptr;
                    if (depthwise) {
                      T per_corner[4] = {0, 0, 0, 0};
                      depthwise_backward(x, coeff, wk + og * Cg, go + q * Cout + og * Cg,
                                         gw ? gw + k * C + og * Cg : nullptr, gx_tap, Cg, per_corner);
                      add_corner_sums(lh, lw, per_corner, sums);
                    } else {
                      const T* gcol_og = gcol.data() + q * C + og * Cg;
                      if (need_offset) {
                        gather_grads(x, lh, lw, tap_m, gcol_og, gw ? col_og : nullptr, Cg, sums);
                      } else if (gw) {
                        blend(x, coeff, col_og, Cg);
                      }
                      if (gx_tap) spread(gx_tap, C, down(), coeff, gcol_og, Cg);
                    }
                  } else if (gw && col_og) {
                    std::fill(col_og, col_og + Cg, T(0));
                  }
                  if (!need_offset) continue;
                  const int64_t nog = n * OG + og, p = grid[q].p;
                  goff[(nog * 2 * K + 2 * k) * P + p] = tap_m * sums[0];
                  goff[(nog * 2 * K + 2 * k + 1) * P + p] = tap_m * sums[1];
                  if (gmask) gmask[(nog * K + k) * P + p] = sums[2];
                }
                if (gw && !depthwise) {
                  group_weight_grads(col.data() + q * C, go + q * Cout, gw + k * C * per_out, g.groups, per_group,
                                     per_out);
                }
              }
            }
          });
        }
      });
      if (need_input) {
        at::Tensor summed = grad_padded[0].narrow(0, 0, m);
        for (int64_t s = 1; s < slices; ++s) summed.add_(grad_padded[s].narrow(0, 0, m));
        unpad_into<T>(summed, grad_input.narrow(0, n0, m));
      }
    }
    if (need_weight) {
      at::Tensor summed = grad_w[0];
      for (int64_t s = 1; s < slices; ++s) summed.add_(grad_w[s]);
      // [taps, C_in, C_out / groups] -> [C_out, C_in / groups, kh, kw], always a copy: summed is a
      // workspace the next call overwrites
      grad_weight = summed.view({K, g.groups, per_group, per_out})
                        .permute({1, 3, 2, 0})
                        .clone(at::MemoryFormat::Contiguous)
                        .view({g.out_channels, per_group, g.kernel_h, g.kernel_w});
    }
  }
};

at::Tensor forward_float(const at::Tensor& input_, const at::Tensor& weight, const at::Tensor& offset_,
                         const c10::optional<at::Tensor>& mask_, const c10::optional<at::Tensor>& bias,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                         int64_t offset_groups) {
  const DeformConvGeometry g =
      deform_conv2d_geometry(input_, weight, offset_, mask_, bias, stride, padding, dilation, groups, offset_groups);
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor mask = g.use_mask ? mask_->contiguous() : at::Tensor();
  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  if (g.batch == 0) return output;
  const bool direct = deform_conv2d_plan(g.in_channels, g.out_channels, g.groups) == DeformConvPlan::kDirect;
  const at::Tensor bias_c = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_forward_cpu", [&] {
    if (direct) {
      DirectDeformConv<scalar_t>(g, weight).forward(input, offset, mask, bias_c, output);
    } else {
      TiledDeformConv<scalar_t>(g, weight).forward(input, offset, mask, bias_c, output);
    }
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_float(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight, const at::Tensor& offset_,
    const c10::optional<at::Tensor>& mask_, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t offset_groups, std::array<bool, 3> output_mask) {
  const DeformConvGeometry g = deform_conv2d_geometry(input_, weight, offset_, mask_, c10::nullopt, stride, padding,
                                                      dilation, groups, offset_groups);
  const std::vector<int64_t> out_shape{g.batch, g.out_channels, g.out_h, g.out_w};
  TORCH_CHECK(grad_output_.sizes() == at::IntArrayRef(out_shape),
              "deform_conv2d backward: grad_output must have shape ", out_shape, ", got ", grad_output_.sizes());
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor mask = g.use_mask ? mask_->contiguous() : at::Tensor();
  const at::Tensor grad_output = grad_output_.contiguous().to(input.scalar_type());
  at::Tensor grad_input = output_mask[0] ? at::empty_like(input) : at::Tensor();
  at::Tensor grad_offset = output_mask[2] ? at::empty_like(offset) : at::Tensor();
  at::Tensor grad_mask = output_mask[2] && g.use_mask ? at::empty_like(mask) : at::Tensor();
  at::Tensor grad_weight;
  const bool direct = deform_conv2d_plan(g.in_channels, g.out_channels, g.groups) == DeformConvPlan::kDirect;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv2d_backward_cpu", [&] {
    if (direct) {
      const DirectDeformConv<scalar_t> conv(g, weight);
      if (output_mask[1]) grad_weight = at::zeros_like(weight);  // stays zero for an empty batch
      if (g.batch > 0) conv.backward(grad_output, input, offset, mask, grad_input, grad_weight, grad_offset, grad_mask);
      return;
    }
    const TiledDeformConv<scalar_t> conv(g, weight);
    at::Tensor grad_w = output_mask[1] ? conv.zero_weight_grad() : at::Tensor();
    if (g.batch > 0) conv.backward(grad_output, input, offset, mask, grad_input, grad_w, grad_offset, grad_mask);
    if (output_mask[1]) grad_weight = conv.weight_shaped(grad_w);
  });
  auto or_empty = [&](const at::Tensor& t) { return t.defined() ? t : at::empty({0}, input.options()); };
  return {or_empty(grad_input), or_empty(grad_weight), or_empty(grad_offset), or_empty(grad_mask)};
}

bool is_half(const at::Tensor& t) { return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16; }

c10::optional<at::Tensor> to_float(const c10::optional<at::Tensor>& t) {
  if (t.has_value() && t->defined()) return t->to(at::kFloat);
  return t;
}

// The CPU computes half-precision calls in float32 and casts the results back. Both kernels run
// below autograd (as the CUDA ones): their own tensor ops are not the caller's graph, and recorded
// they would cost autograd metadata per view and refuse an out= GEMM that reads the caller's bias.
at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                       const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       int64_t offset_groups) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (is_half(input)) {
    return forward_float(input.to(at::kFloat), weight.to(at::kFloat), offset.to(at::kFloat), to_float(mask),
                         to_float(bias), stride, padding, dilation, groups, offset_groups)
        .to(input.scalar_type());
  }
  return forward_float(input, weight, offset, mask, bias, stride, padding, dilation, groups, offset_groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
    const c10::optional<at::Tensor>& mask, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t offset_groups, std::array<bool, 3> output_mask) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (is_half(input)) {
    const auto dtype = input.scalar_type();
    auto grads = backward_float(grad_output.to(at::kFloat), input.to(at::kFloat), weight.to(at::kFloat),
                                offset.to(at::kFloat), to_float(mask), stride, padding, dilation, groups,
                                offset_groups, output_mask);
    return {std::get<0>(grads).to(dtype), std::get<1>(grads).to(dtype), std::get<2>(grads).to(dtype),
            std::get<3>(grads).to(dtype)};
  }
  return backward_float(grad_output, input, weight, offset, mask, stride, padding, dilation, groups, offset_groups,
                        output_mask);
}

}  // namespace

TapGemms force_tap_gemms(TapGemms mode) { return forced_tap_gemms.exchange(mode); }

CpuKernels force_cpu_kernels(CpuKernels mode) { return forced_cpu_kernels.exchange(mode); }

const char* cpu_kernels_name(CpuKernels mode) {
  switch (mode) {
    case CpuKernels::kAvx2:
      return "avx2";
    case CpuKernels::kPortable:
      return "portable";
    default:
      return "auto";
  }
}

const char* tap_gemms_name(TapGemms mode) {
  switch (mode) {
    case TapGemms::kRows:
      return "rows";
    case TapGemms::kTaps:
      return "taps";
    case TapGemms::kPanels:
      return "panels";
    default:
      return "auto";
  }
}

TORCH_LIBRARY_IMPL(segdcn, CPU, m) {
  m.impl("deform_conv2d", &forward_cpu);
  m.impl("deform_conv2d_backward", &backward_cpu);
}

}  // namespace segdcn
