// SGD hot loops. Compiled once per instruction set (see CMakeLists.txt); no standard-library
// templates (see als_kernels.hpp). Factor rows are padded to whole SIMD vectors, so every
// update loop runs over full vectors with no remainder.
#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#else
#include "sse_fallback.hpp"  // the same 4-lane operations in portable vector code
#endif

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
typedef int32_t IntVector __attribute__((vector_size(kVectorBytes)));
constexpr int64_t kLanes = kVectorBytes / sizeof(float);

inline FloatVector load(const float* p) {
  FloatVector v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, FloatVector v) { __builtin_memcpy(p, &v, sizeof(v)); }

// float16 rows (SgdModel::user_factors_float16): kLanes half-precision values widened to
// float32, and rounded back to the nearest float16 (ties to even) on store. The baseline copy
// converts one value at a time, as correctly rounded as F16C's conversions, so every copy
// stores the same bits.
inline FloatVector load(const uint16_t* p) {
#if defined(__AVX512F__)
  return (FloatVector)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(__AVX__) && defined(__F16C__)
  return (FloatVector)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  FloatVector v;
  for (int64_t k = 0; k < kLanes; ++k) {
    _Float16 half;
    __builtin_memcpy(&half, p + k, sizeof(half));
    v[k] = static_cast<float>(half);
  }
  return v;
#endif
}
inline void store(uint16_t* p, FloatVector v) {
#if defined(__AVX512F__)
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT));
#elif defined(__AVX__) && defined(__F16C__)
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT));
#else
  for (int64_t k = 0; k < kLanes; ++k) {
    const _Float16 half = static_cast<_Float16>(v[k]);
    __builtin_memcpy(p + k, &half, sizeof(half));
  }
#endif
}

// The model's factor rows in their storage type (float, or uint16_t for float16 bits).
template <typename Row>
inline Row* user_rows(const SgdModel& m) {
  if constexpr (sizeof(Row) == sizeof(float)) return m.user_factors;
  else return m.user_factors_float16;
}
template <typename Row>
inline Row* item_rows(const SgdModel& m) {
  if constexpr (sizeof(Row) == sizeof(float)) return m.item_factors;
  else return m.item_factors_float16;
}
// A broadcast (FloatVector{} + x would cost an addition of zero, which the compiler must keep
// for x = -0, on the critical path of every update).
inline FloatVector splat(float x) {
#if defined(__AVX512F__)
  return (FloatVector)_mm512_set1_ps(x);
#elif defined(__AVX__)
  return (FloatVector)_mm256_set1_ps(x);
#else
  return (FloatVector)_mm_set1_ps(x);
#endif
}

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

// The sum of product(0) + ... + product(vectors - 1), vector products of a row pair, in four
// partial sums: the prediction starts every update's chain of dependent steps, and one sum
// would make it as long as the row (f / lanes multiply-adds, one after the other). Rows in
// memory and rows held in registers both go through here, so both add in the same order.
template <typename Product>
inline float four_chain_dot(int64_t vectors, Product product) {
  FloatVector a0 = FloatVector{}, a1 = FloatVector{}, a2 = FloatVector{}, a3 = FloatVector{};
  int64_t j = 0;
  for (; j + 4 <= vectors; j += 4) {
    a0 += product(j);
    a1 += product(j + 1);
    a2 += product(j + 2);
    a3 += product(j + 3);
  }
  if (j + 2 <= vectors) {  // short rows (32 floats in 16 lanes): still two chains
    a0 += product(j);
    a1 += product(j + 1);
    j += 2;
  }
  if (j < vectors) a0 += product(j);
  return horizontal_sum((a0 + a1) + (a2 + a3));
}

// p . q over padded rows (stride a multiple of the vector width).
template <typename Row>
inline float padded_dot(const Row* p, const Row* q, int64_t stride) {
  return four_chain_dot(stride / kLanes, [&](int64_t j) { return load(p + j * kLanes) * load(q + j * kLanes); });
}

template <typename Row>
inline float prediction(const SgdModel& m, int64_t u, int64_t i) {
  float value =
      m.global_mean + padded_dot(user_rows<Row>(m) + u * m.stride, item_rows<Row>(m) + i * m.stride, m.stride);
  if (m.user_biases) value += m.user_biases[u];
  if (m.item_biases) value += m.item_biases[i];
  return value;
}

