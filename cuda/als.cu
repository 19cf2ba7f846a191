// ALS on the GPU: the same half-steps and objective as cpp/src/als.cpp, one thread block
// per row of the side being solved (grid-stride over rows), any number of factors.
//
// Conjugate gradient keeps the row's x, r, p and Ap in shared memory (global scratch when
// f is too large for it) and applies A v = YtY v + lambda v + sum_k w_k (y_k . v) y_k
// without forming A: the row's entries are taken kEntries at a time, one warp per entry for
// the dot products, then every thread adds the scaled rows for its own factors. Cholesky
// forms A (f x f, global scratch per block) and b, factors A in place and solves, with the
// CPU's ridge fallback for a singular A. YtY: cuBLAS when the build has it, else a tiled
// kernel with a fixed reduction order. The unobserved weight alpha0 scales YtY where it is
// used, and every row's lambda is regularization * regularization_scale (recore/als.hpp), as
// on the CPU. The subspace solver is the CPU engine's only: refused here.
#include "recore/als_options.hpp"
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "common.cuh"

namespace recore::cuda {
namespace {

constexpr int kEntries = 256;  // entries of a row staged in shared memory at a time
constexpr int kGramTile = 16;
constexpr int kGramRows = 32;
constexpr int kGramSlices = 64;
constexpr int64_t kSharedVectorBytes = 40 * 1024;
constexpr int64_t kCholeskyScratchBytes = int64_t(1) << 30;

struct RowCoefficients {
  bool implicit;
  bool linear;
  float alpha;
  float unobserved_weight;  // alpha0, the weight YtY carries
  // Coefficient of y y^T in A (weight) and of y in b (offset) for a stored value: an observed
  // entry's confidence replaces the unobserved weight.
  __device__ void of(float value, float& weight, float& offset) const {
    if (!implicit) {
      weight = 1.0f;
      offset = value;
      return;
    }
    const float confidence = linear ? 1.0f + alpha * value : alpha * value;
    weight = confidence - unobserved_weight;
    offset = confidence;
  }
};

// Each row's lambda / regularization from its count of entries (recore::regularization_scale).
struct RowRegularization {
  bool implicit;
  bool weighted;
  double unobserved_weight;
  double exponent;
  int64_t other;  // rows of the other side
  __device__ double scale(int64_t count) const {
    return regularization_scale(implicit, weighted, unobserved_weight, exponent, count, other);
  }
};

// out[d] += sum_k coef_k y_k[d] over the row's entries, coef_k = offset_k - w_k (y_k . v)
// (residual) or w_k (y_k . v) (product). Shared: indices, coefficients (kEntries each).
template <typename I>
__device__ void accumulate_entries(const I* indices, const float* values, int64_t begin, int64_t end,
                                   const float* fixed, int64_t f, const float* v, float* out, bool residual,
                                   RowCoefficients rc, int64_t* staged_indices, float* staged_coefficients) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t c0 = begin; c0 < end; c0 += kEntries) {
    const int n = static_cast<int>(end - c0 < kEntries ? end - c0 : kEntries);
    for (int e = warp; e < n; e += warps) {
      const int64_t item = static_cast<int64_t>(indices[c0 + e]);
      const float* y = fixed + item * f;
      float dot = 0.0f;
      for (int64_t d = lane; d < f; d += 32) dot = fmaf(y[d], v[d], dot);
      dot = warp_sum(dot);
      if (lane == 0) {
        float weight, offset;
        rc.of(values[c0 + e], weight, offset);
        staged_indices[e] = item;
        staged_coefficients[e] = residual ? offset - weight * dot : weight * dot;
      }
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < f; d += blockDim.x) {
      float acc = out[d];
      for (int e = 0; e < n; ++e) acc = fmaf(staged_coefficients[e], fixed[staged_indices[e] * f + d], acc);
      out[d] = acc;
    }
    __syncthreads();
  }
}

// out = alpha0 G v + lambda v (G symmetric, nullptr for explicit feedback).
__device__ void product_without_entries(const float* G, float unobserved_weight, const float* v, int64_t f,
                                        float lambda, float* out) {
  for (int64_t d = threadIdx.x; d < f; d += blockDim.x) {
    float acc = 0.0f;
    if (G)
      for (int64_t j = 0; j < f; ++j) acc = fmaf(G[j * f + d], v[j], acc);
    out[d] = fmaf(lambda, v[d], unobserved_weight * acc);
  }
}

__device__ float block_dot(const float* a, const float* b, int64_t f, float* scratch) {
  float partial = 0.0f;
  for (int64_t d = threadIdx.x; d < f; d += blockDim.x) partial = fmaf(a[d], b[d], partial);
  return block_sum(partial, scratch);
}

