// Exact top-k on the GPU. Queries are taken in batches and items in chunks of kChunkItems:
// a tile kernel scores one batch against one chunk (the only scores ever in memory), and a
// merge kernel, one block per query, keeps the candidates better than the query's current
// k-th best, sorts them in shared memory and merges them into the query's running list
// (double-buffered, kept sorted). Any k works: the running list holds min(k, items)
// entries. Exclusions (each query's CSR row, a denied bitmap) are applied in the tile kernel.
//
// bfloat16: the tile kernel scores rounded copies of queries and items; a refine kernel
// then computes the exact float32 score of every candidate whose approximate score plus
// the error bound reaches the query's current k-th best exact score, and drops the rest
// (they cannot enter the top k), so the results equal the float32 search.
//
// k <= 32 (the usual case) takes a lighter merge: one warp per query keeps the running list
// in its registers (lane j holds the j-th best), reads the chunk's scores once, coalesced,
// and inserts the few that beat its k-th best with warp votes and shuffles. In bfloat16 the
// approximate scores then come from a tensor-core product (cuBLAS, where the build has it),
// and the warp refines and checks exclusions for its candidates only. Batches are sized so
// that a chunk's scores stay in L2 between the product and the merge.
#include <cuda_runtime.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "common.cuh"

namespace recore::cuda {
namespace {

constexpr int kChunkItems = 2048;      // items per merge pass (shared-memory sort size)
constexpr int kMergeThreads = 512;
constexpr int kTile = 64;              // tile kernel: 64 queries x 64 items per block
constexpr int kTileDepth = 16;         // factors staged per step
constexpr int64_t kBatchBytes = int64_t(256) << 20;
constexpr int kWarpMergeMaxK = 32;      // lists of up to one entry per lane
constexpr int64_t kWarpBatchBytes = int64_t(40) << 20;  // a chunk's scores stay in L2
constexpr int kWarpMergeThreads = 256;

// A better candidate: higher score, or equal score and lower id.
__device__ inline bool better(float score_a, int64_t id_a, float score_b, int64_t id_b) {
  return score_a > score_b || (score_a == score_b && id_a < id_b);
}

template <typename I>
__device__ inline bool excluded(const I* indptr, const I* indices, int64_t query, int64_t item) {
  int64_t lo = static_cast<int64_t>(indptr[query]), hi = static_cast<int64_t>(indptr[query + 1]);
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    const int64_t value = static_cast<int64_t>(indices[mid]);
    if (value == item) return true;
    if (value < item) lo = mid + 1; else hi = mid;
  }
  return false;
}

__device__ inline float load_value(const float* p) { return *p; }
__device__ inline float load_value(const __nv_bfloat16* p) { return __bfloat162float(*p); }

// scores[q * kChunkItems + c] for queries [q0, q0 + nq) and searched rows [i0, i0 + ni):
// the dot product summed in factor order with one fma per factor, or NaN for an excluded
// item. V is float (exact) or bfloat16 (approximate).
template <typename V, typename I>
__global__ void score_tile(const V* queries, const V* items, int64_t f, int64_t q0, int64_t nq, int64_t i0,
                           int64_t ni, const I* exclude_indptr, const I* exclude_indices, const uint64_t* denied,
                           const int64_t* item_ids, float* scores) {
  __shared__ float qs[kTile][kTileDepth + 1];
  __shared__ float ys[kTile][kTileDepth + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;  // 16 x 16 threads, 4 x 4 outputs each
  const int64_t qbase = int64_t(blockIdx.y) * kTile, ibase = int64_t(blockIdx.x) * kTile;
  float acc[4][4];
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b) acc[a][b] = 0.0f;
  for (int64_t j0 = 0; j0 < f; j0 += kTileDepth) {
    for (int t = ty * 16 + tx; t < kTile * kTileDepth; t += 256) {
      const int row = t / kTileDepth, col = t % kTileDepth;
      const int64_t j = j0 + col;
      const int64_t q = qbase + row, i = ibase + row;
      qs[row][col] = (q < nq && j < f) ? load_value(queries + (q0 + q) * f + j) : 0.0f;
      ys[row][col] = (i < ni && j < f) ? load_value(items + (i0 + i) * f + j) : 0.0f;
    }
    __syncthreads();
    const int depth = static_cast<int>(f - j0 < kTileDepth ? f - j0 : kTileDepth);
    for (int c = 0; c < depth; ++c) {
      float qv[4], yv[4];
      for (int a = 0; a < 4; ++a) qv[a] = qs[ty + 16 * a][c];
      for (int b = 0; b < 4; ++b) yv[b] = ys[tx + 16 * b][c];
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(qv[a], yv[b], acc[a][b]);
    }
    __syncthreads();
  }
  for (int a = 0; a < 4; ++a) {
    const int64_t q = qbase + ty + 16 * a;
    if (q >= nq) continue;
    for (int b = 0; b < 4; ++b) {
      const int64_t i = ibase + tx + 16 * b;
      if (i >= ni) continue;
      const int64_t row = i0 + i;
      const int64_t catalog = item_ids ? item_ids[row] : row;
      bool skip = denied && ((denied[catalog >> 6] >> (catalog & 63)) & 1u);
      if (!skip && exclude_indptr) skip = excluded(exclude_indptr, exclude_indices, q0 + q, catalog);
      scores[q * kChunkItems + i] = skip ? __int_as_float(0x7fc00000) : acc[a][b];
    }
  }
}

// bfloat16 pass: replaces each approximate score by the exact one when it may enter the
// top k, else by NaN. bound[q] = error bound of query q's approximate scores.
__global__ void refine_scores(const float* queries, const float* items, int64_t f, int64_t q0, int64_t nq,
                              int64_t i0, int64_t ni, const float* bounds, const float* run_scores,
                              const int64_t* run_ids, const int* run_count, const unsigned char* current,
                              int64_t keep, float* scores) {
  const int64_t total = nq * ni;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = t / ni, i = t % ni;
    float* slot = scores + q * kChunkItems + i;
    const float approx = *slot;
    if (approx != approx) continue;  // excluded
    if (run_count[q] == keep) {
      const int64_t last = (int64_t(current[q]) * nq + q) * keep + keep - 1;
      // Scores are compared in float: the bound is rounded up generously (see bounds).
      if (approx + bounds[q0 + q] < run_scores[last]) {
        *slot = __int_as_float(0x7fc00000);
        continue;
      }
    }
    const float* x = queries + (q0 + q) * f;
    const float* y = items + (i0 + i) * f;
    float acc = 0.0f;
    for (int64_t j = 0; j < f; ++j) acc = fmaf(x[j], y[j], acc);
    *slot = acc;
  }
}

