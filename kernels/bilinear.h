// Bilinear sampling for deformable convolution: the one home of the sampling rule,
// its coordinate gradient and the boundary rule. Both the CPU and the CUDA kernels
// include this header, so the forward pass and every gradient agree by construction.
//
// Boundary rule (the one of Dai et al. and torchvision): a sample at (h, w) is zero
// unless -1 < h < H and -1 < w < W. Inside that open interval, corners that fall
// outside the image read as zero.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SEGDCN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SEGDCN_HOST_DEVICE inline
#endif

namespace segdcn {

SEGDCN_HOST_DEVICE float floor_value(float x) { return floorf(x); }
SEGDCN_HOST_DEVICE double floor_value(double x) { return ::floor(x); }

// Where one tap of the deformed grid lands: the top-left corner (h0, w0), which may
// be -1, and the fractional parts (lh, lw) towards the bottom-right corner.
template <typename T>
struct SamplePoint {
  int64_t h0;
  int64_t w0;
  T lh;
  T lw;
  bool inside;  // false: the sample and its gradients are zero
};

// The boundary rule and the split of (h, w) into floors and fractional parts, without branches
// (the CPU's direct plan computes a block's taps in one loop with it): returns whether the sample
// is inside; outside, the floors and fractions are zero, so a far or nan coordinate is never
// converted to an integer.
template <typename T>
SEGDCN_HOST_DEVICE bool split_sample(T h, T w, int64_t height, int64_t width, T& fh, T& fw, T& lh, T& lw) {
  // & rather than &&, and every value computed before the selects: no short circuit, no branch
  const bool inside = (h > T(-1)) & (w > T(-1)) & (h < T(height)) & (w < T(width));
  const T floor_h = floor_value(h), floor_w = floor_value(w);
  const T frac_h = h - floor_h, frac_w = w - floor_w;
  fh = inside ? floor_h : T(0);
  fw = inside ? floor_w : T(0);
  lh = inside ? frac_h : T(0);
  lw = inside ? frac_w : T(0);
  return inside;
}

template <typename T>
SEGDCN_HOST_DEVICE SamplePoint<T> sample_point(T h, T w, int64_t height, int64_t width) {
  SamplePoint<T> p;
  T fh, fw;
  p.inside = split_sample(h, w, height, width, fh, fw, p.lh, p.lw);
  p.h0 = static_cast<int64_t>(fh);
  p.w0 = static_cast<int64_t>(fw);
  return p;
}

// Corner order everywhere: 0 = (h0, w0), 1 = (h0, w0+1), 2 = (h0+1, w0), 3 = (h0+1, w0+1).
SEGDCN_HOST_DEVICE int64_t corner_dh(int corner) { return corner >> 1; }
SEGDCN_HOST_DEVICE int64_t corner_dw(int corner) { return corner & 1; }

SEGDCN_HOST_DEVICE bool corner_in_image(int64_t h, int64_t w, int64_t height, int64_t width) {
  return h >= 0 && w >= 0 && h < height && w < width;
}

// G(q, p) = g(qx, px) g(qy, py) with g(a, b) = max(0, 1 - |a - b|), for the four corners.
template <typename T>
SEGDCN_HOST_DEVICE void bilinear_weights(T lh, T lw, T weight[4]) {
  const T hh = T(1) - lh;
  const T hw = T(1) - lw;
  weight[0] = hh * hw;
  weight[1] = hh * lw;
  weight[2] = lh * hw;
  weight[3] = lh * lw;
}

// d weight / d h and d weight / d w of the four corners. At integer positions this is
// the derivative from above, the one the forward's corner choice (floor) implies.
template <typename T>
SEGDCN_HOST_DEVICE void bilinear_weight_grads(T lh, T lw, T dweight_dh[4], T dweight_dw[4]) {
  dweight_dh[0] = lw - T(1);
  dweight_dh[1] = -lw;
  dweight_dh[2] = T(1) - lw;
  dweight_dh[3] = lw;
  dweight_dw[0] = lh - T(1);
  dweight_dw[1] = T(1) - lh;
  dweight_dw[2] = -lh;
  dweight_dw[3] = lh;
}

// The values of the four corners of sample s in a row-major height x width plane, read as
// T; corners outside the image read as zero. For kernels that read the unpadded input.
template <typename T, typename V>
SEGDCN_HOST_DEVICE void corner_values(const V* plane, const SamplePoint<T>& s, int64_t height, int64_t width,
                                      T value[4]) {
  for (int c = 0; c < 4; ++c) {
    const int64_t h = s.h0 + corner_dh(c), w = s.w0 + corner_dw(c);
    value[c] = corner_in_image(h, w, height, width) ? static_cast<T>(plane[h * width + w]) : T(0);
  }
}

// sum_c coeff[c] * value[c]: the sample with bilinear_weights, its d/dh or d/dw with the
// matching half of bilinear_weight_grads.
template <typename T>
SEGDCN_HOST_DEVICE T corner_sum(const T coeff[4], const T value[4]) {
  return coeff[0] * value[0] + coeff[1] * value[1] + coeff[2] * value[2] + coeff[3] * value[3];
}

// Position of tap (i, j) of output (oh, ow) on the input grid before the offset.
SEGDCN_HOST_DEVICE int64_t grid_position(int64_t out_pos, int64_t tap, int64_t stride, int64_t pad,
                                         int64_t dilation) {
  return out_pos * stride - pad + tap * dilation;
}

// ---------------------------------------------------------------------------------------
// RoIAlign's bilinear rule, for the RoI pooling ops (deform_roi_pool, deform_ps_roi_pool).
// It differs from the rule above on purpose, so that at zero offsets those ops equal
// torchvision's roi_align(aligned=True) and ps_roi_align: a sample is zero when y < -1,
// y > H, x < -1 or x > W; otherwise a coordinate <= 0 clamps to 0 and one >= size - 1 clamps
// to size - 1, so every corner read is inside the image. A clamped coordinate does not move
// the sample, so its coordinate gradient is zero.
template <typename T>
struct RoiSamplePoint {
  int64_t y0, x0, y1, x1;  // corners: rows y0 <= y1, columns x0 <= x1, all inside the image
  T ly, lx;                // fractional parts towards (y1, x1)
  bool inside;             // false: the sample and its gradients are zero
  bool moves_y, moves_x;   // false where the coordinate was clamped
};

template <typename T>
SEGDCN_HOST_DEVICE RoiSamplePoint<T> roi_sample_point(T y, T x, int64_t height, int64_t width) {
  RoiSamplePoint<T> p;
  p.y0 = p.x0 = p.y1 = p.x1 = 0;
  p.ly = p.lx = T(0);
  p.moves_y = p.moves_x = false;
  p.inside = !(y < T(-1) || y > T(height) || x < T(-1) || x > T(width));
  if (!p.inside) return p;
  p.moves_y = y > T(0);
  p.moves_x = x > T(0);
  if (y <= T(0)) y = T(0);
  if (x <= T(0)) x = T(0);
  p.y0 = static_cast<int64_t>(y);
  p.x0 = static_cast<int64_t>(x);
  if (p.y0 >= height - 1) {
    p.y0 = p.y1 = height - 1;
    p.moves_y = false;
    y = T(p.y0);
  } else {
    p.y1 = p.y0 + 1;
  }
  if (p.x0 >= width - 1) {
    p.x0 = p.x1 = width - 1;
    p.moves_x = false;
    x = T(p.x0);
  } else {
    p.x1 = p.x0 + 1;
  }
  p.ly = y - T(p.y0);
  p.lx = x - T(p.x0);
  return p;
}

// Row-major offset of corner c (order as above: (y0, x0), (y0, x1), (y1, x0), (y1, x1)).
template <typename T>
SEGDCN_HOST_DEVICE int64_t roi_corner_index(const RoiSamplePoint<T>& p, int corner, int64_t width) {
  return ((corner >> 1) ? p.y1 : p.y0) * width + ((corner & 1) ? p.x1 : p.x0);
}

// Corner weights (zero outside), and d weight / dy, d weight / dx (zero where clamped).
template <typename T>
SEGDCN_HOST_DEVICE void roi_bilinear_weights(const RoiSamplePoint<T>& p, T weight[4]) {
  bilinear_weights(p.ly, p.lx, weight);
  if (!p.inside) weight[0] = weight[1] = weight[2] = weight[3] = T(0);
}

template <typename T>
SEGDCN_HOST_DEVICE void roi_bilinear_weight_grads(const RoiSamplePoint<T>& p, T dweight_dy[4], T dweight_dx[4]) {
  bilinear_weight_grads(p.ly, p.lx, dweight_dy, dweight_dx);
  for (int c = 0; c < 4; ++c) {
    if (!p.inside || !p.moves_y) dweight_dy[c] = T(0);
    if (!p.inside || !p.moves_x) dweight_dx[c] = T(0);
  }
}

// The four corner values of sample p in a row-major plane, read as T (zero outside).
template <typename T, typename V>
SEGDCN_HOST_DEVICE void roi_corner_values(const V* plane, const RoiSamplePoint<T>& p, int64_t width, T value[4]) {
  for (int c = 0; c < 4; ++c) value[c] = p.inside ? static_cast<T>(plane[roi_corner_index(p, c, width)]) : T(0);
}

}  // namespace segdcn
