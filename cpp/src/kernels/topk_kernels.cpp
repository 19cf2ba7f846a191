// Top-k hot loops. Compiled once per instruction set (see CMakeLists.txt); no standard-library
// templates (see als_kernels.hpp).
//
// Batch path: a thread holds a block of queries, packed so that queries sit side by side in
// SIMD lanes, and streams the item rows past them a cache-sized block at a time. Each item's
// scores against 2 vectors of queries are compared at once with the queries' running k-th
// best scores; only the rare score that passes leaves the registers, to be checked against
// the exclusions and kept in the query's reservoir. No score matrix is ever stored.
//
// Single-query path: the item rows are split between threads, each thread keeps its own
// reservoir and the reservoirs are merged. Item panels are scored a SIMD vector of items at
// a time; rows in the row layout are ruled out by an approximate score and a bound on its
// error, and only the rest scored exactly (see scan_items_for_one_query).
//
// Every score is the dot product summed in the order of the factors with one fused
// multiply-add per factor (a multiply and an add where the target has no FMA), so both paths
// and the scalar re-scoring give bitwise the same scores.
#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#else
#include "sse_fallback.hpp"  // the same 4-lane operations in portable vector code
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "recore/topk_kernels.hpp"
#include "simd.hpp"

namespace recore {
namespace RECORE_TARGET {
namespace {

typedef Simd<float>::type FloatVector;
constexpr int64_t kLanes = kVectorBytes / sizeof(float);
// Queries side by side: two vectors of lanes.
constexpr int64_t kLaneQueries = 2 * kLanes;
// Item rows scored together against one lane block; sized so that the accumulators, two
// query vectors and a broadcast fit the register file (16 registers below AVX-512, 32 with it).
#if defined(__AVX512F__)
constexpr int kItemRows = 12;
#else
constexpr int kItemRows = 6;
#endif
static_assert(kLaneQueries <= kTopkMaxLaneQueries, "workspace sized for narrower blocks");

constexpr float kMinusInfinity = -__builtin_inff();
constexpr float kPlusInfinity = __builtin_inff();

inline float multiply_add(float a, float b, float c) {
#if defined(__FMA__)
  return __builtin_fmaf(a, b, c);
#else
  return a * b + c;
#endif
}

inline FloatVector multiply_add(FloatVector a, FloatVector b, FloatVector c) {
#if defined(__AVX512F__)
  return (FloatVector)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
  return (FloatVector)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

// Bit j set: lane j of `scores` is >= lane j of `thresholds`.
inline unsigned at_least(FloatVector scores, FloatVector thresholds) {
#if defined(__AVX512F__)
  return _mm512_cmp_ps_mask((__m512)scores, (__m512)thresholds, _CMP_GE_OQ);
#elif defined(__AVX__)
  return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps((__m256)scores, (__m256)thresholds, _CMP_GE_OQ)));
#else
  return static_cast<unsigned>(_mm_movemask_ps(_mm_cmpge_ps((__m128)scores, (__m128)thresholds)));
#endif
}

// All lanes = *p, loaded straight into a register (a vector literal would add a zero).
inline FloatVector broadcast(const float* p) {
#if defined(__AVX512F__)
  return (FloatVector)_mm512_set1_ps(*p);
#elif defined(__AVX__)
  return (FloatVector)_mm256_broadcast_ss(p);
#else
  return (FloatVector)_mm_load1_ps(p);
#endif
}

// By value, so that the accumulators never need an address (which would keep them in memory).
inline void store(float* p, FloatVector v) { __builtin_memcpy(p, &v, sizeof(v)); }

inline FloatVector load(const float* p) {
  FloatVector v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// The score every path computes: the dot product in factor order.
inline float exact_score(const float* query, const float* item, int64_t f) {
  float s = 0.0f;
  for (int64_t j = 0; j < f; ++j) s = multiply_add(query[j], item[j], s);
  return s;
}

// ---------------------------------------------------------------------------------------
// Selection
// ---------------------------------------------------------------------------------------

inline bool better(const TopkCandidate& a, const TopkCandidate& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

inline void swap(TopkCandidate& a, TopkCandidate& b) {
  TopkCandidate t = a;
  a = b;
  b = t;
}

// Rearranges c[0, n) so that c[0, m) holds the m best, in no particular order (quickselect
// with a median-of-three pivot; iterative).
void select_best(TopkCandidate* c, int64_t n, int64_t m) {
  int64_t lo = 0, hi = n - 1;
  const int64_t target = m - 1;  // position of the m-th best once done
  while (hi - lo > 16) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (better(c[mid], c[lo])) swap(c[mid], c[lo]);
    if (better(c[hi], c[lo])) swap(c[hi], c[lo]);
    if (better(c[hi], c[mid])) swap(c[hi], c[mid]);
    const TopkCandidate pivot = c[mid];
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (better(c[i], pivot)) ++i;
      while (better(pivot, c[j])) --j;
      if (i <= j) {
        swap(c[i], c[j]);
        ++i;
        --j;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return;
  }
  // Short range: insertion sort, best first.
  for (int64_t a = lo + 1; a <= hi; ++a) {
    TopkCandidate x = c[a];
    int64_t b = a - 1;
    while (b >= lo && better(x, c[b])) {
      c[b + 1] = c[b];
      --b;
    }
    c[b + 1] = x;
  }
}

// Sorts c[0, n) best first (heapsort: no recursion, no extra memory).
void sort_best_first(TopkCandidate* c, int64_t n) {
  // A heap whose root is the worst candidate; popping it to the end leaves the best first.
  auto sift_down = [c](int64_t root, int64_t size) {
    for (;;) {
      int64_t worst = root;
      const int64_t left = 2 * root + 1, right = left + 1;
      if (left < size && better(c[worst], c[left])) worst = left;
      if (right < size && better(c[worst], c[right])) worst = right;
      if (worst == root) return;
      swap(c[root], c[worst]);
      root = worst;
    }
  };
  for (int64_t i = n / 2 - 1; i >= 0; --i) sift_down(i, n);
  for (int64_t end = n - 1; end > 0; --end) {
    swap(c[0], c[end]);
    sift_down(0, end);
  }
}

// Reservoirs and their SIMD thresholds for a block of queries, carved from a thread's
// workspace in the order topk_workspace_bytes sizes it.
struct QueryBlock {
  TopkCandidate* candidates;  // block_queries x capacity
  float* packed;              // lane blocks of f x kLaneQueries
  float* thresholds;          // per query: a candidate must score at least this
  int64_t* counts;
  int64_t* threshold_ids;     // id of the worst kept candidate, once compacted
  int64_t* cursors;           // position in the query's exclusion row

  QueryBlock(unsigned char* workspace, int64_t block_queries, int64_t capacity, int64_t f) {
    const int64_t lane_queries =
        (block_queries + kTopkMaxLaneQueries - 1) / kTopkMaxLaneQueries * kTopkMaxLaneQueries;
    unsigned char* p = workspace;
    candidates = reinterpret_cast<TopkCandidate*>(p);
    p += round_up_64(block_queries * capacity * int64_t(sizeof(TopkCandidate)));
    packed = reinterpret_cast<float*>(p);
    p += round_up_64(lane_queries * f * int64_t(sizeof(float)));
    thresholds = reinterpret_cast<float*>(p);
    p += round_up_64(lane_queries * int64_t(sizeof(float)));
    counts = reinterpret_cast<int64_t*>(p);
    p += round_up_64(block_queries * int64_t(sizeof(int64_t)));
    threshold_ids = reinterpret_cast<int64_t*>(p);
    p += round_up_64(block_queries * int64_t(sizeof(int64_t)));
    cursors = reinterpret_cast<int64_t*>(p);
  }
};

// Candidates beyond `keep` a reservoir takes before its first compaction (see push).
constexpr int64_t kFirstCompactionMargin = 64;

template <typename I, typename O>
class Selector {
 public:
  Selector(const TopkArgs<I, O>& args, QueryBlock& block) : args_(args), block_(block) {}

  // Starts query `slot` of the block as query `query` of the batch.
  void reset(int64_t slot, int64_t query) {
    block_.counts[slot] = 0;
    block_.thresholds[slot] = kMinusInfinity;
    block_.threshold_ids[slot] = -1;
    block_.cursors[slot] = args_.exclusions.indptr ? static_cast<int64_t>(args_.exclusions.indptr[query]) : 0;
  }

  // Offers searched row `row` with `score` to query `slot` (batch query `query`).
  inline void offer(int64_t slot, int64_t query, int64_t row, float score) {
    const float threshold = block_.thresholds[slot];
    if (score < threshold) return;
    const int64_t id = args_.filter.item_ids ? args_.filter.item_ids[row] : row;
    // Equal scores pass the SIMD test; the lower id wins.
    if (score == threshold && block_.threshold_ids[slot] >= 0 && id > block_.threshold_ids[slot]) return;
    if (args_.filter.denied && ((args_.filter.denied[id >> 6] >> (id & 63)) & 1u)) return;
    if (args_.exclusions.indptr && excluded(slot, query, id)) return;
    push(slot, TopkCandidate{score, id});
  }

  inline void push(int64_t slot, TopkCandidate c) {
    TopkCandidate* data = block_.candidates + slot * args_.capacity;
    int64_t& count = block_.counts[slot];
    if (args_.use_heap) return push_heap(slot, data, count, c);
    data[count++] = c;
    if (count == args_.capacity && args_.capacity > args_.keep) return compact(slot, data, count);
    // The first compaction comes early: until it, every score passes the threshold, and
    // a large reservoir (bfloat16's) would take a thousand offers before it rose.
    if (count == args_.keep + kFirstCompactionMargin && block_.thresholds[slot] == kMinusInfinity)
      compact(slot, data, count);
  }

  // Approximate scores (bfloat16 items): keep, besides the `keep` best, every candidate
  // within `slack` of the keep-th best, since any of them may be in the exact top k.
  void set_slack(float slack) { slack_ = slack; }
  // Too many candidates were within the slack for the reservoir: the caller must search
  // this query again exactly.
  bool overflowed() const { return overflowed_; }

  // Drops every candidate the threshold rules out now (before re-scoring the rest).
  void shrink(int64_t slot) {
    TopkCandidate* data = block_.candidates + slot * args_.capacity;
    int64_t& count = block_.counts[slot];
    if (count > args_.keep) compact(slot, data, count);
  }

  // Scores are replaced (exact ones for approximate ones): forget the thresholds.
  void forget_threshold(int64_t slot) {
    block_.thresholds[slot] = kMinusInfinity;
    block_.threshold_ids[slot] = -1;
  }
  // Writes query `slot`'s results as batch row `query`.
  void finish(int64_t slot, int64_t query) {
    TopkCandidate* data = block_.candidates + slot * args_.capacity;
    int64_t count = block_.counts[slot];
    if (count > args_.keep) {
      select_best(data, count, args_.keep);
      count = args_.keep;
    }
    sort_best_first(data, count);
    O* ids = args_.output.ids + query * args_.k;
    float* scores = args_.output.scores + query * args_.k;
    for (int64_t j = 0; j < count; ++j) {
      ids[j] = static_cast<O>(data[j].id);
      scores[j] = data[j].score;
    }
    for (int64_t j = count; j < args_.k; ++j) {
      ids[j] = static_cast<O>(-1);
      scores[j] = kMinusInfinity;
    }
  }

  TopkCandidate* candidates(int64_t slot) const { return block_.candidates + slot * args_.capacity; }
  int64_t count(int64_t slot) const { return block_.counts[slot]; }

 private:
  // Items reach a query in increasing id order, so its exclusion row is walked once.
  inline bool excluded(int64_t slot, int64_t query, int64_t id) {
    const I* row = args_.exclusions.indices;
    const int64_t end = static_cast<int64_t>(args_.exclusions.indptr[query + 1]);
    int64_t& cursor = block_.cursors[slot];
    while (cursor < end && static_cast<int64_t>(row[cursor]) < id) ++cursor;
    return cursor < end && static_cast<int64_t>(row[cursor]) == id;
  }

  // Small k: a heap of the `keep` best with the worst at the root, so that the threshold is
  // always exactly the keep-th best and as few scores as possible leave the registers.
  void push_heap(int64_t slot, TopkCandidate* data, int64_t& count, TopkCandidate c) {
    if (count < args_.keep) {
      int64_t i = count++;
      data[i] = c;
      while (i > 0) {
        const int64_t parent = (i - 1) / 2;
        if (!better(data[parent], data[i])) break;
        swap(data[parent], data[i]);
        i = parent;
      }
      if (count < args_.keep) return;
    } else {
      if (!better(c, data[0])) return;
      data[0] = c;
      for (int64_t i = 0;;) {
        int64_t worst = i;
        const int64_t left = 2 * i + 1, right = left + 1;
        if (left < count && better(data[worst], data[left])) worst = left;
        if (right < count && better(data[worst], data[right])) worst = right;
        if (worst == i) break;
        swap(data[i], data[worst]);
        i = worst;
      }
    }
    block_.thresholds[slot] = data[0].score;
    block_.threshold_ids[slot] = data[0].id;
  }

  // Keeps the `keep` best (plus, with a slack, those within it of the keep-th best) and
  // raises the threshold to match.
  void compact(int64_t slot, TopkCandidate* data, int64_t& count) {
    select_best(data, count, args_.keep);
    TopkCandidate worst = data[0];
    for (int64_t j = 1; j < args_.keep; ++j)
      if (better(worst, data[j])) worst = data[j];
    if (slack_ > 0.0f) {
      const float cut = worst.score - slack_;
      int64_t kept = args_.keep;
      for (int64_t j = args_.keep; j < count; ++j)
        if (data[j].score >= cut) data[kept++] = data[j];
      if (kept - args_.keep > (args_.capacity - args_.keep) / 2) {
        overflowed_ = true;  // compactions would no longer free enough room
        kept = args_.keep;
      }
      count = kept;
      block_.thresholds[slot] = cut;
      block_.threshold_ids[slot] = -1;  // every score at the cut stays a candidate
      return;
    }
    count = args_.keep;
    block_.thresholds[slot] = worst.score;
    block_.threshold_ids[slot] = worst.id;
  }

  const TopkArgs<I, O>& args_;
  QueryBlock& block_;
  float slack_ = 0.0f;
  bool overflowed_ = false;
};


// ---------------------------------------------------------------------------------------
// Batch path
// ---------------------------------------------------------------------------------------

// Queries [first, first + count) of the batch, side by side: packed[j * kLaneQueries + l] is
// factor j of query first + l; missing lanes are zero.
void pack_queries(MatrixView<const float> queries, int64_t first, int64_t count, float* packed) {
  const int64_t f = queries.cols;
  for (int64_t l = 0; l < kLaneQueries; ++l) {
    const float* q = l < count ? queries.row(first + l) : nullptr;
    for (int64_t j = 0; j < f; ++j) packed[j * kLaneQueries + l] = q ? q[j] : 0.0f;
  }
}

// Scores ROWS consecutive item rows against one lane block of queries and offers every
// score that reaches its query's threshold.
template <int ROWS, typename I, typename O>
inline void score_item_rows(MatrixView<const float> items, int64_t row0, const float* packed, const float* thresholds,
                            int64_t slot0, int64_t query0, Selector<I, O>& selector) {
  const int64_t f = items.cols;
  const float* rows[ROWS];
  for (int r = 0; r < ROWS; ++r) rows[r] = items.row(row0 + r);
  FloatVector acc[ROWS][2];
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) acc[r][0] = acc[r][1] = FloatVector{};
  // The next rows' cache lines are requested a line per 16 factors, while these are scored.
  const bool prefetch = row0 + 2 * ROWS <= items.rows;
  for (int64_t j0 = 0; j0 < f; j0 += 16) {
    if (prefetch) {
#pragma GCC unroll 16
      for (int r = 0; r < ROWS; ++r) __builtin_prefetch(rows[r] + ROWS * items.stride + j0);
    }
    const int64_t j1 = smaller(f, j0 + 16);
    for (int64_t j = j0; j < j1; ++j) {
      const FloatVector q0 = load(packed + j * kLaneQueries);
      const FloatVector q1 = load(packed + j * kLaneQueries + kLanes);
#pragma GCC unroll 16
      for (int r = 0; r < ROWS; ++r) {
        const FloatVector item = broadcast(rows[r] + j);
        acc[r][0] = multiply_add(item, q0, acc[r][0]);
        acc[r][1] = multiply_add(item, q1, acc[r][1]);
      }
    }
  }
  const FloatVector t0 = load(thresholds), t1 = load(thresholds + kLanes);
  uint64_t passed[ROWS];  // bit l: query l's score reached its threshold
  uint64_t any = 0;
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) {
    passed[r] = at_least(acc[r][0], t0) | (uint64_t(at_least(acc[r][1], t1)) << kLanes);
    any |= passed[r];
  }
  if (__builtin_expect(any == 0, 1)) return;
  // Some scores reached their thresholds: offer just those, row by row so that each query
  // still sees items in increasing id order (offer compares again with the threshold, which
  // may have risen meanwhile).
  float scores[ROWS][kLaneQueries];
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) {
    store(scores[r], acc[r][0]);
    store(scores[r] + kLanes, acc[r][1]);
  }
  for (int r = 0; r < ROWS; ++r) {
    for (uint64_t mask = passed[r]; mask; mask &= mask - 1) {
      const int l = __builtin_ctzll(mask);
      selector.offer(slot0 + l, query0 + l, row0 + r, scores[r][l]);
    }
  }
}

template <typename I, typename O>
void run_query_block(const TopkArgs<I, O>& args, QueryBlock& block, int64_t first, int64_t count) {
  Selector<I, O> selector(args, block);
  const int64_t f = args.queries.cols;
  const int64_t n = args.items.rows;
  const int64_t lane_blocks = (count + kLaneQueries - 1) / kLaneQueries;
  for (int64_t s = 0; s < count; ++s) selector.reset(s, first + s);
  for (int64_t b = 0; b < lane_blocks; ++b) {
    const int64_t in_block = smaller(kLaneQueries, count - b * kLaneQueries);
    pack_queries(args.queries, first + b * kLaneQueries, in_block, block.packed + b * f * kLaneQueries);
    // Lanes without a query never pass.
    for (int64_t l = in_block; l < kLaneQueries; ++l) block.thresholds[b * kLaneQueries + l] = kPlusInfinity;
  }
  for (int64_t i0 = 0; i0 < n; i0 += args.item_block) {
    const int64_t i1 = smaller(n, i0 + args.item_block);
    for (int64_t b = 0; b < lane_blocks; ++b) {
      const float* packed = block.packed + b * f * kLaneQueries;
      const float* thresholds = block.thresholds + b * kLaneQueries;
      const int64_t slot0 = b * kLaneQueries;
      const int64_t query0 = first + slot0;
      int64_t i = i0;
      for (; i + kItemRows <= i1; i += kItemRows)
        score_item_rows<kItemRows>(args.items, i, packed, thresholds, slot0, query0, selector);
      for (; i < i1; ++i) score_item_rows<1>(args.items, i, packed, thresholds, slot0, query0, selector);
    }
  }
  for (int64_t s = 0; s < count; ++s) selector.finish(s, first + s);
}

// ---------------------------------------------------------------------------------------
// Single-query path
// ---------------------------------------------------------------------------------------


// The row layout, one query: ordering every item's products in factor order would need its
// row transposed into SIMD lanes (a shuffle per value, more than the memory reads cost).
// Instead each row is summed in whatever order suits the hardware (lanes hold factors, the
// lanes of 4 rows reduced together), with the row's squared norm beside it; that approximate
// score rules out every row whose exact score cannot reach the threshold, and the few
// others are scored exactly, in factor order, before they are offered. Every offered score
// is thus the exact one and results are those of every other path.
//
// Bound: an ordered and an unordered float32 sum of the same f products each lie within
// gamma(f + 8) sum_j |q_j x_j| <= gamma(f + 8) |q| |x| of the true dot product (gamma(n) =
// n 2^-24 / (1 - n 2^-24); the 8 covers the reduction tree's extra roundings), plus at most
// 2^-126 per rounding below the normal range (2^-149 with subnormals; 2^-126 where a
// library set the CPU to flush them to zero). A row whose approximate score plus twice that
// stays below the threshold cannot reach it exactly. |x| comes from the approximate squared
// norm, which underflow can also shrink by up to 2^-126 per rounding: that much is added
// back before the square root, and 1% covers the relative roundings of the bound itself.
// (Rows of values below about 1e-18 thus all reach the exact scoring: slower, still exact.)
struct RowBound {
  float scale;         // times sqrt(approximate |x|^2 + squares_floor): the row's bound
  float squares_floor;
  float floor;         // the roundings below the normal range, in both sums
};

inline RowBound row_bound(const float* q, int64_t f) {
  double norm = 0.0;
  for (int64_t j = 0; j < f; ++j) norm += double(q[j]) * double(q[j]);
  const double n = double(f + 8) * 0x1p-24;
  const double gamma = n / (1.0 - n);
  const float underflow = static_cast<float>(double(f + 8) * 0x1p-125);
  // An overflowing |q| gives an infinite bound: every row is then scored exactly.
  return RowBound{static_cast<float>(2.0 * gamma * __builtin_sqrt(norm) * 1.01), underflow, underflow};
}

// An item's exact score is finite only when every one of its values is (a NaN stays NaN; an
// infinity times a non-zero factor stays infinite, times zero gives NaN; and infinities never
// cancel to a finite sum), the query being finite; so a scan that met only finite scores
// has checked the items it scored.
inline bool finite(float score) { return score - score == 0.0f; }

#if defined(__AVX2__) && defined(__FMA__)
constexpr int64_t kRowGroup = 4;  // rows summed side by side (two accumulators each)

// Lanes past f: zero in both the query and the rows.
inline FloatVector load_first(const float* p, int64_t count) {
#if defined(__AVX512F__)
  return (FloatVector)_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << count) - 1u), p);