// One block per query of the batch: merges chunk [i0, i0 + ni) into the running list.
// Lists: run_scores/run_ids[(buffer * nq + q) * keep + position], buffer current[q].
__global__ void merge_chunk(const float* scores, int64_t nq, int64_t i0, int64_t ni, int64_t keep, float* run_scores,
                            int64_t* run_ids, int* run_count, unsigned char* current) {
  __shared__ float cand_scores[kChunkItems];
  __shared__ int cand_offsets[kChunkItems];
  __shared__ int cand_count;
  const int64_t q = blockIdx.x;
  const int count = run_count[q];
  const int from = current[q];
  const float* old_scores = run_scores + (int64_t(from) * nq + q) * keep;
  const int64_t* old_ids = run_ids + (int64_t(from) * nq + q) * keep;
  const bool full = count == keep;
  const float worst_score = full ? old_scores[keep - 1] : 0.0f;
  const int64_t worst_id = full ? old_ids[keep - 1] : 0;
  if (threadIdx.x == 0) cand_count = 0;
  __syncthreads();
  const float* row = scores + q * kChunkItems;
  for (int c = threadIdx.x; c < ni; c += blockDim.x) {
    const float s = row[c];
    if (s != s) continue;
    if (full && !better(s, i0 + c, worst_score, worst_id)) continue;
    const int slot = atomicAdd(&cand_count, 1);
    cand_scores[slot] = s;
    cand_offsets[slot] = c;
  }
  __syncthreads();
  const int m = cand_count;
  if (m == 0) return;  // list unchanged (same buffer)
  int size = 1;
  while (size < m) size <<= 1;
  for (int c = m + threadIdx.x; c < size; c += blockDim.x) {
    cand_scores[c] = -INFINITY;
    cand_offsets[c] = 0x7fffffff;  // padding sorts last
  }
  __syncthreads();
  // Bitonic sort, best first.
  for (int width = 2; width <= size; width <<= 1) {
    for (int stride = width >> 1; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < size; t += blockDim.x) {
        const int partner = t ^ stride;
        if (partner > t) {
          const bool descending = (t & width) == 0;
          const bool partner_better = better(cand_scores[partner], cand_offsets[partner], cand_scores[t], cand_offsets[t]);
          if (partner_better == descending) {
            const float s = cand_scores[t];
            cand_scores[t] = cand_scores[partner];
            cand_scores[partner] = s;
            const int o = cand_offsets[t];
            cand_offsets[t] = cand_offsets[partner];
            cand_offsets[partner] = o;
          }
        }
      }
      __syncthreads();
    }
  }
  const int to = 1 - from;
  float* new_scores = run_scores + (int64_t(to) * nq + q) * keep;
  int64_t* new_ids = run_ids + (int64_t(to) * nq + q) * keep;
  const int64_t usable = m < keep ? m : keep;
  // Every element goes to its position in the merged order: its own index plus the number
  // of elements of the other list better than it (no ties: ids are unique).
  for (int p = threadIdx.x; p < count; p += blockDim.x) {
    const float s = old_scores[p];
    const int64_t id = old_ids[p];
    int64_t lo = 0, hi = usable;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (better(cand_scores[mid], i0 + cand_offsets[mid], s, id)) lo = mid + 1; else hi = mid;
    }
    const int64_t out = p + lo;
    if (out < keep) {
      new_scores[out] = s;
      new_ids[out] = id;
    }
  }
  for (int p = threadIdx.x; p < usable; p += blockDim.x) {
    const float s = cand_scores[p];
    const int64_t id = i0 + cand_offsets[p];
    int64_t lo = 0, hi = count;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (better(old_scores[mid], old_ids[mid], s, id)) lo = mid + 1; else hi = mid;
    }
    const int64_t out = p + lo;
    if (out < keep) {
      new_scores[out] = s;
      new_ids[out] = id;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int64_t merged = count + usable;
    run_count[q] = static_cast<int>(merged < keep ? merged : keep);
    current[q] = static_cast<unsigned char>(to);
  }
}

