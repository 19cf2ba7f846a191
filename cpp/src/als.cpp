// ALS dispatchers: check arguments, size and allocate the workspaces, then run the
// kernel copy compiled for the active instruction set.
#include "recore/als.hpp"
#include "recore/als_options.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "recore/cpu.hpp"
#include "recore/als_kernels.hpp"
#include "dispatch.hpp"

namespace recore {
namespace {

using detail::AlignedBuffer;
using detail::check_matrix;
using detail::padded;
using detail::resolve_threads;
using detail::run_kernel;


std::atomic<int64_t> gather_limit_override{0};
std::atomic<int64_t> block_rows_override{0};

// Blocked CG takes over when the fixed factors exceed this, reading them in blocks of
// kBlockBytes (both threads of a core pair share the last-level cache).
constexpr int64_t kBlockedFixedBytes = int64_t{24} << 20;
constexpr int64_t kBlockBytes = int64_t{8} << 20;

template <typename T, typename I>
bool rows_sorted(const CsrView<T, I>& m, int threads) {
  bool unsorted = false;
#pragma omp parallel for num_threads(threads) reduction(|| : unsorted) schedule(static)
  for (int64_t u = 0; u < m.rows; ++u)
    for (int64_t k = m.row_begin(u) + 1; k < m.row_end(u); ++k) unsorted = unsorted || m.indices[k] < m.indices[k - 1];
  return !unsorted;
}

// Each row's lambda_u, rounded to T as regularization * scale (so that plain and weighted L2
// round exactly as they always have).
template <typename T, typename I>
std::vector<T> row_lambdas(const CsrView<T, I>& m, const AlsOptions& o, int threads) {
  std::vector<T> lambdas(m.rows);
  const T regularization = static_cast<T>(o.regularization);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t u = 0; u < m.rows; ++u)
    lambdas[u] = regularization * static_cast<T>(regularization_scale(o, m.row_end(u) - m.row_begin(u), m.cols));
  return lambdas;
}

}  // namespace

void set_gather_limit_for_testing(int64_t rows) { gather_limit_override.store(rows); }
void set_block_rows_for_testing(int64_t rows) { block_rows_override.store(rows); }


int64_t gram_chunk_count(int64_t rows, int64_t factors) {
  if (rows < 0 || factors < 0) throw std::invalid_argument("rows and factors must be >= 0");
  // Chunks of at least 512 rows; fewer of them for wide factors, whose partials are large.
  // (factors <= 256 is the same as a padded width <= 256 for float and for double.)
  const int64_t max_chunks = factors <= 256 ? 64 : 16;
  return std::max<int64_t>(1, std::min<int64_t>(max_chunks, (rows + 511) / 512));
}

namespace {

// Each chunk's Gram matrix, upper triangle, in the kernels' padded layout (chunks x fp x fp).
template <typename T>
AlignedBuffer<T> padded_gram_partials(MatrixView<const T> factors, const int64_t* bounds, int64_t chunks,
                                      int num_threads) {
  check_matrix(factors, "factors");
  if (chunks < 0 || !bounds) throw std::invalid_argument("chunk bounds are missing");
  if (bounds[0] < 0 || bounds[chunks] > factors.rows)
    throw std::invalid_argument("chunk bounds must lie within the factor rows");
  for (int64_t c = 0; c < chunks; ++c)
    if (bounds[c + 1] < bounds[c]) throw std::invalid_argument("chunk bounds must be non-decreasing");
  const int64_t f = factors.cols, fp = padded<T>(f);
  GramArgs<T> a;
  a.factors = factors;
  a.padded_factors = fp;
  a.threads = resolve_threads(num_threads);
  a.chunks = chunks;
  a.chunk_bounds = bounds;
  a.workspace_per_thread = kGramBlockRows * fp;
  AlignedBuffer<T> partials(chunks * fp * fp), workspace(a.threads * a.workspace_per_thread);
  a.partials = partials.get();
  a.workspace = workspace.get();
  if (factors.rows > 0 && f > 0 && chunks > 0) {
    RECORE_RUN(a, gram_matrix<T>);
  }
  return partials;
}

// The one summation of partials: chunk c's entry (i, j) at partials[c * chunk_size + i * row_stride + j].
template <typename T>
void fold_partials(const T* partials, int64_t chunks, int64_t chunk_size, int64_t row_stride, MatrixView<T> gram) {
  const int64_t f = gram.cols;
  for (int64_t i = 0; i < f; ++i) {
    for (int64_t j = i; j < f; ++j) {
      double sum = 0;
      for (int64_t c = 0; c < chunks; ++c) sum += partials[c * chunk_size + i * row_stride + j];
      gram.row(i)[j] = static_cast<T>(sum);
      gram.row(j)[i] = static_cast<T>(sum);
    }
  }
}

}  // namespace