#else
  alignas(32) static const int32_t kMasks[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return (FloatVector)_mm256_maskload_ps(p, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMasks + 8 - count)));
#endif
}

// Approximate scores and squared norms of rows[0, 4), each summed over lanes of factors: out
// lanes are factor groups of a row, one row after the other, a quarter of the lanes each.
inline void sum_row_group(const float* q, const float* const rows[kRowGroup], int64_t f, FloatVector& scores,
                          FloatVector& squares) {
  FloatVector s[kRowGroup], n[kRowGroup];
#pragma GCC unroll 4
  for (int r = 0; r < kRowGroup; ++r) s[r] = n[r] = FloatVector{};
  int64_t j = 0;
  for (; j + kLanes <= f; j += kLanes) {
    const FloatVector qj = load(q + j);
#pragma GCC unroll 4
    for (int r = 0; r < kRowGroup; ++r) {
      const FloatVector x = load(rows[r] + j);
      s[r] = multiply_add(qj, x, s[r]);
      n[r] = multiply_add(x, x, n[r]);
    }
  }
  if (j < f) {
    const FloatVector qj = load_first(q + j, f - j);
#pragma GCC unroll 4
    for (int r = 0; r < kRowGroup; ++r) {
      const FloatVector x = load_first(rows[r] + j, f - j);
      s[r] = multiply_add(qj, x, s[r]);
      n[r] = multiply_add(x, x, n[r]);
    }
  }
#if defined(__AVX512F__)
  // Halves, then quarters, of rows (0, 1) and (2, 3), then the two pairs: 4 lanes a row.
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4((__m512)s[0], (__m512)s[1], 0x44),
                                   _mm512_shuffle_f32x4((__m512)s[0], (__m512)s[1], 0xEE));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4((__m512)s[2], (__m512)s[3], 0x44),
                                   _mm512_shuffle_f32x4((__m512)s[2], (__m512)s[3], 0xEE));
  const __m512 n01 = _mm512_add_ps(_mm512_shuffle_f32x4((__m512)n[0], (__m512)n[1], 0x44),
                                   _mm512_shuffle_f32x4((__m512)n[0], (__m512)n[1], 0xEE));
  const __m512 n23 = _mm512_add_ps(_mm512_shuffle_f32x4((__m512)n[2], (__m512)n[3], 0x44),
                                   _mm512_shuffle_f32x4((__m512)n[2], (__m512)n[3], 0xEE));
  scores = (FloatVector)_mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xDD));
  squares = (FloatVector)_mm512_add_ps(_mm512_shuffle_f32x4(n01, n23, 0x88), _mm512_shuffle_f32x4(n01, n23, 0xDD));
