// Deformable convolution: the argument checks shared by all backends, and a
// device-independent driver (chunking over the batch and the GEMMs, in deform_conv2d.cpp)
// around three sampling passes over channels-major columns, or the direct plan's two passes
// for grouped and depthwise layers, which the CUDA backend implements. The CPU backend has its own driver (kernels/cpu), tiled over output positions
// and channels-last, because there memory traffic decides the speed. Every tensor handed to
// a pass is contiguous.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>

// The schemas of the deformable convolution ops, for TORCH_LIBRARY(segdcn, m) and for the
// tests' host build of the CUDA kernels (tests/ops/cuda_emulation.cpp).
#define SEGDCN_DEFINE_DEFORM_CONV2D_OPS(m)                                                                   \
  m.def(                                                                                                     \
      "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor? mask, Tensor? bias, int[2] stride, " \
      "int[2] padding, int[2] dilation, int groups, int offset_groups) -> Tensor");                          \
  m.def(                                                                                                     \
      "deform_conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor offset, Tensor? mask, " \
      "int[2] stride, int[2] padding, int[2] dilation, int groups, int offset_groups, bool[3] output_mask) " \
      "-> (Tensor, Tensor, Tensor, Tensor)")

namespace segdcn {

struct DeformConvGeometry {
  int64_t batch, in_channels, height, width;
  int64_t out_channels, kernel_h, kernel_w;
  int64_t out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t groups, offset_groups;
  bool use_mask;

  int64_t taps() const { return kernel_h * kernel_w; }
  int64_t out_positions() const { return out_h * out_w; }
  int64_t channels_per_offset_group() const { return in_channels / offset_groups; }
};

// One chunk of images at a time; `input`, `offset`, `mask` are narrowed to the chunk
// and `columns` / `grad_columns` are [chunk, in_channels * taps, out_h * out_w].
struct DeformConvPasses {
  // columns[n, c * taps + k, p] = mask * bilinear(input[n, c], tap k of position p)
  void (*sample_columns)(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                         const DeformConvGeometry& g, at::Tensor& columns);
  // Offset and mask gradients from grad_columns; also fills `columns` when it is defined
  // (the weight gradient needs them, and the pass reads the same samples anyway).
  void (*backward_columns)(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                           const at::Tensor& grad_columns, const DeformConvGeometry& g,
                           at::Tensor& grad_offset, at::Tensor& grad_mask, at::Tensor& columns);
  // grad_input[n, c] += the transpose of sample_columns applied to grad_columns; grad_input
  // arrives zeroed, and is float32 when the inputs are half or bfloat16.
  void (*scatter_columns)(const at::Tensor& grad_columns, const at::Tensor& offset, const at::Tensor& mask,
                          const DeformConvGeometry& g, at::Tensor& grad_input);
  // The direct plan (no columns, no GEMMs), on whole tensors: output (bias not added), and the
  // gradients that are defined (grad_input as for scatter_columns: zeroed, float32 for half
  // inputs; grad_weight in the weight's layout). Null where a backend has no direct plan.
  void (*direct_forward)(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                         const at::Tensor& mask, const DeformConvGeometry& g, at::Tensor& output);
  void (*direct_backward)(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                          const at::Tensor& offset, const at::Tensor& mask, const DeformConvGeometry& g,
                          at::Tensor& grad_input, at::Tensor& grad_weight, at::Tensor& grad_offset,
                          at::Tensor& grad_mask);
};

// How a backend computes a call (docs/operator.md, "Plans"): im2col (sampled columns, then GEMMs per
// weight group) or direct (no columns: per position and tap, the sample of each channel is
// multiplied by its weights in the same pass), for grouped and depthwise layers whose per-group
// GEMMs would be thin. kAuto chooses by shape (deform_conv2d_plan).
enum class DeformConvPlan { kAuto, kIm2col, kDirect };

// The plan of a call with these channels and groups, unless a test forced one.
DeformConvPlan deform_conv2d_plan(int64_t in_channels, int64_t out_channels, int64_t groups);
// For the tests: run every call on `plan` (kAuto: choose by shape again); returns the previous setting.
DeformConvPlan force_deform_conv2d_plan(DeformConvPlan plan);
const char* plan_name(DeformConvPlan plan);

// How the CPU im2col plan multiplies a tile of columns by the weights (docs/operator.md, "Plans"):
// one GEMM over all taps (kRows), or one per tap over only the rows where that tap samples inside
// the image (kTaps), which skips the zero columns of taps in the padding on small maps, or over whole
// rows by segdcn's own kernel on panels of sampled rows (kPanels, float layers of small depth).
// kAuto chooses per tile by the share of (position, tap) pairs inside, and by the layer between
// MKL's GEMM and the panels for whole rows.
enum class TapGemms { kAuto, kRows, kTaps, kPanels };
// For the tests: force one way for every CPU im2col call (kAuto: choose again); returns the previous.
TapGemms force_tap_gemms(TapGemms mode);
const char* tap_gemms_name(TapGemms mode);

// Which of the CPU kernels written in intrinsics may run (docs/operator.md, "Plans"): kAuto the widest
// the CPU has (AVX-512, else AVX2 and FMA), kAvx2 none wider than AVX2 and FMA, kPortable none (the
// portable C++ loops). The loops GCC compiles per ISA (target_clones) are chosen by the CPU alone.
enum class CpuKernels { kAuto, kAvx2, kPortable };
// For the tests and benchmarks: cap the hand-written kernels at `mode`; returns the previous setting.
CpuKernels force_cpu_kernels(CpuKernels mode);
const char* cpu_kernels_name(CpuKernels mode);

// The checked geometry of a call; throws with the argument's name on a mismatch.
DeformConvGeometry deform_conv2d_geometry(const at::Tensor& input, const at::Tensor& weight,
                                          const at::Tensor& offset, const c10::optional<at::Tensor>& mask,
                                          const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                          int64_t offset_groups);

at::Tensor deform_conv2d_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                                 const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& bias,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups, int64_t offset_groups, const DeformConvPasses& passes);

// Returns (grad_input, grad_weight, grad_offset, grad_mask); a gradient that output_mask
// (input, weight, offset and mask) does not ask for, and grad_mask without a mask, is
// an empty tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
    const c10::optional<at::Tensor>& mask, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t offset_groups, std::array<bool, 3> output_mask,
    const DeformConvPasses& passes);

}  // namespace segdcn