// Reduces a vector to four lanes by adding halves, as horizontal_sum does first.
inline __m128 quarter(FloatVector v) {
#if defined(__AVX512F__)
  const __m256 low = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)v), 0));
  const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)v), 1));
  const __m256 half = _mm256_add_ps(high, low);
  return _mm_add_ps(_mm256_extractf128_ps(half, 1), _mm256_castps256_ps128(half));
#elif defined(__AVX__)
  return _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
#else
  return (__m128)v;
#endif
}

// The horizontal sums of four vectors in the lanes of one: lane k is bitwise
// horizontal_sum of the k-th (the same additions in the same order), for a third of the
// instructions.
inline __m128 four_sums(FloatVector a, FloatVector b, FloatVector c, FloatVector d) {
  const __m128 qa = quarter(a), qb = quarter(b), qc = quarter(c), qd = quarter(d);
  // [a0 + a2, b0 + b2, a1 + a3, b1 + b3], and the same of c and d.
  const __m128 ab = _mm_add_ps(_mm_unpacklo_ps(qa, qb), _mm_unpackhi_ps(qa, qb));
  const __m128 cd = _mm_add_ps(_mm_unpacklo_ps(qc, qd), _mm_unpackhi_ps(qc, qd));
  return _mm_add_ps(_mm_movelh_ps(ab, cd), _mm_movehl_ps(cd, ab));
}

inline float lane(__m128 v, int k) {
  float lanes[4];
  _mm_storeu_ps(lanes, v);
  return lanes[k];
}

// What a block's updates read of the model, held in locals: the factor stores could alias
// SgdModel's fields, and every field would be reloaded after every store.
struct SquaredStep {
  void* user_factors;  // float or float16 rows, as the update's Row says
  void* item_factors;
  float* user_biases;
  float* item_biases;
  float* user_sums;
  float* item_sums;
  int64_t stride;
  int64_t slow_end;  // the slow dimensions are [0, slow_end) (all of them without split rates)
  // [0, slow_vectors_end) holds slow dimensions only and [fast_begin, stride) fast ones only;
  // when slow_end falls inside a vector, that vector, [slow_vectors_end, fast_begin), holds both.
  int64_t slow_vectors_end, fast_begin;
  float global_mean, eta, lambda, bias_lambda;
  // Per lane of the packed sums: 1 / the dimensions each sum averages over (a multiplication
  // ends every update's chain of dependent steps where a division took three times as long).
  __m128 inverse_dimensions;
  // For the vector holding both: all bits set in its slow lanes (slow_bits) or in its fast
  // ones (fast_bits).
  IntVector slow_bits, fast_bits;
  // Split rates: all bits set, or in the slow-only epoch the slow lanes only ([1, 0, 1, 0] of
  // the packed sums and rates), so that the fast dimensions neither move nor add to their sums.
  __m128 keep;
};

inline SquaredStep squared_step(const SgdModel& m, const SgdRates& rates, bool slow_only) {
  const bool split = m.user_rate_sums && m.slow_factors > 0;
  const float slow = static_cast<float>(split ? m.slow_factors : m.factors);
  const float fast = split ? static_cast<float>(m.factors - m.slow_factors) : 1.0f;
  const int64_t slow_end = split ? m.slow_factors : m.stride;
  const int64_t slow_vectors_end = slow_end / kLanes * kLanes;
  IntVector slow_bits = IntVector{}, fast_bits = IntVector{};
  for (int64_t lane = 0; lane < kLanes; ++lane) {
    const bool is_slow = slow_vectors_end + lane < slow_end;
    slow_bits[lane] = is_slow ? -1 : 0;
    fast_bits[lane] = is_slow ? 0 : -1;
  }
  const __m128 all = _mm_castsi128_ps(_mm_set1_epi32(-1));
  const __m128 keep = slow_only ? _mm_castsi128_ps(_mm_setr_epi32(-1, 0, -1, 0)) : all;
  void* users = m.user_factors_float16 ? static_cast<void*>(m.user_factors_float16) : m.user_factors;
  void* items = m.item_factors_float16 ? static_cast<void*>(m.item_factors_float16) : m.item_factors;
  return SquaredStep{users, items, m.user_biases, m.item_biases, m.user_rate_sums,
                     m.item_rate_sums, m.stride, slow_end, slow_vectors_end,
                     slow_vectors_end < slow_end ? slow_vectors_end + kLanes : slow_vectors_end, m.global_mean,
                     rates.learning_rate, rates.regularization, rates.bias_regularization,
                     _mm_setr_ps(1.0f / slow, 1.0f / fast, 1.0f / slow, 1.0f / fast), slow_bits, fast_bits, keep};
}