template <typename I>
__global__ void cg_rows(CsrView<float, I> rows, const float* fixed, const float* gram, float* target, int64_t f,
                        float regularization, RowRegularization rr, int cg_steps, RowCoefficients rc,
                        bool shared_vectors, float* global_vectors, int64_t skip_up_to) {
  extern __shared__ float dynamic_shared[];
  __shared__ int64_t staged_indices[kEntries];
  __shared__ float staged_coefficients[kEntries];
  __shared__ float scratch[32];
  float* vectors = shared_vectors ? dynamic_shared : global_vectors + int64_t(blockIdx.x) * 4 * f;
  float* x = vectors;
  float* r = x + f;
  float* p = r + f;
  float* Ap = p + f;
  for (int64_t u = blockIdx.x; u < rows.rows; u += gridDim.x) {
    const int64_t begin = static_cast<int64_t>(rows.indptr[u]), end = static_cast<int64_t>(rows.indptr[u + 1]);
    if (end - begin <= skip_up_to) continue;  // solved by the warp kernel
    float* out = target + u * f;
    if (begin == end) {  // no observations: the minimizer is 0
      for (int64_t d = threadIdx.x; d < f; d += blockDim.x) out[d] = 0.0f;
      continue;
    }
    const float lambda = regularization * static_cast<float>(rr.scale(end - begin));
    for (int64_t d = threadIdx.x; d < f; d += blockDim.x) x[d] = out[d];
    __syncthreads();
    product_without_entries(gram, rc.unobserved_weight, x, f, lambda, r);
    for (int64_t d = threadIdx.x; d < f; d += blockDim.x) r[d] = -r[d];
    __syncthreads();
    accumulate_entries(rows.indices, rows.data, begin, end, fixed, f, x, r, true, rc, staged_indices,
                       staged_coefficients);
    for (int64_t d = threadIdx.x; d < f; d += blockDim.x) p[d] = r[d];
    __syncthreads();
    float rs = block_dot(r, r, f, scratch);
    for (int step = 0; step < cg_steps; ++step) {
      if (!(rs > 1e-30f)) break;
      product_without_entries(gram, rc.unobserved_weight, p, f, lambda, Ap);
      __syncthreads();
      accumulate_entries(rows.indices, rows.data, begin, end, fixed, f, p, Ap, false, rc, staged_indices,
                         staged_coefficients);
      const float pAp = block_dot(p, Ap, f, scratch);
      if (!(pAp > 0.0f)) break;
      const float step_size = rs / pAp;
      for (int64_t d = threadIdx.x; d < f; d += blockDim.x) {
        x[d] = fmaf(step_size, p[d], x[d]);
        r[d] = fmaf(-step_size, Ap[d], r[d]);
      }
      __syncthreads();
      const float rs_new = block_dot(r, r, f, scratch);
      const float beta = rs_new / rs;
      for (int64_t d = threadIdx.x; d < f; d += blockDim.x) p[d] = fmaf(beta, p[d], r[d]);
      rs = rs_new;
      __syncthreads();
    }
    for (int64_t d = threadIdx.x; d < f; d += blockDim.x) out[d] = x[d];
    __syncthreads();
  }
}

// -- CG with one warp per row (f <= 32 L) ---------------------------------------------------
//
// For the factor counts most models use, a row's x, r, p and Ap fit in a warp's registers: lane
// l holds dimensions l, l + 32, ..., l + 32 (L - 1). An entry's item row is read once per
// product, coalesced, and serves both its dot product (a butterfly sum leaves the total in
// every lane) and the scaled addition, with no shared memory and no block barriers. Warps take
// rows from a global counter. From 65 factors on, rows of more than kWarpRowEntries entries are
// left to the block kernel (cg_rows), whose warps share a row's entries: there one warp alone
// took milliseconds over the most popular items' tens of thousands of entries (H200,
// MovieLens-20M shape: f = 128 0.19 s per iteration with every row on warps, 0.108 s with
// the long rows on blocks; at f = 64 every row on warps measured fastest, 0.062 s).

constexpr int64_t kWarpRowEntries = 1024;
constexpr int kLongRowThreads = 256;

template <int L>
__device__ inline void load_lanes(const float* src, int64_t f, float (&v)[L]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int t = 0; t < L; ++t) {
    const int64_t d = lane + 32 * t;
    v[t] = d < f ? src[d] : 0.0f;
  }
}

template <int L>
__device__ inline float lanes_dot(const float (&a)[L], const float (&b)[L]) {
  float partial = 0.0f;
#pragma unroll
  for (int t = 0; t < L; ++t) partial = fmaf(a[t], b[t], partial);
  return warp_sum(partial);
}

