// Structure checks of caller-provided CSR matrices, run before any kernel reads them.
#include "recore/csr.hpp"

namespace recore {
namespace {
// Below this many values a check runs on the calling thread: starting a thread team costs more
// than reading them (and, on a loaded machine, can wait milliseconds for a core). Such checks
// stay out of OpenMP altogether: even a region that runs on one thread ends in a barrier that
// makes a system call, a microsecond or more on every single-query search.
constexpr int64_t kParallelCheckMin = int64_t{1} << 16;

// Whether bad(i) holds for some i in [0, n): read by a thread team when n is large.
template <typename Predicate>
bool any_index(int64_t n, int64_t work, const Predicate& bad) {
  bool found = false;
  if (work > kParallelCheckMin) {
#pragma omp parallel for reduction(|| : found) schedule(static)
    for (int64_t i = 0; i < n; ++i) found = found || bad(i);
  } else {
    for (int64_t i = 0; i < n; ++i) found = found || bad(i);
  }
  return found;
}
}  // namespace

template <typename I>
const char* csr_structure_error(const I* indptr, int64_t rows, const I* indices, int64_t nnz, int64_t cols) {
  if (rows < 0 || cols < 0 || nnz < 0) return "negative dimension";
  if (static_cast<int64_t>(indptr[0]) != 0) return "indptr must start at 0";
  if (static_cast<int64_t>(indptr[rows]) != nnz) return "indptr must end at the number of stored entries";
  if (any_index(rows, rows, [&](int64_t r) { return indptr[r + 1] < indptr[r]; })) return "indptr must never decrease";
  const auto negative = [&](int64_t k) { return static_cast<int64_t>(indices[k]) < 0; };
  const auto out_of_range = [&](int64_t k) { return negative(k) || static_cast<int64_t>(indices[k]) >= cols; };
  if (!any_index(nnz, nnz, out_of_range)) return nullptr;
  // Which error, read again only for the message.
  return any_index(nnz, nnz, negative) ? "indices must not be negative"
                                       : "indices must be smaller than the number of columns";
}

template <typename I>
bool csr_rows_strictly_increasing(const I* indptr, int64_t rows, const I* indices) {
  const auto unsorted_row = [&](int64_t r) {
    bool unsorted = false;
    for (int64_t k = static_cast<int64_t>(indptr[r]) + 1; k < static_cast<int64_t>(indptr[r + 1]); ++k)
      unsorted = unsorted || indices[k] <= indices[k - 1];
    return unsorted;
  };
  return !any_index(rows, rows + static_cast<int64_t>(indptr[rows]), unsorted_row);
}

template const char* csr_structure_error<int32_t>(const int32_t*, int64_t, const int32_t*, int64_t, int64_t);
template const char* csr_structure_error<int64_t>(const int64_t*, int64_t, const int64_t*, int64_t, int64_t);
template bool csr_rows_strictly_increasing<int32_t>(const int32_t*, int64_t, const int32_t*);
template bool csr_rows_strictly_increasing<int64_t>(const int64_t*, int64_t, const int64_t*);

}  // namespace recore
