// Non-owning views over caller-owned buffers. The engine never allocates or frees
// the arrays a view points into.
#pragma once

#include <cstdint>

namespace recore {

// Compressed sparse rows: row r holds columns indices[indptr[r] .. indptr[r+1]) with
// their values at the same positions of data. I is int32_t or int64_t.
template <typename T, typename I>
struct CsrView {
  int64_t rows = 0;
  int64_t cols = 0;
  const I* indptr = nullptr;   // rows + 1 entries
  const I* indices = nullptr;  // nnz entries, each in [0, cols)
  const T* data = nullptr;     // nnz entries

  int64_t nnz() const { return rows > 0 ? static_cast<int64_t>(indptr[rows]) : 0; }
  int64_t row_begin(int64_t r) const { return static_cast<int64_t>(indptr[r]); }
  int64_t row_end(int64_t r) const { return static_cast<int64_t>(indptr[r + 1]); }
};

// A dense row-major matrix: `rows` rows of `cols` values, consecutive rows `stride` apart.
template <typename T>
struct MatrixView {
  T* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;

  T* row(int64_t r) const { return data + r * stride; }
};

// Checks that a CSR structure is well formed: indptr starts at 0, never decreases and ends
// at nnz; every index lies in [0, cols). Returns nullptr when it is, else a description of
// the first problem found.
template <typename I>
const char* csr_structure_error(const I* indptr, int64_t rows, const I* indices, int64_t nnz, int64_t cols);

// True when every row's indices are strictly increasing (sorted, no duplicates).
template <typename I>
bool csr_rows_strictly_increasing(const I* indptr, int64_t rows, const I* indices);

}  // namespace recore