// out = alpha0 G v + lambda v (G symmetric, nullptr for explicit feedback).
template <int L>
__device__ inline void lanes_gram_product(const float* G, float unobserved_weight, const float (&v)[L], int64_t f,
                                          float lambda, float (&out)[L]) {
  const int lane = threadIdx.x & 31;
  float acc[L];
#pragma unroll
  for (int t = 0; t < L; ++t) acc[t] = 0.0f;
  if (G) {
#pragma unroll
    for (int s = 0; s < L; ++s) {
      for (int source = 0; source < 32; ++source) {
        const int64_t j = source + 32 * s;
        const float vj = __shfl_sync(0xffffffffu, v[s], source);
        if (j >= f) break;  // the same for every lane: no divergence
        const float* column = G + j * f;
#pragma unroll
        for (int t = 0; t < L; ++t) {
          const int64_t d = lane + 32 * t;
          if (d < f) acc[t] = fmaf(__ldg(column + d), vj, acc[t]);
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < L; ++t) out[t] = fmaf(lambda, v[t], unobserved_weight * acc[t]);
}

// out += sum_k coef_k y_k over the row's entries, coef_k = offset_k - w_k (y_k . v) (residual)
// or w_k (y_k . v) (product), in entry order.
template <int L, typename I>
__device__ inline void lanes_entries(const I* indices, const float* values, int64_t begin, int64_t end,
                                     const float* fixed, int64_t f, const float (&v)[L], float (&out)[L],
                                     bool residual, RowCoefficients rc) {
  const int lane = threadIdx.x & 31;
  constexpr int kGroup = 4;  // entries whose rows are loaded together (independent loads in flight)
  for (int64_t c0 = begin; c0 < end; c0 += 32) {
    const int n = static_cast<int>(end - c0 < 32 ? end - c0 : 32);
    // 32 entries' indices and coefficients read once, coalesced, then passed along the warp.
    int64_t my_item = 0;
    float my_weight = 0.0f, my_offset = 0.0f;
    if (lane < n) {
      my_item = static_cast<int64_t>(indices[c0 + lane]);
      rc.of(values[c0 + lane], my_weight, my_offset);
    }
    for (int e0 = 0; e0 < n; e0 += kGroup) {
      float y[kGroup][L];
      float dots[kGroup];
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        const int64_t item = __shfl_sync(0xffffffffu, my_item, (e0 + g) & 31);
        const float* row = fixed + item * f;
#pragma unroll
        for (int t = 0; t < L; ++t) {
          const int64_t d = lane + 32 * t;
          y[g][t] = (e0 + g < n && d < f) ? __ldg(row + d) : 0.0f;
        }
      }
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        float partial = 0.0f;
#pragma unroll
        for (int t = 0; t < L; ++t) partial = fmaf(y[g][t], v[t], partial);
        dots[g] = partial;
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1)
#pragma unroll
        for (int g = 0; g < kGroup; ++g) dots[g] += __shfl_xor_sync(0xffffffffu, dots[g], offset);
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        const float weight = __shfl_sync(0xffffffffu, my_weight, (e0 + g) & 31);
        const float offset = __shfl_sync(0xffffffffu, my_offset, (e0 + g) & 31);
        if (e0 + g >= n) break;
        const float coef = residual ? offset - weight * dots[g] : weight * dots[g];
#pragma unroll
        for (int t = 0; t < L; ++t) out[t] = fmaf(coef, y[g][t], out[t]);
      }
    }
  }
}

template <int L, typename I>
__global__ void cg_rows_warp(CsrView<float, I> rows, const float* fixed, const float* gram, float* target, int64_t f,
                             float regularization, RowRegularization rr, int cg_steps, RowCoefficients rc,
                             unsigned long long* next_row) {
  const int lane = threadIdx.x & 31;
  for (;;) {
    unsigned long long taken = 0;
    if (lane == 0) taken = atomicAdd(next_row, 1ull);
    const int64_t u = static_cast<int64_t>(__shfl_sync(0xffffffffu, taken, 0));
    if (u >= rows.rows) return;
    const int64_t begin = static_cast<int64_t>(rows.indptr[u]), end = static_cast<int64_t>(rows.indptr[u + 1]);
    if (L > 2 && end - begin > kWarpRowEntries) continue;
    float* out = target + u * f;
    if (begin == end) {  // no observations: the minimizer is 0
#pragma unroll
      for (int t = 0; t < L; ++t)
        if (lane + 32 * t < f) out[lane + 32 * t] = 0.0f;
      continue;
    }
    const float lambda = regularization * static_cast<float>(rr.scale(end - begin));
    float x[L], r[L], p[L], Ap[L];
    load_lanes(out, f, x);
    lanes_gram_product(gram, rc.unobserved_weight, x, f, lambda, Ap);
#pragma unroll
    for (int t = 0; t < L; ++t) r[t] = -Ap[t];
    lanes_entries(rows.indices, rows.data, begin, end, fixed, f, x, r, true, rc);
#pragma unroll
    for (int t = 0; t < L; ++t) p[t] = r[t];
    float rs = lanes_dot(r, r);
    for (int step = 0; step < cg_steps; ++step) {
      if (!(rs > 1e-30f)) break;
      lanes_gram_product(gram, rc.unobserved_weight, p, f, lambda, Ap);
      lanes_entries(rows.indices, rows.data, begin, end, fixed, f, p, Ap, false, rc);
      const float pAp = lanes_dot(p, Ap);
      if (!(pAp > 0.0f)) break;
      const float step_size = rs / pAp;
#pragma unroll
      for (int t = 0; t < L; ++t) {
        x[t] = fmaf(step_size, p[t], x[t]);
        r[t] = fmaf(-step_size, Ap[t], r[t]);
      }
      const float rs_new = lanes_dot(r, r);
      const float beta = rs_new / rs;
#pragma unroll
      for (int t = 0; t < L; ++t) p[t] = fmaf(beta, p[t], r[t]);
      rs = rs_new;
    }
#pragma unroll
    for (int t = 0; t < L; ++t)
      if (lane + 32 * t < f) out[lane + 32 * t] = x[t];
  }
}

