// CPU passes of deformable (and position-sensitive) RoI pooling, float32 and float64.
//
// A bin's samples (kernels/deform_roi_pool.h, bilinear.h) are turned once into (index,
// coefficient) taps and applied to all channels that pool that bin with the same offset.
// Parallelism: the forward splits (roi, bin); in the backward no two threads write the same
// element: the offset gradient is split over RoIs (each RoI owns its offsets), the input
// gradient over input channels (each channel owns its plane of every image), since RoIs
// overlap and would race on shared pixels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../deform_roi_pool.h"

namespace segdcn {
namespace {

// The samples of one bin as (plane index, coefficient) pairs, computed once and applied to every
// channel that pools this bin with the same offset (torchvision's CPU roi_align does the same).
template <typename T>
struct Tap {
  int64_t index;
  T coeff;
};

// Forward taps: the corner weights divided by the number of samples.
template <typename T>
void value_taps(const RoiBin<T>& b, const RoiPoolGeometry& g, std::vector<Tap<T>>& taps) {
  taps.clear();
  for (int64_t iy = 0; iy < b.grid_h; ++iy) {
    for (int64_t ix = 0; ix < b.grid_w; ++ix) {
      const RoiSamplePoint<T> p = roi_bin_sample(b, iy, ix, g.height, g.width);
      if (!p.inside) continue;
      T wt[4];
      roi_bilinear_weights(p, wt);
      for (int corner = 0; corner < 4; ++corner)
        taps.push_back({roi_corner_index(p, corner, g.width), wt[corner] * b.inv_count});
    }
  }
}

// Offset-gradient taps: d average / d offset_x and / d offset_y per corner, interleaved (x, y).
template <typename T>
void offset_taps(const RoiBin<T>& b, const RoiPoolGeometry& g, std::vector<Tap<T>>& taps) {
  taps.clear();
  for (int64_t iy = 0; iy < b.grid_h; ++iy) {
    for (int64_t ix = 0; ix < b.grid_w; ++ix) {
      const RoiSamplePoint<T> p = roi_bin_sample(b, iy, ix, g.height, g.width);
      if (!p.inside || !(p.moves_x || p.moves_y)) continue;
      T dy[4], dx[4];
      roi_bilinear_weight_grads(p, dy, dx);
      for (int corner = 0; corner < 4; ++corner) {
        const int64_t index = roi_corner_index(p, corner, g.width);
        taps.push_back({index, dx[corner] * b.inv_count * b.scale_x});
        taps.push_back({index, dy[corner] * b.inv_count * b.scale_y});
      }
    }
  }
}

template <typename T>
void forward_kernel(const T* input, const T* rois, const T* offset, const RoiPoolGeometry& g, T* output) {
  const int64_t plane = g.height * g.width, bins = g.bins(), per_class = g.out_channels / g.offset_classes;
  at::parallel_for(0, g.rois * bins, 1, [&](int64_t begin, int64_t end) {
    std::vector<Tap<T>> taps;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / bins, bin = item % bins, ph = bin / g.pooled_w, pw = bin % g.pooled_w;
      for (int64_t cls = 0; cls < g.offset_classes; ++cls) {
        const RoiBin<T> b = roi_bin(g, rois, offset, k, cls * per_class, ph, pw);
        value_taps(b, g, taps);
        for (int64_t c = cls * per_class; c < (cls + 1) * per_class; ++c) {
          const T* x = input + (b.batch_index * g.channels + roi_in_channel(g, c, ph, pw)) * plane;
          T sum(0);
          for (const Tap<T>& t : taps) sum += t.coeff * x[t.index];
          output[(k * g.out_channels + c) * bins + bin] = sum;
        }
      }
    }
  });
}

template <typename T>
void offset_grad_kernel(const T* grad_output, const T* input, const T* rois, const T* offset, const RoiPoolGeometry& g,
                        T* grad_offset) {
  const int64_t plane = g.height * g.width, bins = g.bins(), y_stride = g.part_h * g.part_w;
  const int64_t per_class = g.out_channels / g.offset_classes;
  at::parallel_for(0, g.rois, 1, [&](int64_t begin, int64_t end) {
    std::vector<Tap<T>> taps;
    for (int64_t k = begin; k < end; ++k) {
      for (int64_t bin = 0; bin < bins; ++bin) {
        const int64_t ph = bin / g.pooled_w, pw = bin % g.pooled_w;
        for (int64_t cls = 0; cls < g.offset_classes; ++cls) {
          const RoiBin<T> b = roi_bin(g, rois, offset, k, cls * per_class, ph, pw);
          offset_taps(b, g, taps);
          if (taps.empty()) continue;
          T grad_x(0), grad_y(0);
          for (int64_t c = cls * per_class; c < (cls + 1) * per_class; ++c) {
            const T* x = input + (b.batch_index * g.channels + roi_in_channel(g, c, ph, pw)) * plane;
            T sum_x(0), sum_y(0);
            for (size_t i = 0; i < taps.size(); i += 2) {
              const T v = x[taps[i].index];
              sum_x += taps[i].coeff * v;
              sum_y += taps[i + 1].coeff * v;
            }
            const T go = grad_output[(k * g.out_channels + c) * bins + bin];
            grad_x += go * sum_x;
            grad_y += go * sum_y;
          }
          grad_offset[b.offset_index] += grad_x;
          grad_offset[b.offset_index + y_stride] += grad_y;
        }
      }
    }
  });
}

template <typename T>
void input_grad_kernel(const T* grad_output, const T* rois, const T* offset, const RoiPoolGeometry& g, T* grad_input) {
  const int64_t plane = g.height * g.width, bins = g.bins(), groups = g.group_h * g.group_w;
  const int64_t per_class = g.out_channels / g.offset_classes;
  // Each thread owns a range of input channels, and computes a bin's taps once for its range.
  at::parallel_for(0, g.channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<Tap<T>> taps;
    for (int64_t k = 0; k < g.rois; ++k) {
      for (int64_t bin = 0; bin < bins; ++bin) {
        const int64_t ph = bin / g.pooled_w, pw = bin % g.pooled_w;
        const int64_t map = (ph * g.group_h / g.pooled_h) * g.group_w + pw * g.group_w / g.pooled_w;
        int64_t have_cls = -1, batch_index = 0;
        for (int64_t c_in = begin; c_in < end; ++c_in) {
          if (c_in % groups != map) continue;  // this score map is not read at this bin
          const int64_t c = c_in / groups, cls = c / per_class;
          if (cls != have_cls) {
            const RoiBin<T> b = roi_bin(g, rois, offset, k, c, ph, pw);
            value_taps(b, g, taps);
            have_cls = cls;
            batch_index = b.batch_index;
          }
          const T grad = grad_output[(k * g.out_channels + c) * bins + bin];
          T* dst = grad_input + (batch_index * g.channels + c_in) * plane;
          for (const Tap<T>& t : taps) dst[t.index] += grad * t.coeff;
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
