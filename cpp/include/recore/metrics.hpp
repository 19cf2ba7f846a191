// Ranking metrics at k over precomputed top-k lists (see recore.evaluation for the exact
// definitions). Users without relevant items are skipped.
#pragma once

#include <cstdint>

namespace recore {

struct RankingTotals {
  double precision = 0, recall = 0, ndcg = 0, map = 0, hit_rate = 0, auc = 0;
  int64_t users = 0;       // users with at least one relevant item
  int64_t auc_users = 0;   // of those, users with at least one non-relevant candidate
  int64_t covered_items = 0;
};

// ids: users x k row-major, -1 for padding, every id < n_items. relevant_*: CSR (users rows)
// of relevant item ids, sorted within rows. candidates[u]: items user u could be recommended
// (n_items minus the user's training items), or nullptr for n_items.
template <typename O, typename I>
RankingTotals ranking_totals(const O* ids, int64_t users, int64_t k, const I* relevant_indptr,
                             const I* relevant_indices, int64_t n_items, const int64_t* candidates, int num_threads);

}  // namespace recore