constexpr int kWarpRowsThreads = 256;  // 8 rows in flight per block

template <int L, typename I>
void launch_cg_rows_warp(const CsrView<float, I>& rows, const float* fixed, const float* gram, float* target,
                         int64_t f, float regularization, RowRegularization rr, int cg_steps, RowCoefficients rc,
                         unsigned long long* next_row, cudaStream_t stream) {
  RECORE_CUDA_CHECK(cudaMemsetAsync(next_row, 0, sizeof(unsigned long long), stream));
  const int64_t blocks = std::max<int64_t>(
      1, std::min<int64_t>(ceil_div(rows.rows, kWarpRowsThreads / 32), int64_t(multiprocessors()) * 8));
  cg_rows_warp<L, I><<<static_cast<unsigned>(blocks), kWarpRowsThreads, 0, stream>>>(
      rows, fixed, gram, target, f, regularization, rr, cg_steps, rc, next_row);
  RECORE_CUDA_LAUNCHED("cg_rows_warp");
  if (L <= 2) return;
  // The long rows, a block each (f <= 128: the vectors fit in shared memory).
  const int64_t long_blocks = std::min<int64_t>(rows.rows, int64_t(multiprocessors()) * 4);
  cg_rows<I><<<static_cast<unsigned>(long_blocks), kLongRowThreads, 4 * f * sizeof(float), stream>>>(
      rows, fixed, gram, target, f, regularization, rr, cg_steps, rc, true, nullptr, kWarpRowEntries);
  RECORE_CUDA_LAUNCHED("cg_rows (long rows)");
}

// A = alpha0 G + (lambda + ridge) I + sum_k w_k y_k y_k^T (lower triangle, row-major f x f)
// and b = sum_k offset_k y_k.
template <typename I>
__device__ void form_normal_equations(const I* indices, const float* values, int64_t begin, int64_t end,
                                      const float* fixed, const float* G, int64_t f, float diagonal,
                                      RowCoefficients rc, float* A, float* b, int64_t* staged_indices,
                                      float* staged_weights, float* staged_offsets) {
  for (int64_t t = threadIdx.x; t < f * f; t += blockDim.x) {
    const int64_t i = t / f, j = t % f;
    if (j <= i) A[t] = (G ? rc.unobserved_weight * G[t] : 0.0f) + (i == j ? diagonal : 0.0f);
  }
  for (int64_t d = threadIdx.x; d < f; d += blockDim.x) b[d] = 0.0f;
  __syncthreads();
  for (int64_t c0 = begin; c0 < end; c0 += kEntries) {
    const int n = static_cast<int>(end - c0 < kEntries ? end - c0 : kEntries);
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
      staged_indices[e] = static_cast<int64_t>(indices[c0 + e]);
      rc.of(values[c0 + e], staged_weights[e], staged_offsets[e]);
    }
    __syncthreads();
    for (int64_t t = threadIdx.x; t < f * f; t += blockDim.x) {
      const int64_t i = t / f, j = t % f;
      if (j > i) continue;
      float acc = A[t];
      for (int e = 0; e < n; ++e) {
        const float* y = fixed + staged_indices[e] * f;
        acc = fmaf(staged_weights[e] * y[i], y[j], acc);
      }
      A[t] = acc;
    }
    for (int64_t d = threadIdx.x; d < f; d += blockDim.x) {
      float acc = b[d];
      for (int e = 0; e < n; ++e) acc = fmaf(staged_offsets[e], fixed[staged_indices[e] * f + d], acc);
      b[d] = acc;
    }
    __syncthreads();
  }
}

// In-place Cholesky A = L L^T of the lower triangle; false when A is not positive definite.
__device__ bool cholesky_factor(float* A, int64_t f, int* failed) {
  if (threadIdx.x == 0) *failed = 0;
  __syncthreads();
  for (int64_t j = 0; j < f; ++j) {
    if (threadIdx.x == 0) {
      const float d = A[j * f + j];
      if (!(d > 0.0f) || !isfinite(d)) *failed = 1; else A[j * f + j] = sqrtf(d);
    }
    __syncthreads();
    if (*failed) return false;
    const float pivot = A[j * f + j];
    for (int64_t i = j + 1 + threadIdx.x; i < f; i += blockDim.x) A[i * f + j] /= pivot;
    __syncthreads();
    const int64_t rest = f - j - 1;
    for (int64_t t = threadIdx.x; t < rest * rest; t += blockDim.x) {
      const int64_t i = j + 1 + t / rest, k = j + 1 + t % rest;
      if (k <= i) A[i * f + k] -= A[i * f + j] * A[k * f + j];
    }
    __syncthreads();
  }
  return true;
}

