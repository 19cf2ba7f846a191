// Python bindings of the instruction-set dispatch.
#include "recore/cpu.hpp"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace recore::bindings {

namespace py = pybind11;

void init_cpu(py::module_& m) {
  m.def("cpu_target", [] { return cpu_target_name(active_cpu_target()); },
        "The instruction set the CPU kernels run with.");
  m.def("available_cpu_targets", &available_cpu_targets,
        "Instruction sets that this build contains and this CPU supports.");
  m.def("set_cpu_target", &set_cpu_target, py::arg("name"),
        "Selects the kernels' instruction set: 'auto', 'baseline', 'avx2' or 'avx512'.");
}

}  // namespace recore::bindings