// One vector of a row pair takes a step at the given rates (gq from the old p, gp from the
// old q); the squared gradients are added to user_gradient and item_gradient (when ADAPTIVE).
template <bool ADAPTIVE>
inline void step(FloatVector& pj, FloatVector& qj, FloatVector error, FloatVector lambda, FloatVector rate_u,
                 FloatVector rate_i, FloatVector& user_gradient, FloatVector& item_gradient) {
  const FloatVector gp = lambda * pj - error * qj;
  const FloatVector gq = lambda * qj - error * pj;
  pj = pj - rate_u * gp;
  qj = qj - rate_i * gq;
  if (ADAPTIVE) {
    user_gradient += gp * gp;
    item_gradient += gq * gq;
  }
}

// eta / sqrt(sums) (sums >= 1), from the reciprocal square root estimate y (within 0.04%)
// refined by one Newton step, y (1.5 - 0.5 sums y^2), to about 2e-7: the estimate and three
// multiplications take half the latency of a square root and a division, and the rates start
// every update's chain of dependent steps (through the row's next update, which reads the
// sums this one writes). The estimate is the processor's, so the last bit can differ between
// processor makers. (Other architectures divide: sse_fallback.hpp has no estimate.)
inline __m128 rate_of_sums(__m128 sums, float eta) {
#if defined(__x86_64__) || defined(_M_X64)
  const __m128 estimate = _mm_rsqrt_ps(sums);
  const __m128 half_sums = _mm_mul_ps(sums, _mm_set1_ps(0.5f));
  const __m128 correction = _mm_sub_ps(_mm_set1_ps(1.5f), _mm_mul_ps(_mm_mul_ps(half_sums, estimate), estimate));
  return _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(eta), estimate), correction);
#else
  return _mm_div_ps(_mm_set1_ps(eta), _mm_sqrt_ps(sums));
#endif
}

// The adaptive schedule's state of a row pair: the four rates eta / sqrt(G), packed
// [user slow, user fast, item slow, item fast], computed for all of them at once. Without
// split rates the fast lanes are idle.
template <bool SPLIT>
struct RowRates {
  float* user_sums;
  float* item_sums;
  __m128 sums, rates;

  RowRates() : user_sums(nullptr), item_sums(nullptr), sums(_mm_setzero_ps()), rates(_mm_setzero_ps()) {}
  RowRates(const SquaredStep& s, int64_t u, int64_t i)
      : user_sums(s.user_sums + (SPLIT ? 2 * u : u)), item_sums(s.item_sums + (SPLIT ? 2 * i : i)) {
    sums = SPLIT ? _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64*>(user_sums)),
                                reinterpret_cast<const __m64*>(item_sums))
                 : _mm_setr_ps(user_sums[0], 1.0f, item_sums[0], 1.0f);
    rates = rate_of_sums(sums, s.eta);
    if (SPLIT) rates = _mm_and_ps(rates, s.keep);
  }

  // G += mean squared gradient, each sum over its own dimensions (an idle lane adds 0).
  void add(const SquaredStep& s, FloatVector user_slow, FloatVector user_fast, FloatVector item_slow,
           FloatVector item_fast) const {
    __m128 increments = _mm_mul_ps(four_sums(user_slow, user_fast, item_slow, item_fast), s.inverse_dimensions);
    if (SPLIT) increments = _mm_and_ps(increments, s.keep);
    const __m128 updated = _mm_add_ps(sums, increments);
    if (SPLIT) {
      _mm_storel_pi(reinterpret_cast<__m64*>(user_sums), updated);
      _mm_storeh_pi(reinterpret_cast<__m64*>(item_sums), updated);
    } else {
      user_sums[0] = lane(updated, 0);
      item_sums[0] = lane(updated, 2);
    }
  }
};

inline FloatVector bits_and(FloatVector v, IntVector bits) { return (FloatVector)((IntVector)v & bits); }

