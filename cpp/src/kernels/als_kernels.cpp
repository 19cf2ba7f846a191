// ALS hot loops. Compiled once per instruction set (see CMakeLists.txt): RECORE_TARGET names
// the namespace, and the compiler flags decide the SIMD width. No standard-library
// templates are used here (see als_kernels.hpp); all helpers have internal linkage.
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "recore/als_kernels.hpp"
#include "simd.hpp"

#ifndef RECORE_TARGET
#error "RECORE_TARGET must name the instruction set this unit is compiled for"
#endif

namespace recore {
namespace RECORE_TARGET {
namespace {

// out[r][j0 .. j0 + VECTORS * width) = sum_i v[r][i] G[i][j0 ..] for ROWS vectors at once,
// accumulated in registers: each load of G feeds every vector. A lane's sum runs over i in
// order whatever ROWS and VECTORS are, so a vector's product is bit for bit the same
// whichever vectors share its pass.
template <typename T, int ROWS, int VECTORS>
inline void matvec_block_rows(const T* G, const T* const* v, int64_t f, int64_t fp, int64_t j0, T* const* out) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  V acc[ROWS][VECTORS];
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < VECTORS; ++c) acc[r][c] = V{};
  for (int64_t i = 0; i < f; ++i) {
    const T* row = G + i * fp + j0;
    V g[VECTORS];
    for (int c = 0; c < VECTORS; ++c) __builtin_memcpy(&g[c], row + c * width, sizeof(V));
    for (int r = 0; r < ROWS; ++r) {
      const T vi = v[r][i];
      for (int c = 0; c < VECTORS; ++c) acc[r][c] += vi * g[c];
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < VECTORS; ++c) __builtin_memcpy(out[r] + j0 + c * width, &acc[r][c], sizeof(V));
}

// out_r = G v_r for ROWS vectors and a symmetric fp x fp matrix G (zero beyond f), summed as
// rows so that no horizontal reductions are needed. Several vectors read G once (a large G
// is read from beyond L2: one pass for several rows' products instead of one each).
template <typename T, int ROWS>
void symmetric_matvec_rows(const T* G, const T* const* v, int64_t f, int64_t fp, T* const* out) {
  constexpr int64_t width = kVectorBytes / sizeof(T);
  // Accumulators, G's vectors and a broadcast within the register file (16 below AVX-512).
  constexpr int vectors = ROWS == 1 || kVectorBytes == 64 ? 4 : 2;
  int64_t j0 = 0;
  for (; j0 + vectors * width <= fp; j0 += vectors * width) matvec_block_rows<T, ROWS, vectors>(G, v, f, fp, j0, out);
  for (; j0 < fp; j0 += width) matvec_block_rows<T, ROWS, 1>(G, v, f, fp, j0, out);
}

template <typename T>
void symmetric_matvec(const T* G, const T* v, int64_t f, int64_t fp, T* out) {
  const T* vs[1] = {v};
  T* outs[1] = {out};
  symmetric_matvec_rows<T, 1>(G, vs, f, fp, outs);
}

// Where the rows y_k of a row's block live: gathered into a contiguous padded buffer, or
// left in place in the fixed factor matrix and read through the row's column indices.
template <typename T>
struct GatheredRows {
  const T* data;
  int64_t stride;
  const T* operator()(int64_t k) const { return data + k * stride; }
  void prefetch(int64_t) const {}
};

template <typename T, typename I>
struct IndexedRows {
  const T* data;
  int64_t stride;
  int64_t width;
  const I* indices;
  const T* operator()(int64_t k) const { return data + static_cast<int64_t>(indices[k]) * stride; }
  void prefetch(int64_t k) const {
    const char* line = reinterpret_cast<const char*>((*this)(k));
    const char* end = reinterpret_cast<const char*>((*this)(k) + width);
    for (; line < end; line += 64) __builtin_prefetch(line, 0, 3);
  }
};

// out += sum_k (offset_k + scale * weight_k * (y_k . v)) y_k over the n rows y_k (each
// `width` long). One pass over the rows: each y_k is read once for its dot product and its
// update. Four rows at a time keep four independent reductions in flight.
template <typename T, typename Rows>
void accumulate_rows(const Rows& Y, int64_t n, int64_t width, const T* weight, T scale, const T* offset,
                     const T* v, T* out) {
  constexpr int64_t ahead = 8;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    for (int64_t j = 0; j < 4 && k + ahead + j < n; ++j) Y.prefetch(k + ahead + j);
    const T* y0 = Y(k);
    const T* y1 = Y(k + 1);
    const T* y2 = Y(k + 2);
    const T* y3 = Y(k + 3);
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t j = 0; j < width; ++j) {
      s0 += y0[j] * v[j];
      s1 += y1[j] * v[j];
      s2 += y2[j] * v[j];
      s3 += y3[j] * v[j];
    }
    T a0 = scale * weight[k] * s0, a1 = scale * weight[k + 1] * s1;
    T a2 = scale * weight[k + 2] * s2, a3 = scale * weight[k + 3] * s3;
    if (offset) {
      a0 += offset[k];
      a1 += offset[k + 1];
      a2 += offset[k + 2];
      a3 += offset[k + 3];
    }
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) out[j] += a0 * y0[j] + a1 * y1[j] + a2 * y2[j] + a3 * y3[j];
  }
  for (; k < n; ++k) {
    const T* y = Y(k);
    T a = scale * weight[k] * dot(y, v, width);
    if (offset) a += offset[k];
    axpy(a, y, out, width);
  }
}

// One register tile of A += Y^T W (or A -= Y^T W): ROWS rows (i0..) x VECTORS SIMD vectors
// of columns (j0..), accumulated over all n rows of Y and W in registers.
template <typename T, int ROWS, int VECTORS, bool SUBTRACT>
inline void gram_tile(const T* Y, const T* W, int64_t n, int64_t fp, int64_t i0, int64_t j0, T* A) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  V acc[ROWS][VECTORS];
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < VECTORS; ++c) acc[r][c] = V{};
  for (int64_t k = 0; k < n; ++k) {
    const T* y = Y + k * fp + i0;
    V w[VECTORS];
    for (int c = 0; c < VECTORS; ++c) __builtin_memcpy(&w[c], W + k * fp + j0 + c * width, sizeof(V));
    for (int r = 0; r < ROWS; ++r) {
      const T yr = y[r];
      for (int c = 0; c < VECTORS; ++c) acc[r][c] += yr * w[c];
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int c = 0; c < VECTORS; ++c) {
      T* out = A + (i0 + r) * fp + j0 + c * width;
      V current;
      __builtin_memcpy(&current, out, sizeof(V));
      if (SUBTRACT) {
        current -= acc[r][c];
      } else {
        current += acc[r][c];
      }
      __builtin_memcpy(out, &current, sizeof(V));
    }
  }
}

// A += Y^T W (A -= Y^T W) on and above the diagonal, for rows and columns from `begin` on
// (A is fp x fp, Y and W are n x fp, all zero beyond f; begin is a multiple of two SIMD
// vectors). Tiles that straddle the diagonal also write a few entries below it, which
// nobody reads. Tiles are 4 rows x 2 vectors where the padded width allows (8
// accumulators, 6 loads per 8 FMAs), else 8 rows x 1 vector.
template <bool SUBTRACT = false, typename T>
void add_gram_upper(const T* Y, const T* W, int64_t n, int64_t begin, int64_t f, int64_t fp, T* A) {
  constexpr int64_t width = kVectorBytes / sizeof(T);
  if (fp % (2 * width) == 0) {
    for (int64_t i0 = begin; i0 < f; i0 += 4)
      for (int64_t j0 = i0 / (2 * width) * (2 * width); j0 < f; j0 += 2 * width)
        gram_tile<T, 4, 2, SUBTRACT>(Y, W, n, fp, i0, j0, A);
  } else {
    for (int64_t i0 = begin; i0 < f; i0 += 8)
      for (int64_t j0 = i0 / width * width; j0 < f; j0 += width) gram_tile<T, 8, 1, SUBTRACT>(Y, W, n, fp, i0, j0, A);
  }
}

// In-place Cholesky factorization A = U^T U of the leading f x f block, held in the upper
// triangle (row-major, stride fp), so that every inner loop runs along a contiguous row.
// Returns false if a pivot is not positive (A not positive definite). Right-looking and
// blocked by panels of two SIMD vectors of rows: the trailing matrix is updated with the
// Gram tiles above.
template <typename T>
bool cholesky_factor(T* A, int64_t f, int64_t fp) {
  constexpr int64_t height = 2 * kVectorBytes / sizeof(T);
  for (int64_t j0 = 0; j0 < f; j0 += height) {
    const int64_t panel_height = smaller(height, f - j0);
    for (int64_t j = j0; j < j0 + panel_height; ++j) {
      T* row = A + j * fp;
      const T pivot = row[j];
      if (!(pivot > T(0))) return false;  // also rejects NaN
      const T diagonal = square_root(pivot);
      row[j] = diagonal;
      const T inverse = T(1) / diagonal;
#pragma omp simd
      for (int64_t k = j + 1; k < f; ++k) row[k] *= inverse;
      for (int64_t later = j + 1; later < j0 + panel_height; ++later) {
        T* other = A + later * fp;
        const T u = row[later];
#pragma omp simd
        for (int64_t k = later; k < f; ++k) other[k] -= u * row[k];
      }
    }
    const int64_t rest = j0 + panel_height;
    if (rest >= f) break;
    // Trailing update A[i][k] -= sum_j U[j][i] U[j][k] over the panel's rows j; a full
    // panel here, since only the last one can be shorter.
    const T* panel = A + j0 * fp;
    add_gram_upper<true>(panel, panel, height, rest, f, fp, A);
  }
  return true;
}

