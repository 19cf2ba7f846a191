// Checks at the Python edge: every buffer handed to the engine is looked at here first,
// and anything the engine cannot take as it is becomes a Python exception naming the
// argument. Nothing is ever copied or converted.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "recore/als.hpp"
#include "recore/csr.hpp"

namespace recore::bindings {

namespace py = pybind11;

inline std::string type_name(py::handle obj) { return py::str(py::type::of(obj).attr("__name__")); }

inline std::string dtype_name(const py::array& a) { return py::str(a.dtype()); }

// The object itself as a numpy array (no copy); TypeError for anything else.
inline py::array require_array(py::handle obj, const std::string& name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name + " must be a numpy array, got " + type_name(obj));
  return py::reinterpret_borrow<py::array>(obj);
}

template <typename T>
bool has_dtype(const py::array& a) {
  return a.dtype().is(py::dtype::of<T>()) || a.dtype().equal(py::dtype::of<T>());
}

template <typename T>
void require_dtype(const py::array& a, const std::string& name) {
  if (!has_dtype<T>(a))
    throw py::type_error(name + " must have dtype " + std::string(py::str(py::dtype::of<T>())) + ", got " +
                         dtype_name(a));
}

inline void require_layout(const py::array& a, const std::string& name, py::ssize_t ndim, bool writable) {
  if (a.ndim() != ndim)
    throw py::value_error(name + " must be " + std::to_string(ndim) + "-dimensional, got " +
                          std::to_string(a.ndim()) + " dimensions");
  if (!(a.flags() & py::array::c_style)) throw py::value_error(name + " must be C-contiguous");
  if (writable && !a.writeable()) throw py::value_error(name + " must be writeable");
}

// A C-contiguous 2-D array of T, viewed without copying.
template <typename T>
MatrixView<T> matrix(py::handle obj, const std::string& name, bool writable) {
  py::array a = require_array(obj, name);
  require_dtype<std::remove_const_t<T>>(a, name);
  require_layout(a, name, 2, writable);
  MatrixView<T> view;
  view.data = static_cast<T*>(const_cast<void*>(a.data()));
  view.rows = a.shape(0);
  view.cols = a.shape(1);
  view.stride = a.shape(1);
  return view;
}

// The parts of a scipy.sparse CSR matrix (csr_matrix or csr_array), without copying.
struct __attribute__((visibility("hidden"))) CsrParts {
  py::array indptr, indices, data;
  int64_t rows = 0, cols = 0;
  std::string name;
};

inline CsrParts csr_parts(py::handle obj, const std::string& name) {
  // Each attribute read once (scipy's format is a property): a single query's search pays
  // for every lookup here.
  const py::object format = py::getattr(obj, "format", py::none());
  const py::object indptr = py::getattr(obj, "indptr", py::none());
  if (indptr.is_none() || !py::isinstance<py::str>(format) || format.cast<std::string>() != "csr")
    throw py::type_error(name + " must be a scipy.sparse CSR matrix, got " + type_name(obj));
  CsrParts parts;
  parts.name = name;
  parts.indptr = require_array(indptr, name + ".indptr");
  parts.indices = require_array(obj.attr("indices"), name + ".indices");
  parts.data = require_array(obj.attr("data"), name + ".data");
  py::tuple shape = obj.attr("shape");
  parts.rows = shape[0].cast<int64_t>();
  parts.cols = shape[1].cast<int64_t>();
  for (auto* part : {&parts.indptr, &parts.indices, &parts.data}) require_layout(*part, name, 1, false);
  if (parts.indptr.shape(0) != parts.rows + 1)
    throw py::value_error(name + ".indptr must have rows + 1 entries");
  if (parts.indices.shape(0) != parts.data.shape(0))
    throw py::value_error(name + ".indices and " + name + ".data must have the same length");
  if (!parts.indptr.dtype().equal(parts.indices.dtype()))
    throw py::type_error(name + ".indptr and " + name + ".indices must have the same dtype, got " +
                         dtype_name(parts.indptr) + " and " + dtype_name(parts.indices));
  if (!has_dtype<int32_t>(parts.indices) && !has_dtype<int64_t>(parts.indices))
    throw py::type_error(name + ".indices must have dtype int32 or int64, got " + dtype_name(parts.indices));
  return parts;
}

// The CSR as an engine view after an O(nnz) structure check (GIL released): an index out
// of range raises IndexError, a malformed indptr ValueError.
template <typename T, typename I>
CsrView<T, I> csr_view(const CsrParts& parts) {
  require_dtype<T>(parts.data, parts.name + ".data");
  CsrView<T, I> view;
  view.rows = parts.rows;
  view.cols = parts.cols;
  view.indptr = static_cast<const I*>(parts.indptr.data());
  view.indices = static_cast<const I*>(parts.indices.data());
  view.data = static_cast<const T*>(parts.data.data());
  const int64_t nnz = parts.indices.shape(0);
  const char* error;
  {
    py::gil_scoped_release release;
    error = csr_structure_error(view.indptr, view.rows, view.indices, nnz, view.cols);
  }
  if (error) {
    const std::string message = parts.name + ": " + error;
    if (std::string(error).rfind("indices", 0) == 0) throw py::index_error(message);
    throw py::value_error(message);
  }
  return view;
}

}  // namespace recore::bindings
