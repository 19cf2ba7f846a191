// Structure checks of caller-provided CSR matrices, run before any kernel reads them.
#include "recore/csr.hpp"

namespace recore {
namespace {
// Below this many values a check runs on the calling thread: starting a thread team costs more
// than reading them (and, on a loaded machine, can wait milliseconds for a core).
constexpr int64_t kParallelCheckMin = int64_t{1} << 16;
}  // namespace

template <typename I>
const char* csr_structure_error(const I* indptr, int64_t rows, const I* indices, int64_t nnz, int64_t cols) {
  if (rows < 0 || cols < 0 || nnz < 0) return "negative dimension";
  if (static_cast<int64_t>(indptr[0]) != 0) return "indptr must start at 0";
  if (static_cast<int64_t>(indptr[rows]) != nnz) return "indptr must end at the number of stored entries";
  bool decreasing = false;
#pragma omp parallel for reduction(|| : decreasing) schedule(static) if (rows > kParallelCheckMin)
  for (int64_t r = 0; r < rows; ++r) decreasing = decreasing || indptr[r + 1] < indptr[r];
  if (decreasing) return "indptr must never decrease";
  bool negative = false, too_large = false;
#pragma omp parallel for reduction(|| : negative, too_large) schedule(static) if (nnz > kParallelCheckMin)
  for (int64_t k = 0; k < nnz; ++k) {
    const int64_t column = static_cast<int64_t>(indices[k]);
    negative = negative || column < 0;
    too_large = too_large || column >= cols;
  }
  if (negative) return "indices must not be negative";
  if (too_large) return "indices must be smaller than the number of columns";
  return nullptr;
}

template <typename I>
bool csr_rows_strictly_increasing(const I* indptr, int64_t rows, const I* indices) {
  bool unsorted = false;
#pragma omp parallel for reduction(|| : unsorted) schedule(static) if (rows + static_cast<int64_t>(indptr[rows]) > kParallelCheckMin)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = static_cast<int64_t>(indptr[r]) + 1; k < static_cast<int64_t>(indptr[r + 1]); ++k)
      unsorted = unsorted || indices[k] <= indices[k - 1];
  return !unsorted;
}

template const char* csr_structure_error<int32_t>(const int32_t*, int64_t, const int32_t*, int64_t, int64_t);
template const char* csr_structure_error<int64_t>(const int64_t*, int64_t, const int64_t*, int64_t, int64_t);
template bool csr_rows_strictly_increasing<int32_t>(const int32_t*, int64_t, const int32_t*);
template bool csr_rows_strictly_increasing<int64_t>(const int64_t*, int64_t, const int64_t*);

}  // namespace recore
