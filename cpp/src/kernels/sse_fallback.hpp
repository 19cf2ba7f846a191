// The 4-lane SSE operations that the kernels' portable parts are written with, for machines
// without SSE (aarch64: Linux, macOS). Every x86-64 CPU has SSE, so on x86 the kernels use
// <immintrin.h> itself and this header is never included; elsewhere it supplies the same
// operations, lane for lane, in GCC/Clang vector extensions, which the compiler maps to the
// machine's own vector instructions.
//
// Each operation does exactly the IEEE additions, multiplications, divisions and square roots
// of its SSE original, on the same lanes, so a kernel computes the same sums in the same order
// as x86's baseline build (and, with contraction off, see CMakeLists.txt, the same results).
// A kernel that uses an SSE operation missing here does not compile on these machines, rather
// than silently computing something else: add it here, with SSE's exact lane semantics.
//
// Included by cpp/src/kernels/*.cpp only, after RECORE_TARGET is defined; like simd.hpp,
// everything has internal linkage in the unit's target namespace.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#error "x86-64 has SSE: include <immintrin.h>, not this header"
#endif

#ifndef RECORE_TARGET
#error "RECORE_TARGET must name the instruction set this unit is compiled for"
#endif

namespace recore {
namespace RECORE_TARGET {
namespace {

// The SSE types under their SSE names, so that one kernel source serves every machine.
typedef float __m128 __attribute__((vector_size(16)));
typedef float __m64 __attribute__((vector_size(8)));  // two floats, for the half loads and stores
typedef long long __m128i __attribute__((vector_size(16)));
typedef int SseMask __attribute__((vector_size(16)));  // four 32-bit lanes of bits

inline __m128 _mm_setzero_ps() { return __m128{0.0f, 0.0f, 0.0f, 0.0f}; }
inline __m128 _mm_set1_ps(float x) { return __m128{x, x, x, x}; }
inline __m128 _mm_setr_ps(float a, float b, float c, float d) { return __m128{a, b, c, d}; }
inline __m128 _mm_load1_ps(const float* p) { return _mm_set1_ps(*p); }
inline void _mm_storeu_ps(float* p, __m128 v) { __builtin_memcpy(p, &v, sizeof(v)); }

inline __m128 _mm_add_ps(__m128 a, __m128 b) { return a + b; }
inline __m128 _mm_div_ps(__m128 a, __m128 b) { return a / b; }
inline __m128 _mm_sqrt_ps(__m128 a) {
  return __m128{__builtin_sqrtf(a[0]), __builtin_sqrtf(a[1]), __builtin_sqrtf(a[2]), __builtin_sqrtf(a[3])};
}
// Lane 0 is a[0] + b[0]; lanes 1 to 3 are a's.
inline __m128 _mm_add_ss(__m128 a, __m128 b) { return __m128{a[0] + b[0], a[1], a[2], a[3]}; }
inline float _mm_cvtss_f32(__m128 a) { return a[0]; }

// Lanes [a[s & 3], a[(s >> 2) & 3], b[(s >> 4) & 3], b[(s >> 6) & 3]] (s a constant in practice,
// so the compiler resolves the lanes).
inline __m128 _mm_shuffle_ps(__m128 a, __m128 b, int s) {
  return __m128{a[s & 3], a[(s >> 2) & 3], b[(s >> 4) & 3], b[(s >> 6) & 3]};
}
inline __m128 _mm_unpacklo_ps(__m128 a, __m128 b) { return __m128{a[0], b[0], a[1], b[1]}; }
inline __m128 _mm_unpackhi_ps(__m128 a, __m128 b) { return __m128{a[2], b[2], a[3], b[3]}; }
inline __m128 _mm_movelh_ps(__m128 a, __m128 b) { return __m128{a[0], a[1], b[0], b[1]}; }
inline __m128 _mm_movehl_ps(__m128 a, __m128 b) { return __m128{b[2], b[3], a[2], a[3]}; }

// Two floats from p into the low (loadl) or high (loadh) half; the other half is a's.
inline __m128 _mm_loadl_pi(__m128 a, const __m64* p) {
  float two[2];
  __builtin_memcpy(two, p, sizeof(two));
  return __m128{two[0], two[1], a[2], a[3]};
}
inline __m128 _mm_loadh_pi(__m128 a, const __m64* p) {
  float two[2];
  __builtin_memcpy(two, p, sizeof(two));
  return __m128{a[0], a[1], two[0], two[1]};
}
inline void _mm_storel_pi(__m64* p, __m128 a) {
  const float two[2] = {a[0], a[1]};
  __builtin_memcpy(p, two, sizeof(two));
}
inline void _mm_storeh_pi(__m64* p, __m128 a) {
  const float two[2] = {a[2], a[3]};
  __builtin_memcpy(p, two, sizeof(two));
}

// Bit patterns: 32-bit integer lanes, reinterpreted as float lanes and combined bit by bit.
inline __m128i _mm_set1_epi32(int x) { return (__m128i)SseMask{x, x, x, x}; }
inline __m128i _mm_setr_epi32(int a, int b, int c, int d) { return (__m128i)SseMask{a, b, c, d}; }
inline __m128 _mm_castsi128_ps(__m128i a) { return (__m128)a; }
inline __m128i _mm_castps_si128(__m128 a) { return (__m128i)a; }
inline __m128 _mm_and_ps(__m128 a, __m128 b) { return (__m128)((SseMask)a & (SseMask)b); }
inline __m128 _mm_andnot_ps(__m128 a, __m128 b) { return (__m128)(~(SseMask)a & (SseMask)b); }  // (not a) and b
inline __m128 _mm_or_ps(__m128 a, __m128 b) { return (__m128)((SseMask)a | (SseMask)b); }

// a >= b per lane, as all-ones or zero bits (false when either is NaN, as SSE's cmpge).
inline __m128 _mm_cmpge_ps(__m128 a, __m128 b) { return (__m128)(a >= b); }
// Bit k set: lane k's sign bit is set.
inline int _mm_movemask_ps(__m128 a) {
  const SseMask negative = (SseMask)a < SseMask{0, 0, 0, 0};
  return (negative[0] & 1) | (negative[1] & 2) | (negative[2] & 4) | (negative[3] & 8);
}

}  // namespace
}  // namespace RECORE_TARGET
}  // namespace recore
