// Structure checks of caller-provided CSR matrices, run before any kernel reads them.
#include "recore/csr.hpp"

#include "recore/parallel.hpp"

namespace recore {

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