#else
  // Pairs of lanes, then quarters of each 128-bit half: lanes (r, r + 4) hold halves of row r.
  const __m256 s01 = _mm256_hadd_ps((__m256)s[0], (__m256)s[1]), s23 = _mm256_hadd_ps((__m256)s[2], (__m256)s[3]);
  const __m256 n01 = _mm256_hadd_ps((__m256)n[0], (__m256)n[1]), n23 = _mm256_hadd_ps((__m256)n[2], (__m256)n[3]);
  scores = (FloatVector)_mm256_hadd_ps(s01, s23);
  squares = (FloatVector)_mm256_hadd_ps(n01, n23);
#endif
}

// Approximate scores and squared norms of the kLanes rows from `first`, lane l for row
// first + l: four groups of 4 rows, reduced into one vector.
inline void sum_row_block(const float* q, MatrixView<const float> items, int64_t first, FloatVector& scores,
                          FloatVector& squares) {
  const int64_t f = items.cols;
  const float* rows[kRowGroup];
#if defined(__AVX512F__)
  __m512 s[4], n[4];
  // Unrolled, so that the group sums stay in registers (a store and a narrower reload would
  // stall on store forwarding).
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
#pragma GCC unroll 4
    for (int r = 0; r < kRowGroup; ++r) rows[r] = items.row(first + g * kRowGroup + r);
    FloatVector gs, gn;
    sum_row_group(q, rows, f, gs, gn);
    s[g] = (__m512)gs;
    n[g] = (__m512)gn;
  }
  // 4 lanes a row in each group vector: pairs of lanes, then single lanes, rows in order.
  static const int32_t kPairs[2][16] = {{0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
                                        {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31}};
  static const int32_t kSingles[2][16] = {{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30},
                                          {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}};
  const __m512i pair_low = _mm512_loadu_si512(kPairs[0]), pair_high = _mm512_loadu_si512(kPairs[1]);
  const __m512i single_low = _mm512_loadu_si512(kSingles[0]), single_high = _mm512_loadu_si512(kSingles[1]);
  auto fold = [&](__m512 a, __m512 b, __m512i low, __m512i high) {
    return _mm512_add_ps(_mm512_permutex2var_ps(a, low, b), _mm512_permutex2var_ps(a, high, b));
  };
  const __m512 s0 = fold(s[0], s[1], pair_low, pair_high), s1 = fold(s[2], s[3], pair_low, pair_high);
  const __m512 n0 = fold(n[0], n[1], pair_low, pair_high), n1 = fold(n[2], n[3], pair_low, pair_high);
  scores = (FloatVector)fold(s0, s1, single_low, single_high);
  squares = (FloatVector)fold(n0, n1, single_low, single_high);
#else
  __m256 s[2], n[2];
#pragma GCC unroll 2
  for (int g = 0; g < 2; ++g) {
#pragma GCC unroll 4
    for (int r = 0; r < kRowGroup; ++r) rows[r] = items.row(first + g * kRowGroup + r);
    FloatVector gs, gn;
    sum_row_group(q, rows, f, gs, gn);
    s[g] = (__m256)gs;
    n[g] = (__m256)gn;
  }
  // Lanes (r, r + 4) of group g hold row 4g + r's halves.
  scores = (FloatVector)_mm256_add_ps(_mm256_permute2f128_ps(s[0], s[1], 0x20), _mm256_permute2f128_ps(s[0], s[1], 0x31));
  squares = (FloatVector)_mm256_add_ps(_mm256_permute2f128_ps(n[0], n[1], 0x20), _mm256_permute2f128_ps(n[0], n[1], 0x31));
#endif
}