// Solves L L^T x = b (b overwritten by the intermediate).
__device__ void cholesky_solve(const float* L, int64_t f, float* b, float* x, float* scratch) {
  for (int64_t i = 0; i < f; ++i) {  // L z = b
    float partial = 0.0f;
    for (int64_t k = threadIdx.x; k < i; k += blockDim.x) partial = fmaf(L[i * f + k], b[k], partial);
    const float sum = block_sum(partial, scratch);
    if (threadIdx.x == 0) b[i] = (b[i] - sum) / L[i * f + i];
    __syncthreads();
  }
  for (int64_t i = f - 1; i >= 0; --i) {  // L^T x = z
    float partial = 0.0f;
    for (int64_t k = i + 1 + threadIdx.x; k < f; k += blockDim.x) partial = fmaf(L[k * f + i], x[k], partial);
    const float sum = block_sum(partial, scratch);
    if (threadIdx.x == 0) x[i] = (b[i] - sum) / L[i * f + i];
    __syncthreads();
  }
}

template <typename I>
__global__ void cholesky_rows(CsrView<float, I> rows, const float* fixed, const float* gram, float* target, int64_t f,
                              float regularization, RowRegularization rr, RowCoefficients rc, float* scratch_matrices,
                              float* scratch_vectors) {
  __shared__ int64_t staged_indices[kEntries];
  __shared__ float staged_weights[kEntries];
  __shared__ float staged_offsets[kEntries];
  __shared__ float scratch[32];
  __shared__ int failed;
  float* A = scratch_matrices + int64_t(blockIdx.x) * f * f;
  float* b = scratch_vectors + int64_t(blockIdx.x) * 2 * f;
  float* x = b + f;
  for (int64_t u = blockIdx.x; u < rows.rows; u += gridDim.x) {
    const int64_t begin = static_cast<int64_t>(rows.indptr[u]), end = static_cast<int64_t>(rows.indptr[u + 1]);
    float* out = target + u * f;
    if (begin == end) {
      for (int64_t d = threadIdx.x; d < f; d += blockDim.x) out[d] = 0.0f;
      continue;
    }
    const float lambda = regularization * static_cast<float>(rr.scale(end - begin));
    form_normal_equations(rows.indices, rows.data, begin, end, fixed, gram, f, lambda, rc, A, b, staged_indices,
                          staged_weights, staged_offsets);
    float trace_part = 0.0f;
    for (int64_t d = threadIdx.x; d < f; d += blockDim.x) trace_part += A[d * f + d];
    const float trace = block_sum(trace_part, scratch);
    bool solved = cholesky_factor(A, f, &failed);
    // Singular A (possible with zero regularization): a ridge from 1e-6 of the mean
    // diagonal, growing 100-fold, as the CPU engine does; if none works x is kept.
    float ridge = (trace > 0.0f ? trace / static_cast<float>(f) : 1.0f) * 1e-6f;
    for (int attempt = 0; !solved && attempt < 4; ++attempt, ridge *= 100.0f) {
      form_normal_equations(rows.indices, rows.data, begin, end, fixed, gram, f, lambda + ridge, rc, A, b,
                            staged_indices, staged_weights, staged_offsets);
      solved = cholesky_factor(A, f, &failed);
    }
    if (solved) {
      cholesky_solve(A, f, b, x, scratch);
      for (int64_t d = threadIdx.x; d < f; d += blockDim.x) out[d] = x[d];
    }
    __syncthreads();
  }
}

// partials[s] = sum over rows of slice s of y y^T, one 16 x 16 tile per block.
__global__ void gram_partial(const float* factors, int64_t n, int64_t f, float* partials) {
  __shared__ float left[kGramRows][kGramTile];
  __shared__ float right[kGramRows][kGramTile];
  const int64_t a0 = int64_t(blockIdx.y) * kGramTile, b0 = int64_t(blockIdx.x) * kGramTile;
  const int64_t slice = blockIdx.z;
  const int64_t begin = n * slice / gridDim.z, end = n * (slice + 1) / gridDim.z;
  const int tx = threadIdx.x, ty = threadIdx.y;
  float acc = 0.0f;
  for (int64_t r0 = begin; r0 < end; r0 += kGramRows) {
    for (int t = ty * kGramTile + tx; t < kGramRows * kGramTile; t += kGramTile * kGramTile) {
      const int row = t / kGramTile, col = t % kGramTile;
      const int64_t r = r0 + row;
      left[row][col] = (r < end && a0 + col < f) ? factors[r * f + a0 + col] : 0.0f;
      right[row][col] = (r < end && b0 + col < f) ? factors[r * f + b0 + col] : 0.0f;
    }
    __syncthreads();
    for (int row = 0; row < kGramRows; ++row) acc = fmaf(left[row][ty], right[row][tx], acc);
    __syncthreads();
  }
  if (a0 + ty < f && b0 + tx < f) partials[slice * f * f + (a0 + ty) * f + b0 + tx] = acc;
}

__global__ void sum_slices(const float* partials, int64_t slices, int64_t size, float* out) {
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < size; t += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t s = 0; s < slices; ++s) acc += partials[s * size + t];
    out[t] = acc;
  }
}

