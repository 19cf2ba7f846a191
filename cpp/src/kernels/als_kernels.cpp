// ALS hot loops. Compiled once per instruction set (see CMakeLists.txt): RECORE_TARGET names
// the namespace, and the compiler flags decide the SIMD width. No standard-library
// templates are used here (see kernels.hpp); all helpers have internal linkage.
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "recore/kernels.hpp"

#ifndef RECORE_TARGET
#error "RECORE_TARGET must name the instruction set this unit is compiled for"
#endif

namespace recore {
namespace RECORE_TARGET {
namespace {

#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
};
template <>
struct Simd<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
};

inline int thread_index() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline float square_root(float v) { return __builtin_sqrtf(v); }
inline double square_root(double v) { return __builtin_sqrt(v); }
inline int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename T>
inline void fill_zero(T* out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = T(0);
}

template <typename T>
inline void copy(const T* in, T* out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = in[j];
}

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += a[j] * b[j];
  return s;
}

template <typename T>
inline void axpy(T a, const T* x, T* y, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

// out = G v for a symmetric fp x fp matrix G, summed as rows so that no horizontal
// reductions are needed.
template <typename T>
void symmetric_matvec(const T* G, const T* v, int64_t f, int64_t fp, T* out) {
  fill_zero(out, fp);
  for (int64_t i = 0; i < f; ++i) axpy(v[i], G + i * fp, out, fp);
}

// out += sum_k (offset_k + scale * weight_k * (y_k . v)) y_k over n gathered rows y_k
// (stride fp). One pass over the rows: each y_k is read once for its dot product and its
// update. Four rows at a time keep four independent reductions in flight.
template <typename T>
void accumulate_rows(const T* Y, int64_t n, int64_t fp, const T* weight, T scale, const T* offset, const T* v,
                     T* out) {
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    const T* y0 = Y + k * fp;
    const T* y1 = y0 + fp;
    const T* y2 = y1 + fp;
    const T* y3 = y2 + fp;
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t j = 0; j < fp; ++j) {
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
    for (int64_t j = 0; j < fp; ++j) out[j] += a0 * y0[j] + a1 * y1[j] + a2 * y2[j] + a3 * y3[j];
  }
  for (; k < n; ++k) {
    const T* y = Y + k * fp;
    T a = scale * weight[k] * dot(y, v, fp);
    if (offset) a += offset[k];
    axpy(a, y, out, fp);
  }
}

// A += Y^T W on and below the diagonal (A is fp x fp, Y and W are n x fp, all with zero
// padding). Register tiles of 8 rows x one SIMD vector of columns; tiles that straddle
// the diagonal also write a few entries above it, which nobody reads.
template <typename T>
void add_gram_lower(const T* Y, const T* W, int64_t n, int64_t f, int64_t fp, T* A) {
  typedef typename Simd<T>::type V;
  constexpr int64_t width = kVectorBytes / sizeof(T);
  for (int64_t i0 = 0; i0 < f; i0 += 8) {
    for (int64_t j0 = 0; j0 < i0 + 8 && j0 < f; j0 += width) {
      V acc[8];
      for (int r = 0; r < 8; ++r) acc[r] = V{} ;
      for (int64_t k = 0; k < n; ++k) {
        const T* y = Y + k * fp + i0;
        V w;
        __builtin_memcpy(&w, W + k * fp + j0, sizeof(V));
        for (int r = 0; r < 8; ++r) acc[r] += y[r] * w;
      }
      for (int r = 0; r < 8; ++r) {
        T* out = A + (i0 + r) * fp + j0;
        V current;
        __builtin_memcpy(&current, out, sizeof(V));
        current += acc[r];
        __builtin_memcpy(out, &current, sizeof(V));
      }
    }
  }
}

// In-place Cholesky factorization A = L L^T of the leading f x f block (lower triangle,
// stride fp). Returns false if a pivot is not positive (A not positive definite).
template <typename T>
bool cholesky_factor(T* A, int64_t f, int64_t fp, T* column) {
  for (int64_t j = 0; j < f; ++j) {
    T pivot = A[j * fp + j];
    if (!(pivot > T(0))) return false;  // also rejects NaN
    T diagonal = square_root(pivot);
    A[j * fp + j] = diagonal;
    T inverse = T(1) / diagonal;
    for (int64_t i = j + 1; i < f; ++i) {
      A[i * fp + j] *= inverse;
      column[i] = A[i * fp + j];
    }
    // Trailing update of the lower triangle, row by row so that the inner loop is contiguous.
    for (int64_t i = j + 1; i < f; ++i) {
      T lij = column[i];
      T* row = A + i * fp;
#pragma omp simd
      for (int64_t k = j + 1; k <= i; ++k) row[k] -= lij * column[k];
    }
  }
  return true;
}