// Solves U^T U x = b with the factor from cholesky_factor; b is overwritten. Both
// triangular solves go by blocks of one SIMD vector of rows: a small scalar solve inside
// the block, and whole, aligned vectors for its effect on the rest (b and x are zero
// beyond f, and so are U's rows).
template <typename T>
void cholesky_solve(const T* U, int64_t f, int64_t fp, T* b, T* x) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  // U^T z = b, z written over b: solve the block, then b[rest] -= sum_i z_i U[i][rest].
  for (int64_t i0 = 0; i0 < f; i0 += width) {
    const int64_t end = smaller(i0 + width, f);
    for (int64_t i = i0; i < end; ++i) {
      const T* row = U + i * fp;
      b[i] /= row[i];
      for (int64_t j = i + 1; j < end; ++j) b[j] -= b[i] * row[j];
    }
    for (int64_t j0 = i0 + width; j0 < fp; j0 += width) {
      V acc;
      __builtin_memcpy(&acc, b + j0, sizeof(V));
      for (int64_t i = i0; i < end; ++i) {
        V u;
        __builtin_memcpy(&u, U + i * fp + j0, sizeof(V));
        acc -= b[i] * u;
      }
      __builtin_memcpy(b + j0, &acc, sizeof(V));
    }
  }
  // U x = z, from the last block up: x_i = (z_i - U[i][rest] . x[rest] - U[i][block] . x[block]) / U_ii.
  fill_zero(x + f, fp - f);
  const int64_t last = (f - 1) / width * width;
  for (int64_t i0 = last; i0 >= 0; i0 -= width) {
    const int64_t end = smaller(i0 + width, f);
    for (int64_t i = i0; i < end; ++i) {
      const T* row = U + i * fp;
      V acc = V{};
      for (int64_t j0 = i0 + width; j0 < fp; j0 += width) {
        V u, xv;
        __builtin_memcpy(&u, row + j0, sizeof(V));
        __builtin_memcpy(&xv, x + j0, sizeof(V));
        acc += u * xv;
      }
      T sum = 0;
      for (int64_t c = 0; c < width; ++c) sum += acc[c];
      b[i] -= sum;
    }
    for (int64_t i = end - 1; i >= i0; --i) {
      const T* row = U + i * fp;
      T value = b[i];
      for (int64_t j = i + 1; j < end; ++j) value -= row[j] * x[j];
      x[i] = value / row[i];
    }
  }
}

// Per-thread scratch, carved from the workspace the dispatcher allocated (laid out as
// als_workspace_per_thread sizes it).
template <typename T>
struct Scratch {
  T* gathered;  // row length x fp; subspace: fp + 16 factor rows x row length rounded up to 16
  T* weight;    // row length + 16
  T* offset;    // row length + 16
  T* x;
  T* residual;
  T* direction;
  T* product;
  T* scaled;         // Cholesky: row length x fp
  T* A;              // Cholesky: fp x fp
  T* prediction;     // subspace: row length + 16
  T* coefficients;   // subspace: row length + 16
  T* chunk;          // subspace: kSubspaceChunkRows x padded block
  T* block_matrices; // subspace: blocks x padded block x padded block, each block's factor
  T* block_usable;   // subspace: blocks, 1 where the block's matrix factored

  Scratch(T* base, int64_t max_row_length, int64_t gathered_rows, int64_t fp, Solver solver, int64_t padded_block,
          int64_t blocks) {
    // The subspace solver holds its rows transposed, with rows of zeros past f (see
    // subspace_gathered_size).
    gathered = base;
    base += solver == Solver::subspace ? subspace_gathered_size(gathered_rows, fp) : gathered_rows * fp;
    weight = base;
    base += coefficient_capacity(max_row_length);
    offset = base;
    base += coefficient_capacity(max_row_length);
    x = base;
    residual = x + fp;
    direction = residual + fp;
    product = direction + fp;
    base = product + fp;
    scaled = A = prediction = coefficients = chunk = block_matrices = block_usable = nullptr;
    if (solver == Solver::cholesky) {
      scaled = base;
      base += gathered_rows * fp;
      A = base;
    } else if (solver == Solver::subspace) {
      prediction = base;
      base += coefficient_capacity(max_row_length);
      coefficients = base;
      base += coefficient_capacity(max_row_length);
      chunk = base;
      base += kSubspaceChunkRows * padded_block;
      block_matrices = base;
      base += blocks * padded_block * padded_block;
      block_usable = base;
    }
  }
};

// The fixed rows are read in index order, scattered over a matrix far larger than the
// caches: fetching a few rows ahead hides most of the memory latency of the gather.
constexpr int64_t kPrefetchRows = 8;

template <typename T>
inline void prefetch_row(const MatrixView<const T>& m, int64_t r) {
  const char* begin = reinterpret_cast<const char*>(m.row(r));
  const char* end = reinterpret_cast<const char*>(m.row(r) + m.cols);
  for (const char* line = begin; line < end; line += 64) __builtin_prefetch(line, 0, 3);
}

// Prefetches the first fixed rows of row u, so that they arrive while the row before it
// is being solved.
template <typename T, typename I>
inline void prefetch_row_start(const AlsSolveArgs<T, I>& a, int64_t u) {
  if (u >= a.rows.rows) return;
  const int64_t begin = a.rows.row_begin(u), end = smaller(a.rows.row_end(u), begin + kPrefetchRows);
  for (int64_t k = begin; k < end; ++k) prefetch_row(a.fixed, static_cast<int64_t>(a.rows.indices[k]));
}

// The per-entry weights (coefficient of y y^T in A) and offsets (coefficient of y in b). An
// observed entry's confidence replaces the unobserved weight alpha0 that the Gram matrix gives
// every entry, hence c - alpha0 (negative where c < alpha0: such an entry weighs less than an
// unobserved one).
template <typename T, typename I>
void row_coefficients(const AlsSolveArgs<T, I>& a, int64_t begin, int64_t n, const Scratch<T>& s) {
  const AlsOptions& o = a.options;
  const T alpha = static_cast<T>(o.alpha);
  const T unobserved_weight = static_cast<T>(o.unobserved_weight);
  for (int64_t k = 0; k < n; ++k) {
    const T value = a.rows.data[begin + k];
    if (o.feedback == Feedback::explicit_ratings) {
      s.weight[k] = T(1);
      s.offset[k] = value;
    } else {
      const T confidence = o.confidence == Confidence::linear ? T(1) + alpha * value : alpha * value;
      s.weight[k] = confidence - unobserved_weight;
      s.offset[k] = confidence;
    }
  }
}

// Copies the fixed rows of entries begin .. begin + n into a contiguous, cache-resident
// block (stride fp, zero padding untouched).
// Rows up to entry `prefetch_end` (the end of the row being solved) are prefetched ahead.
template <typename T, typename I>
void gather_rows(const AlsSolveArgs<T, I>& a, int64_t begin, int64_t n, int64_t prefetch_end, T* block) {
  const int64_t f = a.fixed.cols, fp = a.padded_factors;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t ahead = begin + k + kPrefetchRows;
    if (ahead < prefetch_end) prefetch_row(a.fixed, static_cast<int64_t>(a.rows.indices[ahead]));
    copy(a.fixed.row(static_cast<int64_t>(a.rows.indices[begin + k])), block + k * fp, f);
  }
}

// Conjugate gradient on A x = b, warm-started from the current x (Takacs et al. 2011):
// A x = G x + lambda x + sum_k w_k (y_k . x) y_k is applied without forming A (G: alpha0 YtY).

// out = G v + lambda v: the part of A v that does not involve the row's entries (G is the
// padded, alpha0-weighted Gram matrix, or nullptr for explicit feedback). v is read up to f.
template <typename T>
void product_without_entries(const T* G, const T* v, int64_t f, int64_t fp, T lambda, T* out) {
  if (G) {
    symmetric_matvec(G, v, f, fp, out);
  } else {
    fill_zero(out, fp);
  }
  axpy(lambda, v, out, f);
}

// out_r = G v_r + lambda_r v_r for `count` rows: product_without_entries of each, G read once
// for up to 4 rows. Bit for bit the same as product_without_entries row by row.
template <typename T>
void products_without_entries(const T* G, const T* const* v, int count, int64_t f, int64_t fp, const T* lambdas,
                              T* const* out) {
  if (!G || count <= 1) {
    for (int r = 0; r < count; ++r) product_without_entries(G, v[r], f, fp, lambdas[r], out[r]);
    return;
  }
  if (count == 2) {
    symmetric_matvec_rows<T, 2>(G, v, f, fp, out);
  } else if (count == 3) {
    symmetric_matvec_rows<T, 3>(G, v, f, fp, out);
  } else {
    symmetric_matvec_rows<T, 4>(G, v, f, fp, out);
  }
  for (int r = 0; r < count; ++r) axpy(lambdas[r], v[r], out[r], f);
}

// The same part of the residual r = b - A x: r = -(G x + lambda x).
template <typename T>
void start_residual(const T* G, const T* x, int64_t f, int64_t fp, T lambda, T* r) {
  product_without_entries(G, x, f, fp, lambda, r);
  for (int64_t j = 0; j < fp; ++j) r[j] = -r[j];
}