// The vector holding both slow and fast dimensions, from memory (any split): each lane steps
// at its own part's rate and adds its squared gradients to its own part's sums, the slow
// lanes being those of slow_bits and the fast ones those of fast_bits.
inline void step_shared(FloatVector& pj, FloatVector& qj, FloatVector error, FloatVector lambda, float eta_u,
                        float eta_i, float eta_u_fast, float eta_i_fast, IntVector slow_bits, IntVector fast_bits,
                        FloatVector& user_slow, FloatVector& item_slow, FloatVector& user_fast,
                        FloatVector& item_fast) {
  const FloatVector rate_u = bits_and(splat(eta_u), slow_bits) + bits_and(splat(eta_u_fast), fast_bits);
  const FloatVector rate_i = bits_and(splat(eta_i), slow_bits) + bits_and(splat(eta_i_fast), fast_bits);
  const FloatVector gp = lambda * pj - error * qj;
  const FloatVector gq = lambda * qj - error * pj;
  pj = pj - rate_u * gp;
  qj = qj - rate_i * gq;
  const FloatVector gp_slow = bits_and(gp, slow_bits), gq_slow = bits_and(gq, slow_bits);
  const FloatVector gp_fast = bits_and(gp, fast_bits), gq_fast = bits_and(gq, fast_bits);
  user_slow += gp_slow * gp_slow;
  item_slow += gq_slow * gq_slow;
  user_fast += gp_fast * gp_fast;
  item_fast += gq_fast * gq_fast;
}

// The first SLOW lanes of `slow`, the rest of `fast` (SLOW fixed at compile time: an
// immediate blend, no mask register).
template <int SLOW>
inline FloatVector slow_lanes_of(FloatVector slow, FloatVector fast) {
#if defined(__AVX512F__)
  return (FloatVector)_mm512_mask_blend_ps(static_cast<__mmask16>((1u << SLOW) - 1), (__m512)fast, (__m512)slow);
#elif defined(__AVX__)
  return (FloatVector)_mm256_blend_ps((__m256)fast, (__m256)slow, (1 << SLOW) - 1);
#else
  const __m128 bits = _mm_castsi128_ps(_mm_setr_epi32(SLOW > 0 ? -1 : 0, SLOW > 1 ? -1 : 0, SLOW > 2 ? -1 : 0, 0));
  return (FloatVector)_mm_or_ps(_mm_and_ps(bits, (__m128)slow), _mm_andnot_ps(bits, (__m128)fast));
#endif
}

// acc += v * v over the lanes of the fast part (FAST) or the slow part of a vector whose
// first SLOW lanes are slow.
template <int SLOW, bool FAST>
inline FloatVector add_squares(FloatVector acc, FloatVector v) {
#if defined(__AVX512F__)
  const unsigned slow = (1u << SLOW) - 1;  // a masked multiply-add costs what a plain one does
  return (FloatVector)_mm512_mask3_fmadd_ps((__m512)v, (__m512)v, (__m512)acc,
                                             static_cast<__mmask16>(FAST ? ~slow : slow));
#else
  const FloatVector part = FAST ? slow_lanes_of<SLOW>(FloatVector{}, v) : slow_lanes_of<SLOW>(v, FloatVector{});
  return acc + part * part;
#endif
}

// The register path's vector holding both slow and fast dimensions (the first SLOW lanes
// slow), as step_shared.
template <int SLOW>
inline void step_shared_in_registers(FloatVector& pj, FloatVector& qj, FloatVector error, FloatVector lambda,
                                     float eta_u, float eta_i, float eta_u_fast, float eta_i_fast,
                                     FloatVector& user_slow, FloatVector& item_slow, FloatVector& user_fast,
                                     FloatVector& item_fast) {
  const FloatVector rate_u = slow_lanes_of<SLOW>(splat(eta_u), splat(eta_u_fast));
  const FloatVector rate_i = slow_lanes_of<SLOW>(splat(eta_i), splat(eta_i_fast));
  const FloatVector gp = lambda * pj - error * qj;
  const FloatVector gq = lambda * qj - error * pj;
  pj = pj - rate_u * gp;
  qj = qj - rate_i * gq;
  user_slow = add_squares<SLOW, false>(user_slow, gp);
  item_slow = add_squares<SLOW, false>(item_slow, gq);
  user_fast = add_squares<SLOW, true>(user_fast, gp);
  item_fast = add_squares<SLOW, true>(item_fast, gq);
}

