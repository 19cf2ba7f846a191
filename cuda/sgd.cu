// SGD on the GPU, batch Hogwild: one warp applies one update at a time, its lanes spread over
// the (padded) factors, and thousands of warps update concurrently without locks. Squared
// loss takes the ratings in runs of kSgdRunRatings consecutive ratings of the CPU engine's
// grid order (so a warp mostly rereads one user's row and reads its ratings coalesced),
// runs visited in an affine permutation drawn per epoch. BPR draws its triples on the device
// with the CPU engine's rule. Schedules (constant, adaptive, adaptive with the two-speed
// split) and the update formulas are those of cpp/src/kernels/sgd_kernels.cpp.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>

#include "common.cuh"

namespace recore::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

__host__ __device__ inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__device__ inline uint64_t below(uint64_t& state, uint64_t bound) {
  // Multiply-shift: uniform enough for sampling, and branch-free.
  return static_cast<uint64_t>((static_cast<unsigned __int128>(splitmix64(state)) * bound) >> 64);
}

// p . q over the padded row, summed across the warp (every lane gets it).
__device__ inline float warp_dot(const float* p, const float* q, int64_t stride, int lane) {
  float acc = 0.0f;
  for (int64_t d = lane; d < stride; d += 32) acc = fmaf(p[d], q[d], acc);
  return warp_sum(acc);
}

// Updates dims [first, last) of p and q; returns the warp's sums of squared gradients.
__device__ inline void update_part(float* p, float* q, int64_t first, int64_t last, float error, float lambda,
                                   float eta_u, float eta_i, int lane, float& user_sum, float& item_sum) {
  float gu = 0.0f, gi = 0.0f;
  for (int64_t d = first + lane; d < last; d += 32) {
    const float pj = p[d], qj = q[d];
    const float gp = lambda * pj - error * qj;
    const float gq = lambda * qj - error * pj;
    p[d] = pj - eta_u * gp;
    q[d] = qj - eta_i * gq;
    gu += gp * gp;
    gi += gq * gq;
  }
  user_sum = warp_sum(gu);
  item_sum = warp_sum(gi);
}

