// Python bindings of the SGD engine: recore._core.sgd_squared_epoch, sgd_bpr_epoch,
// sgd_bpr_triples, sgd_rmse.
#include "recore/sgd.hpp"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "buffers.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace recore::bindings {
namespace {

template <typename T>
T* vector(py::handle obj, const std::string& name, int64_t length, bool writable) {
  py::array a = require_array(obj, name);
  require_dtype<T>(a, name);
  require_layout(a, name, 1, writable);
  if (a.shape(0) != length)
    throw py::value_error(name + " must have " + std::to_string(length) + " entries, got " +
                          std::to_string(a.shape(0)));
  return static_cast<T*>(const_cast<void*>(a.data()));
}

template <typename T>
T* optional_vector(py::handle obj, const std::string& name, int64_t length) {
  return obj.is_none() ? nullptr : vector<T>(obj, name, length, true);
}

// Every id in [0, bound), checked with the GIL released, on the caller's threads (0: all
// cores): a team larger than asked for would keep spinning beside a one-thread epoch.
void check_ids(const int32_t* ids, int64_t count, int64_t bound, const std::string& name, int num_threads) {
  // One unsigned comparison per id, without branches (so it vectorizes): a negative id is
  // 2^31 or more as uint32, and no int32 id reaches 2^31.
  const uint32_t limit = static_cast<uint32_t>(bound < (int64_t(1) << 31) ? bound : (int64_t(1) << 31));
  unsigned bad = 0;
  {
    py::gil_scoped_release release;
#ifdef _OPENMP
    const int team = num_threads > 0 ? num_threads : omp_get_max_threads();
#pragma omp parallel for num_threads(team) if (team > 1) reduction(| : bad) schedule(static)
#endif
    for (int64_t k = 0; k < count; ++k) bad |= static_cast<unsigned>(static_cast<uint32_t>(ids[k]) >= limit);
  }
  if (bad) throw py::index_error(name + " has ids outside [0, " + std::to_string(bound) + ")");
}

// A factor matrix in float32 or float16 (numpy's IEEE half precision), viewed without copying.
struct FactorRows {
  void* data = nullptr;
  int64_t rows = 0, cols = 0;
  bool float16 = false;
};

FactorRows factor_rows(py::handle obj, const std::string& name) {
  py::array a = require_array(obj, name);
  FactorRows view;
  view.float16 = a.dtype().equal(py::dtype("float16"));
  if (!view.float16 && !has_dtype<float>(a))
    throw py::type_error(name + " must have dtype float32 or float16, got " + dtype_name(a));
  require_layout(a, name, 2, true);
  view.data = const_cast<void*>(a.data());
  view.rows = a.shape(0);
  view.cols = a.shape(1);
  return view;
}

SgdModel model_of(py::handle user_factors, py::handle item_factors, int64_t factors, py::handle user_biases,
                  py::handle item_biases, double global_mean, py::handle user_rate_sums, py::handle item_rate_sums,
                  int64_t slow_factors = 0) {
  const FactorRows users = factor_rows(user_factors, "user_factors");
  const FactorRows items = factor_rows(item_factors, "item_factors");
  if (users.float16 != items.float16)
    throw py::type_error("user_factors and item_factors must have the same dtype (float32 or float16)");
  if (users.cols != items.cols) throw py::value_error("user_factors and item_factors must have the same width");
  if (users.cols % kSgdRowFloats != 0 || factors < 1 || factors > users.cols)
    throw py::value_error("factor matrices must be padded to a multiple of 16 columns, at least factors wide");
  if (users.data == items.data && users.rows > 0 && items.rows > 0)
    throw py::value_error("user_factors and item_factors must not share memory");
  if (!std::isfinite(global_mean)) throw py::value_error("global_mean must be finite");
  SgdModel m;
  if (users.float16) {
    m.user_factors_float16 = static_cast<uint16_t*>(users.data);
    m.item_factors_float16 = static_cast<uint16_t*>(items.data);
  } else {
    m.user_factors = static_cast<float*>(users.data);
    m.item_factors = static_cast<float*>(items.data);
  }
  m.users = users.rows;
  m.items = items.rows;
  m.factors = factors;
  m.stride = users.cols;
  m.user_biases = optional_vector<float>(user_biases, "user_biases", users.rows);
  m.item_biases = optional_vector<float>(item_biases, "item_biases", items.rows);
  m.global_mean = static_cast<float>(global_mean);
  if (slow_factors < 0 || (slow_factors > 0 && slow_factors >= factors))
    throw py::value_error("slow_factors must be 0 or below factors, got " + std::to_string(slow_factors));
  if (slow_factors > 0 && user_rate_sums.is_none())
    throw py::value_error("slow_factors needs the adaptive schedule's rate sums");
  const int64_t sums_per_row = slow_factors > 0 ? 2 : 1;
  m.slow_factors = slow_factors;
  m.user_rate_sums = optional_vector<float>(user_rate_sums, "user_rate_sums", users.rows * sums_per_row);
  m.item_rate_sums = optional_vector<float>(item_rate_sums, "item_rate_sums", items.rows * sums_per_row);
  if ((m.user_rate_sums == nullptr) != (m.item_rate_sums == nullptr))
    throw py::value_error("user_rate_sums and item_rate_sums go together");
  return m;
}

void require_float32_rows(const SgdModel& m) {
  if (m.user_factors_float16) throw py::type_error("BPR trains float32 factors only: user_factors is float16");
}

SgdRates rates_of(double learning_rate, double regularization, double bias_regularization) {
  if (!(learning_rate > 0) || !std::isfinite(learning_rate))
    throw py::value_error("learning_rate must be a finite number > 0");
  if (!(regularization >= 0) || !std::isfinite(regularization))
    throw py::value_error("regularization must be a finite number >= 0");
  if (!(bias_regularization >= 0) || !std::isfinite(bias_regularization))
    throw py::value_error("bias_regularization must be a finite number >= 0");
  return SgdRates{static_cast<float>(learning_rate), static_cast<float>(regularization),
                  static_cast<float>(bias_regularization)};
}

}  // namespace

