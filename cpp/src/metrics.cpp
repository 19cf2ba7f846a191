// Ranking metrics at k: one pass over each user's top-k list, binary searches in the user's
// sorted relevant row; users in fixed chunks summed in order, so results never depend on the
// number of threads.
#include "recore/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "dispatch.hpp"

namespace recore {
namespace {

template <typename I>
bool contains(const I* row, int64_t length, int64_t id) {
  const I* end = row + length;
  const I* found = std::lower_bound(row, end, static_cast<I>(id));
  return found != end && static_cast<int64_t>(*found) == id;
}

}  // namespace

template <typename O, typename I>
RankingTotals ranking_totals(const O* ids, int64_t users, int64_t k, const I* relevant_indptr,
                             const I* relevant_indices, int64_t n_items, const int64_t* candidates, int num_threads) {
  // No users: nothing to sum (and k, which sizes the discount tables, is then bounded by
  // nothing: an empty list of any width is valid).
  if (users == 0) return RankingTotals{};
  const int threads = detail::resolve_threads(num_threads);
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(users, 1024));
  std::vector<RankingTotals> partial(chunks);
  std::vector<unsigned char> recommended(std::max<int64_t>(n_items, 1), 0);
  // 1 / log2(rank + 1), and the ideal DCG of min(k, relevant) hits.
  std::vector<double> discount(k + 1, 0.0), ideal(k + 1, 0.0);
  for (int64_t r = 1; r <= k; ++r) {
    discount[r] = 1.0 / std::log2(double(r) + 1.0);
    ideal[r] = ideal[r - 1] + discount[r];
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    RankingTotals& t = partial[c];
    for (int64_t u = users * c / chunks; u < users * (c + 1) / chunks; ++u) {
      const I* row = relevant_indices + relevant_indptr[u];
      const int64_t relevant = static_cast<int64_t>(relevant_indptr[u + 1] - relevant_indptr[u]);
      const O* list = ids + u * k;
      for (int64_t r = 0; r < k; ++r)
        if (list[r] >= 0) {
#pragma omp atomic write
          recommended[list[r]] = 1;
        }
      if (relevant == 0) continue;
      int64_t hits = 0, negatives_above = 0, listed = 0;
      double dcg = 0, precision_sum = 0, correct_pairs = 0;
      const int64_t candidate_count = candidates ? candidates[u] : n_items;
      const int64_t negatives = candidate_count - relevant;
      for (int64_t r = 0; r < k; ++r) {
        if (list[r] < 0) continue;
        ++listed;
        if (contains(row, relevant, list[r])) {
          ++hits;
          dcg += discount[r + 1];
          precision_sum += double(hits) / double(r + 1);
          correct_pairs += double(negatives - negatives_above);
        } else {
          ++negatives_above;
        }
      }
      t.users += 1;
      t.precision += double(hits) / double(k);
      t.recall += double(hits) / double(relevant);
      t.ndcg += dcg / ideal[std::min(k, relevant)];
      t.map += precision_sum / double(std::min(k, relevant));
      t.hit_rate += hits > 0 ? 1.0 : 0.0;
      if (negatives > 0) {
        // Relevant items outside the list rank below it, in random order with the negatives
        // outside it: on average each beats half of them.
        const double unlisted_negatives = double(std::max<int64_t>(0, negatives - negatives_above));
        correct_pairs += double(relevant - hits) * unlisted_negatives / 2.0;
        t.auc += correct_pairs / (double(relevant) * double(negatives));
        t.auc_users += 1;
      }
    }
  }
  RankingTotals total;
  for (const RankingTotals& t : partial) {
    total.precision += t.precision;
    total.recall += t.recall;
    total.ndcg += t.ndcg;
    total.map += t.map;
    total.hit_rate += t.hit_rate;
    total.auc += t.auc;
    total.users += t.users;
    total.auc_users += t.auc_users;
  }
  for (unsigned char flag : recommended) total.covered_items += flag;
  return total;
}

#define RECORE_INSTANTIATE(O, I)                                                                        \
  template RankingTotals ranking_totals<O, I>(const O*, int64_t, int64_t, const I*, const I*, int64_t, \
                                              const int64_t*, int);
RECORE_INSTANTIATE(int32_t, int32_t)
RECORE_INSTANTIATE(int32_t, int64_t)
RECORE_INSTANTIATE(int64_t, int32_t)
RECORE_INSTANTIATE(int64_t, int64_t)
#undef RECORE_INSTANTIATE

}  // namespace recore