// Per block, the objective's user-side terms of its rows (double).
template <typename I>
__global__ void loss_rows(CsrView<float, I> R, const float* users, const float* items, const float* gram, int64_t f,
                          RowCoefficients rc, float regularization, RowRegularization rr, double* partials) {
  __shared__ double scratch[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  double block_total = 0.0;
  for (int64_t u = blockIdx.x; u < R.rows; u += gridDim.x) {
    const float* x = users + u * f;
    const int64_t begin = static_cast<int64_t>(R.indptr[u]), end = static_cast<int64_t>(R.indptr[u + 1]);
    double part = 0.0;
    if (rc.implicit) {  // every entry as if unobserved: alpha0 x^T YtY x
      for (int64_t d = threadIdx.x; d < f; d += blockDim.x) {
        float gx = 0.0f;
        for (int64_t j = 0; j < f; ++j) gx = fmaf(gram[d * f + j], x[j], gx);
        part += double(rc.unobserved_weight) * double(x[d]) * gx;
      }
    }
    for (int64_t k = begin + warp; k < end; k += warps) {
      const float* y = items + static_cast<int64_t>(R.indices[k]) * f;
      float dot = 0.0f;
      for (int64_t d = lane; d < f; d += 32) dot = fmaf(x[d], y[d], dot);
      dot = warp_sum(dot);
      if (lane == 0) {
        const double score = dot, value = R.data[k];
        if (rc.implicit) {
          const double confidence = rc.linear ? 1.0 + double(rc.alpha) * value : double(rc.alpha) * value;
          part += confidence * (1.0 - score) * (1.0 - score) - double(rc.unobserved_weight) * score * score;
        } else {
          part += (value - score) * (value - score);
        }
      }
    }
    double norm = 0.0;
    for (int64_t d = threadIdx.x; d < f; d += blockDim.x) norm += double(x[d]) * x[d];
    part += double(regularization) * rr.scale(end - begin) * norm;
    block_total += block_sum(part, scratch);
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = block_total;
}

template <typename I>
__global__ void count_items(const I* indices, int64_t nnz, unsigned long long* counts) {
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < nnz; t += int64_t(gridDim.x) * blockDim.x)
    atomicAdd(counts + static_cast<int64_t>(indices[t]), 1ull);
}

// Per block: sum over its items of scale_i |y_i|^2 (scale 1 without counts).
__global__ void item_norms(const float* items, int64_t n, int64_t f, const unsigned long long* counts,
                           RowRegularization rr, double* partials) {
  __shared__ double scratch[32];
  double part = 0.0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    double norm = 0.0;
    for (int64_t d = 0; d < f; ++d) norm += double(items[i * f + d]) * items[i * f + d];
    part += (counts ? rr.scale(static_cast<int64_t>(counts[i])) : 1.0) * norm;
  }
  const double total = block_sum(part, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

RowCoefficients coefficients_of(const AlsOptions& o) {
  RowCoefficients rc;
  rc.implicit = o.feedback == Feedback::implicit;
  rc.linear = o.confidence == Confidence::linear;
  rc.alpha = static_cast<float>(o.alpha);
  rc.unobserved_weight = static_cast<float>(o.unobserved_weight);
  return rc;
}

RowRegularization regularization_of(const AlsOptions& o, int64_t other) {
  RowRegularization rr;
  rr.implicit = o.feedback == Feedback::implicit;
  rr.weighted = o.weighted_regularization;
  rr.unobserved_weight = o.unobserved_weight;
  rr.exponent = o.regularization_exponent;
  rr.other = other;
  return rr;
}

// The subspace solver has no GPU kernel: refused before any work, in the words the Python
// backend uses too.
void refuse_subspace(const AlsOptions& o) {
  if (o.solver == Solver::subspace)
    throw std::invalid_argument("solver='subspace' is not available on the GPU (the CUDA engine has CG and Cholesky): "
                                "use solver='cg' or 'cholesky', or device='cpu'");
}

int block_threads(int64_t f) { return f <= 64 ? 64 : (f <= 128 ? 128 : 256); }

}  // namespace

void gram_matrix(MatrixView<const float> factors, MatrixView<float> gram, std::uintptr_t stream_handle) {
  const int64_t n = factors.rows, f = factors.cols;
  if (gram.rows != f || gram.cols != f) throw std::invalid_argument("gram must be factors x factors");
  if (factors.stride != f || gram.stride != f) throw std::invalid_argument("matrices must be C-contiguous");
  cudaStream_t stream = as_stream(stream_handle);
  if (f == 0) return;
#ifdef RECORE_HAVE_CUBLAS
  // Row-major Y (n x f) is column-major Y^T (f x n): Y^T Y = (Y^T)(Y^T)^T, symmetric, so the
  // column-major result is also the row-major one.
  cublasHandle_t handle = cublas_on(stream);
  const float one = 1.0f, zero = 0.0f;
  check_cublas(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(f), static_cast<int>(f),
                           static_cast<int>(n), &one, factors.data, static_cast<int>(f), factors.data,
                           static_cast<int>(f), &zero, gram.data, static_cast<int>(f)),
               "cublasSgemm");
  RECORE_CUDA_CHECK(cudaStreamSynchronize(stream));
#else
  WorkspaceLease lease;
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>(kGramSlices, ceil_div(n, kGramRows)));
  float* partials = static_cast<float*>(lease.reserve(slices * f * f * sizeof(float)));
  const dim3 grid(static_cast<unsigned>(ceil_div(f, kGramTile)), static_cast<unsigned>(ceil_div(f, kGramTile)),
                  static_cast<unsigned>(slices));
  gram_partial<<<grid, dim3(kGramTile, kGramTile), 0, stream>>>(factors.data, n, f, partials);
  RECORE_CUDA_LAUNCHED("gram_partial");
  const int64_t blocks = std::min<int64_t>(ceil_div(f * f, 256), 4096);
  sum_slices<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(partials, slices, f * f, gram.data);
  RECORE_CUDA_LAUNCHED("sum_slices");
  RECORE_CUDA_CHECK(cudaStreamSynchronize(stream));