void init_sgd(py::module_& m) {
  m.attr("SGD_ROW_FLOATS") = kSgdRowFloats;
  m.attr("SGD_SLOW_FACTORS") = kSgdSlowFactors;
  m.def(
      "sgd_squared_epoch",
      [](py::handle users, py::handle items, py::handle values, py::handle block_starts, py::handle block_order,
         int64_t blocks, py::handle user_factors, py::handle item_factors, int64_t factors, py::handle user_biases,
         py::handle item_biases, double global_mean, py::handle user_rate_sums, py::handle item_rate_sums,
         double learning_rate, double regularization, double bias_regularization, int num_threads,
         int64_t slow_factors, bool slow_only, py::handle progress) {
        SgdModel model = model_of(user_factors, item_factors, factors, user_biases, item_biases, global_mean,
                                  user_rate_sums, item_rate_sums, slow_factors);
        SgdRates rates = rates_of(learning_rate, regularization, bias_regularization);
        if ((model.user_biases == nullptr) != (model.item_biases == nullptr))
          throw py::value_error("user_biases and item_biases go together");
        if (blocks < 1) throw py::value_error("blocks must be >= 1");
        if (num_threads < 0) throw py::value_error("num_threads must be >= 0");
        const int64_t count = require_array(users, "users").size();
        RatingGrid grid;
        grid.users = vector<int32_t>(users, "users", count, false);
        grid.items = vector<int32_t>(items, "items", count, false);
        grid.values = vector<float>(values, "values", count, false);
        grid.block_starts = vector<int64_t>(block_starts, "block_starts", blocks * blocks + 1, false);
        grid.blocks = blocks;
        const int32_t* order = vector<int32_t>(block_order, "block_order", blocks * blocks, false);
        check_ids(grid.users, count, model.users, "users", num_threads);
        check_ids(grid.items, count, model.items, "items", num_threads);
        check_ids(order, blocks * blocks, blocks * blocks, "block_order", num_threads);
        if (grid.block_starts[0] != 0 || grid.block_starts[blocks * blocks] != count)
          throw py::value_error("block_starts must rise from 0 to the number of ratings");
        for (int64_t b = 0; b < blocks * blocks; ++b)
          if (grid.block_starts[b + 1] < grid.block_starts[b]) throw py::value_error("block_starts must not decrease");
        std::vector<unsigned char> seen(blocks * blocks, 0);
        for (int64_t b = 0; b < blocks * blocks; ++b) {
          if (seen[order[b]]) throw py::value_error("block_order must be a permutation of the blocks");
          seen[order[b]] = 1;
        }
        int64_t* epochs_done = progress.is_none() ? nullptr : vector<int64_t>(progress, "progress", 1, true);
        py::gil_scoped_release release;
        const double squared_error = sgd_squared_epoch(grid, order, model, rates, num_threads, slow_only);
        // Counted before control returns to Python, where Ctrl-C could interrupt the caller.
        if (epochs_done) ++*epochs_done;
        return squared_error;
      },
      py::arg("users"), py::arg("items"), py::arg("values"), py::arg("block_starts"), py::arg("block_order"),
      py::arg("blocks"), py::arg("user_factors"), py::arg("item_factors"), py::arg("factors"), py::arg("user_biases"),
      py::arg("item_biases"), py::arg("global_mean"), py::arg("user_rate_sums"), py::arg("item_rate_sums"),
      py::arg("learning_rate"), py::arg("regularization"), py::arg("bias_regularization"), py::arg("num_threads"),
      py::arg("slow_factors") = 0, py::arg("slow_only") = false, py::arg("progress") = py::none(),
      "One epoch of squared-loss SGD over a grid of rating blocks; returns the sum of squared errors.");

  m.def(
      "sgd_bpr_triples",
      [](py::handle users, py::handle positives, py::handle negatives, py::handle user_factors,
         py::handle item_factors, int64_t factors, py::handle item_biases, py::handle user_rate_sums,
         py::handle item_rate_sums, double learning_rate, double regularization, double bias_regularization) {
        SgdModel model = model_of(user_factors, item_factors, factors, py::none(), item_biases, 0.0, user_rate_sums,
                                  item_rate_sums);
        require_float32_rows(model);
        SgdRates rates = rates_of(learning_rate, regularization, bias_regularization);
        const int64_t count = require_array(users, "users").size();
        const int32_t* u = vector<int32_t>(users, "users", count, false);
        const int32_t* i = vector<int32_t>(positives, "positives", count, false);
        const int32_t* j = vector<int32_t>(negatives, "negatives", count, false);
        check_ids(u, count, model.users, "users", 1);
        check_ids(i, count, model.items, "positives", 1);
        check_ids(j, count, model.items, "negatives", 1);
        py::gil_scoped_release release;
        return sgd_bpr_triples(u, i, j, count, model, rates);
      },
      py::arg("users"), py::arg("positives"), py::arg("negatives"), py::arg("user_factors"), py::arg("item_factors"),
      py::arg("factors"), py::arg("item_biases"), py::arg("user_rate_sums"), py::arg("item_rate_sums"),
      py::arg("learning_rate"), py::arg("regularization"), py::arg("bias_regularization"),
      "BPR updates for given (user, positive, negative) triples, in order; returns how many had x > 0 before.");

  m.def(
      "sgd_bpr_epoch",
      [](py::handle indptr_obj, py::handle indices_obj, int64_t samples, bool popularity_negatives, uint64_t seed,
         py::handle user_factors, py::handle item_factors, int64_t factors, py::handle item_biases,
         py::handle user_rate_sums, py::handle item_rate_sums, double learning_rate, double regularization,
         double bias_regularization, int num_threads, py::handle progress) {
        SgdModel model = model_of(user_factors, item_factors, factors, py::none(), item_biases, 0.0, user_rate_sums,
                                  item_rate_sums);
        require_float32_rows(model);
        SgdRates rates = rates_of(learning_rate, regularization, bias_regularization);
        int64_t* epochs_done = progress.is_none() ? nullptr : vector<int64_t>(progress, "progress", 1, true);
        if (samples < 0) throw py::value_error("samples must be >= 0");
        if (num_threads < 0) throw py::value_error("num_threads must be >= 0");
        const int64_t* indptr = vector<int64_t>(indptr_obj, "indptr", model.users + 1, false);
        const int64_t nnz = require_array(indices_obj, "indices").size();
        const int32_t* idx = vector<int32_t>(indices_obj, "indices", nnz, false);
        // Structure: indptr rising from 0 to nnz, indices in range and sorted within each row.
        if (indptr[0] != 0 || indptr[model.users] != nnz) throw py::value_error("indptr must rise from 0 to nnz");
        for (int64_t r = 0; r < model.users; ++r)
          if (indptr[r + 1] < indptr[r]) throw py::value_error("indptr must not decrease");
        check_ids(idx, nnz, model.items, "indices", num_threads);
        bool sorted = true;
        {
          py::gil_scoped_release release;
          for (int64_t r = 0; r < model.users && sorted; ++r)
            for (int64_t k = indptr[r] + 1; k < indptr[r + 1]; ++k)
              if (idx[k] <= idx[k - 1]) {
                sorted = false;
                break;
              }
        }
        if (!sorted) throw py::value_error("indices must be sorted without duplicates within each row");
        py::gil_scoped_release release;
        const double auc = sgd_bpr_epoch(indptr, idx, samples, popularity_negatives, seed, model, rates, num_threads);
        if (epochs_done) ++*epochs_done;
        return auc;
      },
      py::arg("indptr"), py::arg("indices"), py::arg("samples"), py::arg("popularity_negatives"), py::arg("seed"),
      py::arg("user_factors"), py::arg("item_factors"), py::arg("factors"), py::arg("item_biases"),
      py::arg("user_rate_sums"), py::arg("item_rate_sums"), py::arg("learning_rate"), py::arg("regularization"),
      py::arg("bias_regularization"), py::arg("num_threads"), py::arg("progress") = py::none(),
      "One Hogwild epoch of BPR; returns the fraction of sampled triples ranked right before their update.");

  m.def(
      "sgd_rmse",
      [](py::handle users, py::handle items, py::handle values, py::handle user_factors, py::handle item_factors,
         int64_t factors, py::handle user_biases, py::handle item_biases, double global_mean, int num_threads) {
        SgdModel model = model_of(user_factors, item_factors, factors, user_biases, item_biases, global_mean,
                                  py::none(), py::none());
        const int64_t count = require_array(users, "users").size();
        const int32_t* u = vector<int32_t>(users, "users", count, false);
        const int32_t* i = vector<int32_t>(items, "items", count, false);
        const float* r = vector<float>(values, "values", count, false);
        check_ids(u, count, model.users, "users", num_threads);
        check_ids(i, count, model.items, "items", num_threads);
        py::gil_scoped_release release;
        return sgd_rmse(u, i, r, count, model, num_threads);
      },
      py::arg("users"), py::arg("items"), py::arg("values"), py::arg("user_factors"), py::arg("item_factors"),
      py::arg("factors"), py::arg("user_biases"), py::arg("item_biases"), py::arg("global_mean"),
      py::arg("num_threads"), "Root mean squared error of the biased-MF prediction over the given ratings.");
}

}  // namespace recore::bindings
