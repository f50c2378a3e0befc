// The device-independent half of deformable convolution: shape checks, chunking over
// the batch (so temporaries do not grow with it) and the GEMMs, which go through ATen
// and so run on MKL/oneDNN on the CPU and cuBLAS on the current CUDA stream.
#include "deform_conv2d.h"

#include <algorithm>
#include <atomic>

namespace segdcn {
namespace {

// Upper bound on the column buffer of one chunk; a chunk holds at least one image.
constexpr int64_t kColumnBytesPerChunk = int64_t(32) << 20;

int64_t chunk_size(const DeformConvGeometry& g, int64_t element_size) {
  const int64_t per_image = g.in_channels * g.taps() * g.out_positions() * element_size;
  return std::max<int64_t>(1, std::min<int64_t>(g.batch, kColumnBytesPerChunk / std::max<int64_t>(per_image, 1)));
}

void check_pair(at::IntArrayRef v, const char* name) {
  TORCH_CHECK(v.size() == 2, "deform_conv2d: ", name, " must have 2 elements, got ", v.size());
}

// [groups, rows / groups, cols] view of a [rows, cols]-shaped tensor.
at::Tensor by_group(const at::Tensor& t, int64_t groups) { return t.reshape({groups, -1, t.size(-1)}); }

std::atomic<DeformConvPlan> forced_plan{DeformConvPlan::kAuto};

// Per-group output channels up to which the direct plan beats im2col + GEMM on the CPU
// (docs/operator.md, "Plans": measured with scripts/bench_ops.py at 2 threads).
constexpr int64_t kDirectMaxOutPerGroup = 16;

}  // namespace

DeformConvPlan deform_conv2d_plan(int64_t in_channels, int64_t out_channels, int64_t groups) {
  const DeformConvPlan forced = forced_plan.load();
  if (forced != DeformConvPlan::kAuto) return forced;
  (void)in_channels;
  return groups > 1 && out_channels / groups <= kDirectMaxOutPerGroup ? DeformConvPlan::kDirect
                                                                      : DeformConvPlan::kIm2col;
}

DeformConvPlan force_deform_conv2d_plan(DeformConvPlan plan) { return forced_plan.exchange(plan); }

const char* plan_name(DeformConvPlan plan) {
  switch (plan) {
    case DeformConvPlan::kIm2col:
      return "im2col";
    case DeformConvPlan::kDirect:
      return "direct";
    default:
      return "auto";
  }
}

DeformConvGeometry deform_conv2d_geometry(const at::Tensor& input, const at::Tensor& weight,
                                          const at::Tensor& offset, const c10::optional<at::Tensor>& mask,
                                          const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                          int64_t offset_groups) {
  check_pair(stride, "stride");
  check_pair(padding, "padding");
  check_pair(dilation, "dilation");
  TORCH_CHECK(input.dim() == 4, "deform_conv2d: input must be 4-D [N, C, H, W], got ", input.sizes());
  TORCH_CHECK(weight.dim() == 4, "deform_conv2d: weight must be 4-D [C_out, C_in/groups, kh, kw], got ",
              weight.sizes());
  TORCH_CHECK(offset.dim() == 4, "deform_conv2d: offset must be 4-D, got ", offset.sizes());
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0, "deform_conv2d: stride must be positive, got ", stride);
  TORCH_CHECK(dilation[0] > 0 && dilation[1] > 0, "deform_conv2d: dilation must be positive, got ", dilation);
  TORCH_CHECK(padding[0] >= 0 && padding[1] >= 0, "deform_conv2d: padding must be >= 0, got ", padding);
  TORCH_CHECK(groups > 0 && offset_groups > 0, "deform_conv2d: groups and offset_groups must be positive");
  DeformConvGeometry g;
  g.batch = input.size(0);
  g.in_channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.out_channels = weight.size(0);
  g.kernel_h = weight.size(2);
  g.kernel_w = weight.size(3);
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.pad_h = padding[0];
  g.pad_w = padding[1];
  g.dilation_h = dilation[0];
  g.dilation_w = dilation[1];
  g.groups = groups;
  g.offset_groups = offset_groups;
  g.use_mask = mask.has_value() && mask->defined();
  g.out_h = (g.height + 2 * g.pad_h - g.dilation_h * (g.kernel_h - 1) - 1) / g.stride_h + 1;
  g.out_w = (g.width + 2 * g.pad_w - g.dilation_w * (g.kernel_w - 1) - 1) / g.stride_w + 1;
  TORCH_CHECK(g.kernel_h > 0 && g.kernel_w > 0, "deform_conv2d: empty kernel ", weight.sizes());
  TORCH_CHECK(g.out_h > 0 && g.out_w > 0, "deform_conv2d: the output would be empty for input ", input.sizes(),
              " and kernel ", weight.sizes());
  TORCH_CHECK(g.in_channels % groups == 0 && g.out_channels % groups == 0 &&
                  weight.size(1) * groups == g.in_channels,
              "deform_conv2d: weight ", weight.sizes(), " does not fit input ", input.sizes(), " with groups=",
              groups);
  TORCH_CHECK(g.in_channels % offset_groups == 0, "deform_conv2d: input channels ", g.in_channels,
              " are not divisible by offset_groups=", offset_groups);
  const std::vector<int64_t> offset_shape{g.batch, 2 * offset_groups * g.taps(), g.out_h, g.out_w};
  TORCH_CHECK(offset.sizes() == at::IntArrayRef(offset_shape), "deform_conv2d: offset must have shape ",
              offset_shape, ", got ", offset.sizes());
  if (g.use_mask) {
    const std::vector<int64_t> mask_shape{g.batch, offset_groups * g.taps(), g.out_h, g.out_w};
    TORCH_CHECK(mask->sizes() == at::IntArrayRef(mask_shape), "deform_conv2d: mask must have shape ", mask_shape,
                ", got ", mask->sizes());
  }
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.out_channels, "deform_conv2d: bias must have shape [",
                g.out_channels, "], got ", bias->sizes());
  }
  for (const at::Tensor* t : {&weight, &offset}) {
    TORCH_CHECK(t->device() == input.device() && t->scalar_type() == input.scalar_type(),
                "deform_conv2d: all tensors must share the input's device and dtype");
  }
  if (g.use_mask) {
    TORCH_CHECK(mask->device() == input.device() && mask->scalar_type() == input.scalar_type(),
                "deform_conv2d: mask must share the input's device and dtype");
  }
  return g;
}

