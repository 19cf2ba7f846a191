// recore's CUDA engine: ALS, SGD and top-k over device memory. Plain C++ declarations
// (no CUDA or Python headers): every pointer is a device pointer the caller owns, every
// function runs on the given stream (0: the legacy default stream) of the current device
// and returns once its work has finished. Failures throw recore::cuda::CudaError
// (std::runtime_error) with CUDA's message, or std::invalid_argument for bad shapes.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "recore/als.hpp"
#include "recore/csr.hpp"
#include "recore/sgd.hpp"
#include "recore/topk.hpp"

namespace recore::cuda {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Makes `device` current for the lifetime of the scope and restores the caller's device
// (for code that does not include the CUDA headers).
class DeviceScope {
 public:
  explicit DeviceScope(int device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

// Devices visible to the runtime; throws CudaError when there is no driver or device.
int device_count();
// The runtime's version (e.g. 13000), and the driver's (0 without a driver).
int runtime_version();
int driver_version();
// "ok" when at least one device is usable, else CUDA's explanation (no driver, no device...).
std::string status();
std::string device_name(int device);
// The device a pointer lives on, or -1 for memory that is not device memory.
int pointer_device(const void* pointer);

// ---- ALS (cuda/als.cu) ----------------------------------------------------------------
// gram = factors^T factors (f x f), factors n x f row-major.
void gram_matrix(MatrixView<const float> factors, MatrixView<float> gram, std::uintptr_t stream);

// One half-step: every row of target solved with fixed held fixed (see recore/als.hpp).
// `rows` points to device memory; fixed_gram is read for implicit feedback only.
// max_row_length is the longest row of `rows` (sizes nothing the kernels cannot check).
template <typename I>
void als_solve(const CsrView<float, I>& rows, MatrixView<const float> fixed, const float* fixed_gram,
               MatrixView<float> target, const AlsOptions& options, std::uintptr_t stream);

// The training objective (see recore/als.hpp); item_gram for implicit feedback only.
template <typename I>
double als_loss(const CsrView<float, I>& user_items, MatrixView<const float> user_factors,
                MatrixView<const float> item_factors, const float* item_gram, const AlsOptions& options,
                std::uintptr_t stream);

// ---- top-k (cuda/topk.cu) -------------------------------------------------------------
struct TopkDeviceOptions {
  // Score in bfloat16 first, then re-rank every candidate the error bound cannot rule out
  // with exact float32 scores: the results equal the float32 search.
  bool bfloat16 = false;
  const uint64_t* denied = nullptr;  // bit per catalog item, or nullptr
  const int64_t* item_ids = nullptr; // catalog id of each searched row (increasing), or nullptr
  int64_t catalog_size = 0;
};

// ids / scores: queries x k, best first, ties by the lower id, padded with -1 / -inf;
// exclusions index catalog ids. Scores are float32 dot products summed in factor order with
// one fused multiply-add per factor, bitwise equal to the CPU engine's.
template <typename I, typename O>
void topk(MatrixView<const float> queries, MatrixView<const float> items, int64_t k, const Exclusions<I>& exclusions,
          const TopkDeviceOptions& options, const TopkOutput<O>& output, std::uintptr_t stream);

// ---- SGD (cuda/sgd.cu) ----------------------------------------------------------------
// Ratings in the CPU engine's grid order (block, then user, then item). An epoch cuts them
// into runs of kSgdRunRatings consecutive ratings; warps take the runs in a shuffled order
// (an affine permutation drawn from seed) and update without locks (batch Hogwild). One
// warp applies one update at a time, its lanes spread over the factors. Returns the sum of
// squared errors before each update.
constexpr int64_t kSgdRunRatings = 32;
double sgd_squared_epoch(const int32_t* users, const int32_t* items, const float* values, int64_t count,
                         SgdModel& model, const SgdRates& rates, bool slow_only, uint64_t seed,
                         std::uintptr_t stream);

// One BPR epoch of `samples` triples drawn on the device (see recore/sgd.hpp for the
// sampling rule); returns the fraction ranked right before their update.
double sgd_bpr_epoch(const int64_t* indptr, const int32_t* indices, int64_t nnz, int64_t samples,
                     bool popularity_negatives, uint64_t seed, SgdModel& model, const SgdRates& rates,
                     std::uintptr_t stream);

double sgd_rmse(const int32_t* users, const int32_t* items, const float* values, int64_t count,
                const SgdModel& model, std::uintptr_t stream);

}  // namespace recore::cuda
