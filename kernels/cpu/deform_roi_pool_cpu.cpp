// CPU passes of deformable (and position-sensitive) RoI pooling, float32 and float64.
//
// Parallelism: the forward splits the outputs (roi, channel, bin); each is a short loop over
// its samples (kernels/deform_roi_pool.h). In the backward no two threads write the same
// element: the offset gradient is split over RoIs (each RoI owns its offsets), the input
// gradient over input channels (each channel owns its plane of every image), since RoIs
// overlap and would race on shared pixels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../deform_roi_pool.h"

namespace segdcn {
namespace {

template <typename T>
void forward_kernel(const T* input, const T* rois, const T* offset, const RoiPoolGeometry& g, T* output) {
  const int64_t plane = g.height * g.width, bins = g.bins();
  at::parallel_for(0, g.output_numel(), 64, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t pw = index % g.pooled_w, ph = (index / g.pooled_w) % g.pooled_h;
      const int64_t c = (index / bins) % g.out_channels, k = index / (bins * g.out_channels);
      const RoiBin<T> b = roi_bin(g, rois, offset, k, c, ph, pw);
      output[index] = roi_bin_average(b, input + (b.batch_index * g.channels + b.in_channel) * plane, g.height, g.width);
    }
  });
}

template <typename T>
void offset_grad_kernel(const T* grad_output, const T* input, const T* rois, const T* offset, const RoiPoolGeometry& g,
                        T* grad_offset) {
  const int64_t plane = g.height * g.width, bins = g.bins(), y_stride = g.part_h * g.part_w;
  at::parallel_for(0, g.rois, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      for (int64_t c = 0; c < g.out_channels; ++c) {
        for (int64_t bin = 0; bin < bins; ++bin) {
          const int64_t ph = bin / g.pooled_w, pw = bin % g.pooled_w;
          const RoiBin<T> b = roi_bin(g, rois, offset, k, c, ph, pw);
          T gx, gy;
          roi_bin_offset_grad(b, input + (b.batch_index * g.channels + b.in_channel) * plane, g.height, g.width,
                              grad_output[(k * g.out_channels + c) * bins + bin], gx, gy);
          grad_offset[b.offset_index] += gx;
          grad_offset[b.offset_index + y_stride] += gy;
        }
      }
    }
  });
}

template <typename T>
void input_grad_kernel(const T* grad_output, const T* rois, const T* offset, const RoiPoolGeometry& g, T* grad_input) {
  const int64_t plane = g.height * g.width, bins = g.bins(), groups = g.group_h * g.group_w;
  at::parallel_for(0, g.channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c_in = begin; c_in < end; ++c_in) {
      // Input channel c_in feeds output channel c at the bins of its score map (gh, gw).
      const int64_t c = c_in / groups, gh = (c_in % groups) / g.group_w, gw = c_in % g.group_w;
      for (int64_t k = 0; k < g.rois; ++k) {
        for (int64_t ph = 0; ph < g.pooled_h; ++ph) {
          if (ph * g.group_h / g.pooled_h != gh) continue;
          for (int64_t pw = 0; pw < g.pooled_w; ++pw) {
            if (pw * g.group_w / g.pooled_w != gw) continue;
            const RoiBin<T> b = roi_bin(g, rois, offset, k, c, ph, pw);
            const T grad = grad_output[(k * g.out_channels + c) * bins + ph * g.pooled_w + pw] * b.inv_count;
            T* dst = grad_input + (b.batch_index * g.channels + c_in) * plane;
            for (int64_t iy = 0; iy < b.grid_h; ++iy) {
              for (int64_t ix = 0; ix < b.grid_w; ++ix) {
                const RoiSamplePoint<T> p = roi_bin_sample(b, iy, ix, g.height, g.width);
                if (!p.inside) continue;
                T wt[4];
                roi_bilinear_weights(p, wt);
                for (int corner = 0; corner < 4; ++corner) dst[roi_corner_index(p, corner, g.width)] += grad * wt[corner];
              }
            }
          }
        }
      }
    }
  });
}

template <typename T>
const T* offset_ptr(const at::Tensor& offset) {
  return offset.defined() ? offset.const_data_ptr<T>() : nullptr;
}

void forward(const at::Tensor& input, const at::Tensor& rois, const at::Tensor& offset, const RoiPoolGeometry& g,
             at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_roi_pool_cpu", [&] {
    forward_kernel(input.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(), offset_ptr<scalar_t>(offset), g,
                   output.mutable_data_ptr<scalar_t>());
  });
}

void backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rois, const at::Tensor& offset,
              const RoiPoolGeometry& g, at::Tensor& grad_input, at::Tensor& grad_offset) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_roi_pool_backward_cpu", [&] {
    if (grad_offset.defined()) {
      offset_grad_kernel(grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
                         rois.const_data_ptr<scalar_t>(), offset_ptr<scalar_t>(offset), g,
                         grad_offset.mutable_data_ptr<scalar_t>());
    }
    if (grad_input.defined()) {
      input_grad_kernel(grad_output.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
                        offset_ptr<scalar_t>(offset), g, grad_input.mutable_data_ptr<scalar_t>());
    }
  });
}

const RoiPoolPasses kCpuPasses{forward, backward};

}  // namespace
}  // namespace segdcn

SEGDCN_REGISTER_ROI_POOL(segdcn, CPU, segdcn::kCpuPasses)