__global__ void squared_epoch(const int32_t* users, const int32_t* items, const float* values, int64_t count,
                              SgdModel m, SgdRates rates, bool slow_only, uint64_t runs, uint64_t multiplier,
                              uint64_t offset, double* squared_error) {
  const int lane = threadIdx.x & 31;
  const uint64_t warp = (uint64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const uint64_t warps = uint64_t(gridDim.x) * blockDim.x / 32;
  const bool adaptive = m.user_rate_sums != nullptr, biases = m.user_biases != nullptr;
  const bool split = adaptive && m.slow_factors > 0;
  const float eta = rates.learning_rate, lambda = rates.regularization;
  double sum = 0.0;
  for (uint64_t t = warp; t < runs; t += warps) {
    const uint64_t run = (multiplier * t + offset) % runs;
    const int64_t begin = int64_t(run) * kSgdRunRatings;
    const int64_t end = begin + kSgdRunRatings < count ? begin + kSgdRunRatings : count;
    for (int64_t k = begin; k < end; ++k) {
      __syncwarp();  // lane 0's bias and rate-sum writes of the previous update are seen
      const int64_t u = users[k], i = items[k];
      float* p = m.user_factors + u * m.stride;
      float* q = m.item_factors + i * m.stride;
      float predicted = m.global_mean + warp_dot(p, q, m.stride, lane);
      if (biases) predicted += m.user_biases[u] + m.item_biases[i];
      const float e = values[k] - predicted;
      sum += double(e) * double(e);
      float* user_sums = adaptive ? m.user_rate_sums + (split ? 2 * u : u) : nullptr;
      float* item_sums = adaptive ? m.item_rate_sums + (split ? 2 * i : i) : nullptr;
      const float eta_u = adaptive ? eta / sqrtf(user_sums[0]) : eta;
      const float eta_i = adaptive ? eta / sqrtf(item_sums[0]) : eta;
      const int64_t slow_end = split ? m.slow_factors : m.stride;
      float user_sum, item_sum;
      update_part(p, q, 0, slow_end, e, lambda, eta_u, eta_i, lane, user_sum, item_sum);
      if (lane == 0 && biases) {
        m.user_biases[u] -= eta_u * (rates.bias_regularization * m.user_biases[u] - e);
        m.item_biases[i] -= eta_i * (rates.bias_regularization * m.item_biases[i] - e);
      }
      if (!adaptive) continue;
      if (!split) {
        if (lane == 0) {
          user_sums[0] += user_sum / static_cast<float>(m.factors);
          item_sums[0] += item_sum / static_cast<float>(m.factors);
        }
        continue;
      }
      const float slow = static_cast<float>(m.slow_factors);
      // Every lane reads the sums before lane 0 changes them: the fast rates below use
      // the fast sums only, which no lane has written yet.
      if (lane == 0) {
        user_sums[0] += user_sum / slow;
        item_sums[0] += item_sum / slow;
      }
      if (slow_only) continue;
      const float eta_u_fast = eta / sqrtf(user_sums[1]);
      const float eta_i_fast = eta / sqrtf(item_sums[1]);
      update_part(p, q, slow_end, m.stride, e, lambda, eta_u_fast, eta_i_fast, lane, user_sum, item_sum);
      __syncwarp();
      if (lane == 0) {
        const float fast = static_cast<float>(m.factors - m.slow_factors);
        user_sums[1] += user_sum / fast;
        item_sums[1] += item_sum / fast;
      }
      __syncwarp();
    }
    __syncwarp();
  }
  if (lane == 0 && sum != 0.0) atomicAdd(squared_error, sum);
}

// Whether `item` is in the sorted row [begin, end) of indices.
__device__ inline bool in_row(const int32_t* indices, int64_t begin, int64_t end, int32_t item) {
  while (begin < end) {
    const int64_t mid = (begin + end) / 2;
    if (indices[mid] == item) return true;
    if (indices[mid] < item) begin = mid + 1; else end = mid;
  }
  return false;
}

__global__ void bpr_epoch(const int64_t* indptr, const int32_t* indices, int64_t nnz, int64_t samples,
                          bool popularity, uint64_t seed, SgdModel m, SgdRates rates,
                          unsigned long long* correct) {
  const int lane = threadIdx.x & 31;
  const uint64_t warp = (uint64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const uint64_t warps = uint64_t(gridDim.x) * blockDim.x / 32;
  const float lambda = rates.regularization;
  unsigned long long right = 0;
  for (uint64_t s = warp; s < uint64_t(samples); s += warps) {
    // Every lane draws the same numbers: the sample's generator depends on (seed, s) only.
    uint64_t state = seed ^ (0xD1B54A32D192ED03ull * (s + 1));
    const int64_t entry = static_cast<int64_t>(below(state, uint64_t(nnz)));
    int64_t lo = 0, hi = m.users;  // the user whose row holds `entry`
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (indptr[mid] <= entry) lo = mid; else hi = mid - 1;
    }
    const int64_t u = lo, i = indices[entry];
    const int64_t row_begin = indptr[u], row_end = indptr[u + 1];
    int32_t j = 0;
    for (int attempt = 0; attempt < 16; ++attempt) {
      j = popularity ? indices[below(state, uint64_t(nnz))] : static_cast<int32_t>(below(state, uint64_t(m.items)));
      if (!in_row(indices, row_begin, row_end, j)) break;
    }
    float* p = m.user_factors + u * m.stride;
    float* qi = m.item_factors + i * m.stride;
    float* qj = m.item_factors + int64_t(j) * m.stride;
    float x = warp_dot(p, qi, m.stride, lane) - warp_dot(p, qj, m.stride, lane);
    if (m.item_biases) x += m.item_biases[i] - m.item_biases[j];
    const float d = 1.0f / (1.0f + expf(x));
    const float eta = rates.learning_rate;
    const float eta_u = m.user_rate_sums ? eta / sqrtf(m.user_rate_sums[u]) : eta;
    const float eta_i = m.item_rate_sums ? eta / sqrtf(m.item_rate_sums[i]) : eta;
    const float eta_j = m.item_rate_sums ? eta / sqrtf(m.item_rate_sums[j]) : eta;
    float gu = 0.0f, gi = 0.0f, gj = 0.0f;
    for (int64_t k = lane; k < m.stride; k += 32) {
      const float pu = p[k], qik = qi[k], qjk = qj[k];
      const float gp = lambda * pu - d * (qik - qjk);
      const float gqi = lambda * qik - d * pu;
      const float gqj = lambda * qjk + d * pu;
      p[k] = pu - eta_u * gp;
      qi[k] = qik - eta_i * gqi;
      qj[k] = qjk - eta_j * gqj;
      gu += gp * gp;
      gi += gqi * gqi;
      gj += gqj * gqj;
    }
    gu = warp_sum(gu);
    gi = warp_sum(gi);
    gj = warp_sum(gj);
    if (lane == 0) {
      if (m.item_biases) {
        m.item_biases[i] -= eta_i * (rates.bias_regularization * m.item_biases[i] - d);
        m.item_biases[j] -= eta_j * (rates.bias_regularization * m.item_biases[j] + d);
      }
      if (m.user_rate_sums) {
        const float f = static_cast<float>(m.factors);
        m.user_rate_sums[u] += gu / f;
        m.item_rate_sums[i] += gi / f;
        m.item_rate_sums[j] += gj / f;
      }
      right += x > 0.0f;
    }
    __syncwarp();
  }
  if (lane == 0 && right) atomicAdd(correct, right);
}

__global__ void rmse_ratings(const int32_t* users, const int32_t* items, const float* values, int64_t count,
                             SgdModel m, double* squared_error) {
  const int lane = threadIdx.x & 31;
  const uint64_t warp = (uint64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const uint64_t warps = uint64_t(gridDim.x) * blockDim.x / 32;
  double sum = 0.0;
  for (uint64_t k = warp; k < uint64_t(count); k += warps) {
    const int64_t u = users[k], i = items[k];
    float predicted = m.global_mean + warp_dot(m.user_factors + u * m.stride, m.item_factors + i * m.stride,
                                               m.stride, lane);
    if (m.user_biases) predicted += m.user_biases[u];
    if (m.item_biases) predicted += m.item_biases[i];
    const double e = double(values[k]) - double(predicted);
    sum += e * e;
  }
  if (lane == 0 && sum != 0.0) atomicAdd(squared_error, sum);
}

void check_model(const SgdModel& m) {
  if (m.stride % 16 != 0 || m.factors < 1 || m.factors > m.stride)
    throw std::invalid_argument("factor matrices must be padded to a multiple of 16 columns, at least factors wide");
  if (m.slow_factors < 0 || (m.slow_factors > 0 && m.slow_factors >= m.factors))
    throw std::invalid_argument("slow_factors must be 0 or below factors");
  if (m.user_factors_float16 || m.item_factors_float16)
    throw std::invalid_argument("the CUDA engine trains float32 factors only, not float16");
}

unsigned grid_warps(int64_t work) {
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(ceil_div(work, kWarpsPerBlock),
                                                                int64_t(multiprocessors()) * 8));
  return static_cast<unsigned>(blocks);
}

}  // namespace

