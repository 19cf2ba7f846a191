// SGD hot loops. Compiled once per instruction set (see CMakeLists.txt); no standard-library
// templates (see als_kernels.hpp). Factor rows are padded to whole SIMD vectors, so every
// update loop runs over full vectors with no remainder.
#include <cstdint>

#include <immintrin.h>

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

typedef Simd<float>::type FloatVector;
constexpr int64_t kLanes = kVectorBytes / sizeof(float);

inline FloatVector load(const float* p) {
  FloatVector v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, FloatVector v) { __builtin_memcpy(p, &v, sizeof(v)); }
inline FloatVector splat(float x) { return FloatVector{} + x; }

inline float horizontal_sum(FloatVector v) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps((__m512)v);
#elif defined(__AVX__)
  const __m128 half = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
  const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
#else
  const __m128 pairs = _mm_add_ps((__m128)v, _mm_movehl_ps((__m128)v, (__m128)v));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
#endif
}

// p . q over padded rows (stride a multiple of the vector width).
inline float padded_dot(const float* p, const float* q, int64_t stride) {
  FloatVector acc = FloatVector{};
  for (int64_t j = 0; j < stride; j += kLanes) acc += load(p + j) * load(q + j);
  return horizontal_sum(acc);
}

inline float prediction(const SgdModel& m, int64_t u, int64_t i) {
  float value = m.global_mean + padded_dot(m.user_factors + u * m.stride, m.item_factors + i * m.stride, m.stride);
  if (m.user_biases) value += m.user_biases[u];
  if (m.item_biases) value += m.item_biases[i];
  return value;
}

// Updates p[first, last) and q[first, last) with the given rates; returns the squared
// gradient sums of each (when ADAPTIVE).
template <bool ADAPTIVE>
inline void update_part(float* p, float* q, int64_t first, int64_t last, FloatVector error, FloatVector lambda,
                        float eta_u, float eta_i, float& user_sum, float& item_sum) {
  const FloatVector rate_u = splat(eta_u), rate_i = splat(eta_i);
  FloatVector user_gradient = FloatVector{}, item_gradient = FloatVector{};
  for (int64_t j = first; j < last; j += kLanes) {
    const FloatVector pj = load(p + j), qj = load(q + j);
    const FloatVector gp = lambda * pj - error * qj;
    const FloatVector gq = lambda * qj - error * pj;
    store(p + j, pj - rate_u * gp);
    store(q + j, qj - rate_i * gq);
    if (ADAPTIVE) {
      user_gradient += gp * gp;
      item_gradient += gq * gq;
    }
  }
  if (ADAPTIVE) {
    user_sum = horizontal_sum(user_gradient);
    item_sum = horizontal_sum(item_gradient);
  }
}

// One squared-loss update; returns the error before it. ADAPTIVE and BIASES are the model's
// schedule and bias switches, fixed for a whole epoch.
template <bool ADAPTIVE, bool BIASES>
inline float squared_update(const SgdModel& m, const SgdRates& rates, int64_t u, int64_t i, float r, bool slow_only) {
  float* p = m.user_factors + u * m.stride;
  float* q = m.item_factors + i * m.stride;
  float predicted = m.global_mean + padded_dot(p, q, m.stride);
  if (BIASES) predicted += m.user_biases[u] + m.item_biases[i];
  const float e = r - predicted;
  const FloatVector error = splat(e), lambda = splat(rates.regularization);
  const float eta = rates.learning_rate;
  // With split rates each row has two sums: [slow, fast].
  const bool split = ADAPTIVE && m.slow_factors > 0;
  float* user_sums = ADAPTIVE ? m.user_rate_sums + (split ? 2 * u : u) : nullptr;
  float* item_sums = ADAPTIVE ? m.item_rate_sums + (split ? 2 * i : i) : nullptr;
  const float eta_u = ADAPTIVE ? eta / square_root(user_sums[0]) : eta;
  const float eta_i = ADAPTIVE ? eta / square_root(item_sums[0]) : eta;
  const int64_t slow_end = split ? m.slow_factors : m.stride;
  float user_sum = 0.0f, item_sum = 0.0f;
  update_part<ADAPTIVE>(p, q, 0, slow_end, error, lambda, eta_u, eta_i, user_sum, item_sum);
  if (BIASES) {
    m.user_biases[u] -= eta_u * (rates.bias_regularization * m.user_biases[u] - e);
    m.item_biases[i] -= eta_i * (rates.bias_regularization * m.item_biases[i] - e);
  }
  if (!ADAPTIVE) return e;
  if (!split) {
    const float f = static_cast<float>(m.factors);
    user_sums[0] += user_sum / f;
    item_sums[0] += item_sum / f;
    return e;
  }
  const float slow = static_cast<float>(m.slow_factors);
  user_sums[0] += user_sum / slow;
  item_sums[0] += item_sum / slow;
  if (slow_only) return e;
  const float eta_u_fast = eta / square_root(user_sums[1]);
  const float eta_i_fast = eta / square_root(item_sums[1]);
  update_part<true>(p, q, slow_end, m.stride, error, lambda, eta_u_fast, eta_i_fast, user_sum, item_sum);
  const float fast = static_cast<float>(m.factors - m.slow_factors);
  user_sums[1] += user_sum / fast;
  item_sums[1] += item_sum / fast;
  return e;
}

// Squared-loss updates of ratings [first, last) of the grid; returns their squared errors.
template <bool ADAPTIVE, bool BIASES>
double squared_updates(const RatingGrid& grid, const SgdModel& m, const SgdRates& rates, int64_t first,
                       int64_t last, bool slow_only) {
  // The item rows of a block are scattered: ask for a later rating's rows while this one is
  // updated (the user rows mostly repeat, ratings being sorted by user).
  constexpr int64_t ahead = 4;
  double sum = 0.0;
  for (int64_t k = first; k < last; ++k) {
    if (k + ahead < last) {
      const float* next_item = m.item_factors + grid.items[k + ahead] * m.stride;
      const float* next_user = m.user_factors + grid.users[k + ahead] * m.stride;
      for (int64_t j = 0; j < m.stride; j += 16) {
        __builtin_prefetch(next_item + j, 1);
        __builtin_prefetch(next_user + j, 1);
      }
    }
    const float e =
        squared_update<ADAPTIVE, BIASES>(m, rates, grid.users[k], grid.items[k], grid.values[k], slow_only);
    sum += double(e) * double(e);
  }
  return sum;
}

inline double squared_block(const RatingGrid& grid, const SgdModel& m, const SgdRates& rates, int64_t first,
                            int64_t last, bool slow_only) {
  const bool adaptive = m.user_rate_sums != nullptr, biases = m.user_biases != nullptr;
  if (adaptive) return biases ? squared_updates<true, true>(grid, m, rates, first, last, slow_only)
                              : squared_updates<true, false>(grid, m, rates, first, last, slow_only);
  return biases ? squared_updates<false, true>(grid, m, rates, first, last, slow_only)
                : squared_updates<false, false>(grid, m, rates, first, last, slow_only);
}

// One BPR update for (u, i, j); returns whether x > 0 before it.
inline bool bpr_update(const SgdModel& m, const SgdRates& rates, int64_t u, int64_t i, int64_t j) {
  float* p = m.user_factors + u * m.stride;
  float* qi = m.item_factors + i * m.stride;
  float* qj = m.item_factors + j * m.stride;
  float x = padded_dot(p, qi, m.stride) - padded_dot(p, qj, m.stride);
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
      local += squared_block(args.grid, args.model, args.rates, args.grid.block_starts[block],
                             args.grid.block_starts[block + 1], args.slow_only);
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
