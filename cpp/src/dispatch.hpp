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
#ifdef _WIN32
#include <malloc.h>  // _aligned_malloc, _aligned_free
#endif

#include "recore/cpu.hpp"
#include "recore/csr.hpp"

namespace recore::detail {

// The threads a kernel will run on. Without OpenMP every parallel region runs once, on one
// thread, whatever was asked: kernels that split work by this count must be told 1.
inline int resolve_threads(int requested) {
#ifdef _OPENMP
  if (requested > 0) return requested;
  return omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

// Memory aligned to `alignment` bytes (a power of two; bytes a multiple of it), or nullptr.
// The Microsoft C runtime has no aligned_alloc (its free cannot release such memory): it has
// _aligned_malloc, whose memory only _aligned_free releases.
inline void* allocate_aligned(size_t alignment, size_t bytes) {
#ifdef _WIN32
  return _aligned_malloc(bytes, alignment);
#else
  return std::aligned_alloc(alignment, bytes);
#endif
}

inline void free_aligned(void* p) {
#ifdef _WIN32
  _aligned_free(p);
#else
  std::free(p);
#endif
}

// Zero-filled, 64-byte aligned scratch memory.
template <typename T>
class AlignedBuffer {
 public:
  explicit AlignedBuffer(int64_t count) {
    if (count <= 0) count = 1;
    const size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
    data_.reset(static_cast<T*>(allocate_aligned(64, bytes)));
    if (!data_) throw std::bad_alloc();
    std::memset(data_.get(), 0, bytes);
  }
  T* get() const { return data_.get(); }

 private:
  struct Free {
    void operator()(T* p) const { free_aligned(p); }
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
// lacks (non-x86 machines build only the baseline) are passed as null pointers of the
// kernel's type (RECORE_AVX2 / RECORE_AVX512): a bare nullptr would leave Args undeducible.
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
#define RECORE_AVX2(...) static_cast<decltype(&::recore::baseline::__VA_ARGS__)>(nullptr)
#endif
#ifdef RECORE_HAVE_AVX512
#define RECORE_AVX512(...) &::recore::avx512::__VA_ARGS__
#else
#define RECORE_AVX512(...) static_cast<decltype(&::recore::baseline::__VA_ARGS__)>(nullptr)
#endif
// RECORE_RUN(args, kernel<T, I>) runs recore::<active target>::kernel<T, I>(args).
#define RECORE_RUN(ARGS, ...)                                                    \
  ::recore::detail::run_kernel(ARGS, &::recore::baseline::__VA_ARGS__, RECORE_AVX2(__VA_ARGS__), RECORE_AVX512(__VA_ARGS__))