// Solves L L^T x = b with the factor from cholesky_factor; b is overwritten.
template <typename T>
void cholesky_solve(const T* L, int64_t f, int64_t fp, T* b, T* x) {
  for (int64_t i = 0; i < f; ++i) b[i] = (b[i] - dot(L + i * fp, b, i)) / L[i * fp + i];
  for (int64_t i = f - 1; i >= 0; --i) {
    x[i] = b[i] / L[i * fp + i];
    axpy(-x[i], L + i * fp, b, i);
  }
}

// Per-thread scratch, carved from the workspace the dispatcher allocated.
template <typename T>
struct Scratch {
  T* gathered;  // row length x fp
  T* weight;    // row length + 16
  T* offset;    // row length + 16
  T* x;
  T* residual;
  T* direction;
  T* product;
  T* column;
  T* scaled;  // Cholesky: row length x fp
  T* A;       // Cholesky: fp x fp
  T* A_copy;  // Cholesky: fp x fp

  Scratch(T* base, int64_t max_row_length, int64_t fp, bool cholesky) {
    gathered = base;
    base += max_row_length * fp;
    weight = base;
    base += max_row_length + 16;
    offset = base;
    base += max_row_length + 16;
    x = base;
    residual = x + fp;
    direction = residual + fp;
    product = direction + fp;
    column = product + fp;
    base = column + fp;
    if (cholesky) {
      scaled = base;
      base += max_row_length * fp;
      A = base;
      A_copy = A + fp * fp;
    } else {
      scaled = A = A_copy = nullptr;
    }
  }
};

// Copies the n fixed rows a row touches into a contiguous, cache-resident block, and the
// per-entry weights (coefficient of y y^T in A) and offsets (coefficient of y in b).
template <typename T, typename I>
void gather_row(const AlsSolveArgs<T, I>& a, int64_t begin, int64_t n, const Scratch<T>& s) {
  const int64_t f = a.fixed.cols, fp = a.padded_factors;
  const AlsOptions& o = a.options;
  const T alpha = static_cast<T>(o.alpha);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t column = static_cast<int64_t>(a.rows.indices[begin + k]);
    copy(a.fixed.row(column), s.gathered + k * fp, f);
    const T value = a.rows.data[begin + k];
    if (o.feedback == Feedback::explicit_ratings) {
      s.weight[k] = T(1);
      s.offset[k] = value;
    } else {
      const T confidence = o.confidence == Confidence::linear ? T(1) + alpha * value : alpha * value;
      s.weight[k] = confidence - T(1);
      s.offset[k] = confidence;
    }
  }
}

// Conjugate gradient on A x = b, warm-started from the current x (Takacs et al. 2011).
// A p = G p + lambda p + sum_k w_k (y_k . p) y_k is applied without forming A.
template <typename T, typename I>
void solve_row_cg(const AlsSolveArgs<T, I>& a, int64_t n, T lambda, const Scratch<T>& s) {
  const int64_t f = a.fixed.cols, fp = a.padded_factors;
  T* x = s.x;
  T* r = s.residual;
  T* p = s.direction;
  T* Ap = s.product;

  // r = b - A x
  if (a.padded_gram) {
    symmetric_matvec(a.padded_gram, x, f, fp, r);
  } else {
    fill_zero(r, fp);
  }
  for (int64_t j = 0; j < fp; ++j) r[j] = -r[j] - lambda * x[j];
  accumulate_rows(s.gathered, n, fp, s.weight, T(-1), s.offset, x, r);

  copy(r, p, fp);
  T rs_old = dot(r, r, fp);
  for (int step = 0; step < a.options.cg_steps; ++step) {
    if (!(rs_old > T(1e-30))) break;
    if (a.padded_gram) {
      symmetric_matvec(a.padded_gram, p, f, fp, Ap);
    } else {
      fill_zero(Ap, fp);
    }
    axpy(lambda, p, Ap, fp);
    accumulate_rows(s.gathered, n, fp, s.weight, T(1), static_cast<const T*>(nullptr), p, Ap);
    const T pAp = dot(p, Ap, fp);
    if (!(pAp > T(0))) break;
    const T step_size = rs_old / pAp;
    axpy(step_size, p, x, fp);
    axpy(-step_size, Ap, r, fp);
    const T rs_new = dot(r, r, fp);
    const T beta = rs_new / rs_old;
#pragma omp simd
    for (int64_t j = 0; j < fp; ++j) p[j] = r[j] + beta * p[j];
    rs_old = rs_new;
  }
}

