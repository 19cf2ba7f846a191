// Python bindings of the CUDA top-k engine: recore._cuda.topk.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "buffers.hpp"

namespace recore::cuda::bindings {
namespace {

template <typename I, typename O>
void run(MatrixView<const float> queries, MatrixView<const float> items, int64_t k, std::uintptr_t indptr,
         std::uintptr_t indices, int64_t exclude_nnz, const TopkDeviceOptions& options, std::uintptr_t ids,
         std::uintptr_t scores, int device, std::uintptr_t stream) {
  Exclusions<I> exclusions;
  if (indptr != 0) {
    exclusions.indptr = device_pointer<const I>(indptr, queries.rows + 1, device, "exclude.indptr");
    exclusions.indices = device_pointer<const I>(indices, exclude_nnz, device, "exclude.indices");
  }
  TopkOutput<O> output{device_pointer<O>(ids, queries.rows * k, device, "ids"),
                       device_pointer<float>(scores, queries.rows * k, device, "scores")};
  py::gil_scoped_release release;
  topk<I, O>(queries, items, k, exclusions, options, output, stream);
}

}  // namespace

void init_topk(py::module_& m) {
  m.def(
      "topk",
      [](int device, std::uintptr_t stream, std::uintptr_t queries, int64_t n_queries, std::uintptr_t items,
         int64_t n_items, int64_t f, int64_t k, std::uintptr_t exclude_indptr, std::uintptr_t exclude_indices,
         int64_t exclude_nnz, bool exclude_wide, std::uintptr_t denied, std::uintptr_t item_ids,
         int64_t catalog_size, bool bfloat16, std::uintptr_t ids, bool wide_ids, std::uintptr_t scores) {
        DeviceScope scope(device);
        if (k < 1) throw py::value_error("k must be >= 1, got " + std::to_string(k));
        MatrixView<const float> q{device_pointer<const float>(queries, n_queries * f, device, "queries"), n_queries,
                                  f, f};
        MatrixView<const float> y{device_pointer<const float>(items, n_items * f, device, "items"), n_items, f, f};
        TopkDeviceOptions options;
        options.bfloat16 = bfloat16;
        options.catalog_size = catalog_size;
        options.denied = optional_pointer<const uint64_t>(denied, (catalog_size + 63) / 64, device, "denied");
        options.item_ids = optional_pointer<const int64_t>(item_ids, n_items, device, "item_ids");
        if (exclude_wide) {
          if (wide_ids) run<int64_t, int64_t>(q, y, k, exclude_indptr, exclude_indices, exclude_nnz, options, ids,
                                              scores, device, stream);
          else run<int64_t, int32_t>(q, y, k, exclude_indptr, exclude_indices, exclude_nnz, options, ids, scores,
                                     device, stream);
        } else {
          if (wide_ids) run<int32_t, int64_t>(q, y, k, exclude_indptr, exclude_indices, exclude_nnz, options, ids,
                                              scores, device, stream);
          else run<int32_t, int32_t>(q, y, k, exclude_indptr, exclude_indices, exclude_nnz, options, ids, scores,
                                     device, stream);
        }
      },
      py::arg("device"), py::arg("stream"), py::arg("queries"), py::arg("n_queries"), py::arg("items"),
      py::arg("n_items"), py::arg("f"), py::arg("k"), py::arg("exclude_indptr"), py::arg("exclude_indices"),
      py::arg("exclude_nnz"), py::arg("exclude_wide"), py::arg("denied"), py::arg("item_ids"),
      py::arg("catalog_size"), py::arg("bfloat16"), py::arg("ids"), py::arg("wide_ids"), py::arg("scores"));
}

}  // namespace recore::cuda::bindings
