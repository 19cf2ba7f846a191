// Declarations of the per-instruction-set SGD kernels (see als_kernels.hpp for how the copies
// are built and chosen).
#pragma once

#include <cstdint>

#include "recore/sgd.hpp"

namespace recore {

struct SgdEpochArgs {
  RatingGrid grid;
  const int32_t* block_order = nullptr;
  SgdModel model;
  SgdRates rates;
  int threads = 1;
  bool slow_only = false;  // update the slow dimensions only (see SgdModel::slow_factors)
  // Scheduler state, zeroed by the dispatcher: per band "held by a thread", per block "taken".
  unsigned char* user_band_busy = nullptr;  // blocks
  unsigned char* item_band_busy = nullptr;  // blocks
  unsigned char* block_taken = nullptr;     // blocks * blocks
  double* squared_error = nullptr;          // out
};

struct SgdTripleArgs {
  const int32_t* users = nullptr;
  const int32_t* positives = nullptr;
  const int32_t* negatives = nullptr;
  int64_t count = 0;
  SgdModel model;
  SgdRates rates;
  int64_t* correct = nullptr;  // out
};

struct SgdBprEpochArgs {
  const int64_t* indptr = nullptr;  // users + 1
  const int32_t* indices = nullptr; // sorted within each row
  int64_t samples = 0;
  bool popularity_negatives = false;
  uint64_t seed = 0;
  SgdModel model;
  SgdRates rates;
  int threads = 1;
  int64_t* correct = nullptr;  // out
};

struct SgdRmseArgs {
  const int32_t* users = nullptr;
  const int32_t* items = nullptr;
  const float* values = nullptr;
  int64_t count = 0;
  SgdModel model;
  int threads = 1;
  int64_t chunks = 1;
  double* partials = nullptr;  // chunks
  double* squared_error = nullptr;  // out
};

#define RECORE_DECLARE_SGD_TARGET(NS)                    \
  namespace NS {                                         \
  void sgd_squared_epoch_kernel(const SgdEpochArgs& args);     \
  void sgd_bpr_triples_kernel(const SgdTripleArgs& args);      \
  void sgd_bpr_epoch_kernel(const SgdBprEpochArgs& args);      \
  void sgd_rmse_kernel(const SgdRmseArgs& args);               \
  }

RECORE_DECLARE_SGD_TARGET(baseline)
RECORE_DECLARE_SGD_TARGET(avx2)
RECORE_DECLARE_SGD_TARGET(avx512)
#undef RECORE_DECLARE_SGD_TARGET

}  // namespace recore
