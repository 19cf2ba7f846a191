// Python bindings of the CUDA SGD engine: recore._cuda.sgd_squared_epoch, sgd_bpr_epoch,
// sgd_rmse. Factor matrices are padded to a multiple of 16 columns, as for the CPU engine.
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "buffers.hpp"

namespace recore::cuda::bindings {
namespace {

SgdModel model_of(int device, std::uintptr_t user_factors, int64_t users, std::uintptr_t item_factors, int64_t items,
                  int64_t factors, int64_t stride, std::uintptr_t user_biases, std::uintptr_t item_biases,
                  double global_mean, std::uintptr_t user_rate_sums, std::uintptr_t item_rate_sums,
                  int64_t slow_factors) {
  if (!std::isfinite(global_mean)) throw py::value_error("global_mean must be finite");
  SgdModel m;
  m.user_factors = device_pointer<float>(user_factors, users * stride, device, "user_factors");
  m.item_factors = device_pointer<float>(item_factors, items * stride, device, "item_factors");
  m.users = users;
  m.items = items;
  m.factors = factors;
  m.stride = stride;
  m.user_biases = optional_pointer<float>(user_biases, users, device, "user_biases");
  m.item_biases = optional_pointer<float>(item_biases, items, device, "item_biases");
  m.global_mean = static_cast<float>(global_mean);
  const int64_t sums = slow_factors > 0 ? 2 : 1;
  m.user_rate_sums = optional_pointer<float>(user_rate_sums, users * sums, device, "user_rate_sums");
  m.item_rate_sums = optional_pointer<float>(item_rate_sums, items * sums, device, "item_rate_sums");
  if ((m.user_rate_sums == nullptr) != (m.item_rate_sums == nullptr))
    throw py::value_error("user_rate_sums and item_rate_sums must be given together");
  m.slow_factors = slow_factors;
  return m;
}

SgdRates rates_of(double learning_rate, double regularization, double bias_regularization) {
  if (!(learning_rate > 0) || !std::isfinite(learning_rate)) throw py::value_error("learning_rate must be > 0");
  if (!(regularization >= 0) || !(bias_regularization >= 0))
    throw py::value_error("regularization and bias_regularization must be >= 0");
  SgdRates r;
  r.learning_rate = static_cast<float>(learning_rate);
  r.regularization = static_cast<float>(regularization);
  r.bias_regularization = static_cast<float>(bias_regularization);
  return r;
}

}  // namespace

void init_sgd(py::module_& m) {
  m.def(
      "sgd_squared_epoch",
      [](int device, std::uintptr_t stream, std::uintptr_t users, std::uintptr_t items, std::uintptr_t values,
         int64_t count, std::uintptr_t user_factors, int64_t n_users, std::uintptr_t item_factors, int64_t n_items,
         int64_t factors, int64_t stride, std::uintptr_t user_biases, std::uintptr_t item_biases, double global_mean,
         std::uintptr_t user_rate_sums, std::uintptr_t item_rate_sums, int64_t slow_factors, bool slow_only,
         double learning_rate, double regularization, double bias_regularization, uint64_t seed) {
        DeviceScope scope(device);
        SgdModel model = model_of(device, user_factors, n_users, item_factors, n_items, factors, stride, user_biases,
                                  item_biases, global_mean, user_rate_sums, item_rate_sums, slow_factors);
        const SgdRates rates = rates_of(learning_rate, regularization, bias_regularization);
        auto* u = device_pointer<const int32_t>(users, count, device, "users");
        auto* i = device_pointer<const int32_t>(items, count, device, "items");
        auto* v = device_pointer<const float>(values, count, device, "values");
        py::gil_scoped_release release;
        return sgd_squared_epoch(u, i, v, count, model, rates, slow_only, seed, stream);
      },
      py::arg("device"), py::arg("stream"), py::arg("users"), py::arg("items"), py::arg("values"), py::arg("count"),
      py::arg("user_factors"), py::arg("n_users"), py::arg("item_factors"), py::arg("n_items"), py::arg("factors"),
      py::arg("stride"), py::arg("user_biases"), py::arg("item_biases"), py::arg("global_mean"),
      py::arg("user_rate_sums"), py::arg("item_rate_sums"), py::arg("slow_factors"), py::arg("slow_only"),
      py::arg("learning_rate"), py::arg("regularization"), py::arg("bias_regularization"), py::arg("seed"));
  m.def(
      "sgd_bpr_epoch",
      [](int device, std::uintptr_t stream, std::uintptr_t indptr, std::uintptr_t indices, int64_t nnz,
         int64_t samples, bool popularity, uint64_t seed, std::uintptr_t user_factors, int64_t n_users,
         std::uintptr_t item_factors, int64_t n_items, int64_t factors, int64_t stride, std::uintptr_t item_biases,
         std::uintptr_t user_rate_sums, std::uintptr_t item_rate_sums, double learning_rate, double regularization,
         double bias_regularization) {
        DeviceScope scope(device);
        SgdModel model = model_of(device, user_factors, n_users, item_factors, n_items, factors, stride, 0,
                                  item_biases, 0.0, user_rate_sums, item_rate_sums, 0);
        const SgdRates rates = rates_of(learning_rate, regularization, bias_regularization);
        auto* p = device_pointer<const int64_t>(indptr, n_users + 1, device, "indptr");
        auto* x = device_pointer<const int32_t>(indices, nnz, device, "indices");
        py::gil_scoped_release release;
        return sgd_bpr_epoch(p, x, nnz, samples, popularity, seed, model, rates, stream);
      },
      py::arg("device"), py::arg("stream"), py::arg("indptr"), py::arg("indices"), py::arg("nnz"),
      py::arg("samples"), py::arg("popularity_negatives"), py::arg("seed"), py::arg("user_factors"),
      py::arg("n_users"), py::arg("item_factors"), py::arg("n_items"), py::arg("factors"), py::arg("stride"),
      py::arg("item_biases"), py::arg("user_rate_sums"), py::arg("item_rate_sums"), py::arg("learning_rate"),
      py::arg("regularization"), py::arg("bias_regularization"));
  m.def(
      "sgd_rmse",
      [](int device, std::uintptr_t stream, std::uintptr_t users, std::uintptr_t items, std::uintptr_t values,
         int64_t count, std::uintptr_t user_factors, int64_t n_users, std::uintptr_t item_factors, int64_t n_items,
         int64_t factors, int64_t stride, std::uintptr_t user_biases, std::uintptr_t item_biases,
         double global_mean) {
        DeviceScope scope(device);
        SgdModel model = model_of(device, user_factors, n_users, item_factors, n_items, factors, stride, user_biases,
                                  item_biases, global_mean, 0, 0, 0);
        auto* u = device_pointer<const int32_t>(users, count, device, "users");
        auto* i = device_pointer<const int32_t>(items, count, device, "items");
        auto* v = device_pointer<const float>(values, count, device, "values");
        py::gil_scoped_release release;
        return sgd_rmse(u, i, v, count, model, stream);
      },
      py::arg("device"), py::arg("stream"), py::arg("users"), py::arg("items"), py::arg("values"), py::arg("count"),
      py::arg("user_factors"), py::arg("n_users"), py::arg("item_factors"), py::arg("n_items"), py::arg("factors"),
      py::arg("stride"), py::arg("user_biases"), py::arg("item_biases"), py::arg("global_mean"));
}

}  // namespace recore::cuda::bindings