// One CG step once A p is known: x += a p, r -= a A p, p = r + beta p, rs = r.r. Returns
// false, changing nothing, when p^T A p is not positive (nothing left to gain). x is
// x_width long (f or fp), the others fp.
template <typename T>
bool cg_update(T* x, int64_t x_width, T* r, T* p, const T* Ap, int64_t fp, T* rs) {
  const T pAp = dot(p, Ap, fp);
  if (!(pAp > T(0))) return false;
  const T step_size = *rs / pAp;
  axpy(step_size, p, x, x_width);
  axpy(-step_size, Ap, r, fp);
  const T rs_new = dot(r, r, fp);
  const T beta = rs_new / *rs;
#pragma omp simd
  for (int64_t j = 0; j < fp; ++j) p[j] = r[j] + beta * p[j];
  *rs = rs_new;
  return true;
}

// Gathers the row's fixed rows and adds their part of the residual in the same pass, a
// few rows at a time while they are still in L1.
template <typename T, typename I>
void gather_rows_with_residual(const AlsSolveArgs<T, I>& a, int64_t begin, int64_t n, const Scratch<T>& s) {
  constexpr int64_t batch = 16;
  const int64_t fp = a.padded_factors;
  for (int64_t k = 0; k < n; k += batch) {
    const int64_t m = smaller(batch, n - k);
    gather_rows(a, begin + k, m, begin + n, s.gathered + k * fp);
    accumulate_rows(GatheredRows<T>{s.gathered + k * fp, fp}, m, fp, s.weight + k, T(-1), s.offset + k, s.x,
                    s.residual);
  }
}

// cg_steps iterations from the residual r = b - A x in s.residual.
template <typename T, typename I, typename Rows>
void cg_iterations(const AlsSolveArgs<T, I>& a, const Rows& rows, int64_t width, int64_t n, T lambda,
                   const Scratch<T>& s) {
  const int64_t f = a.fixed.cols, fp = a.padded_factors;
  copy(s.residual, s.direction, fp);
  T rs = dot(s.residual, s.residual, fp);
  for (int step = 0; step < a.options.cg_steps; ++step) {
    if (!(rs > T(1e-30))) break;
    product_without_entries(a.padded_gram, s.direction, f, fp, lambda, s.product);
    accumulate_rows(rows, n, width, s.weight, T(1), static_cast<const T*>(nullptr), s.direction, s.product);
    if (!cg_update(s.x, fp, s.residual, s.direction, s.product, fp, &rs)) break;
  }
}

// A = G + lambda I + Y^T diag(w) Y on and above the diagonal, and b = Y^T offset. The
// row's fixed rows are gathered kCholeskyChunkRows at a time, so each chunk stays in cache
// while every tile of A reads it.
template <typename T, typename I>
void form_normal_equations(const AlsSolveArgs<T, I>& a, int64_t begin, int64_t n, T lambda, T ridge,
                           const Scratch<T>& s) {
  const int64_t f = a.fixed.cols, fp = a.padded_factors;
  T* A = s.A;
  for (int64_t i = 0; i < f; ++i) {
    T* row = A + i * fp;
    fill_zero(row, i);
    if (a.padded_gram) {
      copy(a.padded_gram + i * fp + i, row + i, fp - i);
    } else {
      fill_zero(row + i, fp - i);
    }
    row[i] += lambda + ridge;
  }
  T* b = s.residual;
  fill_zero(b, fp);
  const bool implicit = a.options.feedback == Feedback::implicit;
  for (int64_t chunk = 0; chunk < n; chunk += kCholeskyChunkRows) {
    const int64_t m = smaller(kCholeskyChunkRows, n - chunk);
    gather_rows(a, begin + chunk, m, begin + n, s.gathered);
    const T* W = s.gathered;
    if (implicit) {
      for (int64_t k = 0; k < m; ++k) {
        const T* y = s.gathered + k * fp;
        T* w = s.scaled + k * fp;
        const T weight = s.weight[chunk + k];
#pragma omp simd
        for (int64_t j = 0; j < fp; ++j) w[j] = weight * y[j];
      }
      W = s.scaled;
    }
    add_gram_upper(s.gathered, W, m, 0, f, fp, A);
    for (int64_t k = 0; k < m; ++k) axpy(s.offset[chunk + k], s.gathered + k * fp, b, fp);
  }
}

// Exact solve of A x = b by Cholesky. If A is numerically singular (possible only with
// zero regularization), a ridge growing from 1e-6 of A's mean diagonal is added until it
// factors; if none does, x is kept.
template <typename T, typename I>
void solve_row_cholesky(const AlsSolveArgs<T, I>& a, int64_t begin, int64_t n, T lambda, const Scratch<T>& s) {
  const int64_t f = a.fixed.cols, fp = a.padded_factors;
  form_normal_equations(a, begin, n, lambda, T(0), s);
  T trace = 0;
  for (int64_t i = 0; i < f; ++i) trace += s.A[i * fp + i];
  if (cholesky_factor(s.A, f, fp)) {
    cholesky_solve(s.A, f, fp, s.residual, s.x);
    return;
  }
  T ridge = (trace > T(0) ? trace / T(f) : T(1)) * T(1e-6);
  for (int attempt = 0; attempt < 4; ++attempt, ridge *= T(100)) {
    form_normal_equations(a, begin, n, lambda, ridge, s);
    if (cholesky_factor(s.A, f, fp)) {
      cholesky_solve(s.A, f, fp, s.residual, s.x);
      return;
    }
  }
}

// -- subspace (iALS++) ----------------------------------------------------------------------
// Block coordinate descent on the row's quadratic 1/2 x^T A x - b^T x (Rendle et al. 2021):
// for each block B of factors in turn, x_B moves to the exact minimizer with the other
// factors fixed, x_B -= A_BB^-1 (A x - b)_B, where
//   A_BB = G_BB + lambda I + sum_k w_k y_kB y_kB^T,
//   (A x - b)_B = (G x)_B + lambda x_B + sum_k (w_k p_k - c_k) y_kB,
// and p_k = y_k . x is the row's prediction cache: kept for every entry of the row and moved
// by y_kB . d after each block, so that a pass over all blocks reads each entry's factors a
// constant number of times per block instead of once per factor. Each step can only lower
// the objective, and with enough passes x reaches the exact solve.
//
// A block is handled in a padded width bp (a whole number of 64-byte vectors): its matrix is
// bp x bp, its vectors bp long, and only the first bb rows and columns mean anything. Reads of
// a block's columns run over the whole padded width, so past the block's end (into the next
// block, the next row, or the zeros that the buffers hold past their last row); whatever they
// bring in lands in entries beyond bb, which are zeroed or never read.

// The sum of a vector's lanes, halving it until two lanes are left (a few shuffles and adds;
// a scalar loop over the lanes would be one long chain of dependent adds).
template <typename T, int BYTES>
inline T sum_lanes(const void* vector) {
  if constexpr (BYTES == 2 * static_cast<int>(sizeof(T))) {
    T lanes[2];
    __builtin_memcpy(lanes, vector, sizeof(lanes));
    return lanes[0] + lanes[1];
  } else {
    typedef T Half __attribute__((vector_size(BYTES / 2)));
    Half low, high;
    __builtin_memcpy(&low, vector, sizeof(Half));
    __builtin_memcpy(&high, static_cast<const char*>(vector) + sizeof(Half), sizeof(Half));
    const Half both = low + high;
    return sum_lanes<T, BYTES / 2>(&both);
  }
}

// a . b over n values, n a whole number of SIMD vectors.
template <typename T>
inline T dot_vectors(const T* a, const T* b, int64_t n) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  V acc = V{};
  for (int64_t j = 0; j < n; j += width) {
    V x, y;
    __builtin_memcpy(&x, a + j, sizeof(V));
    __builtin_memcpy(&y, b + j, sizeof(V));
    acc += x * y;
  }
  return sum_lanes<T, kVectorBytes>(&acc);
}

// lo, hi = the lanes of a and b's first (lo) and last (hi) halves interleaved: a0 b0 a1 b1 ...
template <typename V>
inline void interleave(const V& a, const V& b, V& lo, V& hi) {
  constexpr int lanes = static_cast<int>(sizeof(V) / sizeof(a[0]));
  if constexpr (lanes == 16) {
    lo = __builtin_shufflevector(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    hi = __builtin_shufflevector(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  } else if constexpr (lanes == 8) {
    lo = __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11);
    hi = __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15);
  } else if constexpr (lanes == 4) {
    lo = __builtin_shufflevector(a, b, 0, 4, 1, 5);
    hi = __builtin_shufflevector(a, b, 2, 6, 3, 7);
  } else {
    lo = __builtin_shufflevector(a, b, 0, 2);
    hi = __builtin_shufflevector(a, b, 1, 3);
  }
}

// The lane sums of N vectors, out[i] = the sum of acc[i]'s lanes (N a power of two; acc is
// overwritten). Vectors j and j + h are folded into one by interleaving them and adding the
// halves (each lane then holds partial sums of one of the two, alternately), h halving until
// one vector is left, whose lanes hold the N sums in order, repeated; a sum_lanes per vector
// would be N separate chains of shuffles.
template <typename T, int N>
inline void sum_lanes_of(typename Simd<T>::type* acc, T* out) {
  typedef typename Simd<T>::type V;
  constexpr int lanes = kVectorBytes / sizeof(T);
  if constexpr (N > lanes) {
    sum_lanes_of<T, lanes>(acc, out);
    sum_lanes_of<T, N - lanes>(acc + lanes, out + lanes);
  } else {
#pragma GCC unroll 16
    for (int h = N / 2; h >= 1; h /= 2) {
#pragma GCC unroll 16
      for (int j = 0; j < h; ++j) {
        V lo, hi;
        interleave(acc[j], acc[j + h], lo, hi);
        acc[j] = lo + hi;
      }
    }
    T folded[lanes];
    __builtin_memcpy(folded, &acc[0], sizeof(V));
    for (int i = 0; i < N; ++i) {
      T sum = folded[i];
      for (int r = 1; r < lanes / N; ++r) sum += folded[i + r * N];
      out[i] = sum;
    }
  }
}

