// Owning matrices for the engine's C++ tests (the engine itself only takes views), and
// reproducible random ones for the tests that compare runs rather than hand values.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "recore/csr.hpp"

namespace recore::testing {

// A dense row-major matrix, rows packed (stride == cols).
template <typename T>
struct Dense {
  int64_t rows = 0, cols = 0;
  std::vector<T> values;

  Dense(int64_t rows_, int64_t cols_) : rows(rows_), cols(cols_), values(rows_ * cols_, T(0)) {}
  Dense(int64_t rows_, int64_t cols_, std::vector<T> values_) : rows(rows_), cols(cols_), values(std::move(values_)) {}

  MatrixView<const T> view() const { return MatrixView<const T>{values.data(), rows, cols, cols}; }
  MatrixView<T> mutable_view() { return MatrixView<T>{values.data(), rows, cols, cols}; }
  const T* row(int64_t r) const { return values.data() + r * cols; }
};

// A CSR matrix holding its own arrays.
template <typename T, typename I>
struct Csr {
  int64_t rows = 0, cols = 0;
  std::vector<I> indptr, indices;
  std::vector<T> data;

  Csr(int64_t rows_, int64_t cols_, std::vector<I> indptr_, std::vector<I> indices_, std::vector<T> data_)
      : rows(rows_), cols(cols_), indptr(std::move(indptr_)), indices(std::move(indices_)), data(std::move(data_)) {}

  CsrView<T, I> view() const { return CsrView<T, I>{rows, cols, indptr.data(), indices.data(), data.data()}; }
};

// splitmix64: a small, fully specified generator, so the random cases are the same on every
// platform and standard library.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n).
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
  // Uniform in [-scale, scale), on a grid of 2^-24 steps.
  double symmetric(double scale) { return scale * (static_cast<double>(next() >> 40) / 8388608.0 - 1.0); }

 private:
  uint64_t state_;
};

template <typename T>
Dense<T> random_dense(int64_t rows, int64_t cols, double scale, uint64_t seed) {
  Random random(seed);
  Dense<T> m(rows, cols);
  for (T& value : m.values) value = static_cast<T>(random.symmetric(scale));
  return m;
}

// Each row holds up to max_per_row distinct columns in increasing order (some rows none),
// with values in {1, ..., 5}.
template <typename T, typename I>
Csr<T, I> random_csr(int64_t rows, int64_t cols, int64_t max_per_row, uint64_t seed) {
  Random random(seed);
  std::vector<I> indptr{0}, indices;
  std::vector<T> data;
  std::vector<unsigned char> taken(cols, 0);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t wanted = random.below(max_per_row + 1);
    for (int64_t k = 0; k < wanted; ++k) taken[random.below(cols)] = 1;
    for (int64_t c = 0; c < cols; ++c) {
      if (!taken[c]) continue;
      taken[c] = 0;
      indices.push_back(static_cast<I>(c));
      data.push_back(static_cast<T>(1 + random.below(5)));
    }
    indptr.push_back(static_cast<I>(indices.size()));
  }
  return Csr<T, I>(rows, cols, std::move(indptr), std::move(indices), std::move(data));
}

}  // namespace recore::testing
