// Alternating least squares: one half-step solves every row of one side of the
// factorization with the other side held fixed.
//
// Implicit feedback (Hu, Koren & Volinsky 2008, with the unobserved weight and frequency-scaled
// regularization of Rendle et al. 2022): every observed entry r has preference 1 and confidence
// c; every unobserved entry preference 0 and weight alpha0 (unobserved_weight). Row x solves
//     (alpha0 YtY + Y_u^T (C_u - alpha0 I) Y_u + lambda_u I) x = Y_u^T C_u 1,
//     lambda_u = regularization * (n_u + alpha0 * n)^nu
// (n_u the row's entries, n the fixed side's rows, nu = regularization_exponent); nu = 0 is plain
// L2, or lambda * n_u with weighted_regularization.
// Explicit feedback: least squares on observed entries only,
//     (Y_u^T Y_u + lambda_u I) x = Y_u^T r_u,  lambda_u = lambda * n_u^nu (nu = 0: lambda, or
//     lambda * n_u with weighted_regularization).
#pragma once

#include <math.h>

#include <cstdint>

#include "recore/csr.hpp"

namespace recore {

enum class Feedback { implicit, explicit_ratings };
// How an implicit value r becomes a confidence c: linear c = 1 + alpha r (Hu et al.), or
// scaled c = alpha r (values are confidences already, up to the factor alpha).
enum class Confidence { linear, scaled };
// conjugate_gradient: cg_steps CG steps per row, warm-started. cholesky: the exact solve.
// subspace (iALS++, Rendle et al. 2021): subspace_sweeps passes of block coordinate descent over
// blocks of block_size factors, each block's small system solved exactly with the others fixed.
enum class Solver { conjugate_gradient, cholesky, subspace };

struct AlsOptions {
  Feedback feedback = Feedback::implicit;
  Confidence confidence = Confidence::linear;
  Solver solver = Solver::conjugate_gradient;
  double regularization = 0.01;
  double alpha = 1.0;
  int cg_steps = 3;
  bool weighted_regularization = false;  // lambda scaled by the row's count (Zhou et al. 2008)
  int num_threads = 0;                   // 0: OpenMP's default
  double unobserved_weight = 1.0;        // alpha0: the weight of every unobserved entry (implicit)
  double regularization_exponent = 0.0;  // nu: lambda_u = lambda * (n_u + alpha0 n)^nu
  int block_size = 32;                   // subspace solver: factors per block
  int subspace_sweeps = 1;               // subspace solver: passes over all blocks per row
};

// lambda_u / regularization for a row with `count` entries whose fixed side has `other` rows:
// (count + alpha0 * other)^nu for implicit feedback, count^nu for explicit feedback (which has no
// unobserved entries); with nu = 0, count under weighted regularization, else 1. Plain arithmetic
// in double, callable from host and device code.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline double regularization_scale(bool implicit, bool weighted_regularization, double unobserved_weight,
                                   double regularization_exponent, int64_t count, int64_t other) {
  if (regularization_exponent == 0.0) return weighted_regularization ? static_cast<double>(count) : 1.0;
  const double base = static_cast<double>(count) + (implicit ? unobserved_weight * static_cast<double>(other) : 0.0);
  return ::pow(base, regularization_exponent);
}

inline double regularization_scale(const AlsOptions& o, int64_t count, int64_t other) {
  return regularization_scale(o.feedback == Feedback::implicit, o.weighted_regularization, o.unobserved_weight,
                              o.regularization_exponent, count, other);
}

// Writes gram = factors^T factors (f x f, row-major). Bitwise identical for any num_threads:
// the rows are cut into the fixed chunks below, each chunk summed in T, and the chunks'
// sums added in double in chunk order (gram_partials, then gram_fold).
template <typename T>
void gram_matrix(MatrixView<const T> factors, MatrixView<T> gram, int num_threads);

// The Gram matrix's partition of `rows` factor rows of width `factors`: this many chunks, chunk c
// holding rows [gram_chunk_begin(rows, chunks, c), gram_chunk_begin(rows, chunks, c + 1)). It
// depends on the shape alone (neither the dtype nor the thread count), so that code summing the
// Gram matrix of a matrix split elsewhere (per shard, on other machines) can follow it exactly.
int64_t gram_chunk_count(int64_t rows, int64_t factors);
// floor(rows * chunk / chunks), without overflowing for any rows.
inline int64_t gram_chunk_begin(int64_t rows, int64_t chunks, int64_t chunk) {
  return rows / chunks * chunk + rows % chunks * chunk / chunks;
}

// partials[c] (f x f, row-major, c < chunks) = the Gram matrix of factor rows
// [bounds[c], bounds[c + 1]), accumulated in T from the chunk's first row on, as gram_matrix
// does for each of its chunks; bounds (chunks + 1 values) must be non-decreasing within
// [0, rows]. Bitwise identical for any num_threads.
template <typename T>
void gram_partials(MatrixView<const T> factors, const int64_t* bounds, int64_t chunks, T* partials, int num_threads);

// gram (f x f) = the sum of partials[0 .. chunks) (each f x f, row-major; the upper triangle is
// read), added in double in that order and rounded to T once, then mirrored: gram_matrix's last step.
template <typename T>
void gram_fold(const T* partials, int64_t chunks, MatrixView<T> gram);

// Updates target (rows(user_items) x f) in place from fixed (cols(user_items) x f).
// fixed_gram is fixed^T fixed (f x f); it is read for implicit feedback only and may be
// empty (data == nullptr) for explicit feedback. Bitwise identical for any num_threads.
template <typename T, typename I>
void als_solve(const CsrView<T, I>& user_items, MatrixView<const T> fixed, MatrixView<const T> fixed_gram,
               MatrixView<T> target, const AlsOptions& options);

// The full training objective at the given factors (summed in double, never forming the
// dense users x items matrix):
//   implicit: sum_{observed} c_ui (1 - x_u.y_i)^2 + alpha0 sum_{unobserved} (x_u.y_i)^2
//             + sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2
//   explicit: sum_{observed} (r_ui - x_u.y_i)^2 + sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2
// with lambda_u = regularization * regularization_scale(n_u, n_items) and lambda_i likewise with
// n_users. item_gram (items^T items) is needed for implicit feedback only. Without
// item_regularization the last sum is left out (for callers summing it elsewhere, see
// als_regularization).
template <typename T, typename I>
double als_loss(const CsrView<T, I>& user_items, MatrixView<const T> user_factors,
                MatrixView<const T> item_factors, MatrixView<const T> item_gram, const AlsOptions& options,
                bool item_regularization = true);

// sum_r lambda_r |factors_r|^2 (in double): one side's regularization in the objective, with
// lambda_r = regularization * regularization_scale(counts[r], other). counts (one per row) may be
// nullptr when the options do not read them (nu = 0 without weighted regularization).
template <typename T>
double als_regularization(MatrixView<const T> factors, const int64_t* counts, int64_t other,
                          const AlsOptions& options);

// Rows longer than this are read in place by the CG solver instead of being gathered
// (normally only rows whose block would exceed 64 MiB); 0 restores the default. For tests.
void set_gather_limit_for_testing(int64_t rows);
// Forces blocked CG with blocks of this many fixed rows (normally used only when the fixed
// factors exceed 24 MiB); 0 restores the default. For tests.
void set_block_rows_for_testing(int64_t rows);

}  // namespace recore