// One warp per query of the batch, keep <= 32: merges chunk [i0, i0 + ni) into the running
// list (buffer 0, which write_results reads while current[q] stays 0). With kApprox the scores
// are approximate (bfloat16): a candidate whose score plus the query's bound reaches the k-th
// best exact score is checked against the exclusions (when given: the product did not apply
// them) and then scored exactly, in factor order, as the float32 search does.
template <bool kApprox, typename I>
__global__ void warp_merge(const float* scores, int64_t nq, int64_t q0, int64_t i0, int64_t ni, int64_t keep,
                           float* run_scores, int64_t* run_ids, int* run_count, const float* queries,
                           const float* items, int64_t f, const float* bounds, const I* exclude_indptr,
                           const I* exclude_indices, const uint64_t* denied, const int64_t* item_ids) {
  constexpr unsigned kAll = 0xffffffffu;
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t q = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; q < nq; q += warps) {
    float* list_scores = run_scores + q * keep;
    int64_t* list_ids = run_ids + q * keep;
    int count = run_count[q];
    float mine = lane < count ? list_scores[lane] : -INFINITY;
    long long mine_id = lane < count ? list_ids[lane] : 0;
    float worst = 0.0f;
    long long worst_id = 0;
    if (count == keep) {
      worst = __shfl_sync(kAll, mine, static_cast<int>(keep - 1));
      worst_id = __shfl_sync(kAll, mine_id, static_cast<int>(keep - 1));
    }
    const float bound = kApprox ? bounds[q0 + q] : 0.0f;
    const float* row = scores + q * kChunkItems;
    for (int64_t base = 0; base < ni; base += 32) {
      const int64_t c = base + lane;
      float s = c < ni ? row[c] : __int_as_float(0x7fc00000);
      const long long id = i0 + c;
      bool pass = s == s && (count < keep || (kApprox ? s + bound >= worst : better(s, id, worst, worst_id)));
      if (kApprox && pass) {
        const int64_t catalog = item_ids ? item_ids[id] : id;
        if (denied && ((denied[catalog >> 6] >> (catalog & 63)) & 1u)) pass = false;
        if (pass && exclude_indptr && excluded(exclude_indptr, exclude_indices, q0 + q, catalog)) pass = false;
        if (pass) {
          const float* x = queries + (q0 + q) * f;
          const float* y = items + id * f;
          float acc = 0.0f;
          for (int64_t j = 0; j < f; ++j) acc = fmaf(x[j], y[j], acc);
          s = acc;
          pass = count < keep || better(s, id, worst, worst_id);
        }
      }
      unsigned pending = __ballot_sync(kAll, pass);
      while (pending) {  // in lane order; the same path for the whole warp
        const int source = __ffs(pending) - 1;
        pending &= pending - 1;
        const float cs = __shfl_sync(kAll, s, source);
        const long long cid = __shfl_sync(kAll, id, source);
        if (count == keep && !better(cs, cid, worst, worst_id)) continue;
        const int position = __popc(__ballot_sync(kAll, lane < count && better(mine, mine_id, cs, cid)));
        const float up = __shfl_up_sync(kAll, mine, 1);
        const long long up_id = __shfl_up_sync(kAll, mine_id, 1);
        if (lane > position) {
          mine = up;
          mine_id = up_id;
        } else if (lane == position) {
          mine = cs;
          mine_id = cid;
        }
        if (count < keep) ++count;
        if (count == keep) {
          worst = __shfl_sync(kAll, mine, static_cast<int>(keep - 1));
          worst_id = __shfl_sync(kAll, mine_id, static_cast<int>(keep - 1));
        }
      }
    }
    if (lane < count) {
      list_scores[lane] = mine;
      list_ids[lane] = mine_id;
    }
    if (lane == 0) run_count[q] = count;
  }
}