// Exact solve: forms A = G + lambda I + Y^T diag(w) Y and b = Y^T offset, then Cholesky.
// If A is numerically singular (possible only with zero regularization), a ridge growing
// from 1e-6 of A's mean diagonal is added until it factors; if none does, x is kept.
template <typename T, typename I>
void solve_row_cholesky(const AlsSolveArgs<T, I>& a, int64_t n, T lambda, const Scratch<T>& s) {
  const int64_t f = a.fixed.cols, fp = a.padded_factors;
  T* A = s.A;
  if (a.padded_gram) {
    copy(a.padded_gram, A, fp * fp);
  } else {
    fill_zero(A, fp * fp);
  }
  for (int64_t i = 0; i < f; ++i) A[i * fp + i] += lambda;

  const T* W = s.gathered;
  if (a.options.feedback == Feedback::implicit) {
    for (int64_t k = 0; k < n; ++k) {
      const T* y = s.gathered + k * fp;
      T* w = s.scaled + k * fp;
      const T weight = s.weight[k];
#pragma omp simd
      for (int64_t j = 0; j < fp; ++j) w[j] = weight * y[j];
    }
    W = s.scaled;
  }
  add_gram_lower(s.gathered, W, n, f, fp, A);

  T* b = s.residual;
  fill_zero(b, fp);
  for (int64_t k = 0; k < n; ++k) axpy(s.offset[k], s.gathered + k * fp, b, fp);

  copy(A, s.A_copy, fp * fp);
  if (cholesky_factor(A, f, fp, s.column)) {
    cholesky_solve(A, f, fp, b, s.x);
    return;
  }
  T trace = 0;
  for (int64_t i = 0; i < f; ++i) trace += s.A_copy[i * fp + i];
  T ridge = (trace > T(0) ? trace / T(f) : T(1)) * T(1e-6);
  for (int attempt = 0; attempt < 4; ++attempt, ridge *= T(100)) {
    copy(s.A_copy, A, fp * fp);
    for (int64_t i = 0; i < f; ++i) A[i * fp + i] += ridge;
    if (cholesky_factor(A, f, fp, s.column)) {
      cholesky_solve(A, f, fp, b, s.x);
      return;
    }
  }
}

}  // namespace

template <typename T, typename I>
void als_solve(const AlsSolveArgs<T, I>& a) {
  const int64_t f = a.fixed.cols, fp = a.padded_factors;
  const int64_t rows = a.rows.rows;
  const bool cholesky = a.options.solver == Solver::cholesky;
#pragma omp parallel num_threads(a.threads)
  {
    Scratch<T> s(a.workspace + thread_index() * a.workspace_per_thread, a.max_row_length, fp, cholesky);
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
      const T lambda = static_cast<T>(a.options.regularization) *
                       (a.options.weighted_regularization ? static_cast<T>(n) : T(1));
      gather_row(a, begin, n, s);
      copy(target, s.x, f);
      fill_zero(s.x + f, fp - f);
      if (cholesky) {
        solve_row_cholesky(a, n, lambda, s);
      } else {
        solve_row_cg(a, n, lambda, s);
      }
      copy(s.x, target, f);
    }
  }
}

template <typename T>
void gram_matrix(const GramArgs<T>& a) {
  const int64_t n = a.factors.rows, f = a.factors.cols, fp = a.padded_factors;
#pragma omp parallel for num_threads(a.threads) schedule(dynamic, 1)
  for (int64_t c = 0; c < a.chunks; ++c) {
    T* block = a.workspace + thread_index() * a.workspace_per_thread;
    T* partial = a.partials + c * fp * fp;
    fill_zero(partial, fp * fp);
    const int64_t begin = n * c / a.chunks, end = n * (c + 1) / a.chunks;
    for (int64_t b = begin; b < end; b += kGramBlockRows) {
      const int64_t m = smaller(kGramBlockRows, end - b);
      for (int64_t k = 0; k < m; ++k) copy(a.factors.row(b + k), block + k * fp, f);
      add_gram_lower(block, block, m, f, fp, partial);
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
#pragma omp parallel for num_threads(a.threads) schedule(dynamic, 1)
  for (int64_t c = 0; c < a.chunks; ++c) {
    double sum = 0;
    const int64_t begin = R.rows * c / a.chunks, end = R.rows * (c + 1) / a.chunks;
    for (int64_t u = begin; u < end; ++u) {
      const T* x = a.user_factors.row(u);
      const int64_t n = R.row_end(u) - R.row_begin(u);
      double row = 0;
      if (implicit) {
        // Every entry as if unobserved (confidence 1, preference 0): x^T (Y^T Y) x.
        for (int64_t i = 0; i < f; ++i) row += static_cast<double>(x[i]) * dot(a.item_gram.row(i), x, f);
      }
      for (int64_t k = R.row_begin(u); k < R.row_end(u); ++k) {
        const double score = dot(x, a.item_factors.row(static_cast<int64_t>(R.indices[k])), f);
        const double value = R.data[k];
        if (implicit) {
          // Replace the unobserved term of this entry by its observed one.
          const double confidence = o.confidence == Confidence::linear ? 1.0 + alpha * value : alpha * value;
          row += confidence * (1.0 - score) * (1.0 - score) - score * score;
        } else {
          row += (value - score) * (value - score);
        }
      }
      const double weight = o.weighted_regularization ? static_cast<double>(n) : 1.0;
      row += o.regularization * weight * dot(x, x, f);
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
