// Stochastic gradient descent for matrix factorization.
//
// Squared loss (biased MF): r_hat = mu + b_u + b_i + p_u . q_i, updated one rating at a time:
//     e = r - r_hat
//     p_u -= eta_u (-e q_i + lambda p_u),   q_i -= eta_i (-e p_u + lambda q_i)   (old p_u, q_i)
//     b_u -= eta_u (-e + lambda_b b_u),     b_i -= eta_i (-e + lambda_b b_i)     (with biases)
// BPR (Rendle et al. 2009) for a user u, a positive item i and a negative item j:
//     x = p_u . (q_i - q_j) + b_i - b_j,  d = 1 / (1 + exp(x))
//     p_u += eta_u (d (q_i - q_j) - lambda p_u),  q_i += eta_i (d p_u - lambda q_i),
//     q_j += eta_j (-d p_u - lambda q_j),  b_i += eta_i (d - lambda_b b_i),  b_j += eta_j (-d - lambda_b b_j)
// Learning rates: constant eta, or adaptive per row (Chin et al. 2015): eta_row = eta / sqrt(G_row)
// with G_row starting at 1 and growing by the mean squared gradient of the row's factors after
// each of its updates (for squared loss optionally split in a slow and a fast part, see
// SgdModel::slow_factors).
//
// Factor matrices are padded to whole SIMD vectors (stride fp >= f, zeros beyond f stay zero).
// Squared loss can keep them in IEEE half precision (float16): a row is read into float32
// registers, updated in float32 and rounded to nearest on store, for half the bytes per row.
#pragma once

#include <cstdint>

namespace recore {

// Factor rows are stored with a stride in multiples of this many floats: one 64-byte vector,
// the widest the kernels use.
constexpr int64_t kSgdRowFloats = 16;

// The slow dimensions of the two-speed schedule as recore.SGD sets them (SgdModel::slow_factors):
// LIBMF's first-epoch width in its AVX build (recore.SGD says why not 16). The kernels hold
// rows in registers for this split; any other runs from memory.
constexpr int64_t kSgdSlowFactors = 8;

struct SgdModel {
  float* user_factors = nullptr;  // users x fp
  float* item_factors = nullptr;  // items x fp
  // float16 storage (the bits of IEEE half-precision values, users x fp and items x fp) in
  // place of user_factors / item_factors, which are then nullptr. Squared loss only
  // (sgd_squared_epoch, sgd_rmse): BPR refuses it.
  uint16_t* user_factors_float16 = nullptr;
  uint16_t* item_factors_float16 = nullptr;
  int64_t users = 0, items = 0;
  int64_t factors = 0;            // f
  int64_t stride = 0;             // fp
  float* user_biases = nullptr;   // nullptr: no biases
  float* item_biases = nullptr;   // nullptr: no item biases
  float global_mean = 0.0f;
  float* user_rate_sums = nullptr;  // adaptive schedule: G per user; nullptr: constant rate
  float* item_rate_sums = nullptr;  // adaptive schedule: G per item
  // Adaptive schedule with split rates (squared loss): the first slow_factors dimensions and
  // the rest keep separate sums (2 per row: slow, then fast), and an epoch can update the
  // slow ones only, as LIBMF does in its first epoch. 0: one sum per row over all dimensions;
  // otherwise any count below factors (the split may fall inside a SIMD vector).
  int64_t slow_factors = 0;
};

struct SgdRates {
  float learning_rate = 0.05f;
  float regularization = 0.05f;
  float bias_regularization = 0.05f;
};

// Ratings grouped in a blocks x blocks grid (block b covers user band b / blocks and item band
// b % blocks), block b's ratings at [block_starts[b], block_starts[b + 1]).
struct RatingGrid {
  const int32_t* users = nullptr;
  const int32_t* items = nullptr;
  const float* values = nullptr;
  const int64_t* block_starts = nullptr;  // blocks * blocks + 1
  int64_t blocks = 1;
};

// One epoch of squared-loss SGD over the grid. Threads take blocks in the order of
// `block_order` (a permutation of the blocks * blocks blocks), each the first whose user and
// item bands no other thread holds: no two threads ever update the same factor row, so no
// locks or atomics touch the factors. With one thread the visiting order is exactly
// block_order, then each block's ratings in order. Returns the sum of squared errors of the
// predictions made just before each update.
double sgd_squared_epoch(const RatingGrid& grid, const int32_t* block_order, SgdModel& model, const SgdRates& rates,
                         int num_threads, bool slow_only = false);

// BPR updates for explicit (user, positive, negative) triples, in order, on one thread.
// Returns how many had x > 0 before their update.
int64_t sgd_bpr_triples(const int32_t* users, const int32_t* positives, const int32_t* negatives, int64_t count,
                        SgdModel& model, const SgdRates& rates);

// One epoch of BPR: `samples` triples drawn by Hogwild threads (no locks): a stored entry
// (u, i) uniformly, then a negative j uniformly over items or, with popularity sampling, as
// the item of a uniformly drawn stored entry; j is checked against u's sorted row by binary
// search and redrawn (at most 16 times) while it is one of u's items. Each thread draws from
// its own generator seeded by (seed, thread). Returns the fraction of triples with x > 0
// before their update (a sampled AUC).
double sgd_bpr_epoch(const int64_t* indptr, const int32_t* indices, int64_t samples, bool popularity_negatives,
                     uint64_t seed, SgdModel& model, const SgdRates& rates, int num_threads);

// Root mean squared error of mu + b_u + b_i + p_u . q_i over the given ratings.
double sgd_rmse(const int32_t* users, const int32_t* items, const float* values, int64_t count, const SgdModel& model,
                int num_threads);

}  // namespace recore