// The rows' vectors [first, last) in place in memory (any stride).
template <bool ADAPTIVE, typename Row>
inline void step_in_memory(Row* p, Row* q, int64_t first, int64_t last, FloatVector error, FloatVector lambda,
                           float eta_u, float eta_i, FloatVector& user_gradient, FloatVector& item_gradient) {
  const FloatVector rate_u = splat(eta_u), rate_i = splat(eta_i);
  for (int64_t j = first; j < last; j += kLanes) {
    FloatVector pj = load(p + j), qj = load(q + j);
    step<ADAPTIVE>(pj, qj, error, lambda, rate_u, rate_i, user_gradient, item_gradient);
    store(p + j, pj);
    store(q + j, qj);
  }
}

// The rows' vectors [FIRST, LAST) held in registers, then stored.
template <bool ADAPTIVE, int FIRST, int LAST, typename Row>
inline void step_in_registers(Row* p, Row* q, FloatVector* pv, FloatVector* qv, FloatVector error,
                              FloatVector lambda, float eta_u, float eta_i, FloatVector& user_gradient,
                              FloatVector& item_gradient) {
  const FloatVector rate_u = splat(eta_u), rate_i = splat(eta_i);
  for (int j = FIRST; j < LAST; ++j) {
    step<ADAPTIVE>(pv[j], qv[j], error, lambda, rate_u, rate_i, user_gradient, item_gradient);
    store(p + j * kLanes, pv[j]);
    store(q + j * kLanes, qv[j]);
  }
}

// The register path's layout of a split row (kSgdSlowFactors slow dimensions): whole vectors of
// slow dimensions, then possibly one vector holding both, then whole vectors of fast ones.
constexpr int kSlowVectors = static_cast<int>(kSgdSlowFactors / kLanes);
constexpr bool kSplitVector = kSgdSlowFactors % kLanes != 0;
constexpr int kFastVectorsBegin = kSlowVectors + (kSplitVector ? 1 : 0);