template <typename T>
void gram_matrix(MatrixView<const T> factors, MatrixView<T> gram, int num_threads) {
  check_matrix(factors, "factors");
  const int64_t n = factors.rows, f = factors.cols, fp = padded<T>(f);
  if (gram.rows != f || gram.cols != f) throw std::invalid_argument("gram must be factors x factors");
  const int64_t chunks = gram_chunk_count(n, f);
  std::vector<int64_t> bounds(chunks + 1);
  for (int64_t c = 0; c <= chunks; ++c) bounds[c] = gram_chunk_begin(n, chunks, c);
  AlignedBuffer<T> partials = padded_gram_partials(factors, bounds.data(), chunks, num_threads);
  fold_partials(partials.get(), chunks, fp * fp, fp, gram);
}

template <typename T>
void gram_partials(MatrixView<const T> factors, const int64_t* bounds, int64_t chunks, T* partials, int num_threads) {
  const int64_t f = factors.cols, fp = padded<T>(f);
  AlignedBuffer<T> padded_partials = padded_gram_partials(factors, bounds, chunks, num_threads);
  for (int64_t c = 0; c < chunks; ++c) {
    const T* from = padded_partials.get() + c * fp * fp;
    T* to = partials + c * f * f;
    for (int64_t i = 0; i < f; ++i) {
      for (int64_t j = i; j < f; ++j) {
        to[i * f + j] = from[i * fp + j];
        to[j * f + i] = from[i * fp + j];
      }
    }
  }
}

template <typename T>
void gram_fold(const T* partials, int64_t chunks, MatrixView<T> gram) {
  if (chunks < 0 || gram.rows != gram.cols) throw std::invalid_argument("gram must be square");
  fold_partials(partials, chunks, gram.cols * gram.cols, gram.cols, gram);
}