#endif
}

template <typename I>
void als_solve(const CsrView<float, I>& rows, MatrixView<const float> fixed, const float* fixed_gram,
               MatrixView<float> target, const AlsOptions& options, std::uintptr_t stream_handle) {
  check_als_options(options);
  refuse_subspace(options);
  const int64_t f = target.cols;
  if (fixed.cols != f) throw std::invalid_argument("fixed and target factors differ in width");
  if (fixed.rows != rows.cols || target.rows != rows.rows)
    throw std::invalid_argument("factors do not match the shape of the rows");
  if (fixed.stride != f || target.stride != f) throw std::invalid_argument("factor matrices must be C-contiguous");
  const bool implicit = options.feedback == Feedback::implicit;
  if (implicit && fixed_gram == nullptr) throw std::invalid_argument("implicit feedback needs the fixed gram matrix");
  if (rows.rows == 0 || f == 0) return;
  cudaStream_t stream = as_stream(stream_handle);
  const float* gram = implicit ? fixed_gram : nullptr;
  const RowCoefficients rc = coefficients_of(options);
  const float regularization = static_cast<float>(options.regularization);
  const int threads = block_threads(f);
  WorkspaceLease lease;
  if (options.solver == Solver::conjugate_gradient && f <= 128) {
    auto* next_row = static_cast<unsigned long long*>(lease.reserve(sizeof(unsigned long long)));
    const RowRegularization rr = regularization_of(options, rows.cols);
    if (f <= 32)
      launch_cg_rows_warp<1, I>(rows, fixed.data, gram, target.data, f, regularization, rr, options.cg_steps, rc,
                                next_row, stream);
    else if (f <= 64)
      launch_cg_rows_warp<2, I>(rows, fixed.data, gram, target.data, f, regularization, rr, options.cg_steps, rc,
                                next_row, stream);
    else
      launch_cg_rows_warp<4, I>(rows, fixed.data, gram, target.data, f, regularization, rr, options.cg_steps, rc,
                                next_row, stream);
  } else if (options.solver == Solver::conjugate_gradient) {
    const bool shared_vectors = 4 * f * int64_t(sizeof(float)) <= kSharedVectorBytes;
    const int64_t blocks = std::min<int64_t>(rows.rows, int64_t(multiprocessors()) * 16);
    float* global_vectors = nullptr;
    if (!shared_vectors) global_vectors = static_cast<float*>(lease.reserve(blocks * 4 * f * sizeof(float)));
    const std::size_t shared_bytes = shared_vectors ? 4 * f * sizeof(float) : 0;
    cg_rows<I><<<static_cast<unsigned>(blocks), threads, shared_bytes, stream>>>(
        rows, fixed.data, gram, target.data, f, regularization, regularization_of(options, rows.cols), options.cg_steps,
        rc, shared_vectors, global_vectors, -1);
    RECORE_CUDA_LAUNCHED("cg_rows");
  } else {
    const int64_t per_block = (f * f + 2 * f) * int64_t(sizeof(float));
    const int64_t blocks = std::max<int64_t>(
        1, std::min<int64_t>({rows.rows, int64_t(multiprocessors()) * 8, kCholeskyScratchBytes / per_block}));
    Carver carver;
    carver.add(blocks * f * f * sizeof(float));
    carver.add(blocks * 2 * f * sizeof(float));
    char* cursor = static_cast<char*>(lease.reserve(carver.total()));
    float* matrices = carver.take<float>(cursor, blocks * f * f);
    float* vectors = carver.take<float>(cursor, blocks * 2 * f);
    cholesky_rows<I><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
        rows, fixed.data, gram, target.data, f, regularization, regularization_of(options, rows.cols), rc, matrices,
        vectors);
    RECORE_CUDA_LAUNCHED("cholesky_rows");
  }
  RECORE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

