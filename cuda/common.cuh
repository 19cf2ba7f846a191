// Shared pieces of the CUDA engine: error checks that turn every failed CUDA call or launch
// into a C++ exception (never an abort), the current-device guard, block reductions and a
// reusable per-device workspace of plain device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "engine.hpp"

namespace recore::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* what, const char* file, int line);

inline void check(cudaError_t status, const char* what, const char* file, int line) {
  if (status != cudaSuccess) throw_cuda_error(status, what, file, line);
}

#define RECORE_CUDA_CHECK(call) ::recore::cuda::check((call), #call, __FILE__, __LINE__)
// After every kernel launch: a bad configuration is reported here, a fault in the kernel
// by the next synchronizing call (also checked).
#define RECORE_CUDA_LAUNCHED(name) ::recore::cuda::check(cudaGetLastError(), "launch of " name, __FILE__, __LINE__)

inline cudaStream_t as_stream(std::uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

// Scratch memory for one engine call on the current device, grown on demand and kept for
// the next call. The lease holds the device's lock until the call has synchronized its
// stream, so two calls never share scratch memory.
class WorkspaceLease {
 public:
  WorkspaceLease();
  ~WorkspaceLease();
  WorkspaceLease(const WorkspaceLease&) = delete;
  WorkspaceLease& operator=(const WorkspaceLease&) = delete;
  // Device memory of at least `bytes`, valid until the lease ends (a later call may move it:
  // take every piece from one carve() pass).
  void* reserve(std::size_t bytes);

  struct Slot;

 private:
  Slot* slot_;
};

// Splits one reservation into aligned pieces.
class Carver {
 public:
  void add(std::size_t bytes) { total_ += round(bytes); }
  std::size_t total() const { return total_ == 0 ? 256 : total_; }
  template <typename T>
  T* take(char*& cursor, std::size_t count) const {
    T* piece = reinterpret_cast<T*>(cursor);
    cursor += round(count * sizeof(T));
    return piece;
  }
  static std::size_t round(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

 private:
  std::size_t total_ = 0;
};

// Multiprocessors of the current device (sizes grids).
int multiprocessors();

#ifdef RECORE_HAVE_CUBLAS
}  // namespace recore::cuda
#include <cublas_v2.h>
namespace recore::cuda {
// This thread's cuBLAS handle for the current device, bound to `stream`.
cublasHandle_t cublas_on(cudaStream_t stream);
// Throws CudaError naming `what` unless `status` is success.
void check_cublas(cublasStatus_t status, const char* what);
#endif

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Sum over the block, returned to every thread. `scratch` holds 32 values of T; the block
// size is a multiple of 32.
template <typename T>
__device__ inline T warp_sum(T value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

template <typename T>
__device__ inline T block_sum(T value, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  value = warp_sum(value);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  T total = T(0);
  for (int w = 0; w < warps; ++w) total += scratch[w];  // fixed order: deterministic
  return total;
}

}  // namespace recore::cuda