template <typename O>
__global__ void write_results(int64_t q0, int64_t nq, int64_t k, int64_t keep, const float* run_scores,
                              const int64_t* run_ids, const int* run_count, const unsigned char* current,
                              const int64_t* item_ids, O* ids, float* scores) {
  const int64_t total = nq * k;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = t / k, j = t % k;
    const int64_t out = (q0 + q) * k + j;
    if (run_count && j < run_count[q]) {
      const int64_t at = (int64_t(current[q]) * nq + q) * keep + j;
      const int64_t row = run_ids[at];
      ids[out] = static_cast<O>(item_ids ? item_ids[row] : row);
      scores[out] = run_scores[at];
    } else {
      ids[out] = O(-1);
      scores[out] = -INFINITY;
    }
  }
}

__global__ void to_bfloat16(const float* in, int64_t n, __nv_bfloat16* out) {
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x)
    out[t] = __float2bfloat16_rn(in[t]);
}

// Largest row norm, as the bits of a non-negative float (which order like integers).
__global__ void max_row_norm(const float* rows, int64_t n, int64_t f, unsigned int* result) {
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < n; r += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0;
    for (int64_t j = 0; j < f; ++j) sum += double(rows[r * f + j]) * rows[r * f + j];
    atomicMax(result, __float_as_uint(static_cast<float>(sqrt(sum) * (1.0 + 1e-6))));
  }
}