double sgd_squared_epoch(const int32_t* users, const int32_t* items, const float* values, int64_t count,
                         SgdModel& model, const SgdRates& rates, bool slow_only, uint64_t seed,
                         std::uintptr_t stream_handle) {
  check_model(model);
  if (count == 0) return 0.0;
  cudaStream_t stream = as_stream(stream_handle);
  const uint64_t runs = static_cast<uint64_t>(ceil_div(count, kSgdRunRatings));
  uint64_t state = seed;
  uint64_t multiplier = 1, offset = 0;
  if (runs > 1) {
    do {
      multiplier = 1 + splitmix64(state) % (runs - 1);
    } while (std::gcd(multiplier, runs) != 1);
    offset = splitmix64(state) % runs;
  }
  WorkspaceLease lease;
  double* sum = static_cast<double*>(lease.reserve(sizeof(double)));
  RECORE_CUDA_CHECK(cudaMemsetAsync(sum, 0, sizeof(double), stream));
  squared_epoch<<<grid_warps(static_cast<int64_t>(runs)), kThreads, 0, stream>>>(
      users, items, values, count, model, rates, slow_only, runs, multiplier, offset, sum);
  RECORE_CUDA_LAUNCHED("squared_epoch");
  double host = 0.0;
  RECORE_CUDA_CHECK(cudaMemcpyAsync(&host, sum, sizeof(double), cudaMemcpyDeviceToHost, stream));
  RECORE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

double sgd_bpr_epoch(const int64_t* indptr, const int32_t* indices, int64_t nnz, int64_t samples,
                     bool popularity_negatives, uint64_t seed, SgdModel& model, const SgdRates& rates,
                     std::uintptr_t stream_handle) {
  check_model(model);
  if (samples == 0 || nnz == 0 || model.items == 0) return 0.0;
  cudaStream_t stream = as_stream(stream_handle);
  WorkspaceLease lease;
  auto* correct = static_cast<unsigned long long*>(lease.reserve(sizeof(unsigned long long)));
  RECORE_CUDA_CHECK(cudaMemsetAsync(correct, 0, sizeof(unsigned long long), stream));
  bpr_epoch<<<grid_warps(samples), kThreads, 0, stream>>>(indptr, indices, nnz, samples, popularity_negatives, seed,
                                                           model, rates, correct);
  RECORE_CUDA_LAUNCHED("bpr_epoch");
  unsigned long long host = 0;
  RECORE_CUDA_CHECK(cudaMemcpyAsync(&host, correct, sizeof(host), cudaMemcpyDeviceToHost, stream));
  RECORE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return static_cast<double>(host) / static_cast<double>(samples);
}

double sgd_rmse(const int32_t* users, const int32_t* items, const float* values, int64_t count,
                const SgdModel& model, std::uintptr_t stream_handle) {
  if (count == 0) return 0.0;
  cudaStream_t stream = as_stream(stream_handle);
  WorkspaceLease lease;
  double* sum = static_cast<double*>(lease.reserve(sizeof(double)));
  RECORE_CUDA_CHECK(cudaMemsetAsync(sum, 0, sizeof(double), stream));
  rmse_ratings<<<grid_warps(count), kThreads, 0, stream>>>(users, items, values, count, model, sum);
  RECORE_CUDA_LAUNCHED("rmse_ratings");
  double host = 0.0;
  RECORE_CUDA_CHECK(cudaMemcpyAsync(&host, sum, sizeof(double), cudaMemcpyDeviceToHost, stream));
  RECORE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return std::sqrt(host / static_cast<double>(count));
}

}  // namespace recore::cuda
