// Top-k: hand-checked searches (ids, scores, ties by lower id, exclusions, deny and allow
// lists, padding), every search path (query batches, single queries with and without item
// panels, several threads) against a brute-force reference, and every CPU target against
// the others.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.hpp"
#include "recore/topk.hpp"
#include "test_data.hpp"

namespace {

using recore::ItemFilter;
using recore::ItemPanels;
using recore::MatrixView;
using recore::testing::Dense;

constexpr float kInf = std::numeric_limits<float>::infinity();

// The catalog ids each query must not get, sorted.
using ExcludeLists = std::vector<std::vector<int32_t>>;

template <typename O>
struct Result {
  std::vector<O> ids;
  std::vector<float> scores;
};

// The ways a search can be run; every one must give the same result.
enum class Path { batch, single, single_panels };

const char* path_name(Path path) {
  switch (path) {
    case Path::batch:
      return "batch";
    case Path::single:
      return "single";
    case Path::single_panels:
      return "single, panels";
  }
  return "";
}

// The items in panels of kPanelItems rows stored factor-major (the layout ItemIndex makes):
// value j of row 96p + l at [(p * f + j) * 96 + l], the last panel padded with zeros.
std::vector<float> item_panels(const Dense<float>& items) {
  const int64_t f = items.cols, count = (items.rows + recore::kPanelItems - 1) / recore::kPanelItems;
  std::vector<float> panels(count * recore::kPanelItems * f, 0.0f);
  for (int64_t r = 0; r < items.rows; ++r) {
    const int64_t p = r / recore::kPanelItems, l = r % recore::kPanelItems;
    for (int64_t j = 0; j < f; ++j) panels[(p * f + j) * recore::kPanelItems + l] = items.row(r)[j];
  }
  return panels;
}

// One engine call over queries [first, first + count) with their exclusion rows.
template <typename O>
void search_rows(const Dense<float>& queries, int64_t first, int64_t count, const Dense<float>& items, int64_t k,
                 const ExcludeLists& exclude, const ItemFilter& filter, int threads, const ItemPanels& panels,
                 O* ids, float* scores) {
  std::vector<int32_t> indptr{0}, indices;
  for (int64_t q = first; q < first + count; ++q) {
    indices.insert(indices.end(), exclude[q].begin(), exclude[q].end());
    indptr.push_back(static_cast<int32_t>(indices.size()));
  }
  const MatrixView<const float> query_rows{queries.row(first), count, queries.cols, queries.cols};
  const recore::Exclusions<int32_t> exclusions{indptr.data(), indices.data()};
  recore::topk<int32_t, O>(query_rows, items.view(), k, filter, exclusions, recore::TopkOutput<O>{ids, scores}, threads,
                           panels);
}

// All queries searched along `path` (single queries one engine call each).
template <typename O>
Result<O> search(const Dense<float>& queries, const Dense<float>& items, int64_t k, const ExcludeLists& exclude,
                 const ItemFilter& filter, int threads, Path path) {
  Result<O> result;
  result.ids.assign(queries.rows * k, O(-7));  // anything the engine leaves unwritten shows up
  result.scores.assign(queries.rows * k, std::nanf(""));
  if (path == Path::batch) {
    search_rows(queries, 0, queries.rows, items, k, exclude, filter, threads, ItemPanels{}, result.ids.data(),
                result.scores.data());
    return result;
  }
  // Panels go with the full catalog only (an allow list gathers its own rows).
  std::vector<float> panels;
  ItemPanels layout;
  if (path == Path::single_panels && !filter.item_ids) {
    panels = item_panels(items);
    layout.float32 = panels.data();
  }
  for (int64_t q = 0; q < queries.rows; ++q)
    search_rows(queries, q, 1, items, k, exclude, filter, threads, layout, result.ids.data() + q * k,
                result.scores.data() + q * k);
  return result;
}

// The obviously correct search: every score, then a sort by score down and id up. Scores
// are summed in factor order, as the engine does: with one fused multiply-add per factor
// where the kernels have FMA (avx2, avx512), a rounded product and a rounded sum otherwise.
template <typename O>
Result<O> reference(const Dense<float>& queries, const Dense<float>& items, int64_t k, const ExcludeLists& exclude,
                    const std::vector<int64_t>& denied, const std::vector<int64_t>& item_ids, bool fused) {
  Result<O> result;
  for (int64_t q = 0; q < queries.rows; ++q) {
    std::vector<std::pair<float, int64_t>> candidates;
    for (int64_t r = 0; r < items.rows; ++r) {
      const int64_t id = item_ids.empty() ? r : item_ids[r];
      if (std::count(denied.begin(), denied.end(), id) ||
          std::binary_search(exclude[q].begin(), exclude[q].end(), static_cast<int32_t>(id)))
        continue;
      float score = 0.0f;
      for (int64_t j = 0; j < items.cols; ++j) {
        if (fused) {
          score = std::fma(queries.row(q)[j], items.row(r)[j], score);
        } else {
          const float product = queries.row(q)[j] * items.row(r)[j];
          score = score + product;
        }
      }
      candidates.emplace_back(score, id);
    }
    std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    for (int64_t j = 0; j < k; ++j) {
      const bool found = j < int64_t(candidates.size());
      result.ids.push_back(found ? static_cast<O>(candidates[j].second) : O(-1));
      result.scores.push_back(found ? candidates[j].first : -kInf);
    }
  }
  return result;
}

// Bitwise equal ids and scores (so -0 and 0 differ, and NaN never passes).
template <typename O>
bool same(const Result<O>& a, const Result<O>& b) {
  return a.ids == b.ids && a.scores.size() == b.scores.size() &&
         recore::testing::same_bits(a.scores.data(), b.scores.data(), int64_t(a.scores.size()));
}

// The deny bitset of a catalog of `items` ids.
std::vector<uint64_t> deny_bits(int64_t items, const std::vector<int64_t>& denied) {
  std::vector<uint64_t> bits((items + 63) / 64, 0);
  for (int64_t id : denied) bits[id >> 6] |= uint64_t{1} << (id & 63);
  return bits;
}

// Checks one hand-worked search along every path, with one and two threads, for int32 and
// int64 ids. expected_ids / expected_scores: queries x k.
void check_every_path(const Dense<float>& queries, const Dense<float>& items, int64_t k, const ExcludeLists& exclude,
                      const ItemFilter& filter, const std::vector<int64_t>& expected_ids,
                      const std::vector<float>& expected_scores) {
  for (Path path : {Path::batch, Path::single, Path::single_panels}) {
    for (int threads : {1, 2}) {
      recore::testing::current_test_detail() = std::string(path_name(path)) + ", " + std::to_string(threads) +
                                               " threads";
      const Result<int32_t> narrow = search<int32_t>(queries, items, k, exclude, filter, threads, path);
      const Result<int64_t> wide = search<int64_t>(queries, items, k, exclude, filter, threads, path);
      CHECK(wide.ids == expected_ids);
      CHECK(std::vector<int64_t>(narrow.ids.begin(), narrow.ids.end()) == expected_ids);
      for (size_t j = 0; j < expected_scores.size(); ++j) {
        CHECK_EQ(narrow.scores[j], expected_scores[j]);
        CHECK_EQ(wide.scores[j], expected_scores[j]);
      }
    }
  }
  recore::testing::current_test_detail().clear();
}

// Six items and four queries of two factors:
//   items  i0 = (1, 0), i1 = (0, 1), i2 = (1, 1), i3 = (2, -1), i4 = (-1, 0), i5 = (0.5, 0.5)
//   q0 = (1, 0):  scores (1, 0, 1, 2, -1, 0.5), nothing excluded
//   q1 = (0, 1):  scores (0, 1, 1, -1, 0, 0.5), item 1 excluded
//   q2 = (1, 1):  scores (1, 1, 2, 1, -1, 1),   items 0 and 2 excluded
//   q3 = (-1, 0): scores (-1, 0, -1, -2, 1, -0.5), items 0 to 3 excluded
Dense<float> hand_items() { return Dense<float>(6, 2, {1, 0, 0, 1, 1, 1, 2, -1, -1, 0, 0.5f, 0.5f}); }
Dense<float> hand_queries() { return Dense<float>(4, 2, {1, 0, 0, 1, 1, 1, -1, 0}); }
ExcludeLists hand_exclusions() { return {{}, {1}, {0, 2}, {0, 1, 2, 3}}; }

}  // namespace