// Per query: the bound on |approximate - exact| score against any item. Rounding both
// operands to bfloat16 changes each product by at most (2u + u^2)|x_j||y_j| (u = 2^-8),
// and the two float32 sums differ from exact by at most f * 2^-24 * sum|x_j||y_j| each
// (twice that for a product that truncates);
// sum |x_j||y_j| <= |x| |y| <= |x| max_norm. Rounded up by a wide margin.
__global__ void score_bounds(const float* queries, int64_t n, int64_t f, const unsigned int* max_norm_bits,
                             float* bounds) {
  const float max_norm = __uint_as_float(*max_norm_bits);
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < n; q += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0;
    for (int64_t j = 0; j < f; ++j) sum += double(queries[q * f + j]) * queries[q * f + j];
    // 4 f 2^-24: each float32 sum's rounding, counted twice for a tensor-core product (whose
    // accumulation may truncate rather than round).
    const double relative = 2.0 / 256 + 1.0 / 65536 + 4.0 * double(f) / 16777216.0;
    bounds[q] = static_cast<float>(1.25 * relative * sqrt(sum) * max_norm * (1.0 + 1e-6)) + 1e-30f;
  }
}

int grid_for(int64_t work, int threads) {
  const int64_t blocks = ceil_div(work, threads);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(multiprocessors()) * 32)));
}

