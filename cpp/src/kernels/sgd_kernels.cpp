// SGD hot loops. Compiled once per instruction set (see CMakeLists.txt); no standard-library
// templates (see als_kernels.hpp). Factor rows are padded to whole SIMD vectors, so every
// update loop runs over full vectors with no remainder.
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "recore/sgd_kernels.hpp"
#include "simd.hpp"

namespace recore {
namespace RECORE_TARGET {
namespace {

inline float exponential(float x) { return __builtin_expf(x); }

// The learning rate of a row: constant, or eta / sqrt(G_row) with the adaptive schedule.
inline float row_rate(const float* sums, int64_t row, float eta) {
  return sums ? eta / square_root(sums[row]) : eta;
}

inline float prediction(const SgdModel& m, int64_t u, int64_t i) {
  float value = m.global_mean + dot(m.user_factors + u * m.stride, m.item_factors + i * m.stride, m.stride);
  if (m.user_biases) value += m.user_biases[u];
  if (m.item_biases) value += m.item_biases[i];
  return value;
}

// One squared-loss update; returns the error before it.
inline float squared_update(const SgdModel& m, const SgdRates& rates, int64_t u, int64_t i, float r) {
  float* p = m.user_factors + u * m.stride;
  float* q = m.item_factors + i * m.stride;
  const float e = r - prediction(m, u, i);
  const float eta_u = row_rate(m.user_rate_sums, u, rates.learning_rate);
  const float eta_i = row_rate(m.item_rate_sums, i, rates.learning_rate);
  const float lambda = rates.regularization;
  float user_gradient = 0.0f, item_gradient = 0.0f;
#pragma omp simd reduction(+ : user_gradient, item_gradient)
  for (int64_t j = 0; j < m.stride; ++j) {
    const float gp = lambda * p[j] - e * q[j];
    const float gq = lambda * q[j] - e * p[j];
    p[j] -= eta_u * gp;
    q[j] -= eta_i * gq;
    user_gradient += gp * gp;
    item_gradient += gq * gq;
  }
  if (m.user_biases) m.user_biases[u] -= eta_u * (rates.bias_regularization * m.user_biases[u] - e);
  if (m.item_biases) m.item_biases[i] -= eta_i * (rates.bias_regularization * m.item_biases[i] - e);
  if (m.user_rate_sums) {
    m.user_rate_sums[u] += user_gradient / static_cast<float>(m.factors);
    m.item_rate_sums[i] += item_gradient / static_cast<float>(m.factors);
  }
  return e;
}

// One BPR update for (u, i, j); returns whether x > 0 before it.
inline bool bpr_update(const SgdModel& m, const SgdRates& rates, int64_t u, int64_t i, int64_t j) {
  float* p = m.user_factors + u * m.stride;
  float* qi = m.item_factors + i * m.stride;
  float* qj = m.item_factors + j * m.stride;
  float x = dot(p, qi, m.stride) - dot(p, qj, m.stride);
  if (m.item_biases) x += m.item_biases[i] - m.item_biases[j];
  const float d = 1.0f / (1.0f + exponential(x));
  const float eta_u = row_rate(m.user_rate_sums, u, rates.learning_rate);
  const float eta_i = row_rate(m.item_rate_sums, i, rates.learning_rate);
  const float eta_j = row_rate(m.item_rate_sums, j, rates.learning_rate);
  const float lambda = rates.regularization;
  float gu = 0.0f, gi = 0.0f, gj = 0.0f;
#pragma omp simd reduction(+ : gu, gi, gj)
  for (int64_t k = 0; k < m.stride; ++k) {
    const float pu = p[k];
    const float gp = lambda * pu - d * (qi[k] - qj[k]);
    const float gqi = lambda * qi[k] - d * pu;
    const float gqj = lambda * qj[k] + d * pu;
    p[k] -= eta_u * gp;
    qi[k] -= eta_i * gqi;
    qj[k] -= eta_j * gqj;
    gu += gp * gp;
    gi += gqi * gqi;
    gj += gqj * gqj;
  }
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
  return x > 0.0f;
}

// splitmix64: seeds, and the per-thread generator (good enough for sampling, very cheap).
struct Generator {
  uint64_t state;
  inline uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n).
  inline int64_t below(int64_t n) {
    return static_cast<int64_t>((static_cast<unsigned __int128>(next()) * static_cast<uint64_t>(n)) >> 64);
  }
};

// The row holding stored entry k: the last r with indptr[r] <= k.
inline int64_t row_of_entry(const int64_t* indptr, int64_t rows, int64_t k) {
  int64_t lo = 0, hi = rows;  // indptr[lo] <= k < indptr[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (indptr[mid] <= k) lo = mid;
    else hi = mid;
  }
  return lo;
}

inline bool row_contains(const int32_t* row, int64_t length, int32_t item) {
  int64_t lo = 0, hi = length;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (row[mid] < item) lo = mid + 1;
    else hi = mid;
  }
  return lo < length && row[lo] == item;
}