// Scores item rows [row0, row0 + 8) against `query`: each 8 x 8 block of factors is
// transposed in registers so that every lane sums its item's products in factor order.
inline __m256 score_eight_items(const float* query, MatrixView<const float> items, int64_t row0) {
  const int64_t f = items.cols;
  const float* r[8];
  for (int l = 0; l < 8; ++l) r[l] = items.row(row0 + l);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= f; j += 8) {
    const __m256 a0 = _mm256_loadu_ps(r[0] + j), a1 = _mm256_loadu_ps(r[1] + j);
    const __m256 a2 = _mm256_loadu_ps(r[2] + j), a3 = _mm256_loadu_ps(r[3] + j);
    const __m256 a4 = _mm256_loadu_ps(r[4] + j), a5 = _mm256_loadu_ps(r[5] + j);
    const __m256 a6 = _mm256_loadu_ps(r[6] + j), a7 = _mm256_loadu_ps(r[7] + j);
    const __m256 b0 = _mm256_unpacklo_ps(a0, a1), b1 = _mm256_unpackhi_ps(a0, a1);
    const __m256 b2 = _mm256_unpacklo_ps(a2, a3), b3 = _mm256_unpackhi_ps(a2, a3);
    const __m256 b4 = _mm256_unpacklo_ps(a4, a5), b5 = _mm256_unpackhi_ps(a4, a5);
    const __m256 b6 = _mm256_unpacklo_ps(a6, a7), b7 = _mm256_unpackhi_ps(a6, a7);
    const __m256 c0 = _mm256_shuffle_ps(b0, b2, 0x44), c1 = _mm256_shuffle_ps(b0, b2, 0xEE);
    const __m256 c2 = _mm256_shuffle_ps(b1, b3, 0x44), c3 = _mm256_shuffle_ps(b1, b3, 0xEE);
    const __m256 c4 = _mm256_shuffle_ps(b4, b6, 0x44), c5 = _mm256_shuffle_ps(b4, b6, 0xEE);
    const __m256 c6 = _mm256_shuffle_ps(b5, b7, 0x44), c7 = _mm256_shuffle_ps(b5, b7, 0xEE);
    // column t holds factor j + t of the 8 items
    const __m256 col0 = _mm256_permute2f128_ps(c0, c4, 0x20), col4 = _mm256_permute2f128_ps(c0, c4, 0x31);
    const __m256 col1 = _mm256_permute2f128_ps(c1, c5, 0x20), col5 = _mm256_permute2f128_ps(c1, c5, 0x31);
    const __m256 col2 = _mm256_permute2f128_ps(c2, c6, 0x20), col6 = _mm256_permute2f128_ps(c2, c6, 0x31);
    const __m256 col3 = _mm256_permute2f128_ps(c3, c7, 0x20), col7 = _mm256_permute2f128_ps(c3, c7, 0x31);
    acc = _mm256_fmadd_ps(col0, _mm256_broadcast_ss(query + j + 0), acc);
    acc = _mm256_fmadd_ps(col1, _mm256_broadcast_ss(query + j + 1), acc);
    acc = _mm256_fmadd_ps(col2, _mm256_broadcast_ss(query + j + 2), acc);
    acc = _mm256_fmadd_ps(col3, _mm256_broadcast_ss(query + j + 3), acc);
    acc = _mm256_fmadd_ps(col4, _mm256_broadcast_ss(query + j + 4), acc);
    acc = _mm256_fmadd_ps(col5, _mm256_broadcast_ss(query + j + 5), acc);
    acc = _mm256_fmadd_ps(col6, _mm256_broadcast_ss(query + j + 6), acc);
    acc = _mm256_fmadd_ps(col7, _mm256_broadcast_ss(query + j + 7), acc);
  }
  for (; j < f; ++j) {
    const __m256 column = _mm256_setr_ps(r[0][j], r[1][j], r[2][j], r[3][j], r[4][j], r[5][j], r[6][j], r[7][j]);
    acc = _mm256_fmadd_ps(column, _mm256_broadcast_ss(query + j), acc);
  }
  return acc;
}

