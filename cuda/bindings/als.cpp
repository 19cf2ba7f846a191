// Python bindings of the CUDA ALS engine: recore._cuda.gram_matrix, als_solve, als_loss.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "buffers.hpp"
#include "recore/als_options.hpp"  // the engines' one check, shared

namespace recore::cuda::bindings {
namespace {

template <typename I>
CsrView<float, I> csr(int64_t rows, int64_t cols, int64_t nnz, std::uintptr_t indptr, std::uintptr_t indices,
                      std::uintptr_t data, int device, const std::string& name) {
  CsrView<float, I> view;
  view.rows = rows;
  view.cols = cols;
  view.indptr = device_pointer<const I>(indptr, rows + 1, device, name + ".indptr");
  view.indices = device_pointer<const I>(indices, nnz, device, name + ".indices");
  view.data = device_pointer<const float>(data, nnz, device, name + ".data");
  return view;
}

MatrixView<float> matrix(std::uintptr_t address, int64_t rows, int64_t cols, int device, const std::string& name) {
  MatrixView<float> view;
  view.data = device_pointer<float>(address, rows * cols, device, name);
  view.rows = rows;
  view.cols = cols;
  view.stride = cols;
  return view;
}

MatrixView<const float> const_view(const MatrixView<float>& m) { return {m.data, m.rows, m.cols, m.stride}; }

}  // namespace

void init_als(py::module_& m) {
  m.def(
      "gram_matrix",
      [](int device, std::uintptr_t stream, std::uintptr_t factors, int64_t n, int64_t f, std::uintptr_t gram) {
        DeviceScope scope(device);
        auto in = matrix(factors, n, f, device, "factors");
        auto out = matrix(gram, f, f, device, "gram");
        py::gil_scoped_release release;
        gram_matrix(const_view(in), out, stream);
      },
      py::arg("device"), py::arg("stream"), py::arg("factors"), py::arg("n"), py::arg("f"), py::arg("gram"));
  m.def(
      "als_solve",
      [](int device, std::uintptr_t stream, bool wide, int64_t rows, int64_t cols, int64_t nnz, std::uintptr_t indptr,
         std::uintptr_t indices, std::uintptr_t data, std::uintptr_t fixed, std::uintptr_t gram,
         std::uintptr_t target, int64_t f, const std::string& feedback, const std::string& confidence,
         const std::string& solver, double regularization, double alpha, int cg_steps, bool weighted,
         double unobserved_weight, double regularization_exponent, int block_size, int subspace_sweeps) {
        DeviceScope scope(device);
        const AlsOptions options = recore::als_options_from_names(
            feedback, confidence, solver, regularization, alpha, cg_steps, weighted, 0, unobserved_weight,
            regularization_exponent, block_size, subspace_sweeps);
        auto fixed_view = const_view(matrix(fixed, cols, f, device, "fixed_factors"));
        auto target_view = matrix(target, rows, f, device, "target_factors");
        const float* gram_pointer = optional_pointer<const float>(gram, f * f, device, "fixed_gram");
        if (wide) {
          auto view = csr<int64_t>(rows, cols, nnz, indptr, indices, data, device, "user_items");
          py::gil_scoped_release release;
          als_solve<int64_t>(view, fixed_view, gram_pointer, target_view, options, stream);
        } else {
          auto view = csr<int32_t>(rows, cols, nnz, indptr, indices, data, device, "user_items");
          py::gil_scoped_release release;
          als_solve<int32_t>(view, fixed_view, gram_pointer, target_view, options, stream);
        }
      },
      py::arg("device"), py::arg("stream"), py::arg("wide"), py::arg("rows"), py::arg("cols"), py::arg("nnz"),
      py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("fixed"), py::arg("gram"), py::arg("target"),
      py::arg("f"), py::arg("feedback"), py::arg("confidence"), py::arg("solver"), py::arg("regularization"),
      py::arg("alpha"), py::arg("cg_steps"), py::arg("weighted_regularization"), py::arg("unobserved_weight"),
      py::arg("regularization_exponent"), py::arg("block_size"), py::arg("subspace_sweeps"));
  m.def(
      "als_loss",
      [](int device, std::uintptr_t stream, bool wide, int64_t rows, int64_t cols, int64_t nnz, std::uintptr_t indptr,
         std::uintptr_t indices, std::uintptr_t data, std::uintptr_t users, std::uintptr_t items,
         std::uintptr_t gram, int64_t f, const std::string& feedback, const std::string& confidence,
         double regularization, double alpha, bool weighted, double unobserved_weight, double regularization_exponent) {
        DeviceScope scope(device);
        const AlsOptions options = recore::als_options_from_names(feedback, confidence, "cg", regularization, alpha, 1,
                                                                  weighted, 0, unobserved_weight,
                                                                  regularization_exponent, 1, 1);
        auto user_view = const_view(matrix(users, rows, f, device, "user_factors"));
        auto item_view = const_view(matrix(items, cols, f, device, "item_factors"));
        const float* gram_pointer = optional_pointer<const float>(gram, f * f, device, "item_gram");
        if (wide) {
          auto view = csr<int64_t>(rows, cols, nnz, indptr, indices, data, device, "user_items");
          py::gil_scoped_release release;
          return als_loss<int64_t>(view, user_view, item_view, gram_pointer, options, stream);
        }
        auto view = csr<int32_t>(rows, cols, nnz, indptr, indices, data, device, "user_items");
        py::gil_scoped_release release;
        return als_loss<int32_t>(view, user_view, item_view, gram_pointer, options, stream);
      },
      py::arg("device"), py::arg("stream"), py::arg("wide"), py::arg("rows"), py::arg("cols"), py::arg("nnz"),
      py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("users"), py::arg("items"), py::arg("gram"),
      py::arg("f"), py::arg("feedback"), py::arg("confidence"), py::arg("regularization"), py::arg("alpha"),
      py::arg("weighted_regularization"), py::arg("unobserved_weight"), py::arg("regularization_exponent"));
}

}  // namespace recore::cuda::bindings
