// The device-independent half of the RoI pooling ops: checks and the drivers around the
// backends' passes (kernels/cpu/deform_roi_pool_cpu.cpp, kernels/cuda/deform_roi_pool_*).
#include "deform_roi_pool.h"

#include <vector>

namespace segdcn {
namespace {

void check_common(const char* op, const at::Tensor& input, const at::Tensor& rois,
                  const c10::optional<at::Tensor>& offset) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be 4-D [N, C, H, W], got ", input.sizes());
  TORCH_CHECK(input.size(2) > 0 && input.size(3) > 0, op, ": input must have height and width > 0, got ",
              input.sizes());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op, ": rois must have shape [K, 5] (batch index, x1, y1, x2, y2), got ",
              rois.sizes());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), op, ": input must be floating point, got ",
              input.scalar_type());
  TORCH_CHECK(rois.device() == input.device() && rois.scalar_type() == input.scalar_type(), op,
              ": rois must share the input's device and dtype");
  if (offset.has_value() && offset->defined()) {
    TORCH_CHECK(offset->device() == input.device() && offset->scalar_type() == input.scalar_type(), op,
                ": offset must share the input's device and dtype");
  }
}

void check_offset(const char* op, const c10::optional<at::Tensor>& offset, const RoiPoolGeometry& g) {
  if (!g.has_offset) return;
  const std::vector<int64_t> shape{g.rois, 2 * g.offset_classes, g.part_h, g.part_w};
  TORCH_CHECK(offset->sizes() == at::IntArrayRef(shape), op, ": offset must have shape ", shape, ", got ",
              offset->sizes());
}

}  // namespace

RoiPoolGeometry deform_roi_pool_geometry(const at::Tensor& input, const at::Tensor& rois,
                                         const c10::optional<at::Tensor>& offset, int64_t pooled_h, int64_t pooled_w,
                                         double spatial_scale, int64_t sampling_ratio, double gamma) {
  const char* op = "deform_roi_pool";
  check_common(op, input, rois, offset);
  TORCH_CHECK(pooled_h > 0 && pooled_w > 0, op, ": output size must be positive, got ", pooled_h, "x", pooled_w);
  TORCH_CHECK(sampling_ratio >= 0, op, ": sampling_ratio must be >= 0, got ", sampling_ratio);
  RoiPoolGeometry g;
  g.rois = rois.size(0);
  g.batch = input.size(0);
  g.channels = g.out_channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.pooled_h = g.part_h = pooled_h;
  g.pooled_w = g.part_w = pooled_w;
  g.group_h = g.group_w = g.offset_classes = 1;
  g.spatial_scale = spatial_scale;
  g.gamma = gamma;
  g.sampling_ratio = sampling_ratio;
  g.has_offset = offset.has_value() && offset->defined();
  check_offset(op, offset, g);
  return g;
}

RoiPoolGeometry deform_ps_roi_pool_geometry(const at::Tensor& input, const at::Tensor& rois,
                                            const c10::optional<at::Tensor>& offset, int64_t output_dim,
                                            int64_t group_size, int64_t pooled_size, int64_t part_size,
                                            double spatial_scale, int64_t sample_per_part, double trans_std) {
  const char* op = "deform_ps_roi_pool";
  check_common(op, input, rois, offset);
  TORCH_CHECK(output_dim > 0 && group_size > 0 && pooled_size > 0 && part_size > 0, op,
              ": output_dim, group_size, pooled_size and part_size must be positive");
  TORCH_CHECK(sample_per_part >= 0, op, ": sample_per_part must be >= 0, got ", sample_per_part);
  TORCH_CHECK(input.size(1) == output_dim * group_size * group_size, op, ": input must have output_dim * group_size^2 = ",
              output_dim * group_size * group_size, " channels, got ", input.size(1));
  RoiPoolGeometry g;
  g.rois = rois.size(0);
  g.batch = input.size(0);
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.out_channels = output_dim;
  g.pooled_h = g.pooled_w = pooled_size;
  g.group_h = g.group_w = group_size;
  g.part_h = g.part_w = part_size;
  g.spatial_scale = spatial_scale;
  g.gamma = trans_std;
  g.sampling_ratio = sample_per_part;
  g.has_offset = offset.has_value() && offset->defined();
  g.offset_classes = 1;
  if (g.has_offset) {
    TORCH_CHECK(offset->dim() == 4 && offset->size(1) > 0 && offset->size(1) % 2 == 0 &&
                    output_dim % (offset->size(1) / 2) == 0,
                op, ": offset must have shape [K, 2 * classes, part_size, part_size] with classes dividing output_dim=",
                output_dim, ", got ", offset->sizes());
    g.offset_classes = offset->size(1) / 2;
  }
  check_offset(op, offset, g);
  return g;
}

namespace {

// A batch index outside the batch would read out of bounds; on the CPU this is cheap to rule
// out here (the Python API checks it on every device).
void check_batch_indices(const at::Tensor& rois, const RoiPoolGeometry& g) {
  if (!rois.is_cpu() || g.rois == 0) return;
  const at::Tensor index = rois.select(1, 0);
  const bool ok = (index >= 0).all().item<bool>() && (index < static_cast<double>(g.batch)).all().item<bool>();
  TORCH_CHECK(ok, "deform_roi_pool: rois[:, 0] must be batch indices in [0, ", g.batch, ")");
}

}  // namespace

at::Tensor roi_pool_forward(const at::Tensor& input_, const at::Tensor& rois_, const c10::optional<at::Tensor>& offset_,
                            const RoiPoolGeometry& g, const RoiPoolPasses& passes) {
  check_batch_indices(rois_, g);
  at::Tensor output = at::zeros({g.rois, g.out_channels, g.pooled_h, g.pooled_w}, input_.options());
  if (output.numel() == 0) return output;
  const at::Tensor input = input_.contiguous(), rois = rois_.contiguous();
  const at::Tensor offset = g.has_offset ? offset_->contiguous() : at::Tensor();
  passes.forward(input, rois, offset, g, output);
  return output;
}

std::tuple<at::Tensor, at::Tensor> roi_pool_backward(const at::Tensor& grad_output_, const at::Tensor& input_,
                                                     const at::Tensor& rois_, const c10::optional<at::Tensor>& offset_,
                                                     const RoiPoolGeometry& g, std::array<bool, 2> output_mask,
                                                     const RoiPoolPasses& passes) {
  const std::vector<int64_t> out_shape{g.rois, g.out_channels, g.pooled_h, g.pooled_w};
  TORCH_CHECK(grad_output_.sizes() == at::IntArrayRef(out_shape), "deform_roi_pool backward: grad_output must have shape ",
              out_shape, ", got ", grad_output_.sizes());
  check_batch_indices(rois_, g);
  const at::Tensor input = input_.contiguous(), rois = rois_.contiguous();
  const at::Tensor offset = g.has_offset ? offset_->contiguous() : at::Tensor();
  const at::Tensor grad_output = grad_output_.contiguous().to(input.scalar_type());
  at::Tensor grad_input = output_mask[0] ? at::zeros_like(input) : at::Tensor();
  at::Tensor grad_offset = output_mask[1] && g.has_offset ? at::zeros_like(offset) : at::Tensor();
  if (g.output_numel() > 0 && (grad_input.defined() || grad_offset.defined())) {
    passes.backward(grad_output, input, rois, offset, g, grad_input, grad_offset);
  }
  auto or_empty = [&](const at::Tensor& t) { return t.defined() ? t : at::empty({0}, input.options()); };
  return {or_empty(grad_input), or_empty(grad_offset)};
}

}  // namespace segdcn
