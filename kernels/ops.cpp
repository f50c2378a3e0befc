// Operator schemas of segdcn._C, the autocast rule, and build facts. Device kernels
// register themselves in kernels/cpu and kernels/cuda; Python adds fake kernels and
// autograd (segdcn/ops/deform_conv.py, deform_roi_pool.py).
#include <ATen/autocast_mode.h>
#include <Python.h>
#include <torch/library.h>

#include <cstring>
#include <string>

#include "deform_conv2d.h"
#include "deform_roi_pool.h"

#ifndef SEGDCN_CUDA_ARCH_LIST
#define SEGDCN_CUDA_ARCH_LIST ""
#endif

namespace segdcn {
namespace {

c10::optional<at::Tensor> cast_optional(const c10::optional<at::Tensor>& t, at::ScalarType dtype) {
  if (t.has_value() && t->defined() && at::isFloatingType(t->scalar_type())) return t->to(dtype);
  return t;
}

// Autocast: on the CPU the op runs in float32 (its kernels are float32/float64) and the
// result is cast to the autocast dtype; on CUDA it runs natively in the autocast dtype.
template <c10::DispatchKey key, c10::DeviceType device>
at::Tensor deform_conv2d_autocast(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                                  const c10::optional<at::Tensor>& mask, const c10::optional<at::Tensor>& bias,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups, int64_t offset_groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  const at::ScalarType autocast_dtype = at::autocast::get_autocast_dtype(device);
  const at::ScalarType run_dtype = device == c10::DeviceType::CPU ? at::kFloat : autocast_dtype;
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("segdcn::deform_conv2d", "").typed<decltype(
      deform_conv2d_autocast<key, device>)>();
  at::Tensor out = op.call(input.to(run_dtype), weight.to(run_dtype), offset.to(run_dtype),
                           cast_optional(mask, run_dtype), cast_optional(bias, run_dtype), stride, padding, dilation,
                           groups, offset_groups);
  return out.to(autocast_dtype);
}

}  // namespace

TORCH_LIBRARY(segdcn, m) {
  SEGDCN_DEFINE_DEFORM_CONV2D_OPS(m);
  SEGDCN_DEFINE_ROI_POOL_OPS(m);
}

TORCH_LIBRARY_IMPL(segdcn, AutocastCPU, m) {
  m.impl("deform_conv2d", &deform_conv2d_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(segdcn, AutocastCUDA, m) {
  m.impl("deform_conv2d", &deform_conv2d_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>);
}

}  // namespace segdcn

namespace {

PyObject* build_info(PyObject*, PyObject*) {
#ifdef SEGDCN_WITH_CUDA
  PyObject* cuda = Py_True;
#else
  PyObject* cuda = Py_False;
#endif
  return Py_BuildValue("{s:O,s:O,s:s,s:i}", "native", Py_True, "cuda", cuda, "cuda_arch_list", SEGDCN_CUDA_ARCH_LIST,
                       "openmp",
#ifdef _OPENMP
                       1
#else
                       0
#endif
  );
}

segdcn::DeformConvPlan parse_plan(const char* name, bool* ok) {
  *ok = true;
  for (auto plan : {segdcn::DeformConvPlan::kAuto, segdcn::DeformConvPlan::kIm2col, segdcn::DeformConvPlan::kDirect})
    if (std::string(name) == segdcn::plan_name(plan)) return plan;
  *ok = false;
  return segdcn::DeformConvPlan::kAuto;
}

PyObject* deform_conv2d_plan(PyObject*, PyObject* args) {
  long long in_channels, out_channels, groups;
  if (!PyArg_ParseTuple(args, "LLL", &in_channels, &out_channels, &groups)) return nullptr;
  if (in_channels < 1 || out_channels < 1 || groups < 1 || in_channels % groups || out_channels % groups) {
    PyErr_Format(PyExc_ValueError, "deform_conv2d_plan: groups=%lld must divide in_channels=%lld and out_channels=%lld",
                 groups, in_channels, out_channels);
    return nullptr;
  }
  return PyUnicode_FromString(segdcn::plan_name(segdcn::deform_conv2d_plan(in_channels, out_channels, groups)));
}

PyObject* force_deform_conv2d_plan(PyObject*, PyObject* args) {
  const char* name;
  if (!PyArg_ParseTuple(args, "s", &name)) return nullptr;
  bool ok;
  const segdcn::DeformConvPlan plan = parse_plan(name, &ok);
  if (!ok) {
    PyErr_Format(PyExc_ValueError, "plan must be auto, im2col or direct, got '%s'", name);
    return nullptr;
  }
  return PyUnicode_FromString(segdcn::plan_name(segdcn::force_deform_conv2d_plan(plan)));
}

PyObject* force_tap_gemms(PyObject*, PyObject* args) {
  const char* name;
  if (!PyArg_ParseTuple(args, "s", &name)) return nullptr;
  for (auto mode : {segdcn::TapGemms::kAuto, segdcn::TapGemms::kRows, segdcn::TapGemms::kTaps,
                    segdcn::TapGemms::kPanels}) {
    if (std::strcmp(name, segdcn::tap_gemms_name(mode)) == 0)
      return PyUnicode_FromString(segdcn::tap_gemms_name(segdcn::force_tap_gemms(mode)));
  }
  PyErr_Format(PyExc_ValueError, "tap GEMMs must be auto, rows, taps or panels, got '%s'", name);
  return nullptr;
}

PyObject* force_cpu_kernels(PyObject*, PyObject* args) {
  const char* name;
  if (!PyArg_ParseTuple(args, "s", &name)) return nullptr;
  for (auto mode : {segdcn::CpuKernels::kAuto, segdcn::CpuKernels::kAvx2, segdcn::CpuKernels::kPortable}) {
    if (std::strcmp(name, segdcn::cpu_kernels_name(mode)) == 0)
      return PyUnicode_FromString(segdcn::cpu_kernels_name(segdcn::force_cpu_kernels(mode)));
  }
  PyErr_Format(PyExc_ValueError, "CPU kernels must be auto, avx2 or portable, got '%s'", name);
  return nullptr;
}

PyMethodDef methods[] = {
    {"build_info", build_info, METH_NOARGS, "Facts about how segdcn._C was built."},
    {"deform_conv2d_plan", deform_conv2d_plan, METH_VARARGS,
     "deform_conv2d_plan(in_channels, out_channels, groups) -> 'im2col' or 'direct': the plan such a call runs."},
    {"_force_deform_conv2d_plan", force_deform_conv2d_plan, METH_VARARGS,
     "For tests: run every deform_conv2d on 'im2col', 'direct' or 'auto'; returns the previous setting."},
    {"_force_tap_gemms", force_tap_gemms, METH_VARARGS,
     "For tests: the CPU im2col plan's GEMMs over whole rows ('rows'), per tap ('taps'), over whole rows by "
     "segdcn's panel kernel ('panels') or chosen per tile ('auto'); returns the previous setting."},
    {"_force_cpu_kernels", force_cpu_kernels, METH_VARARGS,
     "For tests and benchmarks: the CPU kernels written in intrinsics at most in AVX2 and FMA ('avx2'), none "
     "('portable'), or the widest the CPU has ('auto'); returns the previous setting."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "segdcn's C++/CUDA operators (torch.ops.segdcn).", -1, methods};

}  // namespace

// Importing segdcn._C loads the library, whose static initialisers register the ops.
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