inline FloatVector square_roots(FloatVector v) {
#if defined(__AVX512F__)
  return (FloatVector)_mm512_sqrt_ps((__m512)v);
#else
  return (FloatVector)_mm256_sqrt_ps((__m256)v);
#endif
}

// Bit l set: lane l of `v` is NaN or infinite.
inline unsigned not_finite(FloatVector v) {
  const FloatVector zero = v - v;
#if defined(__AVX512F__)
  return _mm512_cmp_ps_mask((__m512)zero, (__m512)zero, _CMP_UNORD_Q);
#else
  return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps((__m256)zero, (__m256)zero, _CMP_UNORD_Q)));
#endif
}

// Bit l set: lane l of `a` is not below lane l of `b` (NaN included).
inline unsigned not_below(FloatVector a, FloatVector b) {
#if defined(__AVX512F__)
  return _mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_NLT_UQ);
#else
  return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps((__m256)a, (__m256)b, _CMP_NLT_UQ)));
#endif
}
#endif

// Offers row `row`'s exact score; false when it is not finite (then never offered: NaN has no
// place in the order, and an unchecked search gives what a batch gives).
template <typename I, typename O>
inline bool offer_exact(const TopkArgs<I, O>& args, Selector<I, O>& selector, int64_t slot, int64_t query,
                        const float* q, int64_t row) {
  const float score = exact_score(q, args.items.row(row), args.items.cols);
  if (score != score) return false;
  selector.offer(slot, query, row, score);
  return finite(score);
}

