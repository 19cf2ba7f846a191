// Alternating least squares: one half-step solves every row of one side of the
// factorization with the other side held fixed.
//
// Implicit feedback (Hu, Koren & Volinsky 2008): every observed entry r has preference 1
// and confidence c; every unobserved entry preference 0 and confidence 1. Row x solves
//     (YtY + Y_u^T (C_u - I) Y_u + lambda I) x = Y_u^T C_u 1.
// Explicit feedback: least squares on observed entries only,
//     (Y_u^T Y_u + lambda_u I) x = Y_u^T r_u,  lambda_u = lambda or lambda * |u|.
#pragma once

#include <cstdint>

#include "recore/csr.hpp"

namespace recore {

enum class Feedback { implicit, explicit_ratings };
// How an implicit value r becomes a confidence c: linear c = 1 + alpha r (Hu et al.), or
// scaled c = alpha r (values are confidences already, up to the factor alpha).
enum class Confidence { linear, scaled };
enum class Solver { conjugate_gradient, cholesky };

struct AlsOptions {
  Feedback feedback = Feedback::implicit;
  Confidence confidence = Confidence::linear;
  Solver solver = Solver::conjugate_gradient;
  double regularization = 0.01;
  double alpha = 1.0;
  int cg_steps = 3;
  bool weighted_regularization = false;  // lambda scaled by the row's count (Zhou et al. 2008)
  int num_threads = 0;                   // 0: OpenMP's default
};

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
//   implicit: sum_{u,i} c_ui (p_ui - x_u.y_i)^2 + lambda (sum |x_u|^2 + sum |y_i|^2)
//   explicit: sum_{observed} (r_ui - x_u.y_i)^2 + lambda (sum w_u |x_u|^2 + sum w_i |y_i|^2),
//             w = 1, or the row's / column's count with weighted regularization.
// item_gram (items^T items) is needed for implicit feedback only.
template <typename T, typename I>
double als_loss(const CsrView<T, I>& user_items, MatrixView<const T> user_factors,
                MatrixView<const T> item_factors, MatrixView<const T> item_gram, const AlsOptions& options);

// Rows longer than this are read in place by the CG solver instead of being gathered
// (normally only rows whose block would exceed 64 MiB); 0 restores the default. For tests.
void set_gather_limit_for_testing(int64_t rows);
// Forces blocked CG with blocks of this many fixed rows (normally used only when the fixed
// factors exceed 24 MiB); 0 restores the default. For tests.
void set_block_rows_for_testing(int64_t rows);

}  // namespace recore