template <typename I>
double als_loss(const CsrView<float, I>& user_items, MatrixView<const float> user_factors,
                MatrixView<const float> item_factors, const float* item_gram, const AlsOptions& options,
                std::uintptr_t stream_handle) {
  check_als_options(options);
  const int64_t f = user_factors.cols;
  if (item_factors.cols != f) throw std::invalid_argument("user and item factors differ in width");
  if (user_factors.rows != user_items.rows || item_factors.rows != user_items.cols)
    throw std::invalid_argument("factors do not match the shape of user_items");
  const bool implicit = options.feedback == Feedback::implicit;
  if (implicit && item_gram == nullptr) throw std::invalid_argument("implicit feedback needs the item gram matrix");
  cudaStream_t stream = as_stream(stream_handle);
  const int64_t user_blocks = std::max<int64_t>(1, std::min<int64_t>(user_items.rows, int64_t(multiprocessors()) * 8));
  const int64_t item_blocks =
      std::max<int64_t>(1, std::min<int64_t>(ceil_div(std::max<int64_t>(item_factors.rows, 1), 256), 1024));
  // Item counts for a regularization that depends on them.
  const bool by_count = options.weighted_regularization || options.regularization_exponent != 0.0;
  WorkspaceLease lease;
  Carver carver;
  carver.add(user_blocks * sizeof(double));
  carver.add(item_blocks * sizeof(double));
  if (by_count) carver.add(std::max<int64_t>(item_factors.rows, 1) * sizeof(unsigned long long));
  char* cursor = static_cast<char*>(lease.reserve(carver.total()));
  double* user_partials = carver.take<double>(cursor, user_blocks);
  double* item_partials = carver.take<double>(cursor, item_blocks);
  unsigned long long* counts = nullptr;
  RECORE_CUDA_CHECK(cudaMemsetAsync(user_partials, 0, user_blocks * sizeof(double), stream));
  if (by_count) {
    counts = carver.take<unsigned long long>(cursor, std::max<int64_t>(item_factors.rows, 1));
    RECORE_CUDA_CHECK(cudaMemsetAsync(counts, 0, item_factors.rows * sizeof(unsigned long long), stream));
  }
  // nnz lives on the device (indptr[rows]): read it once.
  int64_t nnz = 0;
  if (user_items.rows > 0) {
    I last = 0;
    RECORE_CUDA_CHECK(cudaMemcpyAsync(&last, user_items.indptr + user_items.rows, sizeof(I), cudaMemcpyDeviceToHost,
                                      stream));
    RECORE_CUDA_CHECK(cudaStreamSynchronize(stream));
    nnz = static_cast<int64_t>(last);
  }
  if (by_count && nnz > 0) {
    count_items<I><<<static_cast<unsigned>(std::min<int64_t>(ceil_div(nnz, 256), 4096)), 256, 0, stream>>>(
        user_items.indices, nnz, counts);
    RECORE_CUDA_LAUNCHED("count_items");
  }
  const RowCoefficients rc = coefficients_of(options);
  if (user_items.rows > 0 && f > 0) {
    loss_rows<I><<<static_cast<unsigned>(user_blocks), block_threads(f), 0, stream>>>(
        user_items, user_factors.data, item_factors.data, implicit ? item_gram : nullptr, f, rc,
        static_cast<float>(options.regularization), regularization_of(options, user_items.cols), user_partials);
    RECORE_CUDA_LAUNCHED("loss_rows");
  }
  item_norms<<<static_cast<unsigned>(item_blocks), 256, 0, stream>>>(
      item_factors.data, item_factors.rows, f, counts, regularization_of(options, user_items.rows), item_partials);
  RECORE_CUDA_LAUNCHED("item_norms");
  std::vector<double> host(user_blocks + item_blocks);
  RECORE_CUDA_CHECK(cudaMemcpyAsync(host.data(), user_partials, user_blocks * sizeof(double), cudaMemcpyDeviceToHost,
                                    stream));
  RECORE_CUDA_CHECK(cudaMemcpyAsync(host.data() + user_blocks, item_partials, item_blocks * sizeof(double),
                                    cudaMemcpyDeviceToHost, stream));
  RECORE_CUDA_CHECK(cudaStreamSynchronize(stream));
  double loss = 0.0, items = 0.0;
  for (int64_t b = 0; b < user_blocks; ++b) loss += host[b];
  for (int64_t b = 0; b < item_blocks; ++b) items += host[user_blocks + b];
  return loss + options.regularization * items;
}

template void als_solve<int32_t>(const CsrView<float, int32_t>&, MatrixView<const float>, const float*,
                                 MatrixView<float>, const AlsOptions&, std::uintptr_t);
template void als_solve<int64_t>(const CsrView<float, int64_t>&, MatrixView<const float>, const float*,
                                 MatrixView<float>, const AlsOptions&, std::uintptr_t);
template double als_loss<int32_t>(const CsrView<float, int32_t>&, MatrixView<const float>, MatrixView<const float>,
                                  const float*, const AlsOptions&, std::uintptr_t);
template double als_loss<int64_t>(const CsrView<float, int64_t>&, MatrixView<const float>, MatrixView<const float>,
                                  const float*, const AlsOptions&, std::uintptr_t);

}  // namespace recore::cuda
