// SGD dispatchers: check arguments, allocate the scheduler's flags, and run the kernel copy
// for the active instruction set.
#include "recore/sgd.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "dispatch.hpp"
#include "recore/sgd_kernels.hpp"

namespace recore {
namespace {

using detail::AlignedBuffer;
using detail::resolve_threads;

// Rows of up to this many floats train faster in 256-bit vectors than in 512-bit ones, so
// AVX-512 CPUs run the AVX2 copy of the squared-loss epoch for them: each update's horizontal
// sums (the prediction, the rate sums) cost more in 512 bits, and a narrow row has little
// other work to share them with. Measured on an AVX-512 Xeon, one thread: 16 to 48 factors
// 9-17% faster in AVX2, 64 factors 18% slower.
constexpr int64_t kNarrowRowFloats = 48;

void check_model(const SgdModel& m) {
  if (m.users < 0 || m.items < 0 || m.factors < 1 || m.stride < m.factors || m.stride % kSgdRowFloats != 0)
    throw std::invalid_argument("SGD factors must be padded to a multiple of 16 values");
  const bool halves = m.user_factors_float16 != nullptr || m.item_factors_float16 != nullptr;
  if (halves && (m.user_factors || m.item_factors))
    throw std::invalid_argument("SGD factors are stored either in float32 or in float16, not both");
  if (halves ? (m.users > 0 && !m.user_factors_float16) || (m.items > 0 && !m.item_factors_float16)
             : (m.users > 0 && !m.user_factors) || (m.items > 0 && !m.item_factors))
    throw std::invalid_argument("SGD factor matrices are missing");
  if ((m.user_rate_sums == nullptr) != (m.item_rate_sums == nullptr))
    throw std::invalid_argument("the adaptive schedule needs both user and item rate sums");
  if (m.slow_factors < 0 || (m.slow_factors > 0 && m.slow_factors >= m.factors))
    throw std::invalid_argument("slow_factors must be 0 or below factors");
}

// BPR's updates read and write float32 rows only.
void check_float32_rows(const SgdModel& m) {
  if (m.user_factors_float16 || m.item_factors_float16)
    throw std::invalid_argument("BPR trains float32 factors only, not float16");
}

}  // namespace

double sgd_squared_epoch(const RatingGrid& grid, const int32_t* block_order, SgdModel& model, const SgdRates& rates,
                         int num_threads, bool slow_only) {
  check_model(model);
  if (grid.blocks < 1) throw std::invalid_argument("the rating grid needs at least one block");
  SgdEpochArgs args;
  args.grid = grid;
  args.block_order = block_order;
  args.model = model;
  args.rates = rates;
  args.slow_only = slow_only && model.slow_factors > 0;
  // More threads than bands could never all hold a block at once.
  args.threads = static_cast<int>(std::min<int64_t>(resolve_threads(num_threads), grid.blocks));
  AlignedBuffer<unsigned char> flags(2 * grid.blocks + grid.blocks * grid.blocks);
  args.user_band_busy = flags.get();
  args.item_band_busy = flags.get() + grid.blocks;
  args.block_taken = flags.get() + 2 * grid.blocks;
  double squared_error = 0.0;
  args.squared_error = &squared_error;
  if (model.stride <= kNarrowRowFloats)
    detail::run_kernel<SgdEpochArgs>(args, &baseline::sgd_squared_epoch_kernel, RECORE_AVX2(sgd_squared_epoch_kernel),
                                     nullptr);
  else
    RECORE_RUN(args, sgd_squared_epoch_kernel);
  return squared_error;
}

int64_t sgd_bpr_triples(const int32_t* users, const int32_t* positives, const int32_t* negatives, int64_t count,
                        SgdModel& model, const SgdRates& rates) {
  check_model(model);
  check_float32_rows(model);
  SgdTripleArgs args;
  args.users = users;
  args.positives = positives;
  args.negatives = negatives;
  args.count = count;
  args.model = model;
  args.rates = rates;
  int64_t correct = 0;
  args.correct = &correct;
  RECORE_RUN(args, sgd_bpr_triples_kernel);
  return correct;
}

double sgd_bpr_epoch(const int64_t* indptr, const int32_t* indices, int64_t samples, bool popularity_negatives,
                     uint64_t seed, SgdModel& model, const SgdRates& rates, int num_threads) {
  check_model(model);
  check_float32_rows(model);
  if (samples < 0) throw std::invalid_argument("samples must be >= 0");
  if (model.users == 0 || indptr[model.users] == 0 || samples == 0) return 0.0;
  SgdBprEpochArgs args;
  args.indptr = indptr;
  args.indices = indices;
  args.samples = samples;
  args.popularity_negatives = popularity_negatives;
  args.seed = seed;
  args.model = model;
  args.rates = rates;
  args.threads = resolve_threads(num_threads);
  int64_t correct = 0;
  args.correct = &correct;
  RECORE_RUN(args, sgd_bpr_epoch_kernel);
  return double(correct) / double(samples);
}

double sgd_rmse(const int32_t* users, const int32_t* items, const float* values, int64_t count, const SgdModel& model,
                int num_threads) {
  check_model(model);
  if (count <= 0) return 0.0;
  SgdRmseArgs args;
  args.users = users;
  args.items = items;
  args.values = values;
  args.count = count;
  args.model = model;
  args.threads = resolve_threads(num_threads);
  args.chunks = std::min<int64_t>(count, 256);
  AlignedBuffer<double> partials(args.chunks);
  args.partials = partials.get();
  double squared_error = 0.0;
  args.squared_error = &squared_error;
  RECORE_RUN(args, sgd_rmse_kernel);
  return std::sqrt(squared_error / double(count));
}

}  // namespace recore