// The smallest power of two >= n (n >= 1).
constexpr int power_of_two_at_least(int n) { return n <= 1 ? 1 : 2 * power_of_two_at_least((n + 1) / 2); }

// out[0 .. VECTORS * width) = sum_k c_k M[k][0 ..] over n rows of M (stride `stride`), in
// registers. Four rows at a time into separate sums, so that the adds do not wait on each other.
template <typename T, int VECTORS>
inline void combine_rows(const T* c, const T* M, int64_t n, int64_t stride, T* out) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  V acc[4][VECTORS];
  for (int p = 0; p < 4; ++p)
    for (int v = 0; v < VECTORS; ++v) acc[p][v] = V{};
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    for (int p = 0; p < 4; ++p) {
      const T ck = c[k + p];
      const T* row = M + (k + p) * stride;
      for (int v = 0; v < VECTORS; ++v) {
        V m;
        __builtin_memcpy(&m, row + v * width, sizeof(V));
        acc[p][v] += ck * m;
      }
    }
  }
  for (; k < n; ++k) {
    const T* row = M + k * stride;
    for (int v = 0; v < VECTORS; ++v) {
      V m;
      __builtin_memcpy(&m, row + v * width, sizeof(V));
      acc[0][v] += c[k] * m;
    }
  }
  for (int v = 0; v < VECTORS; ++v) {
    const V total = (acc[0][v] + acc[1][v]) + (acc[2][v] + acc[3][v]);
    __builtin_memcpy(out + v * width, &total, sizeof(V));
  }
}

// out[0 .. bp) = sum_k c_k M[k][0 .. bp) (bp a whole number of SIMD vectors).
template <typename T>
void combine_rows(const T* c, const T* M, int64_t n, int64_t stride, int64_t bp, T* out) {
  constexpr int64_t width = kVectorBytes / sizeof(T);
  int64_t j = 0;
  for (; j + 4 * width <= bp; j += 4 * width) combine_rows<T, 4>(c, M + j, n, stride, out + j);
  for (; j + 2 * width <= bp; j += 2 * width) combine_rows<T, 2>(c, M + j, n, stride, out + j);
  for (; j < bp; j += width) combine_rows<T, 1>(c, M + j, n, stride, out + j);
}

// A_BB = G_BB + (lambda + ridge) I on and above the diagonal of H's first bb rows (bp wide,
// zero elsewhere): the block's matrix before the row's entries are added.
template <typename T, typename I>
void start_block_matrix(const AlsSolveArgs<T, I>& a, int64_t j0, int64_t bb, T diagonal, T* H) {
  const int64_t fp = a.padded_factors, bp = a.padded_block;
  const T* G = a.padded_gram;
  fill_zero(H, bb * bp);  // rows past bb are only ever written (by tiles that overhang), never read
  for (int64_t i = 0; i < bb; ++i) {
    if (G) copy(G + (j0 + i) * fp + j0 + i, H + i * bp + i, bb - i);
    H[i * bp + i] += diagonal;
  }
}

// out[r] = G[r] . x for ROWS rows of G (stride fp; x zero beyond f), two sums a row so that
// the adds overlap.
template <typename T, int ROWS>
inline void gram_rows_times_x(const T* G, const T* x, int64_t fp, T* out) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  V acc[ROWS][2];
  for (int r = 0; r < ROWS; ++r) acc[r][0] = acc[r][1] = V{};
  int64_t j = 0;
  for (; j + 2 * width <= fp; j += 2 * width) {
    V x0, x1;
    __builtin_memcpy(&x0, x + j, sizeof(V));
    __builtin_memcpy(&x1, x + j + width, sizeof(V));
    for (int r = 0; r < ROWS; ++r) {
      V g0, g1;
      __builtin_memcpy(&g0, G + r * fp + j, sizeof(V));
      __builtin_memcpy(&g1, G + r * fp + j + width, sizeof(V));
      acc[r][0] += g0 * x0;
      acc[r][1] += g1 * x1;
    }
  }
  for (; j < fp; j += width) {
    V x0;
    __builtin_memcpy(&x0, x + j, sizeof(V));
    for (int r = 0; r < ROWS; ++r) {
      V g0;
      __builtin_memcpy(&g0, G + r * fp + j, sizeof(V));
      acc[r][0] += g0 * x0;
    }
  }
  V totals[ROWS];
  for (int r = 0; r < ROWS; ++r) totals[r] = acc[r][0] + acc[r][1];
  sum_lanes_of<T, ROWS>(totals, out);
}

// gradient = (G x)_B + lambda x_B + entries_B (bp values, zero beyond bb), entries the row's
// part sum_k (w_k p_k - c_k) y_k over the block's padded width.
template <typename T, typename I>
void finish_block_gradient(const AlsSolveArgs<T, I>& a, int64_t j0, int64_t bb, T lambda, const T* entries,
                           const Scratch<T>& s, T* gradient) {
  const int64_t fp = a.padded_factors, bp = a.padded_block;
  if (a.padded_gram) {
    // (G x)_B from the block's rows of G, read whole and in order (the block's columns of
    // every row would be one scattered line per row).
    for (int64_t i = 0; i < bb; i += 4) gram_rows_times_x<T, 4>(a.padded_gram + (j0 + i) * fp, s.x, fp, gradient + i);
  } else {
    fill_zero(gradient, bp);
  }
  for (int64_t i = 0; i < bb; ++i) gradient[i] += lambda * s.x[j0 + i] + entries[i];
  fill_zero(gradient + bb, bp - bb);
}

// One register tile of H += Y^T diag(w) Y over n rows of stride `stride`: ROWS rows of H from
// i0 (the scalars Y[k][i0 + r]) by VECTORS vectors of columns from jv (w_k Y[k][jv ..]); H has
// stride bp. The weight scales the vectors, once per row and tile.
template <typename T, int ROWS, int VECTORS>
inline void block_tile(const T* Y, const T* w, int64_t n, int64_t stride, int64_t i0, int64_t jv, T* H, int64_t bp) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  V acc[ROWS][VECTORS];
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < VECTORS; ++c) acc[r][c] = V{};
  for (int64_t k = 0; k < n; ++k) {
    const T* row = Y + k * stride;
    const T wk = w[k];
    V v[VECTORS];
    for (int c = 0; c < VECTORS; ++c) {
      __builtin_memcpy(&v[c], row + jv + c * width, sizeof(V));
      v[c] *= wk;
    }
    for (int r = 0; r < ROWS; ++r) {
      const T yr = row[i0 + r];
      for (int c = 0; c < VECTORS; ++c) acc[r][c] += yr * v[c];
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int c = 0; c < VECTORS; ++c) {
      T* out = H + (i0 + r) * bp + jv + c * width;
      V current;
      __builtin_memcpy(&current, out, sizeof(V));
      current += acc[r][c];
      __builtin_memcpy(out, &current, sizeof(V));
    }
  }
}

// H += Y^T diag(w) Y on and above the diagonal of the first bb rows: tiles of 8 rows by one
// vector, which leave out more of the lower triangle than wider tiles would (a block of one
// vector in a single tile, so that each entry's vector is read once).
template <typename T>
void add_block_upper(const T* Y, const T* w, int64_t n, int64_t stride, int64_t bb, int64_t bp, T* H) {
  constexpr int64_t width = kVectorBytes / sizeof(T);
  if (bp == width && width >= 8) {
    block_tile<T, static_cast<int>(width), 1>(Y, w, n, stride, 0, 0, H, bp);
  } else {
    for (int64_t i0 = 0; i0 < bb; i0 += 8)
      for (int64_t jv = i0 / width * width; jv < bb; jv += width) block_tile<T, 8, 1>(Y, w, n, stride, i0, jv, H, bp);
  }
}

// -- the gathered row, transposed ------------------------------------------------------------
// A row short enough to gather is copied transposed: one line of entries per factor (Yt[j][k],
// stride np, the row length rounded up to whole vectors), so that every kernel of a block runs
// down its factors' lines with one entry in each lane. A block's matrix is then its factors'
// pairwise dot products, its upper triangle alone, and the predictions and the gradient are
// plain vector arithmetic over entries, whatever the block size: no lane of a vector is spent
// on another block. Lanes past the row's end repeat its last entry with weight and offset 0,
// so they add nothing anywhere.

// Transposes a square tile of LANES vectors in registers, in place: rounds of interleaving
// vector p with vector p + stride, the stride halving from LANES / 2 to 1 (each round a perfect
// shuffle of the lanes; after the last, vector l holds lane l of every input, in order).
template <typename V, int LANES>
inline void transpose_tile(V r[LANES]) {
#pragma GCC unroll 4
  for (int stride = LANES / 2; stride >= 1; stride /= 2) {
#pragma GCC unroll 16
    for (int p = 0; p < LANES; ++p) {
      if (p & stride) continue;
      V lo, hi;
      interleave(r[p], r[p + stride], lo, hi);
      r[p] = lo;
      r[p + stride] = hi;
    }
  }
}

