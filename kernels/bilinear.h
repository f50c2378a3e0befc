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

template <typename T>
SEGDCN_HOST_DEVICE SamplePoint<T> sample_point(T h, T w, int64_t height, int64_t width) {
  SamplePoint<T> p;
  p.inside = h > T(-1) && w > T(-1) && h < T(height) && w < T(width);
  if (!p.inside) {
    p.h0 = 0;
    p.w0 = 0;
    p.lh = T(0);
    p.lw = T(0);
    return p;
  }
  const T fh = floor_value(h);
  const T fw = floor_value(w);
  p.h0 = static_cast<int64_t>(fh);
  p.w0 = static_cast<int64_t>(fw);
  p.lh = h - fh;
  p.lw = w - fw;
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

}  // namespace segdcn