at::Tensor deform_conv2d_forward(const at::Tensor& input_, const at::Tensor& weight_, const at::Tensor& offset_,
                                 const c10::optional<at::Tensor>& mask_, const c10::optional<at::Tensor>& bias,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups, int64_t offset_groups, const DeformConvPasses& passes) {
  const DeformConvGeometry g =
      deform_conv2d_geometry(input_, weight_, offset_, mask_, bias, stride, padding, dilation, groups, offset_groups);
  const at::Tensor input = input_.contiguous();
  const at::Tensor offset = offset_.contiguous();
  const at::Tensor mask = g.use_mask ? mask_->contiguous() : at::Tensor();
  const at::Tensor weight = by_group(weight_.reshape({g.out_channels, -1}), groups);

  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  if (g.batch == 0) return output;
  if (passes.direct_forward && deform_conv2d_plan(g.in_channels, g.out_channels, groups) == DeformConvPlan::kDirect) {
    passes.direct_forward(input, weight_.contiguous(), offset, mask, g, output);
    if (bias.has_value() && bias->defined()) output.add_(bias->view({1, -1, 1, 1}));
    return output;
  }
  const int64_t chunk = chunk_size(g, input.element_size());
  at::Tensor columns = at::empty({chunk, g.in_channels * g.taps(), g.out_positions()}, input.options());
  for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
    const int64_t m = std::min(chunk, g.batch - n0);
    at::Tensor cols = columns.narrow(0, 0, m);
    passes.sample_columns(input.narrow(0, n0, m), offset.narrow(0, n0, m),
                          g.use_mask ? mask.narrow(0, n0, m) : mask, g, cols);
    for (int64_t i = 0; i < m; ++i) {
      at::Tensor out = by_group(output[n0 + i].view({g.out_channels, -1}), groups);
      const at::Tensor col = by_group(cols[i], groups);
      for (int64_t k = 0; k < groups; ++k) {
        at::Tensor out_k = out[k];
        at::mm_out(out_k, weight[k], col[k]);
      }
    }
  }
  if (bias.has_value() && bias->defined()) output.add_(bias->view({1, -1, 1, 1}));
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight_, const at::Tensor& offset_,
    const c10::optional<at::Tensor>& mask_, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t offset_groups, std::array<bool, 3> output_mask,
    const DeformConvPasses& passes) {
  const DeformConvGeometry g = deform_conv2d_geometry(input_, weight_, offset_, mask_, c10::nullopt, stride,
                                                      padding, dilation, groups, offset_groups);
  const std::vector<int64_t> out_shape{g.batch, g.out_channels, g.out_h, g.out_w};
  TORCH_CHECK(grad_output_.sizes() == at::IntArrayRef(out_shape), "deform_conv2d backward: grad_output must have shape ",
              out_shape, ", got ", grad_output_.sizes());
  const bool need_input = output_mask[0], need_weight = output_mask[1], need_offset = output_mask[2];
  const at::Tensor input = input_.contiguous();
  const at::Tensor offset = offset_.contiguous();
  const at::Tensor mask = g.use_mask ? mask_->contiguous() : at::Tensor();
  const at::Tensor grad_output = grad_output_.contiguous().to(input.scalar_type());
  const at::Tensor weight = by_group(weight_.reshape({g.out_channels, -1}), groups);

  // Half-precision inputs scatter into a float buffer: many taps add into one pixel.
  const bool half = input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16;
  at::Tensor grad_input = need_input ? at::zeros(input.sizes(), input.options().dtype(half ? at::kFloat : input.scalar_type()))
                                     : at::Tensor();
  at::Tensor grad_weight = need_weight ? at::zeros_like(weight) : at::Tensor();
  at::Tensor grad_offset = need_offset ? at::empty_like(offset) : at::Tensor();
  at::Tensor grad_mask = need_offset && g.use_mask ? at::empty_like(mask) : at::Tensor();

  const bool direct =
      passes.direct_backward && deform_conv2d_plan(g.in_channels, g.out_channels, groups) == DeformConvPlan::kDirect;
  if (direct && g.batch > 0 && (need_input || need_weight || need_offset)) {
    passes.direct_backward(grad_output, input, weight_.contiguous(), offset, mask, g, grad_input, grad_weight,
                           grad_offset, grad_mask);
  } else if (g.batch > 0 && (need_input || need_weight || need_offset)) {
    const int64_t chunk = chunk_size(g, input.element_size());
    const std::vector<int64_t> cols_shape{chunk, g.in_channels * g.taps(), g.out_positions()};
    at::Tensor grad_columns = at::empty(cols_shape, input.options());
    at::Tensor columns = need_weight ? at::empty(cols_shape, input.options()) : at::Tensor();
    for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
      const int64_t m = std::min(chunk, g.batch - n0);
      const at::Tensor in = input.narrow(0, n0, m);
      const at::Tensor off = offset.narrow(0, n0, m);
      const at::Tensor msk = g.use_mask ? mask.narrow(0, n0, m) : mask;
      at::Tensor gcols = grad_columns.narrow(0, 0, m);
      at::Tensor cols = need_weight ? columns.narrow(0, 0, m) : at::Tensor();
      if (need_input || need_offset) {
        for (int64_t i = 0; i < m; ++i) {
          const at::Tensor gout = by_group(grad_output[n0 + i].view({g.out_channels, -1}), groups);
          at::Tensor gcol = by_group(gcols[i], groups);
          for (int64_t k = 0; k < groups; ++k) {
            at::Tensor gcol_k = gcol[k];
            at::mm_out(gcol_k, weight[k].t(), gout[k]);
          }
        }
      }
      if (need_offset) {
        at::Tensor goff = grad_offset.narrow(0, n0, m);
        at::Tensor gmask = g.use_mask ? grad_mask.narrow(0, n0, m) : at::Tensor();
        passes.backward_columns(in, off, msk, gcols, g, goff, gmask, cols);
      } else if (need_weight) {
        passes.sample_columns(in, off, msk, g, cols);
      }
      if (need_input) {
        at::Tensor gin = grad_input.narrow(0, n0, m);
        passes.scatter_columns(gcols, off, msk, g, gin);
      }
      if (need_weight) {
        for (int64_t i = 0; i < m; ++i) {
          const at::Tensor gout = by_group(grad_output[n0 + i].view({g.out_channels, -1}), groups);
          const at::Tensor col = by_group(cols[i], groups);
          for (int64_t k = 0; k < groups; ++k) grad_weight[k].addmm_(gout[k], col[k].t());
        }
      }
    }
  }
  if (need_input && half) grad_input = grad_input.to(input.scalar_type());
  if (need_weight) grad_weight = grad_weight.view(weight_.sizes());
  auto or_empty = [&](const at::Tensor& t) { return t.defined() ? t : at::empty({0}, input.options()); };
  return {or_empty(grad_input), or_empty(grad_weight), or_empty(grad_offset), or_empty(grad_mask)};
}

}  // namespace segdcn
