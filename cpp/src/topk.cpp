// Top-k dispatcher: checks shapes, sizes the per-thread workspace (reservoirs, packed query
// blocks) and runs the kernel copy for the active instruction set.
#include "recore/topk.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "dispatch.hpp"
#include "recore/topk_kernels.hpp"

namespace recore {
namespace {

using detail::AlignedBuffer;
using detail::check_matrix;
using detail::resolve_threads;

// Room a query's reservoir has beyond the k it keeps: compacting every `margin` offers keeps
// the selection cost per offer constant.
int64_t reservoir_margin(int64_t keep) { return std::max<int64_t>(keep, 16); }

// Workspace a thread may use for its block of queries' reservoirs: the block shrinks as k
// grows, so memory stays bounded whatever k is.
constexpr int64_t kReservoirBytesPerThread = int64_t{4} << 20;
constexpr int64_t kMaxBlockQueries = 256;
// Up to this k a heap keeps each query's candidates; beyond it, a reservoir compacted by
// partial selection (a heap's log k cost per offer grows, and large k offer many scores).
constexpr int64_t kHeapMaxKeep = 256;
// Item rows scored against a block of queries while they stay in the per-core cache.
constexpr int64_t kItemBlockBytes = int64_t{128} << 10;

}  // namespace

template <typename I, typename O>
bool topk(MatrixView<const float> queries, MatrixView<const float> items, int64_t k, const ItemFilter& filter,
          const Exclusions<I>& exclusions, const TopkOutput<O>& output, int num_threads,
          const ItemPanels& panels) {
  check_matrix(queries, "queries");
  check_matrix(items, "items");
  if (queries.cols != items.cols) throw std::invalid_argument("queries and items must have the same number of factors");
  if (k < 1) throw std::invalid_argument("k must be >= 1");
  const int64_t nq = queries.rows, n = items.rows, f = queries.cols;
  if (nq == 0) return false;

  TopkArgs<I, O> args;
  args.queries = queries;
  args.items = items;
  args.k = k;
  args.keep = std::min(k, n);
  args.use_heap = args.keep > 0 && args.keep <= kHeapMaxKeep;
  args.capacity = args.use_heap ? args.keep
                                : std::min(args.keep + reservoir_margin(args.keep), std::max<int64_t>(n, 1));
  args.filter = filter;
  args.exclusions = exclusions;
  args.output = output;
  args.threads = resolve_threads(num_threads);
  args.item_block = std::max<int64_t>(16, kItemBlockBytes / (std::max<int64_t>(f, 1) * int64_t(sizeof(float))));

  const bool single = nq <= kSingleQueryPathMax || n == 0;
  if (single) {
    args.block_queries = 1;
    args.item_panels = panels.float32;
    if (panels.bfloat16) {
      args.item_panels_bfloat16 = panels.bfloat16;
      args.max_item_norm = panels.max_norm;
      // Room for the candidates within the error bound of the k-th best as well.
      args.use_heap = false;
      args.capacity = std::min(args.keep + std::max<int64_t>(4 * args.keep, 1024), std::max<int64_t>(n, 1));
    }
  } else {
    const int64_t per_query = args.capacity * int64_t(sizeof(TopkCandidate));
    int64_t block = std::clamp<int64_t>(kReservoirBytesPerThread / per_query, 1, kMaxBlockQueries);
    // Whole lane blocks, and enough blocks that every thread gets work.
    block = std::max<int64_t>(kTopkMaxLaneQueries, block / kTopkMaxLaneQueries * kTopkMaxLaneQueries);
    const int64_t fair = (nq + args.threads - 1) / args.threads;
    args.block_queries = std::max<int64_t>(1, std::min(block, (fair + 31) / 32 * 32));
    args.threads = static_cast<int>(std::min<int64_t>(args.threads, (nq + args.block_queries - 1) / args.block_queries));
  }
  args.workspace_per_thread = topk_workspace_bytes(args.block_queries, args.capacity, f);
  AlignedBuffer<unsigned char> workspace(args.workspace_per_thread * args.threads);
  args.workspace = workspace.get();
  bool items_finite = false;
  args.items_finite = &items_finite;
  if (single) RECORE_RUN(args, topk_single<I, O>);
  else RECORE_RUN(args, topk_batch<I, O>);
  return items_finite;
}

#define RECORE_INSTANTIATE(I, O)                                                                        \
  template bool topk<I, O>(MatrixView<const float>, MatrixView<const float>, int64_t, const ItemFilter&, \
                           const Exclusions<I>&, const TopkOutput<O>&, int, const ItemPanels&);
RECORE_INSTANTIATE(int32_t, int32_t)
RECORE_INSTANTIATE(int32_t, int64_t)
RECORE_INSTANTIATE(int64_t, int32_t)
RECORE_INSTANTIATE(int64_t, int64_t)
#undef RECORE_INSTANTIATE

void make_item_panels(MatrixView<const float> items, float* panels) {
  const int64_t n = items.rows, f = items.cols;
  const int64_t count = (n + kPanelItems - 1) / kPanelItems;
  for (int64_t p = 0; p < count; ++p) {
    float* panel = panels + p * f * kPanelItems;
    for (int64_t j = 0; j < f; ++j) {
      for (int64_t l = 0; l < kPanelItems; ++l) {
        const int64_t row = p * kPanelItems + l;
        panel[j * kPanelItems + l] = row < n ? items.row(row)[j] : 0.0f;
      }
    }
  }
}

namespace {
// The top 16 bits of a float32, rounded to nearest, ties to even (no NaN reaches here: the
// items were checked finite).
uint32_t bfloat16_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return static_cast<uint32_t>((static_cast<uint64_t>(bits) + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
}  // namespace

void make_bfloat16_panels(const float* panels, int64_t count, uint32_t* words) {
  // kPanelItems is a multiple of 16, so every group of 16 lies within one panel row.
  for (int64_t group = 0; group < count / 16; ++group) {
    const float* values = panels + group * 16;
    for (int64_t l = 0; l < 8; ++l)
      words[group * 8 + l] = bfloat16_bits(values[l]) | (bfloat16_bits(values[l + 8]) << 16);
  }
}

}  // namespace recore