#ifdef _OPENMP
struct SchedulerLock {
  omp_lock_t lock;
  SchedulerLock() { omp_init_lock(&lock); }
  ~SchedulerLock() { omp_destroy_lock(&lock); }
  void acquire() { omp_set_lock(&lock); }
  void release() { omp_unset_lock(&lock); }
};
#else
struct SchedulerLock {
  void acquire() {}
  void release() {}
};
#endif

}  // namespace

void sgd_squared_epoch_kernel(const SgdEpochArgs& args) {
  const int64_t bands = args.grid.blocks;
  const int64_t blocks = bands * bands;
  SchedulerLock lock;  // guards the band and block flags only, never the factors
  int64_t untaken = blocks;
  double total = 0.0;
#pragma omp parallel num_threads(args.threads)
  {
    double local = 0.0;
    for (;;) {
      int64_t block = -1;
      lock.acquire();
      if (untaken == 0) {
        lock.release();
        break;
      }
      for (int64_t k = 0; k < blocks; ++k) {
        const int64_t b = args.block_order[k];
        if (args.block_taken[b] || args.user_band_busy[b / bands] || args.item_band_busy[b % bands]) continue;
        block = b;
        args.block_taken[b] = 1;
        args.user_band_busy[b / bands] = 1;
        args.item_band_busy[b % bands] = 1;
        --untaken;
        break;
      }
      lock.release();
      if (block < 0) continue;  // every free block shares a band with a busy one: try again
      for (int64_t k = args.grid.block_starts[block]; k < args.grid.block_starts[block + 1]; ++k) {
        const float e = squared_update(args.model, args.rates, args.grid.users[k], args.grid.items[k],
                                       args.grid.values[k]);
        local += double(e) * double(e);
      }
      lock.acquire();
      args.user_band_busy[block / bands] = 0;
      args.item_band_busy[block % bands] = 0;
      lock.release();
    }
#pragma omp atomic
    total += local;
  }
  *args.squared_error = total;
}

void sgd_bpr_triples_kernel(const SgdTripleArgs& args) {
  int64_t correct = 0;
  for (int64_t k = 0; k < args.count; ++k)
    correct += bpr_update(args.model, args.rates, args.users[k], args.positives[k], args.negatives[k]);
  *args.correct = correct;
}

void sgd_bpr_epoch_kernel(const SgdBprEpochArgs& args) {
  const int64_t users = args.model.users, items = args.model.items;
  const int64_t nnz = args.indptr[users];
  int64_t correct = 0;
#pragma omp parallel num_threads(args.threads) reduction(+ : correct)
  {
    const int t = thread_index();
    const int team = thread_count();
    Generator rng{args.seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(t + 1))};
    rng.next();
    // Hogwild: each thread its share of the samples, no locks on the factors.
    const int64_t first = args.samples * t / team, last = args.samples * (t + 1) / team;
    for (int64_t s = first; s < last; ++s) {
      const int64_t entry = rng.below(nnz);
      const int64_t u = row_of_entry(args.indptr, users, entry);
      const int32_t i = args.indices[entry];
      const int32_t* row = args.indices + args.indptr[u];
      const int64_t length = args.indptr[u + 1] - args.indptr[u];
      if (length >= items) continue;  // the user has every item: no negative exists
      int32_t j = -1;
      for (int attempt = 0; attempt < 16; ++attempt) {
        const int32_t candidate = args.popularity_negatives ? args.indices[rng.below(nnz)]
                                                            : static_cast<int32_t>(rng.below(items));
        if (!row_contains(row, length, candidate)) {
          j = candidate;
          break;
        }
      }
      if (j < 0) continue;
      correct += bpr_update(args.model, args.rates, u, i, j);
    }
  }
  *args.correct = correct;
}

void sgd_rmse_kernel(const SgdRmseArgs& args) {
  // A fixed partition into chunks, summed in order: the result never depends on threads.
#pragma omp parallel for num_threads(args.threads) schedule(static)
  for (int64_t c = 0; c < args.chunks; ++c) {
    const int64_t first = args.count * c / args.chunks, last = args.count * (c + 1) / args.chunks;
    double sum = 0.0;
    for (int64_t k = first; k < last; ++k) {
      const double e = double(args.values[k]) - double(prediction(args.model, args.users[k], args.items[k]));
      sum += e * e;
    }
    args.partials[c] = sum;
  }
  double total = 0.0;
  for (int64_t c = 0; c < args.chunks; ++c) total += args.partials[c];
  *args.squared_error = total;
}

}  // namespace RECORE_TARGET
}  // namespace recore
