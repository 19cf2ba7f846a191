// recore._core: the CPU engine's Python module. Each area has its own binding file with
// an init_<area> function.
#include <pybind11/pybind11.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace recore::bindings {
void init_als(py::module_& m);
void init_cpu(py::module_& m);
void init_topk(py::module_& m);
void init_sgd(py::module_& m);
void init_metrics(py::module_& m);
}  // namespace recore::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "recore's compiled CPU engine";
  recore::bindings::init_als(m);
  recore::bindings::init_cpu(m);
  recore::bindings::init_topk(m);
  recore::bindings::init_sgd(m);
  recore::bindings::init_metrics(m);
  m.def("default_threads", [] {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  }, "Threads a kernel uses when num_threads is 0.");
#ifdef RECORE_HAVE_OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
}