// Gathers the row's n fixed rows transposed into Yt (fp + 16 lines of np values; lines past f
// zero) and their predictions y_k . x into s.prediction, from the transposed tiles while they
// are in registers. Weights and offsets past n are set to 0.
template <typename T, typename I>
void gather_transposed(const AlsSolveArgs<T, I>& a, int64_t begin, int64_t n, int64_t np, const Scratch<T>& s) {
  typedef typename Simd<T>::type V;
  constexpr int lanes = kVectorBytes / sizeof(T);
  const int64_t f = a.fixed.cols, fp = a.padded_factors;
  T* Yt = s.gathered;
  for (int64_t k = n; k < np; ++k) s.weight[k] = s.offset[k] = s.prediction[k] = T(0);
  for (int64_t k0 = 0; k0 < n; k0 += lanes) {
    const T* source[lanes];
    for (int l = 0; l < lanes; ++l)
      source[l] = a.fixed.row(static_cast<int64_t>(a.rows.indices[begin + smaller(k0 + l, n - 1)]));
    // The next tile's rows are fetched while this one is transposed, a line of each row per
    // column step (spread out, so that the fetches do not queue up behind each other).
    const T* upcoming[lanes];
    for (int l = 0; l < lanes; ++l)
      upcoming[l] = a.fixed.row(static_cast<int64_t>(a.rows.indices[begin + smaller(k0 + lanes + l, n - 1)]));
    V prediction = V{};
    for (int64_t c = 0; c < f; c += lanes) {
      for (int64_t line = c; line < c + lanes; line += 64 / static_cast<int64_t>(sizeof(T)))
        for (int l = 0; l < lanes; ++l) __builtin_prefetch(upcoming[l] + line, 0, 3);
      V r[lanes];
      if (c + lanes <= f) {
        for (int l = 0; l < lanes; ++l) __builtin_memcpy(&r[l], source[l] + c, sizeof(V));
      } else {
        for (int l = 0; l < lanes; ++l) {
          T values[lanes] = {};
          copy(source[l] + c, values, f - c);
          __builtin_memcpy(&r[l], values, sizeof(V));
        }
      }
      transpose_tile<V, lanes>(r);
      for (int l = 0; l < lanes; ++l) {
        __builtin_memcpy(Yt + (c + l) * np + k0, &r[l], sizeof(V));
        prediction += s.x[c + l] * r[l];
      }
    }
    __builtin_memcpy(s.prediction + k0, &prediction, sizeof(V));
  }
  const int64_t written = (f + lanes - 1) / lanes * lanes;
  fill_zero(Yt + written * np, (fp + 16 - written) * np);
}

// One 4 x 4 tile of a block's matrix from the transposed lines: H[i0 + r][j0 + c] +=
// sum_k w_k Yt[i0 + r][k] Yt[j0 + c][k] (Yt at the block's first line; H has stride bp).
template <typename T>
inline void transposed_tile(const T* Yt, int64_t np, const T* w, int64_t i0, int64_t j0, T* H, int64_t bp) {
  typedef typename Simd<T>::type V;
  constexpr int64_t lanes = kVectorBytes / sizeof(T);
  V acc[4][4];
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) acc[r][c] = V{};
  for (int64_t k = 0; k < np; k += lanes) {
    V weight, left[4], right[4];
    __builtin_memcpy(&weight, w + k, sizeof(V));
    for (int r = 0; r < 4; ++r) {
      __builtin_memcpy(&left[r], Yt + (i0 + r) * np + k, sizeof(V));
      left[r] *= weight;
      __builtin_memcpy(&right[r], Yt + (j0 + r) * np + k, sizeof(V));
    }
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) acc[r][c] += left[r] * right[c];
  }
  T sums[16];
  sum_lanes_of<T, 16>(&acc[0][0], sums);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) H[(i0 + r) * bp + j0 + c] += sums[r * 4 + c];
}

// Rows FIRST .. LAST - 1 of a B-factor block's matrix on and above the diagonal, H[i][j] +=
// sum_k w_k Yt[i][k] Yt[j][k] for j >= i: exactly the upper triangle's products, with a sum in
// a register for each (a few such bands cover a block of 4 or 8 factors).
template <typename T, int B, int FIRST, int LAST>
inline void triangle_band(const T* Yt, int64_t np, const T* w, T* H, int64_t bp) {
  typedef typename Simd<T>::type V;
  constexpr int64_t lanes = kVectorBytes / sizeof(T);
  V acc[LAST - FIRST][B];
  for (int i = FIRST; i < LAST; ++i)
    for (int j = i; j < B; ++j) acc[i - FIRST][j] = V{};
  for (int64_t k = 0; k < np; k += lanes) {
    V weight, y[B];
    __builtin_memcpy(&weight, w + k, sizeof(V));
    for (int j = FIRST; j < B; ++j) __builtin_memcpy(&y[j], Yt + j * np + k, sizeof(V));
    for (int i = FIRST; i < LAST; ++i) {
      const V scaled = weight * y[i];
      for (int j = i; j < B; ++j) acc[i - FIRST][j] += scaled * y[j];
    }
  }
  constexpr int count = (LAST - FIRST) * B - (LAST * (LAST - 1) - FIRST * (FIRST - 1)) / 2;
  constexpr int padded_count = power_of_two_at_least(count);
  V flat[padded_count];
  T sums[padded_count];
  int next = 0;
  for (int i = FIRST; i < LAST; ++i)
    for (int j = i; j < B; ++j) flat[next++] = acc[i - FIRST][j];
  for (int m = count; m < padded_count; ++m) flat[m] = V{};
  sum_lanes_of<T, padded_count>(flat, sums);
  next = 0;
  for (int i = FIRST; i < LAST; ++i)
    for (int j = i; j < B; ++j) H[i * bp + j] += sums[next++];
}

// H += Y_B^T diag(w) Y_B on and above the diagonal, for a block of bs factors (bb of them in
// this block; lines past bb are zero or the next block's, and land in rows and columns of H
// past bb, which nobody reads). Blocks of 4 and 8 factors go by bands of rows with a register
// sum per product (36 for 8 factors); others by 4 x 4 tiles (tiles on the diagonal also write
// below it).
template <typename T>
void add_transposed_block(const T* Yt, int64_t np, const T* w, int64_t bs, int64_t bb, int64_t bp, T* H) {
  if (bs == 8) {
    triangle_band<T, 8, 0, 2>(Yt, np, w, H, bp);
    triangle_band<T, 8, 2, 5>(Yt, np, w, H, bp);
    triangle_band<T, 8, 5, 8>(Yt, np, w, H, bp);
  } else if (bs == 4) {
    triangle_band<T, 4, 0, 4>(Yt, np, w, H, bp);
  } else {
    for (int64_t i0 = 0; i0 < bb; i0 += 4)
      for (int64_t j0 = i0; j0 < bb; j0 += 4) transposed_tile(Yt, np, w, i0, j0, H, bp);
  }
}

// The block's matrix A_BB (with `ridge` on its diagonal) into H, for rows gathered transposed
// into s.gathered or, with `in_place`, read through Y (rows longer than the gather limit),
// whose block columns are copied kSubspaceChunkRows entries at a time into a padded buffer.
template <typename T, typename I, typename Rows>
void form_block_matrix(const AlsSolveArgs<T, I>& a, const Rows& Y, bool in_place, int64_t n, int64_t j0, int64_t bb,
                       T lambda, T ridge, const Scratch<T>& s, T* H) {
  const int64_t bp = a.padded_block;
  start_block_matrix(a, j0, bb, lambda + ridge, H);
  if (in_place) {
    for (int64_t c0 = 0; c0 < n; c0 += kSubspaceChunkRows) {
      const int64_t m = smaller(kSubspaceChunkRows, n - c0);
      for (int64_t k = 0; k < m; ++k) {
        copy(Y(c0 + k) + j0, s.chunk + k * bp, bb);
        fill_zero(s.chunk + k * bp + bb, bp - bb);
      }
      add_block_upper(s.chunk, s.weight + c0, m, bp, bb, bp, H);
    }
  } else {
    constexpr int64_t lanes = kVectorBytes / sizeof(T);
    const int64_t np = (n + lanes - 1) / lanes * lanes;
    add_transposed_block(s.gathered + j0 * np, np, s.weight, a.block_factors, bb, bp, H);
  }
  for (int64_t i = 0; i < bb; ++i) fill_zero(H + i * bp + bb, bp - bb);
}

// The block's gradient (A x - b)_B into s.residual, from the predictions as they are, for a
// row read in place through Y.
template <typename T, typename I, typename Rows>
void form_block_gradient(const AlsSolveArgs<T, I>& a, const Rows& Y, int64_t n, int64_t j0, int64_t bb, T lambda,
                         const Scratch<T>& s) {
  for (int64_t k = 0; k < n; ++k) s.coefficients[k] = s.weight[k] * s.prediction[k] - s.offset[k];
  T* entries = s.product;
  fill_zero(entries, a.padded_block);
  for (int64_t k = 0; k < n; ++k) axpy(s.coefficients[k], Y(k) + j0, entries, bb);
  finish_block_gradient(a, j0, bb, lambda, entries, s, s.residual);
}

// In-place Cholesky H = U^T U of a block's bb x bb matrix (upper triangle, stride bp), with
// the inverse of each diagonal entry stored in its place (the solves multiply by it); false if
// a pivot is not positive. Rows are scaled and updated as whole vectors from the one that
// holds the diagonal: the lanes left of it belong to the lower triangle, scratch that lanes
// never carry into the upper one. They are zeroed at the end, for block_cholesky_solve.
template <typename T>
bool block_cholesky_factor(T* H, int64_t bb, int64_t bp) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  for (int64_t j = 0; j < bb; ++j) {
    T* row = H + j * bp;
    const T pivot = row[j];
    if (!(pivot > T(0))) return false;  // also rejects NaN
    const T diagonal = square_root(pivot);
    const T inverse = T(1) / diagonal;
    const int64_t from = j / width * width;
    for (int64_t k = from; k < bp; k += width) {
      V r;
      __builtin_memcpy(&r, row + k, sizeof(V));
      r *= inverse;
      __builtin_memcpy(row + k, &r, sizeof(V));
    }
    row[j] = inverse;
    for (int64_t i = j + 1; i < bb; ++i) {
      const T u = row[i];
      T* other = H + i * bp;
      for (int64_t k = i / width * width; k < bp; k += width) {
        V r, o;
        __builtin_memcpy(&r, row + k, sizeof(V));
        __builtin_memcpy(&o, other + k, sizeof(V));
        o -= u * r;
        __builtin_memcpy(other + k, &o, sizeof(V));
      }
    }
  }
  for (int64_t i = 0; i < bb; ++i) fill_zero(H + i * bp + i / width * width, i % width);
  return true;
}

