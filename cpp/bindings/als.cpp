// Python bindings of the ALS engine: recore._core.check_als_options, als_solve, gram_matrix,
// gram_chunk_bounds, gram_partials, gram_fold, als_loss, als_regularization.
#include "recore/als.hpp"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <vector>

#include "recore/als_options.hpp"
#include "buffers.hpp"

namespace recore::bindings {
namespace {

bool overlap(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes) {
  const char* x = static_cast<const char*>(a);
  const char* y = static_cast<const char*>(b);
  return x < y + b_bytes && y < x + a_bytes;
}

template <typename T>
void require_shape(const MatrixView<T>& m, int64_t rows, int64_t cols, const std::string& name,
                   const std::string& expected) {
  if (m.rows != rows || m.cols != cols)
    throw py::value_error(name + " must have shape " + expected + " = (" + std::to_string(rows) + ", " +
                          std::to_string(cols) + "), got (" + std::to_string(m.rows) + ", " +
                          std::to_string(m.cols) + ")");
}

template <typename T, typename I>
void solve(const CsrParts& parts, py::handle fixed_obj, py::handle gram_obj, py::handle target_obj,
           const AlsOptions& options) {
  auto fixed = matrix<const T>(fixed_obj, "fixed_factors", false);
  auto target = matrix<T>(target_obj, "target_factors", true);
  const int64_t f = fixed.cols;
  require_shape(fixed, parts.cols, f, "fixed_factors", "(user_items.shape[1], factors)");
  require_shape(target, parts.rows, f, "target_factors", "(user_items.shape[0], factors)");
  if (overlap(fixed.data, fixed.rows * f * sizeof(T), target.data, target.rows * f * sizeof(T)))
    throw py::value_error("target_factors must not share memory with fixed_factors");
  MatrixView<const T> gram;
  if (options.feedback == Feedback::implicit) {
    if (gram_obj.is_none()) throw py::value_error("fixed_gram is required for implicit feedback");
    gram = matrix<const T>(gram_obj, "fixed_gram", false);
    require_shape(gram, f, f, "fixed_gram", "(factors, factors)");
  }
  auto view = csr_view<T, I>(parts);
  py::gil_scoped_release release;
  als_solve<T, I>(view, fixed, gram, target, options);
}

template <typename T>
py::array_t<T> gram_of(py::handle factors_obj, int num_threads) {
  auto factors = matrix<const T>(factors_obj, "factors", false);
  py::array_t<T> out({factors.cols, factors.cols});
  MatrixView<T> gram{out.mutable_data(), factors.cols, factors.cols, factors.cols};
  py::gil_scoped_release release;
  gram_matrix<T>(factors, gram, num_threads);
  return out;
}

// Chunk bounds for gram_partials: int64, 1-D, non-decreasing within [0, rows].
const int64_t* chunk_bounds_of(const py::array& bounds, int64_t rows) {
  require_dtype<int64_t>(bounds, "chunk_bounds");
  require_layout(bounds, "chunk_bounds", 1, false);
  if (bounds.shape(0) < 1) throw py::value_error("chunk_bounds must have at least one entry");
  const int64_t* b = static_cast<const int64_t*>(bounds.data());
  const int64_t n = bounds.shape(0);
  if (b[0] < 0 || b[n - 1] > rows)
    throw py::value_error("chunk_bounds must lie within [0, factors.shape[0]] = [0, " + std::to_string(rows) + "]");
  for (int64_t c = 1; c < n; ++c)
    if (b[c] < b[c - 1]) throw py::value_error("chunk_bounds must be non-decreasing");
  return b;
}

template <typename T>
py::array_t<T> partials_of(py::handle factors_obj, const py::array& bounds, int num_threads) {
  auto factors = matrix<const T>(factors_obj, "factors", false);
  const int64_t* b = chunk_bounds_of(bounds, factors.rows);
  const int64_t chunks = bounds.shape(0) - 1, f = factors.cols;
  py::array_t<T> out({chunks, f, f});
  T* partials = out.mutable_data();
  py::gil_scoped_release release;
  gram_partials<T>(factors, b, chunks, partials, num_threads);
  return out;
}

template <typename T>
py::array_t<T> fold_of(const py::array& partials) {
  const int64_t chunks = partials.shape(0), f = partials.shape(1);
  py::array_t<T> out({f, f});
  MatrixView<T> gram{out.mutable_data(), f, f, f};
  const T* values = static_cast<const T*>(partials.data());
  py::gil_scoped_release release;
  gram_fold<T>(values, chunks, gram);
  return out;
}

template <typename T, typename I>
double loss(const CsrParts& parts, py::handle user_obj, py::handle item_obj, const AlsOptions& options,
            bool item_regularization) {
  auto users = matrix<const T>(user_obj, "user_factors", false);
  auto items = matrix<const T>(item_obj, "item_factors", false);
  const int64_t f = users.cols;
  require_shape(users, parts.rows, f, "user_factors", "(user_items.shape[0], factors)");
  require_shape(items, parts.cols, f, "item_factors", "(user_items.shape[1], factors)");
  auto view = csr_view<T, I>(parts);
  py::gil_scoped_release release;
  std::vector<T> gram_values;
  MatrixView<const T> gram;
  if (options.feedback == Feedback::implicit) {
    gram_values.resize(f * f);
    gram_matrix<T>(items, MatrixView<T>{gram_values.data(), f, f, f}, options.num_threads);
    gram = MatrixView<const T>{gram_values.data(), f, f, f};
  }
  return als_loss<T, I>(view, users, items, gram, options, item_regularization);
}

template <typename T>
double regularization_of(py::handle factors_obj, const py::array& counts, int64_t n_other, const AlsOptions& options) {
  auto factors = matrix<const T>(factors_obj, "factors", false);
  require_dtype<int64_t>(counts, "counts");
  require_layout(counts, "counts", 1, false);
  if (counts.shape(0) != factors.rows)
    throw py::value_error("counts must have one entry per row of factors (" + std::to_string(factors.rows) +
                          "), got " + std::to_string(counts.shape(0)));
  const int64_t* values = static_cast<const int64_t*>(counts.data());
  for (int64_t r = 0; r < factors.rows; ++r)
    if (values[r] < 0) throw py::value_error("counts must be >= 0");
  py::gil_scoped_release release;
  return als_regularization<T>(factors, values, n_other, options);
}

// Calls F<T, I> for the value dtype of `parts.data` (float32 / float64) and its index dtype.
template <template <typename, typename> class F, typename... Args>
auto by_dtype(const CsrParts& parts, Args&&... args) {
  const bool wide_index = has_dtype<int64_t>(parts.indices);
  if (has_dtype<float>(parts.data)) {
    return wide_index ? F<float, int64_t>::run(parts, args...) : F<float, int32_t>::run(parts, args...);
  }
  if (has_dtype<double>(parts.data)) {
    return wide_index ? F<double, int64_t>::run(parts, args...) : F<double, int32_t>::run(parts, args...);
  }
  throw py::type_error(parts.name + ".data must have dtype float32 or float64, got " + dtype_name(parts.data));
}

template <typename T, typename I>
struct Solve {
  template <typename... Args>
  static void run(const CsrParts& parts, Args&&... args) { solve<T, I>(parts, args...); }
};
template <typename T, typename I>
struct Loss {
  template <typename... Args>
  static double run(const CsrParts& parts, Args&&... args) { return loss<T, I>(parts, args...); }
};

}  // namespace

void init_als(py::module_& m) {
  m.def(
      "check_als_options",
      [](const std::string& feedback, const std::string& confidence, const std::string& solver, double regularization,
         double alpha, int cg_steps, bool weighted_regularization, int num_threads, double unobserved_weight,
         double regularization_exponent, int block_size, int subspace_sweeps) {
        als_options_from_names(feedback, confidence, solver, regularization, alpha, cg_steps, weighted_regularization,
                               num_threads, unobserved_weight, regularization_exponent, block_size, subspace_sweeps);
      },
      py::kw_only(), py::arg("feedback"), py::arg("confidence"), py::arg("solver"), py::arg("regularization"),
      py::arg("alpha"), py::arg("cg_steps"), py::arg("weighted_regularization"), py::arg("num_threads"),
      py::arg("unobserved_weight"), py::arg("regularization_exponent"), py::arg("block_size"),
      py::arg("subspace_sweeps"),
      "ValueError naming the first invalid ALS option: the check every ALS entry point makes, on either engine.");
  m.def(
      "als_solve",
      [](py::handle user_items, py::handle fixed_factors, py::handle fixed_gram, py::handle target_factors,
         double regularization, double alpha, const std::string& feedback, const std::string& confidence,
         const std::string& solver, int cg_steps, bool weighted_regularization, int num_threads,
         double unobserved_weight, double regularization_exponent, int block_size, int subspace_sweeps) {
        auto options = als_options_from_names(feedback, confidence, solver, regularization, alpha, cg_steps,
                                              weighted_regularization, num_threads, unobserved_weight,
                                              regularization_exponent, block_size, subspace_sweeps);
        auto parts = csr_parts(user_items, "user_items");
        by_dtype<Solve>(parts, fixed_factors, fixed_gram, target_factors, options);
      },
      py::arg("user_items"), py::arg("fixed_factors"), py::arg("fixed_gram"), py::arg("target_factors"),
      py::kw_only(), py::arg("regularization"), py::arg("alpha"), py::arg("feedback"), py::arg("confidence"),
      py::arg("solver"), py::arg("cg_steps"), py::arg("weighted_regularization"), py::arg("num_threads"),
      py::arg("unobserved_weight"), py::arg("regularization_exponent"), py::arg("block_size"),
      py::arg("subspace_sweeps"),
      "One ALS half-step: solve every row of target_factors in place with fixed_factors held fixed.");

  m.def("_set_gather_limit_for_testing", &set_gather_limit_for_testing, py::arg("rows"),
        "CG reads rows longer than this in place instead of gathering them; 0 restores the default.");

  m.def("_set_block_rows_for_testing", &set_block_rows_for_testing, py::arg("rows"),
        "Forces blocked CG with blocks of this many fixed rows; 0 restores the default.");

  m.def(
      "gram_matrix",
      [](py::handle factors, int num_threads) -> py::array {
        if (num_threads < 0) throw py::value_error("num_threads must be >= 0");
        py::array a = require_array(factors, "factors");
        if (has_dtype<float>(a)) return gram_of<float>(factors, num_threads);
        if (has_dtype<double>(a)) return gram_of<double>(factors, num_threads);
        throw py::type_error("factors must have dtype float32 or float64, got " + dtype_name(a));
      },
      py::arg("factors"), py::kw_only(), py::arg("num_threads") = 0,
      "factors^T factors, identical bit for bit whatever num_threads is.");

  m.def(
      "gram_chunk_bounds",
      [](int64_t rows, int64_t factors) {
        if (rows < 0) throw py::value_error("n_rows must be >= 0");
        if (factors < 0) throw py::value_error("factors must be >= 0");
        const int64_t chunks = gram_chunk_count(rows, factors);
        py::array_t<int64_t> out(chunks + 1);
        int64_t* bounds = out.mutable_data();
        for (int64_t c = 0; c <= chunks; ++c) bounds[c] = gram_chunk_begin(rows, chunks, c);
        return out;
      },
      py::arg("n_rows"), py::arg("factors"), "The row bounds of the chunks gram_matrix sums separately.");

  m.def(
      "gram_partials",
      [](py::handle factors, py::handle chunk_bounds, int num_threads) -> py::array {
        if (num_threads < 0) throw py::value_error("num_threads must be >= 0");
        py::array a = require_array(factors, "factors");
        py::array bounds = require_array(chunk_bounds, "chunk_bounds");
        if (has_dtype<float>(a)) return partials_of<float>(factors, bounds, num_threads);
        if (has_dtype<double>(a)) return partials_of<double>(factors, bounds, num_threads);
        throw py::type_error("factors must have dtype float32 or float64, got " + dtype_name(a));
      },
      py::arg("factors"), py::arg("chunk_bounds"), py::kw_only(), py::arg("num_threads") = 0,
      "The Gram matrix of each chunk of rows, as gram_matrix sums them.");

  m.def(
      "gram_fold",
      [](py::handle partials) -> py::array {
        py::array a = require_array(partials, "partials");
        require_layout(a, "partials", 3, false);
        if (a.shape(1) != a.shape(2))
          throw py::value_error("partials must have shape (chunks, factors, factors), got (" +
                                std::to_string(a.shape(0)) + ", " + std::to_string(a.shape(1)) + ", " +
                                std::to_string(a.shape(2)) + ")");
        if (has_dtype<float>(a)) return fold_of<float>(a);
        if (has_dtype<double>(a)) return fold_of<double>(a);
        throw py::type_error("partials must have dtype float32 or float64, got " + dtype_name(a));
      },
      py::arg("partials"), "The chunks' Gram matrices summed in float64 in order, rounded once.");

  m.def(
      "als_loss",
      [](py::handle user_items, py::handle user_factors, py::handle item_factors, double regularization,
         double alpha, const std::string& feedback, const std::string& confidence, bool weighted_regularization,
         int num_threads, double unobserved_weight, double regularization_exponent, bool item_regularization) {
        auto options = als_options_from_names(feedback, confidence, "cg", regularization, alpha, 1,
                                              weighted_regularization, num_threads, unobserved_weight,
                                              regularization_exponent, 1, 1);
        auto parts = csr_parts(user_items, "user_items");
        return by_dtype<Loss>(parts, user_factors, item_factors, options, item_regularization);
      },
      py::arg("user_items"), py::arg("user_factors"), py::arg("item_factors"), py::kw_only(),
      py::arg("regularization"), py::arg("alpha"), py::arg("feedback"), py::arg("confidence"),
      py::arg("weighted_regularization"), py::arg("num_threads"), py::arg("unobserved_weight"),
      py::arg("regularization_exponent"), py::arg("item_regularization"), "The full ALS training objective.");

  m.def(
      "als_regularization",
      [](py::handle factors, py::handle counts, int64_t n_other, double regularization, const std::string& feedback,
         bool weighted_regularization, double unobserved_weight, double regularization_exponent) -> double {
        if (n_other < 0) throw py::value_error("n_other must be >= 0");
        auto options = als_options_from_names(feedback, "linear", "cg", regularization, 1.0, 1, weighted_regularization,
                                              0, unobserved_weight, regularization_exponent, 1, 1);
        py::array a = require_array(factors, "factors");
        py::array c = require_array(counts, "counts");
        if (has_dtype<float>(a)) return regularization_of<float>(factors, c, n_other, options);
        if (has_dtype<double>(a)) return regularization_of<double>(factors, c, n_other, options);
        throw py::type_error("factors must have dtype float32 or float64, got " + dtype_name(a));
      },
      py::arg("factors"), py::arg("counts"), py::arg("n_other"), py::kw_only(), py::arg("regularization"),
      py::arg("feedback"), py::arg("weighted_regularization"), py::arg("unobserved_weight"),
      py::arg("regularization_exponent"),
      "One side's regularization in the ALS objective, sum_r lambda_r |factors_r|^2, from each row's count of "
      "entries and the other side's size.");
}

}  // namespace recore::bindings
