// Small helpers shared by the kernel units: the SIMD vector type of the unit's target,
// and loops simple enough for the compiler to vectorize. Included by cpp/src/kernels/*.cpp
// only, after RECORE_TARGET is defined; everything has internal linkage, so each target's
// copy stays its own (see als_kernels.hpp).
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef RECORE_TARGET
#error "RECORE_TARGET must name the instruction set this unit is compiled for"
#endif

namespace recore {
namespace RECORE_TARGET {
namespace {

#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
};
template <>
struct Simd<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
};

inline int thread_count() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

inline int thread_index() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline float square_root(float v) { return __builtin_sqrtf(v); }
inline double square_root(double v) { return __builtin_sqrt(v); }
inline int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename T>
inline void fill_zero(T* out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = T(0);
}

template <typename T>
inline void copy(const T* in, T* out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = in[j];
}

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += a[j] * b[j];
  return s;
}

template <typename T>
inline void axpy(T a, const T* x, T* y, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

}  // namespace
}  // namespace RECORE_TARGET
}  // namespace recore