template <typename T, typename I>
void als_solve(const CsrView<T, I>& user_items, MatrixView<const T> fixed, MatrixView<const T> fixed_gram,
               MatrixView<T> target, const AlsOptions& options) {
  check_als_options(options);
  check_matrix(fixed, "fixed factors");
  check_matrix(MatrixView<const T>{target.data, target.rows, target.cols, target.stride}, "target factors");
  const int64_t f = fixed.cols;
  if (target.cols != f) throw std::invalid_argument("fixed and target factors differ in width");
  if (fixed.rows != user_items.cols) throw std::invalid_argument("fixed factors must have one row per column");
  if (target.rows != user_items.rows) throw std::invalid_argument("target factors must have one row per row");
  const bool implicit = options.feedback == Feedback::implicit;
  if (implicit && (fixed_gram.rows != f || fixed_gram.cols != f))
    throw std::invalid_argument("gram must be factors x factors");
  if (user_items.rows == 0 || f == 0) return;

  const int64_t fp = padded<T>(f);
  AlsSolveArgs<T, I> a;
  a.rows = user_items;
  a.fixed = fixed;
  a.target = target;
  a.padded_factors = fp;
  a.options = options;
  a.threads = resolve_threads(options.num_threads);
  for (int64_t u = 0; u < user_items.rows; ++u)
    a.max_row_length = std::max(a.max_row_length, user_items.row_end(u) - user_items.row_begin(u));

  // The unobserved entries' part of every row's matrix, alpha0 YtY, padded (a plain copy for
  // alpha0 = 1, so that the default objective rounds as it always has).
  // The subspace solver reads the Gram matrix's rows a padded block at a time, past the last
  // row's end for a block near the end: zeros there.
  std::unique_ptr<AlignedBuffer<T>> gram;
  if (options.solver == Solver::subspace) {
    a.block_factors = std::min<int64_t>(options.block_size, f);
    a.padded_block = padded<T>(a.block_factors);
    a.blocks = (f + a.block_factors - 1) / a.block_factors;
  }
  if (implicit) {
    gram = std::make_unique<AlignedBuffer<T>>(fp * fp + a.padded_block);
    const T weight = static_cast<T>(options.unobserved_weight);
    for (int64_t i = 0; i < f; ++i) {
      T* row = gram->get() + i * fp;
      std::memcpy(row, fixed_gram.row(i), f * sizeof(T));
      if (options.unobserved_weight != 1.0)
        for (int64_t j = 0; j < f; ++j) row[j] *= weight;
    }
    a.padded_gram = gram->get();
  }
  const std::vector<T> lambdas = row_lambdas(user_items, options, a.threads);
  a.lambdas = lambdas.data();
  // Gathering is faster even for blocks beyond the caches; the limit only caps the
  // workspace (64 MiB a thread) for extremely long rows, which CG and the subspace solver
  // then read in place. The subspace solver's rows read in place take every block's columns
  // entry by entry, several times slower than its gathered kernels (the items of a
  // MovieLens-20M-shaped half step at f = 512: 16.3 s gathered against 23.7 s with its 10% of
  // entries in rows past 64 MiB read in place), so it gathers up to 256 MiB a thread.
  const int64_t override_rows = gather_limit_override.load();
  const int64_t gather_bytes = int64_t{options.solver == Solver::subspace ? 256 : 64} << 20;
  a.gather_limit = override_rows > 0 ? override_rows : gather_bytes / (fp * static_cast<int64_t>(sizeof(T)));
  a.gathered_rows = std::min(a.max_row_length, options.solver == Solver::cholesky ? kCholeskyChunkRows
                                                                                 : a.gather_limit);
  a.workspace_per_thread =
      als_workspace_per_thread(a.max_row_length, a.gathered_rows, fp, options.solver, a.padded_block, a.blocks);
  AlignedBuffer<T> workspace(a.threads * a.workspace_per_thread);
  a.workspace = workspace.get();

  // Blocked CG when the fixed factors are far beyond the caches and every row's indices
  // are sorted (the block bounds are found by walking them).
  const int64_t fixed_bytes = fixed.rows * f * static_cast<int64_t>(sizeof(T));
  const int64_t override_block = block_rows_override.load();
  std::unique_ptr<AlignedBuffer<T>> state;
  std::unique_ptr<AlignedBuffer<int64_t>> bounds;
  std::vector<unsigned char> active;
  if (options.solver == Solver::conjugate_gradient && (override_block > 0 || fixed_bytes > kBlockedFixedBytes) &&
      rows_sorted(user_items, a.threads)) {
    a.block_rows = override_block > 0 ? override_block
                                      : std::max<int64_t>(1, kBlockBytes / (f * static_cast<int64_t>(sizeof(T))));
    const int64_t rows = user_items.rows, blocks = (fixed.rows + a.block_rows - 1) / a.block_rows;
    state = std::make_unique<AlignedBuffer<T>>(rows * (3 * fp + 1));
    bounds = std::make_unique<AlignedBuffer<int64_t>>(rows * (blocks + 1));
    active.assign(rows, 0);
    a.residuals = state->get();
    a.directions = a.residuals + rows * fp;
    a.products = a.directions + rows * fp;
    a.residual_norms = a.products + rows * fp;
    a.block_bounds = bounds->get();
    a.active = active.data();
  }
  RECORE_RUN(a, als_solve<T, I>);
}

