// recore._cuda: the CUDA engine's Python module. Importing it needs no driver or device
// (the CUDA runtime is linked statically and loads the driver on first use); status()
// says whether a device is usable.
#include <pybind11/pybind11.h>

#include "engine.hpp"

namespace py = pybind11;

namespace recore::cuda::bindings {
void init_als(py::module_& m);
void init_topk(py::module_& m);
void init_sgd(py::module_& m);
}  // namespace recore::cuda::bindings

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "recore's compiled CUDA engine";
  py::register_exception<recore::cuda::CudaError>(m, "CudaError", PyExc_RuntimeError);
  m.def("status", &recore::cuda::status, "'ok' when a CUDA device is usable, else CUDA's reason.");
  m.def("device_count", &recore::cuda::device_count);
  m.def("runtime_version", &recore::cuda::runtime_version);
  m.def("driver_version", &recore::cuda::driver_version);
  m.def("device_name", &recore::cuda::device_name, py::arg("device"));
  m.def(
      "pointer_device",
      [](std::uintptr_t address) { return recore::cuda::pointer_device(reinterpret_cast<const void*>(address)); },
      py::arg("address"), "The device a pointer's memory lives on, or -1 when it is not device memory.");
#ifdef RECORE_HAVE_CUBLAS
  m.attr("cublas") = true;
#else
  m.attr("cublas") = false;
#endif
  m.attr("run_ratings") = recore::cuda::kSgdRunRatings;
  recore::cuda::bindings::init_als(m);
  recore::cuda::bindings::init_topk(m);
  recore::cuda::bindings::init_sgd(m);
}
