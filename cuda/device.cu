// Devices, errors and the reusable workspace of the CUDA engine.
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common.cuh"

namespace recore::cuda {

void throw_cuda_error(cudaError_t status, const char* what, const char* file, int line) {
  // Clear a sticky launch error so that the next call starts clean where that is possible.
  cudaGetLastError();
  throw CudaError(std::string("CUDA error ") + cudaGetErrorName(status) + ": " + cudaGetErrorString(status) +
                  " (in " + what + ", " + file + ":" + std::to_string(line) + ")");
}

DeviceScope::DeviceScope(int device) {
  RECORE_CUDA_CHECK(cudaGetDevice(&previous_));
  if (device != previous_) RECORE_CUDA_CHECK(cudaSetDevice(device));
}

DeviceScope::~DeviceScope() { cudaSetDevice(previous_); }

int device_count() {
  int count = 0;
  RECORE_CUDA_CHECK(cudaGetDeviceCount(&count));
  return count;
}

int runtime_version() {
  int version = 0;
  RECORE_CUDA_CHECK(cudaRuntimeGetVersion(&version));
  return version;
}

int driver_version() {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) return 0;
  return version;
}

std::string status() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return std::string(cudaGetErrorName(error)) + ": " + cudaGetErrorString(error);
  }
  if (count == 0) return "no CUDA device is visible";
  return "ok";
}

std::string device_name(int device) {
  cudaDeviceProp properties;
  RECORE_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
  return properties.name;
}

int pointer_device(const void* pointer) {
  cudaPointerAttributes attributes;
  const cudaError_t error = cudaPointerGetAttributes(&attributes, pointer);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) return -1;
  return attributes.device;
}

int multiprocessors() {
  int device = 0, count = 0;
  RECORE_CUDA_CHECK(cudaGetDevice(&device));
  RECORE_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

struct WorkspaceLease::Slot {
  std::mutex mutex;
  void* memory = nullptr;
  std::size_t bytes = 0;
};

namespace {
std::mutex slots_mutex;
// One slot per device, never freed: it is reused by every later call on that device.
std::map<int, std::unique_ptr<WorkspaceLease::Slot>>& slots() {
  static auto* table = new std::map<int, std::unique_ptr<WorkspaceLease::Slot>>();
  return *table;
}
}  // namespace

WorkspaceLease::WorkspaceLease() {
  int device = 0;
  RECORE_CUDA_CHECK(cudaGetDevice(&device));
  {
    std::lock_guard<std::mutex> lock(slots_mutex);
    auto& slot = slots()[device];
    if (!slot) slot = std::make_unique<Slot>();
    slot_ = slot.get();
  }
  slot_->mutex.lock();
}

WorkspaceLease::~WorkspaceLease() { slot_->mutex.unlock(); }

#ifdef RECORE_HAVE_CUBLAS
cublasHandle_t cublas_on(cudaStream_t stream) {
  static thread_local cublasHandle_t handle = nullptr;
  static thread_local int handle_device = -1;
  int device = 0;
  RECORE_CUDA_CHECK(cudaGetDevice(&device));
  if (handle == nullptr || handle_device != device) {
    if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) throw CudaError("cublasCreate failed");
    handle_device = device;
  }
  check_cublas(cublasSetStream(handle, stream), "cublasSetStream");
  return handle;
}

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw CudaError(std::string("cuBLAS error in ") + what + ": " + cublasGetStatusString(status));
}
#endif

void* WorkspaceLease::reserve(std::size_t bytes) {
  if (bytes <= slot_->bytes) return slot_->memory;
  if (slot_->memory) {
    // The previous call synchronized its stream before releasing the lease.
    RECORE_CUDA_CHECK(cudaFree(slot_->memory));
    slot_->memory = nullptr;
    slot_->bytes = 0;
  }
  // A little headroom, so that slowly growing requests do not reallocate every call.
  const std::size_t size = bytes + bytes / 8;
  void* memory = nullptr;
  RECORE_CUDA_CHECK(cudaMalloc(&memory, size));
  slot_->memory = memory;
  slot_->bytes = size;
  return memory;
}

}  // namespace recore::cuda