// One chunk for a batch on the warp-merge path: scores (exact, approximate by the tile
// kernel, or approximate by a tensor-core product) then warp_merge.
template <typename I>
void score_and_merge_warp(const float* queries, const float* items, const __nv_bfloat16* queries_bf16,
                          const __nv_bfloat16* items_bf16, int64_t f, int64_t q0, int64_t bq, int64_t i0, int64_t bi,
                          int64_t keep, const Exclusions<I>& exclusions, const TopkDeviceOptions& options,
                          const float* bounds, bool tensor_product, float* chunk_scores, float* run_scores,
                          int64_t* run_ids, int* run_count, cudaStream_t stream) {
  const unsigned merge_blocks = static_cast<unsigned>(ceil_div(bq, kWarpMergeThreads / 32));
  if (tensor_product) {
#ifdef RECORE_HAVE_CUBLAS
    // Row-major scores[q][i] (leading dimension kChunkItems) are the column-major product of
    // the chunk's items (f x bi column-major, transposed) and the batch's queries (f x bq).
    const float one = 1.0f, zero = 0.0f;
    check_cublas(cublasGemmEx(cublas_on(stream), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(bi),
                              static_cast<int>(bq), static_cast<int>(f), &one, items_bf16 + i0 * f, CUDA_R_16BF,
                              static_cast<int>(f), queries_bf16 + q0 * f, CUDA_R_16BF, static_cast<int>(f), &zero,
                              chunk_scores, CUDA_R_32F, kChunkItems, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
    // Exclusions are checked by the merge, for the candidates only.
    warp_merge<true, I><<<merge_blocks, kWarpMergeThreads, 0, stream>>>(
        chunk_scores, bq, q0, i0, bi, keep, run_scores, run_ids, run_count, queries, items, f, bounds,
        exclusions.indptr, exclusions.indices, options.denied, options.item_ids);
    RECORE_CUDA_LAUNCHED("warp_merge<bfloat16>");
#endif
    return;
  }
  const dim3 grid(static_cast<unsigned>(ceil_div(bi, kTile)), static_cast<unsigned>(ceil_div(bq, kTile)));
  if (grid.y > 65535) throw std::invalid_argument("query batch too large for the tile grid");
  const dim3 threads(16, 16);
  if (options.bfloat16) {
    score_tile<__nv_bfloat16, I><<<grid, threads, 0, stream>>>(queries_bf16, items_bf16, f, q0, bq, i0, bi,
                                                                exclusions.indptr, exclusions.indices,
                                                                options.denied, options.item_ids, chunk_scores);
    RECORE_CUDA_LAUNCHED("score_tile<bfloat16>");
    warp_merge<true, I><<<merge_blocks, kWarpMergeThreads, 0, stream>>>(
        chunk_scores, bq, q0, i0, bi, keep, run_scores, run_ids, run_count, queries, items, f, bounds, nullptr,
        nullptr, nullptr, options.item_ids);
    RECORE_CUDA_LAUNCHED("warp_merge<bfloat16>");
  } else {
    score_tile<float, I><<<grid, threads, 0, stream>>>(queries, items, f, q0, bq, i0, bi, exclusions.indptr,
                                                       exclusions.indices, options.denied, options.item_ids,
                                                       chunk_scores);
    RECORE_CUDA_LAUNCHED("score_tile<float>");
    warp_merge<false, I><<<merge_blocks, kWarpMergeThreads, 0, stream>>>(
        chunk_scores, bq, q0, i0, bi, keep, run_scores, run_ids, run_count, nullptr, nullptr, f, nullptr, nullptr,
        nullptr, nullptr, nullptr);
    RECORE_CUDA_LAUNCHED("warp_merge<float>");
  }
}

}  // namespace

template <typename I, typename O>
void topk(MatrixView<const float> queries, MatrixView<const float> items, int64_t k, const Exclusions<I>& exclusions,
          const TopkDeviceOptions& options, const TopkOutput<O>& output, std::uintptr_t stream_handle) {
  const int64_t nq = queries.rows, ni = items.rows, f = queries.cols;
  if (items.cols != f) throw std::invalid_argument("queries and items must have the same number of factors");
  if (queries.stride != f || items.stride != f) throw std::invalid_argument("factor matrices must be C-contiguous");
  if (k < 1) throw std::invalid_argument("k must be >= 1");
  if (nq == 0) return;
  cudaStream_t stream = as_stream(stream_handle);
  const int64_t keep = std::min(k, ni);
  if (keep == 0) {  // no items: every row is padding
    write_results<O><<<grid_for(nq * k, 256), 256, 0, stream>>>(0, nq, k, 1, nullptr, nullptr, nullptr, nullptr,
                                                               nullptr, output.ids, output.scores);
    RECORE_CUDA_LAUNCHED("write_results");
    RECORE_CUDA_CHECK(cudaStreamSynchronize(stream));
    return;
  }
  // Queries per batch: chunk scores (kChunkItems floats) and two running lists per query.
  const bool warp_lists = keep <= kWarpMergeMaxK;
#ifdef RECORE_HAVE_CUBLAS
  const bool tensor_product = warp_lists && options.bfloat16;
#else
  const bool tensor_product = false;
#endif
  const int64_t per_query = int64_t(kChunkItems) * 4 + 2 * keep * (4 + 8) + 8;
  const int64_t batch_bytes = warp_lists ? kWarpBatchBytes : kBatchBytes;
  const int64_t batch = std::max<int64_t>(1, std::min<int64_t>(nq, batch_bytes / per_query));
  if (batch > INT32_MAX) throw std::invalid_argument("query batch too large");

  WorkspaceLease lease;
  Carver carver;
  carver.add(batch * kChunkItems * sizeof(float));
  carver.add(2 * batch * keep * sizeof(float));
  carver.add(2 * batch * keep * sizeof(int64_t));
  carver.add(batch * sizeof(int));
  carver.add(batch * sizeof(unsigned char));
  if (options.bfloat16) {
    carver.add(ni * f * sizeof(__nv_bfloat16));
    carver.add(nq * f * sizeof(__nv_bfloat16));
    carver.add(nq * sizeof(float));
    carver.add(sizeof(unsigned int));
  }
  char* cursor = static_cast<char*>(lease.reserve(carver.total()));
  float* chunk_scores = carver.take<float>(cursor, batch * kChunkItems);
  float* run_scores = carver.take<float>(cursor, 2 * batch * keep);
  int64_t* run_ids = carver.take<int64_t>(cursor, 2 * batch * keep);
  int* run_count = carver.take<int>(cursor, batch);
  unsigned char* current = carver.take<unsigned char>(cursor, batch);
  __nv_bfloat16* items_bf16 = nullptr;
  __nv_bfloat16* queries_bf16 = nullptr;
  float* bounds = nullptr;
  unsigned int* max_norm = nullptr;
  if (options.bfloat16) {
    items_bf16 = carver.take<__nv_bfloat16>(cursor, ni * f);
    queries_bf16 = carver.take<__nv_bfloat16>(cursor, nq * f);
    bounds = carver.take<float>(cursor, nq);
    max_norm = carver.take<unsigned int>(cursor, 1);
    to_bfloat16<<<grid_for(ni * f, 256), 256, 0, stream>>>(items.data, ni * f, items_bf16);
    RECORE_CUDA_LAUNCHED("to_bfloat16");
    to_bfloat16<<<grid_for(nq * f, 256), 256, 0, stream>>>(queries.data, nq * f, queries_bf16);
    RECORE_CUDA_LAUNCHED("to_bfloat16");
    RECORE_CUDA_CHECK(cudaMemsetAsync(max_norm, 0, sizeof(unsigned int), stream));
    max_row_norm<<<grid_for(ni, 128), 128, 0, stream>>>(items.data, ni, f, max_norm);
    RECORE_CUDA_LAUNCHED("max_row_norm");
    score_bounds<<<grid_for(nq, 128), 128, 0, stream>>>(queries.data, nq, f, max_norm, bounds);
    RECORE_CUDA_LAUNCHED("score_bounds");
  }

  for (int64_t q0 = 0; q0 < nq; q0 += batch) {
    const int64_t bq = std::min(batch, nq - q0);
    RECORE_CUDA_CHECK(cudaMemsetAsync(run_count, 0, bq * sizeof(int), stream));
    RECORE_CUDA_CHECK(cudaMemsetAsync(current, 0, bq, stream));
    for (int64_t i0 = 0; i0 < ni; i0 += kChunkItems) {
      const int64_t bi = std::min<int64_t>(kChunkItems, ni - i0);
      if (warp_lists) {
        score_and_merge_warp(queries.data, items.data, queries_bf16, items_bf16, f, q0, bq, i0, bi, keep, exclusions,
                             options, bounds, tensor_product, chunk_scores, run_scores, run_ids, run_count, stream);
        continue;
      }
      const dim3 grid(static_cast<unsigned>(ceil_div(bi, kTile)), static_cast<unsigned>(ceil_div(bq, kTile)));
      if (grid.y > 65535) throw std::invalid_argument("query batch too large for the tile grid");
      const dim3 threads(16, 16);
      if (options.bfloat16) {
        score_tile<__nv_bfloat16, I><<<grid, threads, 0, stream>>>(
            queries_bf16, items_bf16, f, q0, bq, i0, bi, exclusions.indptr, exclusions.indices, options.denied,
            options.item_ids, chunk_scores);
        RECORE_CUDA_LAUNCHED("score_tile<bfloat16>");
        refine_scores<<<grid_for(bq * bi, 256), 256, 0, stream>>>(queries.data, items.data, f, q0, bq, i0, bi,
                                                                  bounds, run_scores, run_ids, run_count, current,
                                                                  keep, chunk_scores);
        RECORE_CUDA_LAUNCHED("refine_scores");
      } else {
        score_tile<float, I><<<grid, threads, 0, stream>>>(queries.data, items.data, f, q0, bq, i0, bi,
                                                           exclusions.indptr, exclusions.indices, options.denied,
                                                           options.item_ids, chunk_scores);
        RECORE_CUDA_LAUNCHED("score_tile<float>");
      }
      merge_chunk<<<static_cast<unsigned>(bq), kMergeThreads, 0, stream>>>(chunk_scores, bq, i0, bi, keep,
                                                                             run_scores, run_ids, run_count, current);
      RECORE_CUDA_LAUNCHED("merge_chunk");
    }
    write_results<O><<<grid_for(bq * k, 256), 256, 0, stream>>>(q0, bq, k, keep, run_scores, run_ids, run_count,
                                                               current, options.item_ids, output.ids, output.scores);
    RECORE_CUDA_LAUNCHED("write_results");
  }
  RECORE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

#define RECORE_INSTANTIATE_TOPK(I, O)                                                                        \
  template void topk<I, O>(MatrixView<const float>, MatrixView<const float>, int64_t, const Exclusions<I>&, \
                           const TopkDeviceOptions&, const TopkOutput<O>&, std::uintptr_t);
RECORE_INSTANTIATE_TOPK(int32_t, int32_t)
RECORE_INSTANTIATE_TOPK(int32_t, int64_t)
RECORE_INSTANTIATE_TOPK(int64_t, int32_t)
RECORE_INSTANTIATE_TOPK(int64_t, int64_t)

}  // namespace recore::cuda
