// Exact top-k search over factor matrices: for each query row, the k item rows with the
// largest dot products, found without ever forming the queries x items score matrix.
#pragma once

#include <cstdint>

#include "recore/csr.hpp"

namespace recore {

// Items every query of one search skips or is limited to.
struct ItemFilter {
  // Bit i set: item i is never returned. nullptr: no item is denied. (items + 63) / 64 words.
  const uint64_t* denied = nullptr;
  // When the searched item rows are a subset of the catalog (an allow list, gathered by the
  // caller), item_ids[r] is the catalog id of searched row r, strictly increasing. nullptr:
  // row r is item r.
  const int64_t* item_ids = nullptr;
};

// Per-query exclusions: row q of a CSR matrix (one row per query) lists catalog ids query
// q must not get, sorted increasingly. Values are ignored.
template <typename I>
struct Exclusions {
  const I* indptr = nullptr;  // queries + 1 entries; nullptr: nothing excluded
  const I* indices = nullptr;
};

// ids[q * k + j], scores[q * k + j]: query q's j-th best item, best first, ties broken by
// the lower id. Rows with fewer than k candidates end with id -1 and score -infinity.
template <typename O>
struct TopkOutput {
  O* ids = nullptr;
  float* scores = nullptr;
};

// Item rows can also be given in panels: rows [96p, 96p + 96) stored factor-major, value
// j of row 96p + l at panels[(p * f + j) * 96 + l], the last panel padded with zeros. Single
// queries read them with no transposes; the layout is made once per catalog and reused.
constexpr int64_t kPanelItems = 96;

// The catalog's panels, as the caller prepared them (see recore.ItemIndex).
struct ItemPanels {
  const float* float32 = nullptr;
  // The same values rounded to bfloat16 (round to nearest even), for single queries scored
  // approximately and re-ranked exactly; results are identical to float32.
  const uint16_t* bfloat16 = nullptr;
  float max_norm = 0.0f;  // largest Euclidean norm of an item row, rounded up; with bfloat16
};

// Scores are dot products in float32, each summed in the order of the factors with one fused
// multiply-add per factor: every code path gives bitwise the same score for a pair.
// Throws std::invalid_argument for inconsistent shapes; the caller checks values (NaN, ids).
// Returns true when the search itself saw that every item row holds finite values only
// (queries being finite): single queries over rows without panels (see
// topk_checks_items) score every row, and a non-finite value always gives a non-finite
// score. False says nothing either way: the items may be finite all the same (a score can
// overflow), and other paths do not look.
template <typename I, typename O>
bool topk(MatrixView<const float> queries, MatrixView<const float> items, int64_t k, const ItemFilter& filter,
          const Exclusions<I>& exclusions, const TopkOutput<O>& output, int num_threads,
          const ItemPanels& panels = ItemPanels{});

// The catalog in panels as ItemPanels::float32 reads them: panels (ceil(n / 96) * f * 96 floats)
// receives item row 96p + l's value j at (p * f + j) * 96 + l, zeros past the last item.
void make_item_panels(MatrixView<const float> items, float* panels);

// The panels (count floats, from make_item_panels) rounded to bfloat16 to nearest, ties to even,
// in the layout ItemPanels::bfloat16 reads: each 16 values of a panel row as 8 32-bit words, word
// l holding value l in its low half and value l + 8 in its high half (count / 2 words).
void make_bfloat16_panels(const float* panels, int64_t count, uint32_t* words);

// Batches with at most this many queries take the single-query path (items split between
// threads, item rows scored a SIMD vector at a time).
constexpr int64_t kSingleQueryPathMax = 2;

// Whether a search of `queries` queries can tell that the items are finite (its return
// value), so that a caller checking them need read them only when it says it could not.
inline bool topk_checks_items(int64_t queries, const ItemPanels& panels) {
  return queries <= kSingleQueryPathMax && !panels.float32 && !panels.bfloat16;
}

}  // namespace recore