// Solves U^T U d = gradient (bb values, zero up to bp; d is bp long, zero beyond bb) with the
// factor of block_cholesky_factor (inverse diagonal); gradient is overwritten. Both triangular
// solves go a row of U at a time over whole vectors: U^T z = gradient by subtracting z_i U[i][.]
// from the rest, U d = z by dot products with the part of d already known (zero elsewhere).
template <typename T>
void block_cholesky_solve(const T* U, int64_t bb, int64_t bp, T* gradient, T* d) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  T* z = d;  // z is kept in d until the back substitution overwrites it from the end
  for (int64_t i = 0; i < bb; ++i) {
    const T* row = U + i * bp;
    const T zi = gradient[i] * row[i];
    z[i] = zi;
    for (int64_t k = i / width * width; k < bp; k += width) {
      V r, g;
      __builtin_memcpy(&r, row + k, sizeof(V));
      __builtin_memcpy(&g, gradient + k, sizeof(V));
      g -= zi * r;
      __builtin_memcpy(gradient + k, &g, sizeof(V));
    }
  }
  fill_zero(d + bb, bp - bb);
  for (int64_t i = bb - 1; i >= 0; --i) {
    const T* row = U + i * bp;
    const T zi = d[i];
    d[i] = T(0);  // the row's dot product runs over d[i..] (U's lanes left of i are zero)
    const int64_t from = i / width * width;
    d[i] = (zi - dot_vectors(row + from, d + from, bp - from)) * row[i];
  }
}

// One pass over the entries between two block steps, B lines a block (B >= the block's
// factors; lines past it are read, and their sums dropped, since the step is zero there): the
// predictions take the previous block's step (p_k -= Yt[previous + i][k] step_i), then the
// next block's part of the gradient entries_i = sum_k (w_k p_k - c_k) Yt[next + i][k], in
// registers.
template <typename T, int B>
void step_and_gradient(const T* previous, const T* step, const T* next, int64_t np, const Scratch<T>& s,
                       T* entries) {
  typedef typename Simd<T>::type V;
  constexpr int64_t lanes = kVectorBytes / sizeof(T);
  V acc[B];
  for (int i = 0; i < B; ++i) acc[i] = V{};
  for (int64_t k = 0; k < np; k += lanes) {
    V p, w, c;
    __builtin_memcpy(&p, s.prediction + k, sizeof(V));
    if (previous) {
      for (int i = 0; i < B; ++i) {
        V y;
        __builtin_memcpy(&y, previous + i * np + k, sizeof(V));
        p -= step[i] * y;
      }
      __builtin_memcpy(s.prediction + k, &p, sizeof(V));
    }
    __builtin_memcpy(&w, s.weight + k, sizeof(V));
    __builtin_memcpy(&c, s.offset + k, sizeof(V));
    const V coefficient = w * p - c;
    for (int i = 0; i < B; ++i) {
      V y;
      __builtin_memcpy(&y, next + i * np + k, sizeof(V));
      acc[i] += coefficient * y;
    }
  }
  sum_lanes_of<T, B>(acc, entries);
}

// The same for blocks of more than 16 factors, in two passes over the lines (registers would
// not hold a sum per factor).
template <typename T>
void step_and_gradient_lines(const T* previous, const T* step, int64_t previous_bb, const T* next, int64_t bb,
                             int64_t np, const Scratch<T>& s, T* entries) {
  if (previous)
    for (int64_t i = 0; i < previous_bb; ++i) axpy(-step[i], previous + i * np, s.prediction, np);
  for (int64_t k = 0; k < np; ++k) s.coefficients[k] = s.weight[k] * s.prediction[k] - s.offset[k];
  for (int64_t i = 0; i < bb; ++i) entries[i] = dot_vectors(s.coefficients, next + i * np, np);
}

// Blocks of up to this many factors are inverted once (Gauss-Jordan) and each step is then one
// matrix-vector product; a triangular solve per step would be a chain of dependent horizontal
// sums, several times the product's time at these sizes. Larger blocks keep their Cholesky
// factor (a third of the inversion's work, and few steps to repay it).
constexpr int64_t kInvertedBlockFactors = 16;

// Inverts `count` symmetric positive definite matrices in place (matrix m: sizes[m] square,
// stride bp, both triangles, zero beyond its size) by Gauss-Jordan elimination without pivoting
// (its pivots are those of a Cholesky factorization, positive for such a matrix), each pivot
// updating every row as whole vectors. The eliminations are interleaved pivot by pivot: each is
// a chain of dependent steps (a division, then the rows that wait on it), and independent
// chains side by side keep the processor busy while one waits. inverted[m] says whether matrix
// m's pivots were all positive (a matrix stops at its first that is not).
template <typename T>
void block_invert_group(T* const* H, const int64_t* sizes, int count, int64_t bp, bool* inverted) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  int64_t largest = 0;
  for (int m = 0; m < count; ++m) {
    inverted[m] = true;
    largest = sizes[m] > largest ? sizes[m] : largest;
  }
  // unit + 16 - l, read as a vector, is 1 in lane l and 0 elsewhere: lane k of a row is set
  // through it in registers (a scalar store into a row that is then read as a vector would
  // stall the load until the store completes).
  alignas(64) static const T unit[32] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  constexpr int64_t most_vectors = 16 * sizeof(T) / kVectorBytes > 0 ? 16 * sizeof(T) / kVectorBytes : 1;
  for (int64_t k = 0; k < largest; ++k) {
    const int64_t k_vector = k / width * width;
    V lane_k;
    __builtin_memcpy(&lane_k, unit + 16 - (k - k_vector), sizeof(V));
    for (int m = 0; m < count; ++m) {
      const int64_t bb = sizes[m];
      if (!inverted[m] || k >= bb) continue;
      T* pivot_row = H[m] + k * bp;
      const T pivot = pivot_row[k];
      if (!(pivot > T(0))) {  // also rejects NaN
        inverted[m] = false;
        continue;
      }
      const T inverse = T(1) / pivot;
      // The pivot row becomes row / pivot with lane k = 1 / pivot; the other rows take
      // row[k] times it, with lane k = 1 + 1 / pivot, so that their column k becomes
      // -row[k] / pivot (the inverse's entry).
      V update[most_vectors];
      for (int64_t j = 0; j < bp; j += width) {
        V r;
        __builtin_memcpy(&r, pivot_row + j, sizeof(V));
        r *= inverse;
        update[j / width] = r;
        if (j == k_vector) {
          r += (inverse - T(1)) * lane_k;
          update[j / width] += inverse * lane_k;
        }
        __builtin_memcpy(pivot_row + j, &r, sizeof(V));
      }
      for (int64_t i = 0; i < bb; ++i) {
        if (i == k) continue;
        T* row = H[m] + i * bp;
        const T factor = row[k];
        for (int64_t j = 0; j < bp; j += width) {
          V o;
          __builtin_memcpy(&o, row + j, sizeof(V));
          o -= factor * update[j / width];
          __builtin_memcpy(row + j, &o, sizeof(V));
        }
      }
    }
  }
}

// One matrix of block_invert_group; false if a pivot is not positive.
template <typename T>
bool block_invert(T* H, int64_t bb, int64_t bp) {
  T* group[1] = {H};
  const int64_t sizes[1] = {bb};
  bool inverted[1];
  block_invert_group(group, sizes, 1, bp, inverted);
  return inverted[0];
}

// d = H^-1 gradient from the inverse (symmetric): a combination of its rows.
template <typename T>
void block_inverse_apply(const T* H_inverse, int64_t bb, int64_t bp, const T* gradient, T* d) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  for (int64_t j = 0; j < bp; j += width) {
    V even = V{}, odd = V{};
    int64_t i = 0;
    for (; i + 2 <= bb; i += 2) {
      V r0, r1;
      __builtin_memcpy(&r0, H_inverse + i * bp + j, sizeof(V));
      __builtin_memcpy(&r1, H_inverse + (i + 1) * bp + j, sizeof(V));
      even += gradient[i] * r0;
      odd += gradient[i + 1] * r1;
    }
    if (i < bb) {
      V r0;
      __builtin_memcpy(&r0, H_inverse + i * bp + j, sizeof(V));
      even += gradient[i] * r0;
    }
    const V total = even + odd;
    __builtin_memcpy(d + j, &total, sizeof(V));
  }
}

// A formed block matrix made ready for its steps: inverted or factored (see
// kInvertedBlockFactors); false if it is not numerically positive definite.
template <typename T, typename I>
bool prepare_block(const AlsSolveArgs<T, I>& a, int64_t bb, T* H) {
  const int64_t bp = a.padded_block;
  if (a.block_factors > kInvertedBlockFactors) return block_cholesky_factor(H, bb, bp);
  for (int64_t i = 0; i < bb; ++i)
    for (int64_t j = 0; j < i; ++j) H[i * bp + j] = H[j * bp + i];
  return block_invert(H, bb, bp);
}