// One squared-loss update; returns the error before it. ADAPTIVE, BIASES and SPLIT (two rate
// sums per row, see SgdModel::slow_factors) are fixed for a whole epoch. NV > 0: rows of
// exactly NV vectors, read once into registers for both the prediction and the step (with
// SPLIT, kSgdSlowFactors slow dimensions); NV = 0: any stride and any split, read from memory
// twice. Both compute the same operations in the same order.
// Always inlined into the loop over ratings: as a call, the step's fields and constants would be
// reloaded for every update (GCC stops inlining it once the split vector is added).
template <bool ADAPTIVE, bool BIASES, bool SPLIT, int NV, typename Row>
__attribute__((always_inline)) inline float squared_update(const SquaredStep& s, int64_t u, int64_t i, float r,
                                                           bool slow_only) {
  Row* p = static_cast<Row*>(s.user_factors) + u * s.stride;
  Row* q = static_cast<Row*>(s.item_factors) + i * s.stride;
  FloatVector pv[NV > 0 ? NV : 1], qv[NV > 0 ? NV : 1];
  float predicted = s.global_mean;
  if constexpr (NV > 0) {
    for (int j = 0; j < NV; ++j) {
      pv[j] = load(p + j * kLanes);
      qv[j] = load(q + j * kLanes);
    }
    predicted += four_chain_dot(NV, [&](int64_t j) { return pv[j] * qv[j]; });
  } else {
    predicted += padded_dot(p, q, s.stride);
  }
  if (BIASES) predicted += s.user_biases[u] + s.item_biases[i];
  const float e = r - predicted;
  const FloatVector error = splat(e), lambda = splat(s.lambda);
  FloatVector user_slow = FloatVector{}, item_slow = FloatVector{};
  FloatVector user_fast = FloatVector{}, item_fast = FloatVector{};
  float eta_u = s.eta, eta_i = s.eta;
  const RowRates<SPLIT> rates = ADAPTIVE ? RowRates<SPLIT>(s, u, i) : RowRates<SPLIT>();
  if (ADAPTIVE) {
    eta_u = lane(rates.rates, 0);
    eta_i = lane(rates.rates, 2);
  }
  const float eta_u_fast = SPLIT ? lane(rates.rates, 1) : 0.0f, eta_i_fast = SPLIT ? lane(rates.rates, 3) : 0.0f;
  constexpr int slow_vectors = SPLIT ? kSlowVectors : NV;
  if constexpr (NV > 0)
    step_in_registers<ADAPTIVE, 0, slow_vectors>(p, q, pv, qv, error, lambda, eta_u, eta_i, user_slow, item_slow);
  else
    step_in_memory<ADAPTIVE>(p, q, 0, s.slow_vectors_end, error, lambda, eta_u, eta_i, user_slow, item_slow);
  if constexpr (SPLIT) {
    // The vector shared by slow and fast dimensions, if the split falls inside one.
    if constexpr (NV > 0 && kSplitVector) {
      step_shared_in_registers<static_cast<int>(kSgdSlowFactors % kLanes)>(
          pv[kSlowVectors], qv[kSlowVectors], error, lambda, eta_u, eta_i, eta_u_fast, eta_i_fast, user_slow,
          item_slow, user_fast, item_fast);
      store(p + kSlowVectors * kLanes, pv[kSlowVectors]);
      store(q + kSlowVectors * kLanes, qv[kSlowVectors]);
    } else if constexpr (NV == 0) {
      if (s.fast_begin != s.slow_vectors_end) {
        FloatVector pj = load(p + s.slow_vectors_end), qj = load(q + s.slow_vectors_end);
        step_shared(pj, qj, error, lambda, eta_u, eta_i, eta_u_fast, eta_i_fast, s.slow_bits, s.fast_bits,
                    user_slow, item_slow, user_fast, item_fast);
        store(p + s.slow_vectors_end, pj);
        store(q + s.slow_vectors_end, qj);
      }
    }
  }
  if (BIASES) {
    s.user_biases[u] -= eta_u * (s.bias_lambda * s.user_biases[u] - e);
    s.item_biases[i] -= eta_i * (s.bias_lambda * s.item_biases[i] - e);
  }
  if (!ADAPTIVE) return e;
  if (SPLIT && !slow_only) {
    if constexpr (NV > 0)
      step_in_registers<true, kFastVectorsBegin, NV, Row>(p, q, pv, qv, error, lambda, eta_u_fast, eta_i_fast,
                                                      user_fast, item_fast);
    else
      step_in_memory<true>(p, q, s.fast_begin, s.stride, error, lambda, eta_u_fast, eta_i_fast, user_fast,
                           item_fast);
  }
  rates.add(s, user_slow, user_fast, item_slow, item_fast);
  return e;
}

// Squared-loss updates of ratings [first, last) of the grid; returns their squared errors.
template <bool ADAPTIVE, bool BIASES, bool SPLIT, int NV, typename Row>
double squared_updates(const SquaredStep& s, const RatingGrid& grid, int64_t first, int64_t last, bool slow_only) {
  const int32_t* users = grid.users;
  const int32_t* items = grid.items;
  const float* values = grid.values;
  // The item rows of a block are scattered: ask for a later rating's rows while this one is
  // updated (the user rows mostly repeat, ratings being sorted by user).
  constexpr int64_t ahead = 4;
  double sum = 0.0;
  for (int64_t k = first; k < last; ++k) {
    if (k + ahead < last) {
      const Row* next_item = static_cast<const Row*>(s.item_factors) + items[k + ahead] * s.stride;
      const Row* next_user = static_cast<const Row*>(s.user_factors) + users[k + ahead] * s.stride;
      for (int64_t j = 0; j < s.stride; j += 64 / sizeof(Row)) {  // a 64-byte line at a time
        __builtin_prefetch(next_item + j, 1);
        __builtin_prefetch(next_user + j, 1);
      }
    }
    const float e = squared_update<ADAPTIVE, BIASES, SPLIT, NV, Row>(s, users[k], items[k], values[k], slow_only);
    sum += double(e) * double(e);
  }
  return sum;
}

// Rows of up to this many vectors are held in registers (half the register file for the
// pair of rows, so the rest of an update need not spill).
constexpr int kRegisterVectors = kVectorBytes == 64 ? 8 : 4;

// Whether rows of NV vectors can take the register path: with SPLIT, they must hold the
// slow dimensions and the vector shared with the fast ones.
template <bool SPLIT, int NV>
constexpr bool register_rows() {
  return NV <= kRegisterVectors && (!SPLIT || NV >= kFastVectorsBegin);
}