// k = 4, best first, equal scores by the lower id:
//   q0: i3 (2), then i0 and i2 tie at 1 (i0 first), i5 (0.5)
//   q1: i2 (1), i5 (0.5), then i0 and i4 tie at 0 (i0 first); i1 excluded
//   q2: i1, i3, i5 tie at 1, then i4 (-1); i0 and i2 (the best) excluded
//   q3: only i4 (1) and i5 (-0.5) are left: two padding entries (-1, -inf)
RECORE_TEST(topk_by_hand) {
  check_every_path(hand_queries(), hand_items(), 4, hand_exclusions(), ItemFilter{},
                   {3, 0, 2, 5, /**/ 2, 5, 0, 4, /**/ 1, 3, 5, 4, /**/ 4, 5, -1, -1},
                   {2, 1, 1, 0.5f, /**/ 1, 0.5f, 0, 0, /**/ 1, 1, 1, -1, /**/ 1, -0.5f, -kInf, -kInf});
}

// Item 3 denied for every query:
//   q0: i0 and i2 (1), i5 (0.5), i1 (0);  q1 unchanged (i3 was not in its top 4);
//   q2: i1 and i5 (1), i4 (-1), padding;  q3 unchanged.
RECORE_TEST(topk_deny_list_by_hand) {
  const std::vector<uint64_t> denied = deny_bits(6, {3});
  ItemFilter filter;
  filter.denied = denied.data();
  check_every_path(hand_queries(), hand_items(), 4, hand_exclusions(), filter,
                   {0, 2, 5, 1, /**/ 2, 5, 0, 4, /**/ 1, 5, 4, -1, /**/ 4, 5, -1, -1},
                   {1, 1, 0.5f, 0, /**/ 1, 0.5f, 0, 0, /**/ 1, 1, -1, -kInf, /**/ 1, -0.5f, -kInf, -kInf});
}

