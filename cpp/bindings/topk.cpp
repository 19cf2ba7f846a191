// Python bindings of the top-k engine: recore._core.topk.
#include "recore/topk.hpp"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "buffers.hpp"
#include "recore/parallel.hpp"

namespace recore::bindings {
namespace {

// Whether row r holds a NaN or an infinity: an exponent of all ones. Integer tests, so that
// the loop vectorizes.
bool row_not_finite(const MatrixView<const float>& m, int64_t r) {
  uint32_t row_bad = 0;
  for (int64_t j = 0; j < m.cols; ++j) {
    uint32_t bits;
    std::memcpy(&bits, m.row(r) + j, sizeof(bits));
    row_bad |= (bits & 0x7f800000u) == 0x7f800000u;
  }
  return row_bad != 0;
}

// Every value finite; small arrays (one query) read on the calling thread (see any_index).
bool all_finite(const MatrixView<const float>& m) {
  return !any_index(m.rows, m.rows * m.cols, [&](int64_t r) { return row_not_finite(m, r); });
}

template <typename T>
const T* vector_of(py::handle obj, const std::string& name, int64_t length) {
  py::array a = require_array(obj, name);
  require_dtype<T>(a, name);
  require_layout(a, name, 1, false);
  if (a.shape(0) != length)
    throw py::value_error(name + " must have " + std::to_string(length) + " entries, got " +
                          std::to_string(a.shape(0)));
  return static_cast<const T*>(a.data());
}

// Items left to the search to check (see topk_checks_items): a search that could not
// vouch for them has them read before its results are returned.
template <typename I, typename O>
py::tuple search(MatrixView<const float> queries, MatrixView<const float> items, int64_t k, const CsrParts* exclude,
                 ItemFilter filter, int num_threads, const ItemPanels& panels, bool check_items) {
  Exclusions<I> exclusions;
  if (exclude) {
    exclusions.indptr = static_cast<const I*>(exclude->indptr.data());
    exclusions.indices = static_cast<const I*>(exclude->indices.data());
  }
  py::array_t<O> ids;
  py::array_t<float> scores;
  try {
    ids = py::array_t<O>({queries.rows, static_cast<py::ssize_t>(k)});
    scores = py::array_t<float>({queries.rows, static_cast<py::ssize_t>(k)});
  } catch (py::error_already_set& error) {
    if (!error.matches(PyExc_MemoryError)) throw;
    throw py::value_error("k=" + std::to_string(k) + " asks for (" + std::to_string(queries.rows) + ", " +
                          std::to_string(k) + ") outputs, more memory than there is");
  }
  TopkOutput<O> output{ids.mutable_data(), scores.mutable_data()};
  bool finite_items = true;
  {
    py::gil_scoped_release release;
    const bool checked = topk<I, O>(queries, items, k, filter, exclusions, output, num_threads, panels);
    if (check_items && !checked) finite_items = all_finite(items);
  }
  if (!finite_items) throw py::value_error("items must not contain NaN or infinity");
  return py::make_tuple(ids, scores);
}

py::tuple topk_binding(py::handle queries_obj, py::handle items_obj, int64_t k, py::handle exclude_obj,
                       py::handle denied_obj, py::handle item_ids_obj, int64_t catalog_size, bool wide_ids,
                       bool check_finite, int num_threads, py::handle panels_obj, py::handle bfloat16_obj,
                       double max_item_norm, bool items_checked) {
  auto queries = matrix<const float>(queries_obj, "queries", false);
  auto items = matrix<const float>(items_obj, "items", false);
  if (queries.cols != items.cols)
    throw py::value_error("queries and items must have the same number of factors, got " +
                          std::to_string(queries.cols) + " and " + std::to_string(items.cols));
  if (k < 1) throw py::value_error("k must be >= 1, got " + std::to_string(k));
  if (queries.rows > 0 && k > (int64_t{1} << 60) / (queries.rows * 8))
    throw py::value_error("k=" + std::to_string(k) + " is too large: the outputs' size overflows");
  if (num_threads < 0) throw py::value_error("num_threads must be >= 0, got " + std::to_string(num_threads));
  if (catalog_size < 0) catalog_size = items.rows;
  if (!wide_ids && catalog_size > INT32_MAX)
    throw py::value_error("a catalog of more than 2**31 - 1 items needs int64 ids");

  ItemFilter filter;
  if (!item_ids_obj.is_none()) {
    const int64_t* ids = vector_of<int64_t>(item_ids_obj, "item_ids", items.rows);
    for (int64_t r = 0; r < items.rows; ++r)
      if (ids[r] < 0 || ids[r] >= catalog_size || (r > 0 && ids[r] <= ids[r - 1]))
        throw py::value_error("item_ids must be strictly increasing catalog ids");
    filter.item_ids = ids;
  } else if (catalog_size != items.rows) {
    throw py::value_error("catalog_size must equal the number of item rows unless item_ids are given");
  }
  if (!denied_obj.is_none()) filter.denied = vector_of<uint64_t>(denied_obj, "denied", (catalog_size + 63) / 64);

  CsrParts exclude;
  const bool has_exclude = !exclude_obj.is_none();
  bool int64_exclude = false;
  if (has_exclude) {
    exclude = csr_parts(exclude_obj, "exclude");
    if (exclude.rows != queries.rows)
      throw py::value_error("exclude must have one row per query: " + std::to_string(queries.rows) + " rows, got " +
                            std::to_string(exclude.rows));
    if (exclude.cols != catalog_size)
      throw py::value_error("exclude must have one column per item: " + std::to_string(catalog_size) +
                            " columns, got " + std::to_string(exclude.cols));
    int64_exclude = has_dtype<int64_t>(exclude.indices);
    const char* error = nullptr;
    bool sorted = true;
    const int64_t nnz = exclude.indices.shape(0);
    {
      // Released only for a check long enough to be worth the two hand-overs of the GIL.
      std::optional<py::gil_scoped_release> release;
      if (nnz + exclude.rows > (int64_t{1} << 14)) release.emplace();
      if (int64_exclude) {
        auto indptr = static_cast<const int64_t*>(exclude.indptr.data());
        auto indices = static_cast<const int64_t*>(exclude.indices.data());
        error = csr_structure_error(indptr, exclude.rows, indices, nnz, exclude.cols);
        if (!error) sorted = csr_rows_strictly_increasing(indptr, exclude.rows, indices);
      } else {
        auto indptr = static_cast<const int32_t*>(exclude.indptr.data());
        auto indices = static_cast<const int32_t*>(exclude.indices.data());
        error = csr_structure_error(indptr, exclude.rows, indices, nnz, exclude.cols);
        if (!error) sorted = csr_rows_strictly_increasing(indptr, exclude.rows, indices);
      }
    }
    if (error) {
      const std::string message = std::string("exclude: ") + error;
      if (std::string(error).rfind("indices", 0) == 0) throw py::index_error(message);
      throw py::value_error(message);
    }
    if (!sorted) throw py::value_error("exclude must have sorted indices without duplicates in every row");
  }

  ItemPanels panels;
  const int64_t panel_values = (items.rows + kPanelItems - 1) / kPanelItems * kPanelItems * items.cols;
  if (!panels_obj.is_none() || !bfloat16_obj.is_none()) {
    if (filter.item_ids) throw py::value_error("item panels cannot be combined with item_ids");
  }
  if (!panels_obj.is_none()) panels.float32 = vector_of<float>(panels_obj, "item_panels", panel_values);
  if (!bfloat16_obj.is_none()) {
    panels.bfloat16 = vector_of<uint16_t>(bfloat16_obj, "item_panels_bfloat16", panel_values);
    if (!(max_item_norm >= 0) || !std::isfinite(max_item_norm))
      throw py::value_error("max_item_norm must be a finite number >= 0");
    panels.max_norm = static_cast<float>(max_item_norm);
    if (double(panels.max_norm) < max_item_norm) panels.max_norm = std::nextafter(panels.max_norm, INFINITY);
  }

  // A single query over rows scores every row and tells whether all were finite, so the
  // items are read again only when it could not (a NaN, an infinity, or an overflow).
  const bool check_items = check_finite && !items_checked;
  const bool search_checks_items = check_items && topk_checks_items(queries.rows, panels);
  if (check_finite) {
    bool finite_queries, finite_items = true;
    {
      std::optional<py::gil_scoped_release> release;
      if (queries.rows > kSingleQueryPathMax || (check_items && !search_checks_items)) release.emplace();
      finite_queries = all_finite(queries);
      if (finite_queries && check_items && !search_checks_items) finite_items = all_finite(items);
    }
    if (!finite_queries) throw py::value_error("queries must not contain NaN or infinity");
    if (!finite_items) throw py::value_error("items must not contain NaN or infinity");
  }
  const CsrParts* ex = has_exclude ? &exclude : nullptr;
  const bool c = search_checks_items;
  if (int64_exclude)
    return wide_ids ? search<int64_t, int64_t>(queries, items, k, ex, filter, num_threads, panels, c)
                    : search<int64_t, int32_t>(queries, items, k, ex, filter, num_threads, panels, c);
  return wide_ids ? search<int32_t, int64_t>(queries, items, k, ex, filter, num_threads, panels, c)
                  : search<int32_t, int32_t>(queries, items, k, ex, filter, num_threads, panels, c);
}

}  // namespace

void init_topk(py::module_& m) {
  m.def("topk", &topk_binding, py::arg("queries"), py::arg("items"), py::arg("k"), py::arg("exclude") = py::none(),
        py::arg("denied") = py::none(), py::arg("item_ids") = py::none(), py::arg("catalog_size") = -1,
        py::arg("wide_ids") = false, py::arg("check_finite") = true, py::arg("num_threads") = 0,
        py::arg("item_panels") = py::none(), py::arg("item_panels_bfloat16") = py::none(),
        py::arg("max_item_norm") = 0.0, py::arg("items_checked") = false,
        "Exact top-k by dot product: (ids, scores), each of shape (queries, k). See recore.topk. check_finite: "
        "refuse NaN or infinity in the queries, and in the items unless items_checked (the caller checked "
        "them); a single query over item rows checks the items in its scoring pass.");
  m.def(
      "all_finite",
      [](py::handle obj) {
        auto view = matrix<const float>(obj, "array", false);
        py::gil_scoped_release release;
        return all_finite(view);
      },
      py::arg("array"), "Whether a float32 C-contiguous 2-D array holds no NaN or infinity.");
  m.def(
      "item_panels",
      [](py::handle obj) {
        auto items = matrix<const float>(obj, "items", false);
        const int64_t count = (items.rows + kPanelItems - 1) / kPanelItems;
        py::array_t<float> panels(static_cast<py::ssize_t>(count * items.cols * kPanelItems));
        float* out = panels.mutable_data();
        py::gil_scoped_release release;
        make_item_panels(items, out);
        return panels;
      },
      py::arg("items"), "The items (float32, C-contiguous) in the panel layout single-query searches read.");
  m.def(
      "bfloat16_panels",
      [](py::handle obj) {
        py::array a = require_array(obj, "panels");
        require_dtype<float>(a, "panels");
        require_layout(a, "panels", 1, false);
        const int64_t count = a.shape(0);
        if (count % kPanelItems != 0) throw py::value_error("panels must hold whole panels (item_panels' output)");
        py::array_t<uint16_t> rounded(static_cast<py::ssize_t>(count));
        const float* in = static_cast<const float*>(a.data());
        auto* out = reinterpret_cast<uint32_t*>(rounded.mutable_data());
        py::gil_scoped_release release;
        make_bfloat16_panels(in, count, out);
        return rounded;
      },
      py::arg("panels"), "item_panels' output rounded to bfloat16 in the layout the bfloat16 single-query path reads.");
  m.attr("SINGLE_QUERY_PATH_MAX") = kSingleQueryPathMax;
  m.attr("PANEL_ITEMS") = kPanelItems;
}

}  // namespace recore::bindings
