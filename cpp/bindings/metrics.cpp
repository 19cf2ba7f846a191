// Python bindings of the ranking metrics: recore._core.ranking_totals.
#include "recore/metrics.hpp"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "buffers.hpp"

namespace recore::bindings {
namespace {

template <typename O, typename I>
py::dict totals(const py::array& ids, const CsrParts& relevant, int64_t n_items, const int64_t* candidates,
                int num_threads) {
  const O* list = static_cast<const O*>(ids.data());
  const int64_t users = ids.shape(0), k = ids.shape(1);
  bool bad_id = false;
  {
    py::gil_scoped_release release;
    for (int64_t j = 0; j < users * k; ++j) bad_id = bad_id || list[j] < -1 || list[j] >= n_items;
  }
  if (bad_id) throw py::index_error("ids must be item ids in [0, n_items) or -1 for padding");
  auto view = csr_view<float, I>(relevant);
  RankingTotals t;
  {
    py::gil_scoped_release release;
    if (!csr_rows_strictly_increasing(view.indptr, view.rows, view.indices)) t.users = -1;
    else t = ranking_totals<O, I>(list, users, k, view.indptr, view.indices, n_items, candidates, num_threads);
  }
  if (t.users < 0) throw py::value_error("relevant must have sorted rows without duplicates");
  py::dict out;
  out["precision"] = t.precision;
  out["recall"] = t.recall;
  out["ndcg"] = t.ndcg;
  out["map"] = t.map;
  out["hit_rate"] = t.hit_rate;
  out["auc"] = t.auc;
  out["users"] = t.users;
  out["auc_users"] = t.auc_users;
  out["covered_items"] = t.covered_items;
  return out;
}

}  // namespace

void init_metrics(py::module_& m) {
  m.def(
      "ranking_totals",
      [](py::handle ids_obj, py::handle relevant_obj, int64_t n_items, py::handle candidates_obj, int num_threads) {
        py::array ids = require_array(ids_obj, "ids");
        require_layout(ids, "ids", 2, false);
        if (!has_dtype<int32_t>(ids) && !has_dtype<int64_t>(ids))
          throw py::type_error("ids must have dtype int32 or int64, got " + dtype_name(ids));
        if (ids.shape(1) < 1) throw py::value_error("ids must have at least one column (k >= 1)");
        if (n_items < 0) throw py::value_error("n_items must be >= 0");
        if (num_threads < 0) throw py::value_error("num_threads must be >= 0");
        CsrParts relevant = csr_parts(relevant_obj, "relevant");
        if (relevant.rows != ids.shape(0) || relevant.cols != n_items)
          throw py::value_error("relevant must have one row per user of ids and n_items columns");
        const int64_t* candidates = nullptr;
        if (!candidates_obj.is_none()) {
          py::array c = require_array(candidates_obj, "candidates");
          require_dtype<int64_t>(c, "candidates");
          require_layout(c, "candidates", 1, false);
          if (c.shape(0) != ids.shape(0)) throw py::value_error("candidates must have one entry per user");
          candidates = static_cast<const int64_t*>(c.data());
          const int64_t* rp64 = has_dtype<int64_t>(relevant.indptr) ? static_cast<const int64_t*>(relevant.indptr.data()) : nullptr;
          const int32_t* rp32 = rp64 ? nullptr : static_cast<const int32_t*>(relevant.indptr.data());
          for (int64_t u = 0; u < c.shape(0); ++u) {
            const int64_t count = rp64 ? rp64[u + 1] - rp64[u] : int64_t(rp32[u + 1]) - rp32[u];
            if (candidates[u] < count || candidates[u] > n_items)
              throw py::value_error("candidates must lie between each user's relevant count and n_items");
          }
        }
        if (!has_dtype<float>(relevant.data)) throw py::type_error("relevant.data must be float32");
        const bool wide_ids = has_dtype<int64_t>(ids), wide_rows = has_dtype<int64_t>(relevant.indices);
        if (wide_ids) return wide_rows ? totals<int64_t, int64_t>(ids, relevant, n_items, candidates, num_threads)
                                       : totals<int64_t, int32_t>(ids, relevant, n_items, candidates, num_threads);
        return wide_rows ? totals<int32_t, int64_t>(ids, relevant, n_items, candidates, num_threads)
                         : totals<int32_t, int32_t>(ids, relevant, n_items, candidates, num_threads);
      },
      py::arg("ids"), py::arg("relevant"), py::arg("n_items"), py::arg("candidates") = py::none(),
      py::arg("num_threads") = 0, "Sums of ranking metrics at k over the users with relevant items.");
}

}  // namespace recore::bindings