// Forms and prepares block b's matrix in its slot of s.block_matrices; a singular block
// (possible only with zero regularization) gets the Cholesky solver's ridge, growing from 1e-6
// of the mean diagonal. Returns false if none works (the block is then left as it is).
template <typename T, typename I, typename Rows>
bool factor_block(const AlsSolveArgs<T, I>& a, const Rows& Y, bool in_place, int64_t n, int64_t b, T lambda,
                  const Scratch<T>& s) {
  const int64_t f = a.fixed.cols, bs = a.block_factors, bp = a.padded_block;
  const int64_t j0 = b * bs, bb = smaller(bs, f - j0);
  T* H = s.block_matrices + b * bp * bp;
  form_block_matrix(a, Y, in_place, n, j0, bb, lambda, T(0), s, H);
  T trace = 0;
  for (int64_t i = 0; i < bb; ++i) trace += H[i * bp + i];
  if (prepare_block(a, bb, H)) return true;
  T ridge = (trace > T(0) ? trace / T(bb) : T(1)) * T(1e-6);
  for (int attempt = 0; attempt < 4; ++attempt, ridge *= T(100)) {
    form_block_matrix(a, Y, in_place, n, j0, bb, lambda, ridge, s, H);
    if (prepare_block(a, bb, H)) return true;
  }
  return false;
}

// Every block's matrix formed and prepared (block_usable[b] = 0 where none works): matrices
// to invert are inverted four at a time (block_invert_group), and only a block that fails is
// formed again, with a ridge (factor_block).
template <typename T, typename I, typename Rows>
void prepare_blocks(const AlsSolveArgs<T, I>& a, const Rows& Y, bool in_place, int64_t n, T lambda,
                    const Scratch<T>& s) {
  const int64_t f = a.fixed.cols, bs = a.block_factors, bp = a.padded_block;
  if (bs > kInvertedBlockFactors) {
    for (int64_t b = 0; b < a.blocks; ++b)
      s.block_usable[b] = factor_block(a, Y, in_place, n, b, lambda, s) ? T(1) : T(0);
    return;
  }
  constexpr int group = 4;
  for (int64_t b0 = 0; b0 < a.blocks; b0 += group) {
    const int count = static_cast<int>(smaller(group, a.blocks - b0));
    T* matrices[group];
    int64_t sizes[group];
    bool inverted[group];
    for (int m = 0; m < count; ++m) {
      const int64_t b = b0 + m, j0 = b * bs;
      sizes[m] = smaller(bs, f - j0);
      matrices[m] = s.block_matrices + b * bp * bp;
      form_block_matrix(a, Y, in_place, n, j0, sizes[m], lambda, T(0), s, matrices[m]);
      for (int64_t i = 0; i < sizes[m]; ++i)
        for (int64_t j = 0; j < i; ++j) matrices[m][i * bp + j] = matrices[m][j * bp + i];
    }
    block_invert_group(matrices, sizes, count, bp, inverted);
    for (int m = 0; m < count; ++m)
      s.block_usable[b0 + m] = inverted[m] || factor_block(a, Y, in_place, n, b0 + m, lambda, s) ? T(1) : T(0);
  }
}

// The block's step from its gradient: s.x[block] -= step (in s.direction, zero beyond bb).
template <typename T, typename I>
void take_block_step(const AlsSolveArgs<T, I>& a, int64_t b, int64_t j0, int64_t bb, const Scratch<T>& s) {
  const int64_t bp = a.padded_block;
  const T* H = s.block_matrices + b * bp * bp;
  if (a.block_factors > kInvertedBlockFactors) {
    block_cholesky_solve(H, bb, bp, s.residual, s.direction);
  } else {
    block_inverse_apply(H, bb, bp, s.residual, s.direction);
  }
  for (int64_t i = 0; i < bb; ++i) s.x[j0 + i] -= s.direction[i];
}

// subspace_sweeps passes over the blocks of a row read in place through Y (rows longer than
// the gather limit), whose entries' coefficients are in s.weight / s.offset. A block's matrix
// does not depend on x: every block is factored once, first, and reused by every sweep.
template <typename T, typename I, typename Rows>
void solve_row_subspace_in_place(const AlsSolveArgs<T, I>& a, const Rows& Y, int64_t n, T lambda,
                                 const Scratch<T>& s) {
  const int64_t f = a.fixed.cols, bs = a.block_factors;
  prepare_blocks(a, Y, true, n, lambda, s);
  for (int64_t k = 0; k < n; ++k) s.prediction[k] = dot(Y(k), s.x, f);
  for (int sweep = 0; sweep < a.options.subspace_sweeps; ++sweep) {
    for (int64_t b = 0; b < a.blocks; ++b) {
      if (s.block_usable[b] == T(0)) continue;
      const int64_t j0 = b * bs, bb = smaller(bs, f - j0);
      form_block_gradient(a, Y, n, j0, bb, lambda, s);
      take_block_step(a, b, j0, bb, s);
      for (int64_t k = 0; k < n; ++k) s.prediction[k] -= dot(Y(k) + j0, s.direction, bb);
    }
  }
}

// The same for a gathered row (entries begin .. begin + n), transposed into s.gathered first.
// Each pass over the entries between two steps does the previous block's prediction update
// and the next block's gradient together.
template <typename T, typename I>
void solve_row_subspace_gathered(const AlsSolveArgs<T, I>& a, int64_t u, int64_t begin, int64_t n, T lambda,
                                 const Scratch<T>& s) {
  constexpr int64_t lanes = kVectorBytes / sizeof(T);
  const int64_t f = a.fixed.cols, bs = a.block_factors, np = (n + lanes - 1) / lanes * lanes;
  gather_transposed(a, begin, n, np, s);
  // The next row's first tile of rows arrives in L2 while this row is solved.
  if (u + 1 < a.rows.rows) {
    const int64_t next = a.rows.row_begin(u + 1), end = smaller(a.rows.row_end(u + 1), next + lanes);
    for (int64_t k = next; k < end; ++k) {
      const char* row = reinterpret_cast<const char*>(a.fixed.row(static_cast<int64_t>(a.rows.indices[k])));
      for (int64_t line = 0; line < f * static_cast<int64_t>(sizeof(T)); line += 64) __builtin_prefetch(row + line, 0, 2);
    }
  }
  const GatheredRows<T> unused{s.gathered, np};
  prepare_blocks(a, unused, false, n, lambda, s);
  const T* Yt = s.gathered;
  int64_t pending = -1;  // the block whose step the predictions have yet to take
  for (int sweep = 0; sweep < a.options.subspace_sweeps; ++sweep) {
    for (int64_t b = 0; b < a.blocks; ++b) {
      if (s.block_usable[b] == T(0)) continue;
      const int64_t j0 = b * bs, bb = smaller(bs, f - j0);
      const T* previous = pending >= 0 ? Yt + pending * bs * np : nullptr;
      const T* next = Yt + j0 * np;
      T* entries = s.product;
      if (bs <= 4) {
        step_and_gradient<T, 4>(previous, s.direction, next, np, s, entries);
      } else if (bs <= 8) {
        step_and_gradient<T, 8>(previous, s.direction, next, np, s, entries);
      } else if (bs <= 16) {
        step_and_gradient<T, 16>(previous, s.direction, next, np, s, entries);
      } else {
        const int64_t previous_bb = pending >= 0 ? smaller(bs, f - pending * bs) : 0;
        step_and_gradient_lines(previous, s.direction, previous_bb, next, bb, np, s, entries);
      }
      finish_block_gradient(a, j0, bb, lambda, entries, s, s.residual);
      take_block_step(a, b, j0, bb, s);
      pending = b;  // taken by the next block's pass (none is needed after the last step)
    }
  }
}

// -- blocked conjugate gradient ------------------------------------------------------------
// Every row runs the same CG as solve by row (start_residual, cg_iterations), but the
// passes over the rows' entries go block by block of fixed rows, all rows together.

// For one pass: out_u += sum over u's entries of (offset + scale * w (y . v_u)) y, block by
// block of fixed rows. v_u and out_u are rows of `vectors` and `outputs` (stride fp), or of
// the target factors when `vectors` is nullptr.
template <typename T, typename I>
void blocked_pass(const AlsSolveArgs<T, I>& a, const T* vectors, T* outputs, T scale, bool with_offset) {
  const int64_t f = a.fixed.cols, fp = a.padded_factors, rows = a.rows.rows;
  const int64_t blocks = (a.fixed.rows + a.block_rows - 1) / a.block_rows;
  for (int64_t b = 0; b < blocks; ++b) {
#pragma omp for schedule(dynamic, 64)
    for (int64_t u = 0; u < rows; ++u) {
      if (!a.active[u]) continue;
      const int64_t begin = a.block_bounds[u * (blocks + 1) + b];
      const int64_t n = a.block_bounds[u * (blocks + 1) + b + 1] - begin;
      if (n == 0) continue;
      Scratch<T> s(a.workspace + thread_index() * a.workspace_per_thread, a.max_row_length, 0, fp,
                   Solver::conjugate_gradient, 0, 0);
      row_coefficients(a, begin, n, s);
      const T* v = vectors ? vectors + u * fp : a.target.row(u);
      IndexedRows<T, I> entries{a.fixed.data, a.fixed.stride, f, a.rows.indices + begin};
      accumulate_rows(entries, n, f, s.weight, scale, with_offset ? s.offset : static_cast<const T*>(nullptr), v,
                      outputs + u * fp);
    }
  }
}

// Rows whose Gram products are taken together (products_without_entries): consecutive rows,
// so that the groups, like the rows, do not depend on the thread count.
constexpr int64_t kGroupRows = 4;