template <typename T>
double als_regularization(MatrixView<const T> factors, const int64_t* counts, int64_t other,
                          const AlsOptions& options) {
  check_als_options(options);
  check_matrix(factors, "factors");
  const bool by_count = options.weighted_regularization || options.regularization_exponent != 0.0;
  if (by_count && !counts && factors.rows > 0) throw std::invalid_argument("row counts are missing");
  // sum_r scale_r |y_r|^2, then times regularization: the order plain and weighted L2 always had.
  double total = 0;
  for (int64_t r = 0; r < factors.rows; ++r) {
    const T* y = factors.row(r);
    double norm = 0;
    for (int64_t j = 0; j < factors.cols; ++j) norm += static_cast<double>(y[j]) * y[j];
    total += (by_count ? regularization_scale(options, counts[r], other) : 1.0) * norm;
  }
  return options.regularization * total;
}

template <typename T, typename I>
double als_loss(const CsrView<T, I>& user_items, MatrixView<const T> user_factors,
                MatrixView<const T> item_factors, MatrixView<const T> item_gram, const AlsOptions& options,
                bool item_regularization) {
  check_als_options(options);
  const int64_t f = user_factors.cols;
  if (item_factors.cols != f) throw std::invalid_argument("user and item factors differ in width");
  if (user_factors.rows != user_items.rows || item_factors.rows != user_items.cols)
    throw std::invalid_argument("factors do not match the shape of user_items");
  const bool implicit = options.feedback == Feedback::implicit;
  if (implicit && (item_gram.rows != f || item_gram.cols != f))
    throw std::invalid_argument("item gram must be factors x factors");

  AlsLossArgs<T, I> a;
  a.user_items = user_items;
  a.user_factors = user_factors;
  a.item_factors = item_factors;
  a.item_gram = item_gram;
  a.options = options;
  a.threads = resolve_threads(options.num_threads);
  a.chunks = std::max<int64_t>(1, std::min<int64_t>(256, user_items.rows));
  std::vector<double> partials(a.chunks, 0.0);
  a.partials = partials.data();
  std::vector<double> scales(user_items.rows);
  for (int64_t u = 0; u < user_items.rows; ++u)
    scales[u] = regularization_scale(options, user_items.row_end(u) - user_items.row_begin(u), user_items.cols);
  a.row_scales = scales.data();
  if (user_items.rows > 0) {
    RECORE_RUN(a, als_loss<T, I>);
  }
  double loss = 0;
  for (double p : partials) loss += p;
  if (!item_regularization) return loss;

  // Regularization of the item side, with each item's count of entries.
  std::vector<int64_t> counts;
  if (options.weighted_regularization || options.regularization_exponent != 0.0) {
    counts.assign(item_factors.rows, 0);
    for (int64_t k = 0; k < user_items.nnz(); ++k) counts[static_cast<int64_t>(user_items.indices[k])] += 1;
  }
  return loss + als_regularization(item_factors, counts.empty() ? nullptr : counts.data(), user_items.rows, options);
}

#define RECORE_INSTANTIATE(T, I)                                                                     \
  template void als_solve<T, I>(const CsrView<T, I>&, MatrixView<const T>, MatrixView<const T>,      \
                                MatrixView<T>, const AlsOptions&);                                   \
  template double als_loss<T, I>(const CsrView<T, I>&, MatrixView<const T>, MatrixView<const T>,     \
                                 MatrixView<const T>, const AlsOptions&, bool);
RECORE_INSTANTIATE(float, int32_t)
RECORE_INSTANTIATE(float, int64_t)
RECORE_INSTANTIATE(double, int32_t)
RECORE_INSTANTIATE(double, int64_t)
template void gram_matrix<float>(MatrixView<const float>, MatrixView<float>, int);
template void gram_matrix<double>(MatrixView<const double>, MatrixView<double>, int);
template void gram_partials<float>(MatrixView<const float>, const int64_t*, int64_t, float*, int);
template void gram_partials<double>(MatrixView<const double>, const int64_t*, int64_t, double*, int);
template void gram_fold<float>(const float*, int64_t, MatrixView<float>);
template void gram_fold<double>(const double*, int64_t, MatrixView<double>);
template double als_regularization<float>(MatrixView<const float>, const int64_t*, int64_t, const AlsOptions&);
template double als_regularization<double>(MatrixView<const double>, const int64_t*, int64_t, const AlsOptions&);

}  // namespace recore