// Allowed items 1, 3 and 4 only (their rows gathered, their catalog ids passed along):
//   q0: i3 (2), i1 (0), i4 (-1), padding;  q1: i4 (0), i3 (-1), padding (i1 excluded);
//   q2: i1 and i3 (1), i4 (-1), padding;  q3: i4 (1), then padding.
RECORE_TEST(topk_allow_list_by_hand) {
  const Dense<float> all = hand_items();
  const std::vector<int64_t> allowed{1, 3, 4};
  Dense<float> rows(3, 2);
  for (int64_t r = 0; r < 3; ++r) std::copy(all.row(allowed[r]), all.row(allowed[r]) + 2, rows.values.begin() + 2 * r);
  ItemFilter filter;
  filter.item_ids = allowed.data();
  check_every_path(hand_queries(), rows, 4, hand_exclusions(), filter,
                   {3, 1, 4, -1, /**/ 4, 3, -1, -1, /**/ 1, 3, 4, -1, /**/ 4, -1, -1, -1},
                   {2, 0, -1, -kInf, /**/ 0, -1, -kInf, -kInf, /**/ 1, 1, -1, -kInf, /**/ 1, -kInf, -kInf, -kInf});
}

// k = 8 over six items: q0 gets all of them, i3, i0, i2, i5, i1, i4, then two padding
// entries; over an empty catalog every entry is padding.
RECORE_TEST(topk_k_beyond_catalog_by_hand) {
  const Dense<float> queries(1, 2, {1, 0});
  check_every_path(queries, hand_items(), 8, {{}}, ItemFilter{}, {3, 0, 2, 5, 1, 4, -1, -1},
                   {2, 1, 1, 0.5f, 0, -1, -kInf, -kInf});
  check_every_path(hand_queries(), Dense<float>(0, 2), 2, ExcludeLists(4), ItemFilter{},
                   std::vector<int64_t>(8, -1), std::vector<float>(8, -kInf));
}

RECORE_TEST(topk_refuses_inconsistent_arguments) {
  const Dense<float> queries = hand_queries(), items = hand_items();
  std::vector<int32_t> ids(4 * 4);
  std::vector<float> scores(4 * 4);
  const recore::TopkOutput<int32_t> output{ids.data(), scores.data()};
  CHECK_THROWS(std::invalid_argument, recore::topk<int32_t, int32_t>(queries.view(), items.view(), 0, ItemFilter{},
                                                                     recore::Exclusions<int32_t>{}, output, 1));
  const Dense<float> wider(6, 3);
  CHECK_THROWS(std::invalid_argument, recore::topk<int32_t, int32_t>(queries.view(), wider.view(), 4, ItemFilter{},
                                                                     recore::Exclusions<int32_t>{}, output, 1));
}

namespace {

// A random search: 60 queries over 700 items of 19 factors (not a whole SIMD vector), each
// query excluding a random sorted tenth of the catalog; some items denied.
struct RandomSearch {
  Dense<float> queries, items;
  ExcludeLists exclude;
  std::vector<int64_t> denied;
  std::vector<uint64_t> denied_bits;

  RandomSearch(Dense<float> queries_, Dense<float> items_, uint64_t seed)
      : queries(std::move(queries_)), items(std::move(items_)) {
    recore::testing::Random random(seed);
    for (int64_t q = 0; q < queries.rows; ++q) {
      std::vector<int32_t> row;
      for (int64_t i = 0; i < items.rows; ++i)
        if (random.below(10) == 0) row.push_back(static_cast<int32_t>(i));
      exclude.push_back(row);
    }
    for (int64_t i = 0; i < items.rows; ++i)
      if (random.below(50) == 0) denied.push_back(i);
    denied_bits = deny_bits(items.rows, denied);
  }