template <typename T>
struct RowGroup {
  const T* in[kGroupRows];
  T* out[kGroupRows];
  T lambdas[kGroupRows];
  int count = 0;
  void add(const T* v, T* product, T lambda) {
    in[count] = v;
    out[count] = product;
    lambdas[count++] = lambda;
  }
};

template <typename T, typename I>
void solve_blocked(const AlsSolveArgs<T, I>& a) {
  const int64_t f = a.fixed.cols, fp = a.padded_factors, rows = a.rows.rows;
  const int64_t blocks = (a.fixed.rows + a.block_rows - 1) / a.block_rows;
  const int64_t groups = (rows + kGroupRows - 1) / kGroupRows;
  auto lambda_of = [&](int64_t u) { return a.lambdas[u]; };
#pragma omp parallel num_threads(a.threads)
  {
    // Where each block starts in each row (the row's indices are sorted), and r = -G x - lambda x.
#pragma omp for schedule(dynamic, 256)
    for (int64_t u = 0; u < rows; ++u) {
      int64_t* bounds = a.block_bounds + u * (blocks + 1);
      int64_t k = a.rows.row_begin(u);
      const int64_t end = a.rows.row_end(u);
      for (int64_t b = 0; b < blocks; ++b) {
        bounds[b] = k;
        const int64_t limit = (b + 1) * a.block_rows;
        while (k < end && static_cast<int64_t>(a.rows.indices[k]) < limit) ++k;
      }
      bounds[blocks] = end;
      a.active[u] = end > a.rows.row_begin(u);
      if (!a.active[u]) fill_zero(a.target.row(u), f);  // no observations: the minimizer is 0
    }
    // r = -(G x + lambda x), the Gram matrix read once per group of rows.
#pragma omp for schedule(static)
    for (int64_t group = 0; group < groups; ++group) {
      RowGroup<T> g;
      for (int64_t u = group * kGroupRows; u < smaller(rows, (group + 1) * kGroupRows); ++u)
        if (a.active[u]) g.add(a.target.row(u), a.residuals + u * fp, lambda_of(u));
      products_without_entries(a.padded_gram, g.in, g.count, f, fp, g.lambdas, g.out);
      for (int r = 0; r < g.count; ++r)
        for (int64_t j = 0; j < fp; ++j) g.out[r][j] = -g.out[r][j];
    }
    blocked_pass(a, static_cast<const T*>(nullptr), a.residuals, T(-1), true);

#pragma omp for schedule(static)
    for (int64_t u = 0; u < rows; ++u) {
      if (!a.active[u]) continue;
      copy(a.residuals + u * fp, a.directions + u * fp, fp);
      a.residual_norms[u] = dot(a.residuals + u * fp, a.residuals + u * fp, fp);
    }
    for (int step = 0; step < a.options.cg_steps; ++step) {
#pragma omp for schedule(static)
      for (int64_t group = 0; group < groups; ++group) {
        RowGroup<T> g;
        for (int64_t u = group * kGroupRows; u < smaller(rows, (group + 1) * kGroupRows); ++u) {
          if (!a.active[u]) continue;
          if (!(a.residual_norms[u] > T(1e-30))) {
            a.active[u] = 0;
            continue;
          }
          g.add(a.directions + u * fp, a.products + u * fp, lambda_of(u));
        }
        products_without_entries(a.padded_gram, g.in, g.count, f, fp, g.lambdas, g.out);
      }
      blocked_pass(a, a.directions, a.products, T(1), false);
#pragma omp for schedule(static)
      for (int64_t u = 0; u < rows; ++u) {
        if (a.active[u] && !cg_update(a.target.row(u), f, a.residuals + u * fp, a.directions + u * fp,
                                      a.products + u * fp, fp, a.residual_norms + u))
          a.active[u] = 0;
      }
    }
  }
}

}  // namespace

template <typename T, typename I>
void als_solve(const AlsSolveArgs<T, I>& a) {
  if (a.block_rows > 0) return solve_blocked(a);
  const int64_t f = a.fixed.cols, fp = a.padded_factors;
  const int64_t rows = a.rows.rows;
  const Solver solver = a.options.solver;
#pragma omp parallel num_threads(a.threads)
  {
    Scratch<T> s(a.workspace + thread_index() * a.workspace_per_thread, a.max_row_length, a.gathered_rows, fp,
                 solver, a.padded_block, a.blocks);
#pragma omp for schedule(dynamic, 16)
    for (int64_t u = 0; u < rows; ++u) {
      const int64_t begin = a.rows.row_begin(u);
      const int64_t n = a.rows.row_end(u) - begin;
      T* target = a.target.row(u);
      if (n == 0) {
        // No observations: the minimizer is 0 for both feedback kinds.
        fill_zero(target, f);
        continue;
      }
      const T lambda = a.lambdas[u];
      row_coefficients(a, begin, n, s);
      copy(target, s.x, f);
      fill_zero(s.x + f, fp - f);
      if (solver == Solver::cholesky) {
        solve_row_cholesky(a, begin, n, lambda, s);
      } else if (solver == Solver::subspace) {
        if (n > a.gather_limit) {
          solve_row_subspace_in_place(a, IndexedRows<T, I>{a.fixed.data, a.fixed.stride, f, a.rows.indices + begin},
                                      n, lambda, s);
        } else {
          solve_row_subspace_gathered(a, u, begin, n, lambda, s);
        }
      } else if (n > a.gather_limit) {
        // A block this long would not stay in cache between the CG passes: read the rows
        // where they are instead of copying them first.
        IndexedRows<T, I> rows{a.fixed.data, a.fixed.stride, f, a.rows.indices + begin};
        start_residual(a.padded_gram, s.x, f, fp, lambda, s.residual);
        accumulate_rows(rows, n, f, s.weight, T(-1), s.offset, s.x, s.residual);
        cg_iterations(a, rows, f, n, lambda, s);
      } else {
        start_residual(a.padded_gram, s.x, f, fp, lambda, s.residual);
        gather_rows_with_residual(a, begin, n, s);
        prefetch_row_start(a, u + 1);
        cg_iterations(a, GatheredRows<T>{s.gathered, fp}, fp, n, lambda, s);
      }
      copy(s.x, target, f);
    }
  }
}

template <typename T>
void gram_matrix(const GramArgs<T>& a) {
  const int64_t f = a.factors.cols, fp = a.padded_factors;
#pragma omp parallel for num_threads(a.threads) schedule(dynamic, 1)
  for (int64_t c = 0; c < a.chunks; ++c) {
    T* block = a.workspace + thread_index() * a.workspace_per_thread;
    T* partial = a.partials + c * fp * fp;
    fill_zero(partial, fp * fp);
    const int64_t begin = a.chunk_bounds[c], end = a.chunk_bounds[c + 1];
    for (int64_t b = begin; b < end; b += kGramBlockRows) {
      const int64_t m = smaller(kGramBlockRows, end - b);
      for (int64_t k = 0; k < m; ++k) copy(a.factors.row(b + k), block + k * fp, f);
      add_gram_upper(block, block, m, 0, f, fp, partial);
    }
  }
}

template <typename T, typename I>
void als_loss(const AlsLossArgs<T, I>& a) {
  const CsrView<T, I>& R = a.user_items;
  const int64_t f = a.user_factors.cols;
  const AlsOptions& o = a.options;
  const bool implicit = o.feedback == Feedback::implicit;
  const T alpha = static_cast<T>(o.alpha);
  const double unobserved_weight = o.unobserved_weight;
#pragma omp parallel for num_threads(a.threads) schedule(dynamic, 1)
  for (int64_t c = 0; c < a.chunks; ++c) {
    double sum = 0;
    const int64_t begin = R.rows * c / a.chunks, end = R.rows * (c + 1) / a.chunks;
    for (int64_t u = begin; u < end; ++u) {
      const T* x = a.user_factors.row(u);
      double row = 0;
      if (implicit) {
        // Every entry as if unobserved (weight alpha0, preference 0): alpha0 x^T (Y^T Y) x.
        double unobserved = 0;
        for (int64_t i = 0; i < f; ++i) unobserved += static_cast<double>(x[i]) * dot(a.item_gram.row(i), x, f);
        row = unobserved_weight * unobserved;
      }
      for (int64_t k = R.row_begin(u); k < R.row_end(u); ++k) {
        const double score = dot(x, a.item_factors.row(static_cast<int64_t>(R.indices[k])), f);
        const double value = R.data[k];
        if (implicit) {
          // Replace the unobserved term of this entry by its observed one.
          const double confidence = o.confidence == Confidence::linear ? 1.0 + alpha * value : alpha * value;
          row += confidence * (1.0 - score) * (1.0 - score) - unobserved_weight * score * score;
        } else {
          row += (value - score) * (value - score);
        }
      }
      row += o.regularization * a.row_scales[u] * dot(x, x, f);
      sum += row;
    }
    a.partials[c] = sum;
  }
}

template void als_solve<float, int32_t>(const AlsSolveArgs<float, int32_t>&);
template void als_solve<float, int64_t>(const AlsSolveArgs<float, int64_t>&);
template void als_solve<double, int32_t>(const AlsSolveArgs<double, int32_t>&);
template void als_solve<double, int64_t>(const AlsSolveArgs<double, int64_t>&);
template void gram_matrix<float>(const GramArgs<float>&);
template void gram_matrix<double>(const GramArgs<double>&);
template void als_loss<float, int32_t>(const AlsLossArgs<float, int32_t>&);
template void als_loss<float, int64_t>(const AlsLossArgs<float, int64_t>&);
template void als_loss<double, int32_t>(const AlsLossArgs<double, int32_t>&);
template void als_loss<double, int64_t>(const AlsLossArgs<double, int64_t>&);

}  // namespace RECORE_TARGET
}  // namespace recore
