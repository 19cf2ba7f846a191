// Pieces every dispatcher in cpp/src shares: thread counts, aligned scratch memory, padding
// to whole SIMD vectors, view checks, and the run-time choice of a kernel copy.
// Internal to the engine: only cpp/src/*.cpp include it.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "recore/cpu.hpp"
#include "recore/csr.hpp"

namespace recore::detail {

inline int resolve_threads(int requested) {
  if (requested > 0) return requested;
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Zero-filled, 64-byte aligned scratch memory.
template <typename T>
class AlignedBuffer {
 public:
  explicit AlignedBuffer(int64_t count) {
    if (count <= 0) count = 1;
    const size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
    data_.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
    if (!data_) throw std::bad_alloc();
    std::memset(data_.get(), 0, bytes);
  }
  T* get() const { return data_.get(); }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
};

// f rounded up to whole 64-byte SIMD vectors.
template <typename T>
int64_t padded(int64_t f) {
  const int64_t lanes = 64 / static_cast<int64_t>(sizeof(T));
  return (f + lanes - 1) / lanes * lanes;
}

template <typename T>
void check_matrix(MatrixView<const T> m, const char* name) {
  if (m.rows < 0 || m.cols < 0 || m.stride < m.cols || (m.rows > 0 && m.cols > 0 && !m.data))
    throw std::invalid_argument(std::string(name) + " has an invalid layout");
}

// Runs the copy of a kernel compiled for the active instruction set. Targets this build
// lacks (non-x86 machines build only the baseline) are passed as nullptr.
template <typename Args>
inline void run_kernel(const Args& args, void (*baseline_kernel)(const Args&),
                       void (*avx2_kernel)(const Args&), void (*avx512_kernel)(const Args&)) {
  switch (active_cpu_target()) {
    case CpuTarget::avx512:
      if (avx512_kernel) return avx512_kernel(args);
      [[fallthrough]];
    case CpuTarget::avx2:
      if (avx2_kernel) return avx2_kernel(args);
      [[fallthrough]];
    case CpuTarget::baseline:
      return baseline_kernel(args);
  }
}

}  // namespace recore::detail

#ifdef RECORE_HAVE_AVX2
#define RECORE_AVX2(...) &::recore::avx2::__VA_ARGS__
#else
#define RECORE_AVX2(...) nullptr
#endif
#ifdef RECORE_HAVE_AVX512
#define RECORE_AVX512(...) &::recore::avx512::__VA_ARGS__
#else
#define RECORE_AVX512(...) nullptr
#endif
// RECORE_RUN(args, kernel<T, I>) runs recore::<active target>::kernel<T, I>(args).
#define RECORE_RUN(ARGS, ...)                                                    \
  ::recore::detail::run_kernel(ARGS, &::recore::baseline::__VA_ARGS__, RECORE_AVX2(__VA_ARGS__), RECORE_AVX512(__VA_ARGS__))