// Scores item rows [begin, end) against query `query` into slot `slot`. Returns whether
// every row was seen to hold finite values only (see `finite`).
template <typename I, typename O>
bool scan_items_for_one_query(const TopkArgs<I, O>& args, Selector<I, O>& selector, QueryBlock& block,
                              int64_t slot, int64_t query, int64_t begin, int64_t end) {
  const float* q = args.queries.row(query);
  bool all_finite = true;
  int64_t i = begin;
#if defined(__AVX2__) && defined(__FMA__)
  const RowBound bound = row_bound(q, args.queries.cols);
  const FloatVector scale = FloatVector{} + bound.scale, floor = FloatVector{} + bound.floor;
  const FloatVector squares_floor = FloatVector{} + bound.squares_floor;
  // Zero while every approximate score is finite, NaN from the first that is not.
  FloatVector not_finite_scores = FloatVector{};
  // A square root per block of rows is a twentieth of the scan: first the bound is tried
  // with sqrt(s) <= (s / c + c) / 2, true for every c > 0 (equal at s = c^2), c being the
  // largest norm of the first block's rows; only a block that this looser bound does not rule
  // out has its exact bound computed. (A non-finite value makes it pass: NaN compares as
  // reaching.) Its few extra roundings are covered by the bound's 1% (see RowBound).
  FloatVector half_scale{}, reference{}, inverse_reference{};
  bool have_reference = false;
  for (; i + kLanes <= end; i += kLanes) {
    FloatVector scores, squares;
    sum_row_block(q, args.items, i, scores, squares);
    not_finite_scores += scores - scores;
    const FloatVector threshold = FloatVector{} + block.thresholds[slot];
    const FloatVector norms2 = squares + squares_floor;
    if (__builtin_expect(have_reference, 1)) {
      const FloatVector loose = scores + (half_scale * (norms2 * inverse_reference + reference) + floor);
      if (__builtin_expect(not_below(loose, threshold) == 0, 1)) continue;
    } else {
      have_reference = true;
      float lanes[kLanes], largest = 0.0f;
      store(lanes, square_roots(norms2));
      for (int64_t l = 0; l < kLanes; ++l) largest = lanes[l] > largest ? lanes[l] : largest;
      // A zero, infinite or NaN first block leaves c = 1: still a valid bound, only looser.
      const float c = largest > 0.0f && largest < 1e30f ? largest : 1.0f;
      half_scale = scale * 0.5f;
      reference = FloatVector{} + c;
      inverse_reference = FloatVector{} + 1.0f / c;
    }
    const FloatVector reach = scores + (scale * square_roots(norms2) + floor);
    const unsigned mask = not_below(reach, threshold);
    if (__builtin_expect(mask == 0, 1)) continue;
    for (int64_t half = 0; half < kLanes; half += 8) {
      unsigned part = (mask >> half) & 0xFFu;
      if (part & (part - 1)) {
        // Several candidates (while the threshold is still low): 8 rows' exact scores side
        // by side cost about what one row's chain of dependent multiply-adds does.
        float exact[8];
        _mm256_storeu_ps(exact, score_eight_items(q, args.items, i + half));
        for (; part; part &= part - 1) {
          const int lane = __builtin_ctz(part);
          if (exact[lane] == exact[lane]) selector.offer(slot, query, i + half + lane, exact[lane]);
        }
      } else if (part) {
        offer_exact(args, selector, slot, query, q, i + half + __builtin_ctz(part));
      }
    }
  }
  all_finite = not_finite(not_finite_scores) == 0;
#endif
  for (; i < end; ++i) all_finite &= offer_exact(args, selector, slot, query, q, i);
  return all_finite;
}

