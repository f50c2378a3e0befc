// The device-independent half of deformable convolution: shape checks, chunking over
// the batch (so temporaries do not grow with it) and the GEMMs, which go through ATen
// and so run on MKL/oneDNN on the CPU and cuBLAS on the current CUDA stream.
#include "deform_conv2d.h"

#include <algorithm>

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

// The GEMMs between the weight, the columns of a chunk of images and the output, for the
// columns layout of the backend. `weight` is [groups, C_out / groups, taps * C_in / groups]
// with its last dimension ordered like a group's slice of the columns.
struct ColumnGemms {
  const DeformConvGeometry& g;
  ColumnsLayout layout;
  at::Tensor weight;

  ColumnGemms(const DeformConvGeometry& geometry, ColumnsLayout columns_layout, const at::Tensor& w)
      : g(geometry), layout(columns_layout) {
    weight = layout == ColumnsLayout::kChannelsMajor
                 ? w.reshape({g.groups, g.out_channels / g.groups, -1})
                 : w.reshape({g.groups, g.out_channels / g.groups, g.in_channels / g.groups, g.taps()})
                       .transpose(2, 3)
                       .reshape({g.groups, g.out_channels / g.groups, -1});
  }

  int64_t rows() const { return g.in_channels * g.taps(); }

  at::Tensor columns(int64_t chunk, const at::TensorOptions& options) const {
    return layout == ColumnsLayout::kChannelsMajor ? at::empty({chunk, rows(), g.out_positions()}, options)
                                                   : at::empty({chunk, g.out_positions(), rows()}, options);
  }

  // Group k's columns of image i: [rows / groups, P] (channels-major) or [P, rows / groups].
  at::Tensor group_columns(const at::Tensor& cols, int64_t i, int64_t k) const {
    return layout == ColumnsLayout::kChannelsMajor ? by_group(cols[i], g.groups)[k]
                                                   : cols[i].view({g.out_positions(), g.groups, -1}).select(1, k);
  }

  // output [m, C_out, out_h, out_w] = weight x columns, image by image.
  void forward(const at::Tensor& cols, at::Tensor output) const {
    const int64_t m = cols.size(0), P = g.out_positions();
    if (layout == ColumnsLayout::kChannelsMajor) {
      for (int64_t i = 0; i < m; ++i) {
        at::Tensor out = by_group(output[i].view({g.out_channels, -1}), g.groups);
        for (int64_t k = 0; k < g.groups; ++k) {
          at::Tensor out_k = out[k];
          at::mm_out(out_k, weight[k], group_columns(cols, i, k));
        }
      }
      return;
    }
    // [m * P, rows] x [rows, C_out] is one large GEMM per group; its transpose is the output.
    at::Tensor out = output.view({m, g.groups, g.out_channels / g.groups, P});
    for (int64_t k = 0; k < g.groups; ++k) {
      const at::Tensor product = at::mm(cols.view({m * P, g.groups, -1}).select(1, k), weight[k].t());
      out.select(1, k).copy_(product.view({m, P, -1}).transpose(1, 2));
    }
  }

  // grad_columns = weight^T x grad_output, image by image.
  void grad_columns(const at::Tensor& grad_output, at::Tensor& gcols) const {
    for (int64_t i = 0; i < gcols.size(0); ++i) {
      const at::Tensor gout = by_group(grad_output[i].view({g.out_channels, -1}), g.groups);
      for (int64_t k = 0; k < g.groups; ++k) {
        at::Tensor gcol = group_columns(gcols, i, k);
        if (layout == ColumnsLayout::kChannelsMajor) {
          at::mm_out(gcol, weight[k].t(), gout[k]);
        } else if (g.groups == 1) {
          at::mm_out(gcol, gout[k].t(), weight[k]);
        } else {
          gcol.copy_(at::mm(gout[k].t(), weight[k]));
        }
      }
    }
  }

  // grad_weight (shaped like `weight`) += grad_output x columns^T, image by image.
  void accumulate_grad_weight(const at::Tensor& grad_output, const at::Tensor& cols, at::Tensor& grad_weight) const {
    for (int64_t i = 0; i < cols.size(0); ++i) {
      const at::Tensor gout = by_group(grad_output[i].view({g.out_channels, -1}), g.groups);
      for (int64_t k = 0; k < g.groups; ++k) {
        const at::Tensor col = group_columns(cols, i, k);
        grad_weight[k].addmm_(gout[k], layout == ColumnsLayout::kChannelsMajor ? col.t() : col);
      }
    }
  }

  // grad_weight back in the layout of the weight, [C_out, C_in / groups, kh, kw].
  at::Tensor weight_shaped(const at::Tensor& grad_weight) const {
    const std::vector<int64_t> shape{g.out_channels, g.in_channels / g.groups, g.kernel_h, g.kernel_w};
    if (layout == ColumnsLayout::kChannelsMajor) return grad_weight.view(shape);
    return grad_weight.view({g.out_channels, g.taps(), g.in_channels / g.groups}).transpose(1, 2).contiguous().view(shape);
  }
};

}  // namespace

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

