// Checks at the Python edge of the CUDA engine. python/recore/_device.py reads each array's
// __cuda_array_interface__ (dtype, shape, strides) and passes its device pointer; here every
// pointer is checked to be device memory on the device the call runs on.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "engine.hpp"

namespace recore::cuda::bindings {

namespace py = pybind11;

// A device pointer given as an integer; `count` elements are expected (0 allows null).
template <typename T>
T* device_pointer(std::uintptr_t address, int64_t count, int device, const std::string& name) {
  if (count < 0) throw py::value_error(name + ": negative size");
  if (count == 0) return reinterpret_cast<T*>(address);
  if (address == 0) throw py::value_error(name + " is a null device pointer");
  if (address % alignof(T) != 0) throw py::value_error(name + " is not aligned for its dtype");
  const int on = pointer_device(reinterpret_cast<const void*>(address));
  if (on < 0) throw py::value_error(name + " is not CUDA device memory");
  if (on != device)
    throw py::value_error(name + " is on CUDA device " + std::to_string(on) + ", the call runs on device " +
                          std::to_string(device));
  return reinterpret_cast<T*>(address);
}

template <typename T>
T* optional_pointer(std::uintptr_t address, int64_t count, int device, const std::string& name) {
  return address == 0 ? nullptr : device_pointer<T>(address, count, device, name);
}

}  // namespace recore::cuda::bindings