// Panels of kPanelItems items stored factor-major (see topk.hpp): a panel row (one factor of
// 96 items) is contiguous, so a chunk of it feeds a register's worth of accumulators from one
// memory stream, each lane summing its item's products in factor order with no transposes.
constexpr int64_t kRowVectors = kPanelItems / kLanes;
constexpr int64_t kChunkVectors = kRowVectors > 12 ? 12 : kRowVectors;  // accumulators in registers
static_assert(kPanelItems % kLanes == 0 && kRowVectors % kChunkVectors == 0, "panel rows are whole chunks");
static_assert(16 % kLanes == 0, "a 16-item block is whole vectors");

struct Float32Panels {
  const float* values;
  inline void load_chunk(int64_t offset, FloatVector out[kChunkVectors]) const {
#pragma GCC unroll 16
    for (int v = 0; v < kChunkVectors; ++v) out[v] = load(values + offset + v * kLanes);
  }
};

// The panels in bfloat16 (the top 16 bits of each float32, rounded): half the bytes to read.
// Each 16 values of a row are stored as 8 32-bit words, word l holding item l in its low half
// and item l + 8 in its high half, so that a shift and a mask widen them to float32 exactly,
// items in order. Only the items' rounding differs from the float32 scores; the caller
// bounds it.
typedef uint32_t EightWords __attribute__((vector_size(32)));
typedef float EightFloats __attribute__((vector_size(32)));

struct Bfloat16Panels {
  const uint16_t* values;
  // A template on the vector type only so that the branches for other widths are discarded.
  template <typename Vector>
  inline void load_chunk(int64_t offset, Vector out[kChunkVectors]) const {
    constexpr int per_block = 16 / kLanes;
#pragma GCC unroll 16
    for (int b = 0; b < kChunkVectors / per_block; ++b) {
      EightWords w;
      __builtin_memcpy(&w, values + offset + b * 16, sizeof(w));
      const EightWords low = w << 16;           // items 0..7 of the block
      const EightWords high = w & 0xFFFF0000u;  // items 8..15
      if constexpr (sizeof(Vector) == 64) {
        // Joined in registers: two 32-byte stores read back as one 64-byte load would stall
        // on every chunk (the store buffer cannot forward them).
        out[b] = __builtin_shufflevector(reinterpret_cast<const EightFloats&>(low),
                                         reinterpret_cast<const EightFloats&>(high), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                         10, 11, 12, 13, 14, 15);
      } else if constexpr (sizeof(Vector) == 32) {
        out[b * 2] = reinterpret_cast<const Vector&>(low);
        out[b * 2 + 1] = reinterpret_cast<const Vector&>(high);
      } else {
        float block[16];
        __builtin_memcpy(block, &low, sizeof(low));
        __builtin_memcpy(block + 8, &high, sizeof(high));
#pragma GCC unroll 4
        for (int v = 0; v < per_block; ++v) out[b * per_block + v] = load(block + v * kLanes);
      }
    }
  }
};

// Scores the panel holding items [first_item, first_item + kPanelItems) against one query
// and offers those below `end` that reach its threshold, in increasing id order.
template <typename Panels, typename I, typename O>
inline void score_panel(const TopkArgs<I, O>& args, Selector<I, O>& selector, QueryBlock& block, int64_t slot,
                        int64_t query, const Panels& panels, int64_t first_item, int64_t end) {
  const int64_t f = args.queries.cols;
  const float* q = args.queries.row(query);
  const int64_t base = (first_item / kPanelItems) * f * kPanelItems;
  for (int64_t c = 0; c < kRowVectors; c += kChunkVectors) {
    FloatVector acc[kChunkVectors];
#pragma GCC unroll 16
    for (int v = 0; v < kChunkVectors; ++v) acc[v] = FloatVector{};
    for (int64_t j = 0; j < f; ++j) {
      const FloatVector b = broadcast(q + j);
      FloatVector row[kChunkVectors];
      panels.load_chunk(base + j * kPanelItems + c * kLanes, row);
#pragma GCC unroll 16
      for (int v = 0; v < kChunkVectors; ++v) acc[v] = multiply_add(b, row[v], acc[v]);
    }
    const FloatVector threshold = FloatVector{} + block.thresholds[slot];
    unsigned passed[kChunkVectors];
    unsigned any = 0;
#pragma GCC unroll 16
    for (int v = 0; v < kChunkVectors; ++v) {
      passed[v] = at_least(acc[v], threshold);
      any |= passed[v];
    }
    if (__builtin_expect(any == 0, 1)) continue;
    // Out of the registers with constant indices only (any other use of acc would keep it in
    // memory for the whole loop).
    float scores[kChunkVectors][kLanes];
#pragma GCC unroll 16
    for (int v = 0; v < kChunkVectors; ++v) store(scores[v], acc[v]);
    for (int v = 0; v < kChunkVectors; ++v)
      for (unsigned mask = passed[v]; mask; mask &= mask - 1) {
        const int l = __builtin_ctz(mask);
        const int64_t item = first_item + (c + v) * kLanes + l;
        if (item < end) selector.offer(slot, query, item, scores[v][l]);
      }
  }
}

// Items [begin, end) from the panels; begin is a multiple of kPanelItems.
template <typename Panels, typename I, typename O>
void scan_panels_for_one_query(const TopkArgs<I, O>& args, Selector<I, O>& selector, QueryBlock& block,
                               int64_t slot, int64_t query, const Panels& panels, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end && !selector.overflowed(); i += kPanelItems)
    score_panel(args, selector, block, slot, query, panels, i, end);
}

// How far a score from bfloat16 items can be from the float32 score of the same pair,
// times 2 (the k-th best can be off by as much in the other direction): with u = 2^-8 the
// bfloat16 rounding and g = f 2^-24 / (1 - f 2^-24) the float32 summation error,
// |s - s~| <= (u + g (2 + u)) sum_j |q_j x_j| <= (u + g (2 + u)) |q| max_i |x_i|, plus the
// rounding of bfloat16 subnormals (2^-134 per product term).
inline float bfloat16_slack(const float* q, int64_t f, float max_item_norm) {
  double norm = 0.0, largest = 0.0;
  for (int64_t j = 0; j < f; ++j) {
    norm += double(q[j]) * double(q[j]);
    largest = largest > __builtin_fabs(double(q[j])) ? largest : __builtin_fabs(double(q[j]));
  }
  const double u = 1.0 / 256.0;
  const double g = double(f) * 0x1p-24 / (1.0 - double(f) * 0x1p-24);
  const double bound = (u + g * (2.0 + u)) * __builtin_sqrt(norm) * double(max_item_norm) +
                       double(f) * largest * 0x1p-133;
  return static_cast<float>(2.0 * bound * 1.01);  // 1% for the rounding of this computation
}

}  // namespace

