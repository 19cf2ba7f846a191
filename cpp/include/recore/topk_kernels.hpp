// Declarations of the per-instruction-set top-k kernels (see als_kernels.hpp for how the
// copies are built and chosen).
#pragma once

#include <cstdint>

#include "recore/csr.hpp"
#include "recore/topk.hpp"

namespace recore {

// One candidate of a query's running selection. Better means a higher score, or the same
// score and a lower id: a total order, so the k best are unique whatever the visiting order.
struct TopkCandidate {
  float score;
  int64_t id;
};

template <typename I, typename O>
struct TopkArgs {
  MatrixView<const float> queries;  // nq x f
  MatrixView<const float> items;    // searched rows x f
  const float* item_panels = nullptr;  // the same rows in panels (see topk.hpp), or nullptr
  // The panels in bfloat16, for single queries: approximate scores, then an exact re-rank
  // of every candidate the error bound cannot rule out. nullptr: float32 only.
  const uint16_t* item_panels_bfloat16 = nullptr;
  float max_item_norm = 0.0f;  // largest Euclidean norm of an item row, rounded up
  int64_t k = 0;                    // output columns
  int64_t keep = 0;                 // min(k, searched rows): candidates that can exist
  // A query's candidates are kept in a reservoir of `capacity` entries; when it fills,
  // the `keep` best are selected and the rest dropped. capacity <= keep never compacts.
  int64_t capacity = 0;
  // Instead, for small k: a heap of exactly `keep` candidates (capacity == keep), whose
  // threshold is always the keep-th best.
  bool use_heap = false;
  int64_t block_queries = 0;        // queries a thread holds at once (batch path)
  int64_t item_block = 0;           // item rows scored against them while in cache
  ItemFilter filter;
  Exclusions<I> exclusions;
  TopkOutput<O> output;
  // Per thread: block_queries * capacity candidates, then block_queries * (f + 1) * 2
  // floats... as laid out by topk_workspace_bytes.
  unsigned char* workspace = nullptr;
  int64_t workspace_per_thread = 0;  // bytes, a multiple of 64
  int threads = 1;
  // Where not null, the single-query path writes whether it saw every searched item row
  // hold finite values only: true only where it scored rows in the row layout (panels are
  // made from checked items). The batch path leaves it untouched.
  bool* items_finite = nullptr;
};

// Widest query block a kernel copy uses (queries side by side in SIMD lanes): the
// workspace is sized for it whatever copy runs.
constexpr int64_t kTopkMaxLaneQueries = 32;

inline int64_t round_up_64(int64_t bytes) { return (bytes + 63) / 64 * 64; }

// Bytes of one thread's workspace, in the order the kernels carve it.
inline int64_t topk_workspace_bytes(int64_t block_queries, int64_t capacity, int64_t factors) {
  const int64_t lane_queries = (block_queries + kTopkMaxLaneQueries - 1) / kTopkMaxLaneQueries * kTopkMaxLaneQueries;
  return round_up_64(block_queries * capacity * int64_t(sizeof(TopkCandidate)))  // reservoirs
         + round_up_64(lane_queries * factors * int64_t(sizeof(float)))         // packed queries
         + round_up_64(lane_queries * int64_t(sizeof(float)))                   // thresholds
         + 3 * round_up_64(block_queries * int64_t(sizeof(int64_t)));           // counts, threshold ids, cursors
}

#define RECORE_DECLARE_TOPK_TARGET(NS)            \
  namespace NS {                                  \
  template <typename I, typename O>               \
  void topk_batch(const TopkArgs<I, O>& args);    \
  template <typename I, typename O>               \
  void topk_single(const TopkArgs<I, O>& args);   \
  }

RECORE_DECLARE_TOPK_TARGET(baseline)
RECORE_DECLARE_TOPK_TARGET(avx2)
RECORE_DECLARE_TOPK_TARGET(avx512)
#undef RECORE_DECLARE_TOPK_TARGET

}  // namespace recore