at::Tensor deform_conv2d_forward(const at::Tensor& input_, const at::Tensor& weight, const at::Tensor& offset_,
                                 const c10::optional<at::Tensor>& mask_, const c10::optional<at::Tensor>& bias,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups, int64_t offset_groups, const DeformConvPasses& passes) {
  const DeformConvGeometry g =
      deform_conv2d_geometry(input_, weight, offset_, mask_, bias, stride, padding, dilation, groups, offset_groups);
  const at::Tensor input = input_.contiguous();
  const at::Tensor offset = offset_.contiguous();
  const at::Tensor mask = g.use_mask ? mask_->contiguous() : at::Tensor();

  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  if (g.batch == 0) return output;
  const ColumnGemms gemms(g, passes.layout, weight);
  const int64_t chunk = chunk_size(g, input.element_size());
  at::Tensor columns = gemms.columns(chunk, input.options());
  for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
    const int64_t m = std::min(chunk, g.batch - n0);
    at::Tensor cols = columns.narrow(0, 0, m);
    passes.sample_columns(input.narrow(0, n0, m), offset.narrow(0, n0, m),
                          g.use_mask ? mask.narrow(0, n0, m) : mask, g, cols);
    gemms.forward(cols, output.narrow(0, n0, m));
  }
  if (bias.has_value() && bias->defined()) output.add_(bias->view({1, -1, 1, 1}));
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight, const at::Tensor& offset_,
    const c10::optional<at::Tensor>& mask_, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t offset_groups, std::array<bool, 3> output_mask,
    const DeformConvPasses& passes) {
  const DeformConvGeometry g = deform_conv2d_geometry(input_, weight, offset_, mask_, c10::nullopt, stride,
                                                      padding, dilation, groups, offset_groups);
  const std::vector<int64_t> out_shape{g.batch, g.out_channels, g.out_h, g.out_w};
  TORCH_CHECK(grad_output_.sizes() == at::IntArrayRef(out_shape),
              "deform_conv2d backward: grad_output must have shape ", out_shape, ", got ", grad_output_.sizes());
  const bool need_input = output_mask[0], need_weight = output_mask[1], need_offset = output_mask[2];
  const at::Tensor input = input_.contiguous();
  const at::Tensor offset = offset_.contiguous();
  const at::Tensor mask = g.use_mask ? mask_->contiguous() : at::Tensor();
  const at::Tensor grad_output = grad_output_.contiguous().to(input.scalar_type());
  const ColumnGemms gemms(g, passes.layout, weight);

  // Half-precision inputs scatter into a float buffer: many taps add into one pixel.
  const bool half = input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16;
  at::Tensor grad_input =
      need_input ? at::zeros(input.sizes(), input.options().dtype(half ? at::kFloat : input.scalar_type()))
                 : at::Tensor();
  at::Tensor grad_weight = need_weight ? at::zeros_like(gemms.weight) : at::Tensor();
  at::Tensor grad_offset = need_offset ? at::empty_like(offset) : at::Tensor();
  at::Tensor grad_mask = need_offset && g.use_mask ? at::empty_like(mask) : at::Tensor();

  if (g.batch > 0 && (need_input || need_weight || need_offset)) {
    const int64_t chunk = chunk_size(g, input.element_size());
    at::Tensor grad_columns = gemms.columns(chunk, input.options());
    at::Tensor columns = need_weight ? gemms.columns(chunk, input.options()) : at::Tensor();
    for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
      const int64_t m = std::min(chunk, g.batch - n0);
      const at::Tensor in = input.narrow(0, n0, m);
      const at::Tensor off = offset.narrow(0, n0, m);
      const at::Tensor msk = g.use_mask ? mask.narrow(0, n0, m) : mask;
      const at::Tensor gout = grad_output.narrow(0, n0, m);
      at::Tensor gcols = grad_columns.narrow(0, 0, m);
      at::Tensor cols = need_weight ? columns.narrow(0, 0, m) : at::Tensor();
      if (need_input || need_offset) gemms.grad_columns(gout, gcols);
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
      if (need_weight) gemms.accumulate_grad_weight(gout, cols, grad_weight);
    }
  }
  if (need_input && half) grad_input = grad_input.to(input.scalar_type());
  if (need_weight) grad_weight = gemms.weight_shaped(grad_weight);
  auto or_empty = [&](const at::Tensor& t) { return t.defined() ? t : at::empty({0}, input.options()); };
  return {or_empty(grad_input), or_empty(grad_weight), or_empty(grad_offset), or_empty(grad_mask)};
}

}  // namespace segdcn