template <typename I, typename O>
void topk_batch(const TopkArgs<I, O>& args) {
  const int64_t nq = args.queries.rows;
  const int64_t blocks = (nq + args.block_queries - 1) / args.block_queries;
#pragma omp parallel num_threads(args.threads)
  {
    QueryBlock block(args.workspace + thread_index() * args.workspace_per_thread, args.block_queries, args.capacity,
                     args.queries.cols);
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t first = b * args.block_queries;
      run_query_block(args, block, first, smaller(args.block_queries, nq - first));
    }
  }
}

// One thread's share [begin, end) of query q's items, into its own reservoir. Returns whether
// the rows it scanned were all finite (true where it scanned panels: they cannot tell), and
// sets `overflowed` when the bfloat16 pass left more near-ties than its reservoir holds.
template <typename I, typename O>
bool scan_one_query_part(const TopkArgs<I, O>& args, int t, int64_t q, int64_t begin, int64_t end,
                         bool& overflowed) {
  const int64_t f = args.queries.cols;
  QueryBlock block(args.workspace + t * args.workspace_per_thread, args.block_queries, args.capacity, f);
  Selector<I, O> selector(args, block);
  selector.reset(0, q);
  if (begin >= end) return true;
  // A thread starting mid-row must find its place in the exclusion row.
  if (args.exclusions.indptr) {
    const int64_t first_id = args.filter.item_ids ? args.filter.item_ids[begin] : begin;
    int64_t& cursor = block.cursors[0];
    const int64_t row_end = static_cast<int64_t>(args.exclusions.indptr[q + 1]);
    while (cursor < row_end && static_cast<int64_t>(args.exclusions.indices[cursor]) < first_id) ++cursor;
  }
  if (args.item_panels_bfloat16) {
    // Approximate scores first; then the exact float32 score of every candidate left.
    selector.set_slack(bfloat16_slack(args.queries.row(q), f, args.max_item_norm));
    scan_panels_for_one_query(args, selector, block, 0, q, Bfloat16Panels{args.item_panels_bfloat16}, begin, end);
    selector.shrink(0);
    if (selector.overflowed()) overflowed = true;
    TopkCandidate* c = selector.candidates(0);
    for (int64_t j = 0; j < selector.count(0); ++j)
      c[j].score = exact_score(args.queries.row(q), args.items.row(c[j].id), f);
    selector.set_slack(0.0f);
    selector.forget_threshold(0);
    return true;
  }
  if (args.item_panels) {
    scan_panels_for_one_query(args, selector, block, 0, q, Float32Panels{args.item_panels}, begin, end);
    return true;
  }
  return scan_items_for_one_query(args, selector, block, 0, q, begin, end);
}

// Query q's results from the reservoirs of a team of `team` threads (thread 0's first).
template <typename I, typename O>
void merge_one_query(const TopkArgs<I, O>& args, int64_t q, int team, bool overflowed) {
  const int64_t f = args.queries.cols;
  QueryBlock first(args.workspace, args.block_queries, args.capacity, f);
  Selector<I, O> merged(args, first);
  if (overflowed) {
    // Too many near-ties for the bfloat16 margin: this query again, exactly.
    merged.reset(0, q);
    scan_items_for_one_query(args, merged, first, 0, q, 0, args.items.rows);
  } else {
    // Every other thread's candidates go through thread 0's reservoir.
    for (int other = 1; other < team; ++other) {
      QueryBlock theirs(args.workspace + other * args.workspace_per_thread, args.block_queries, args.capacity, f);
      const TopkCandidate* c = theirs.candidates;
      for (int64_t j = 0; j < theirs.counts[0]; ++j) merged.push(0, c[j]);
    }
  }
  merged.finish(0, q);
}

template <typename I, typename O>
void topk_single(const TopkArgs<I, O>& args) {
  const int64_t nq = args.queries.rows;
  const int64_t n = args.items.rows;
  // Item ranges in whole panels, one per thread.
  const int64_t per_thread = ((n + args.threads - 1) / args.threads + kPanelItems - 1) / kPanelItems * kPanelItems;
  const int64_t parts = per_thread > 0 ? (n + per_thread - 1) / per_thread : 0;
  // Whether the row scans met only finite scores (see `finite`); only they can tell.
  bool rows_finite = !args.item_panels && !args.item_panels_bfloat16;
  for (int64_t q = 0; q < nq; ++q) {
    bool overflowed = false;
    if (parts <= 1) {
      // One thread's work, done here outside OpenMP: a team of one still ends its region
      // and its barriers with system calls, microseconds a query.
      rows_finite &= scan_one_query_part(args, 0, q, 0, n, overflowed);
      merge_one_query(args, q, 1, overflowed);
      continue;
    }
#pragma omp parallel num_threads(args.threads)
    {
      const int t = thread_index();
      const int64_t begin = t < parts ? t * per_thread : n;
      bool thread_overflowed = false;
      const bool finite_part = scan_one_query_part(args, t, q, begin, smaller(n, begin + per_thread),
                                                   thread_overflowed);
      if (thread_overflowed) {
#pragma omp atomic write
        overflowed = true;
      }
      if (!finite_part) {
#pragma omp atomic write
        rows_finite = false;
      }
#pragma omp barrier
#pragma omp single
      merge_one_query(args, q, thread_count(), overflowed);
    }
  }
  if (args.items_finite) *args.items_finite = rows_finite;
}

#define RECORE_INSTANTIATE(I, O)                              \
  template void topk_batch<I, O>(const TopkArgs<I, O>& args); \
  template void topk_single<I, O>(const TopkArgs<I, O>& args);
RECORE_INSTANTIATE(int32_t, int32_t)
RECORE_INSTANTIATE(int32_t, int64_t)
RECORE_INSTANTIATE(int64_t, int32_t)
RECORE_INSTANTIATE(int64_t, int64_t)
#undef RECORE_INSTANTIATE

}  // namespace RECORE_TARGET
}  // namespace recore