template <bool ADAPTIVE, bool BIASES, bool SPLIT, typename Row>
double squared_updates_of_width(const SquaredStep& s, const RatingGrid& grid, int64_t first, int64_t last,
                                bool slow_only) {
  const int64_t vectors = s.stride / kLanes;
  // The register path has SPLIT's slow dimensions fixed at kSgdSlowFactors, as recore.SGD sets them.
  const bool registers = !SPLIT || s.slow_end == kSgdSlowFactors;
  if constexpr (register_rows<SPLIT, 1>())
    if (registers && vectors == 1) return squared_updates<ADAPTIVE, BIASES, SPLIT, 1, Row>(s, grid, first, last, slow_only);
  if constexpr (register_rows<SPLIT, 2>())
    if (registers && vectors == 2) return squared_updates<ADAPTIVE, BIASES, SPLIT, 2, Row>(s, grid, first, last, slow_only);
  if constexpr (register_rows<SPLIT, 4>())
    if (registers && vectors == 4) return squared_updates<ADAPTIVE, BIASES, SPLIT, 4, Row>(s, grid, first, last, slow_only);
  if constexpr (register_rows<SPLIT, 8>())
    if (registers && vectors == 8) return squared_updates<ADAPTIVE, BIASES, SPLIT, 8, Row>(s, grid, first, last, slow_only);
  return squared_updates<ADAPTIVE, BIASES, SPLIT, 0, Row>(s, grid, first, last, slow_only);
}

template <typename Row>
double squared_block_of(const SquaredStep& s, const SgdModel& m, const RatingGrid& grid, int64_t first, int64_t last,
                        bool slow_only) {
  const bool adaptive = m.user_rate_sums != nullptr, biases = m.user_biases != nullptr;
  if (adaptive && m.slow_factors > 0)
    return biases ? squared_updates_of_width<true, true, true, Row>(s, grid, first, last, slow_only)
                  : squared_updates_of_width<true, false, true, Row>(s, grid, first, last, slow_only);
  if (adaptive) return biases ? squared_updates_of_width<true, true, false, Row>(s, grid, first, last, slow_only)
                              : squared_updates_of_width<true, false, false, Row>(s, grid, first, last, slow_only);
  return biases ? squared_updates_of_width<false, true, false, Row>(s, grid, first, last, slow_only)
                : squared_updates_of_width<false, false, false, Row>(s, grid, first, last, slow_only);
}

inline double squared_block(const RatingGrid& grid, const SgdModel& m, const SgdRates& rates, int64_t first,
                            int64_t last, bool slow_only) {
  const SquaredStep s = squared_step(m, rates, slow_only);
  return m.user_factors_float16 ? squared_block_of<uint16_t>(s, m, grid, first, last, slow_only)
                                : squared_block_of<float>(s, m, grid, first, last, slow_only);
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
    // The bands of the block this thread last released: with more threads, a free block in
    // one of them is taken before any other, so that its rows are still in this core's
    // caches. One thread takes block_order as it is (as its reference tests require).
    int64_t last_user_band = -1, last_item_band = -1;
    const bool affine = args.threads > 1;
    for (;;) {
      int64_t block = -1, other = -1;
      lock.acquire();
      if (untaken == 0) {
        lock.release();
        break;
      }
      for (int64_t k = 0; k < blocks; ++k) {
        const int64_t b = args.block_order[k];
        if (args.block_taken[b] || args.user_band_busy[b / bands] || args.item_band_busy[b % bands]) continue;
        if (!affine || b / bands == last_user_band || b % bands == last_item_band) {
          block = b;
          break;
        }
        if (other < 0) other = b;
      }
      if (block < 0) block = other;
      if (block >= 0) {
        args.block_taken[block] = 1;
        args.user_band_busy[block / bands] = 1;
        args.item_band_busy[block % bands] = 1;
        --untaken;
      }
      lock.release();
      if (block < 0) continue;  // every free block shares a band with a busy one: try again
      last_user_band = block / bands;
      last_item_band = block % bands;
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
      const float predicted = args.model.user_factors_float16
                                  ? prediction<uint16_t>(args.model, args.users[k], args.items[k])
                                  : prediction<float>(args.model, args.users[k], args.items[k]);
      const double e = double(args.values[k]) - double(predicted);
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
