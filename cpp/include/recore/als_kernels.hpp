// Declarations of the per-instruction-set ALS kernels. cpp/src/kernels/*.cpp is compiled once
// per target with that target's flags, each copy inside namespace recore::<target>; the
// dispatchers in cpp/src/*.cpp pick one copy at run time.
//
// Kernel translation units use no standard-library templates: an inline function
// instantiated in an AVX-512 unit could otherwise be picked by the linker for every caller.
#pragma once

#include <cstdint>

#include "recore/als.hpp"
#include "recore/csr.hpp"

namespace recore {

// Everything one half-step needs, with buffers allocated by the dispatcher.
template <typename T, typename I>
struct AlsSolveArgs {
  CsrView<T, I> rows;
  MatrixView<const T> fixed;        // n_fixed x f, caller's layout
  const T* padded_gram = nullptr;   // fp x fp: alpha0 YtY, zero beyond f (and for padded_block values
                                    // past its end); nullptr for explicit feedback
  const T* lambdas = nullptr;       // rows: each row's regularization lambda_u
  MatrixView<T> target;             // rows x f, caller's layout
  int64_t padded_factors = 0;       // fp: f rounded up to the widest SIMD width
  int64_t max_row_length = 0;       // longest row of `rows`: sizes the gathered block
  int64_t gather_limit = 0;         // CG reads longer rows in place instead of gathering them
  int64_t gathered_rows = 0;        // rows the gathered block holds: min(max_row_length, gather_limit)
  int64_t block_factors = 0;        // subspace solver: factors per block, min(block_size, f)
  int64_t padded_block = 0;         // subspace solver: block_factors rounded up like fp
  int64_t blocks = 0;               // subspace solver: blocks of a row, f / block_factors rounded up
  AlsOptions options;
  T* workspace = nullptr;           // threads x workspace_per_thread values, 64-byte aligned
  int64_t workspace_per_thread = 0;
  int threads = 1;

  // Blocked conjugate gradient (block_rows > 0): the fixed rows are taken a block of
  // block_rows at a time, every row of `rows` advancing its CG together, so that each
  // block is read from memory once per CG pass instead of once per entry.
  int64_t block_rows = 0;
  T* residuals = nullptr;           // rows x fp
  T* directions = nullptr;          // rows x fp
  T* products = nullptr;            // rows x fp
  T* residual_norms = nullptr;      // rows
  unsigned char* active = nullptr;  // rows: 1 while the row's CG goes on
  int64_t* block_bounds = nullptr;  // rows x (blocks + 1): first entry of each block in each row
};

template <typename T>
struct GramArgs {
  MatrixView<const T> factors;
  int64_t padded_factors = 0;
  int64_t chunks = 0;
  const int64_t* chunk_bounds = nullptr;  // chunks + 1 rows: chunk c is [bounds[c], bounds[c + 1])
  T* partials = nullptr;            // chunks x fp x fp, upper triangle filled
  T* workspace = nullptr;           // threads x workspace_per_thread
  int64_t workspace_per_thread = 0;
  int threads = 1;
};

template <typename T, typename I>
struct AlsLossArgs {
  CsrView<T, I> user_items;
  MatrixView<const T> user_factors;
  MatrixView<const T> item_factors;
  MatrixView<const T> item_gram;
  const double* row_scales = nullptr;    // rows: lambda_u / regularization (regularization_scale)
  AlsOptions options;
  int64_t chunks = 0;
  double* partials = nullptr;            // chunks values
  int threads = 1;
};

// Rows of the gathered block and the per-thread workspace sizes the kernels expect.
// The Cholesky solver gathers a row's fixed rows this many at a time; the subspace solver
// copies a block's columns of this many entries at a time.
constexpr int64_t kCholeskyChunkRows = 256;
constexpr int64_t kSubspaceChunkRows = 256;

// Room for one coefficient per entry of the longest row, in whole 64-byte lines so that
// every later piece of the workspace stays aligned.
inline int64_t coefficient_capacity(int64_t max_row_length) { return (max_row_length + 16) / 16 * 16; }

// The subspace solver's gathered rows, transposed: a row of all entries' values per factor,
// each rounded up to whole vectors of entries (16 values covers every target), and 16 rows of
// zeros past fp, which the block kernels may read past the last block.
inline int64_t subspace_gathered_size(int64_t gathered_rows, int64_t fp) {
  return (fp + 16) * ((gathered_rows + 15) / 16 * 16);
}

inline int64_t als_workspace_per_thread(int64_t max_row_length, int64_t gathered_rows, int64_t fp, Solver solver,
                                        int64_t padded_block, int64_t blocks) {
  // gathered rows (transposed for the subspace solver), weights, right-hand-side
  // coefficients, 4 vectors; for Cholesky the scaled rows and A; for the subspace solver the
  // predictions and the gradient's coefficients, a chunk of the block's columns (for rows read
  // in place), every block's matrix and a flag per block.
  const int64_t gathered =
      solver == Solver::subspace ? subspace_gathered_size(gathered_rows, fp) : gathered_rows * fp;
  int64_t size = gathered + 2 * coefficient_capacity(max_row_length) + 4 * fp;
  if (solver == Solver::cholesky) size += gathered_rows * fp + fp * fp;
  if (solver == Solver::subspace)
    size += 2 * coefficient_capacity(max_row_length) + kSubspaceChunkRows * padded_block +
            blocks * padded_block * padded_block + coefficient_capacity(blocks);
  return (size + 15) / 16 * 16;
}
constexpr int64_t kGramBlockRows = 64;

#define RECORE_DECLARE_TARGET(NS)                                                  \
  namespace NS {                                                                   \
  template <typename T, typename I>                                                \
  void als_solve(const AlsSolveArgs<T, I>& args);                                  \
  template <typename T>                                                            \
  void gram_matrix(const GramArgs<T>& args);                                       \
  template <typename T, typename I>                                                \
  void als_loss(const AlsLossArgs<T, I>& args);                                    \
  }

RECORE_DECLARE_TARGET(baseline)
RECORE_DECLARE_TARGET(avx2)
RECORE_DECLARE_TARGET(avx512)
#undef RECORE_DECLARE_TARGET

}  // namespace recore