  ItemFilter filter() const {
    ItemFilter f;
    f.denied = denied_bits.data();
    return f;
  }
};

// Values in {-3, ..., 3}: every product and sum is exact, so FMA and separate rounding agree
// and the targets must give bitwise the same results; with so few distinct scores, ties are
// everywhere and the lower id must win each.
Dense<float> small_integers(int64_t rows, int64_t cols, uint64_t seed) {
  recore::testing::Random random(seed);
  Dense<float> m(rows, cols);
  for (float& value : m.values) value = static_cast<float>(random.below(7) - 3);
  return m;
}

// k = 1 and 7 keep candidates in a heap, 300 in a reservoir (beyond the heap's 256), and
// 1000 exceeds the catalog.
const int64_t kRandomKs[] = {1, 7, 300, 1000};

}  // namespace

// Every path, one and two threads, against the reference with the active target's arithmetic.
RECORE_TEST(topk_every_path_matches_reference) {
  const RandomSearch s(recore::testing::random_dense<float>(60, 19, 1.0, 31),
                       recore::testing::random_dense<float>(700, 19, 1.0, 32), 33);
  const bool fused = recore::active_cpu_target() != recore::CpuTarget::baseline;
  for (int64_t k : kRandomKs) {
    const Result<int32_t> expected = reference<int32_t>(s.queries, s.items, k, s.exclude, s.denied, {}, fused);
    for (Path path : {Path::batch, Path::single, Path::single_panels}) {
      for (int threads : {1, 2}) {
        recore::testing::current_test_detail() = std::string(path_name(path)) + ", k " + std::to_string(k) + ", " +
                                                 std::to_string(threads) + " threads";
        CHECK(same(search<int32_t>(s.queries, s.items, k, s.exclude, s.filter(), threads, path), expected));
      }
    }
  }
  recore::testing::current_test_detail().clear();
}

RECORE_TEST_ACROSS_TARGETS(topk_same_result_on_every_target) {
  const RandomSearch s(small_integers(60, 19, 41), small_integers(700, 19, 42), 43);
  for (int64_t k : kRandomKs) {
    const Result<int64_t> expected = reference<int64_t>(s.queries, s.items, k, s.exclude, s.denied, {}, true);
    recore::testing::for_each_cpu_target([&](const std::string& target) {
      for (Path path : {Path::batch, Path::single_panels}) {
        recore::testing::current_test_detail() = target + ", " + path_name(path) + ", k " + std::to_string(k);
        CHECK(same(search<int64_t>(s.queries, s.items, k, s.exclude, s.filter(), 2, path), expected));
      }
    });
  }
  recore::testing::current_test_detail().clear();
}

// A single query over item rows reports whether it saw only finite scores: true for finite
// items, false as soon as one value is NaN or infinite (wherever it is, excluded or not, on
// any target and thread count), and false where it does not look (panels, batches).
RECORE_TEST_ACROSS_TARGETS(topk_single_query_reports_finite_items) {
  const Dense<float> queries = recore::testing::random_dense<float>(3, 21, 1.0, 51);
  Dense<float> items = recore::testing::random_dense<float>(613, 21, 1.0, 52);
  const std::vector<float> panels = item_panels(items);
  std::vector<int32_t> ids(3 * 5);
  std::vector<float> scores(3 * 5);
  const recore::TopkOutput<int32_t> output{ids.data(), scores.data()};
  const std::vector<int32_t> indptr{0, 1}, excluded{600};
  const recore::Exclusions<int32_t> exclusion{indptr.data(), excluded.data()};
  auto one_query = [&](const Dense<float>& rows, int threads, const ItemPanels& layout) {
    const MatrixView<const float> query{queries.row(0), 1, queries.cols, queries.cols};
    return recore::topk<int32_t, int32_t>(query, rows.view(), 5, ItemFilter{}, exclusion, output, threads, layout);
  };
  const float bad_values[] = {std::nanf(""), kInf, -kInf};
  recore::testing::for_each_cpu_target([&](const std::string& target) {
    for (int threads : {1, 2}) {
      recore::testing::current_test_detail() = target + ", " + std::to_string(threads) + " threads";
      CHECK(one_query(items, threads, ItemPanels{}));
      ItemPanels layout;
      layout.float32 = panels.data();
      CHECK(!one_query(items, threads, layout));
      const recore::Exclusions<int32_t> none;
      const bool batch_looked = recore::topk<int32_t, int32_t>(queries.view(), items.view(), 5, ItemFilter{}, none,
                                                               output, threads);
      CHECK(!batch_looked);
      for (float bad : bad_values) {
        for (int64_t row : {int64_t{0}, int64_t{600}, int64_t{612}}) {  // first, excluded, in the last block
          Dense<float> changed = items;
          changed.values[row * items.cols + 20] = bad;
          CHECK(!one_query(changed, threads, ItemPanels{}));
        }
      }
    }
  });
  recore::testing::current_test_detail().clear();
}
