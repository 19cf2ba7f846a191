"""Where data lives, and device buffers as the CUDA engine takes them.

GPU arrays are read through ``__cuda_array_interface__`` (cupy, PyTorch, Numba, ...) or,
for objects that only speak DLPack, through ``cupy.from_dlpack``: never copied. Their dtype,
shape, strides and writability are checked here, before any engine work, and a problem
raises TypeError / ValueError naming the argument.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from recore import cuda
from recore._validation import check_choice

DEVICES = ("auto", "cpu", "cuda")
_DLPACK_CUDA, _DLPACK_CUDA_MANAGED = 2, 13


@dataclass(frozen=True)
class DeviceArray:
    """A GPU buffer as described by its ``__cuda_array_interface__``."""

    pointer: int
    shape: tuple
    dtype: np.dtype
    strides: tuple | None  # None: C-contiguous
    readonly: bool
    owner: object  # keeps the memory alive

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def c_contiguous(self) -> bool:
        if self.strides is None or self.size == 0:
            return True
        expected = self.dtype.itemsize
        for extent, stride in zip(reversed(self.shape), reversed(self.strides)):
            if extent > 1 and stride != expected:
                return False
            expected *= max(extent, 1)
        return True


def has_cuda_interface(obj) -> bool:
    return hasattr(type(obj), "__cuda_array_interface__") or hasattr(obj, "__cuda_array_interface__")


def is_dlpack_on_cuda(obj) -> bool:
    method = getattr(obj, "__dlpack_device__", None)
    if method is None or not hasattr(obj, "__dlpack__"):
        return False
    try:
        device_type, _ = method()
    except Exception:  # a broken producer is not a GPU array
        return False
    return int(device_type) in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED)


def is_gpu_array(obj) -> bool:
    """A dense array in GPU memory (by its interface, not its type)."""
    if type(obj) is np.ndarray:  # the usual answer, at once (a serving call asks several times)
        return False
    return has_cuda_interface(obj) or is_dlpack_on_cuda(obj)


def is_gpu_sparse(obj) -> bool:
    """A ``cupyx.scipy.sparse`` matrix."""
    return type(obj).__module__.startswith("cupyx.scipy.sparse") and hasattr(obj, "format")


def on_gpu(obj) -> bool:
    return obj is not None and (is_gpu_array(obj) or is_gpu_sparse(obj))


def resolve_device(device, *data, names=()) -> str:
    """``"cpu"`` or ``"cuda"`` for a ``device`` argument and the data given.

    ``"auto"`` follows the data (any of it on a GPU: ``"cuda"``); ``"cpu"`` with GPU data is
    refused (recore never copies a GPU input to the host behind the caller's back);
    ``"cuda"`` needs the CUDA engine (RuntimeError saying why it is unavailable).
    """
    check_choice(device, "device", DEVICES)
    gpu = [name for name, value in zip(names or [f"argument {i}" for i in range(len(data))], data) if on_gpu(value)]
    if device == "cpu":
        if gpu:
            raise ValueError(
                f"device='cpu' but {gpu[0]} lives on a GPU: pass host (numpy / scipy) data, or use device='cuda'"
            )
        return "cpu"
    if device == "auto" and not gpu:
        return "cpu"
    cuda.require("device")
    return "cuda"


def _check_interface(interface, name: str) -> dict:
    if not isinstance(interface, dict):
        raise TypeError(f"{name}.__cuda_array_interface__ must be a dict, got {type(interface).__name__}")
    for key in ("shape", "typestr", "data", "version"):
        if key not in interface:
            raise ValueError(f"{name}.__cuda_array_interface__ has no {key!r}")
    version = interface["version"]
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or not 0 <= version <= 3:
        raise ValueError(f"{name}.__cuda_array_interface__ has unsupported version {version!r} (0 to 3 are known)")
    if interface.get("mask") is not None:
        raise ValueError(f"{name} has a mask, which recore does not support")
    return interface


def describe(obj, name: str) -> DeviceArray:
    """The GPU buffer of ``obj`` (``__cuda_array_interface__``, else CUDA DLPack), checked
    for well-formedness; TypeError when ``obj`` is not a GPU array."""
    owner = obj
    if not has_cuda_interface(obj):
        if not is_dlpack_on_cuda(obj):
            raise TypeError(f"{name} must be a GPU array (cupy, torch.cuda, ...), got {type(obj).__name__}")
        import cupy

        owner = cupy.from_dlpack(obj)
    interface = _check_interface(owner.__cuda_array_interface__, name)
    shape = interface["shape"]
    if not isinstance(shape, tuple) or not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise ValueError(f"{name} has an invalid shape {shape!r}")
    typestr = interface["typestr"]
    if not isinstance(typestr, str):
        raise ValueError(f"{name} has an invalid typestr {typestr!r}")
    try:
        dtype = np.dtype(typestr)
    except TypeError:
        raise ValueError(f"{name} has an invalid typestr {typestr!r}") from None
    if dtype.byteorder not in ("=", "|") and dtype.byteorder != np.dtype(dtype.type).byteorder:
        raise ValueError(f"{name} has a non-native byte order ({typestr})")
    data = interface["data"]
    if not (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], numbers.Integral)):
        raise ValueError(f"{name} has an invalid data entry {data!r}: expected (pointer, read_only)")
    pointer, readonly = int(data[0]), bool(data[1])
    if pointer < 0:
        raise ValueError(f"{name} has a negative device pointer")
    strides = interface.get("strides")
    if strides is not None:
        if not isinstance(strides, tuple) or len(strides) != len(shape) or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in strides
        ):
            raise ValueError(f"{name} has strides {strides!r} that do not match its shape {shape}")
        strides = tuple(int(s) for s in strides)
    result = DeviceArray(pointer, tuple(int(n) for n in shape), dtype, strides, readonly, owner)
    if pointer == 0 and result.size > 0:
        raise ValueError(f"{name} has a null device pointer but {result.size} elements")
    return result


def require_array(obj, name: str, dtype, ndim: int, *, writable: bool = False, shape=None) -> DeviceArray:
    """A C-contiguous GPU array of ``dtype`` with ``ndim`` dimensions (and ``shape``, where
    an entry of None matches any extent)."""
    array = describe(obj, name)
    dtype = np.dtype(dtype)
    if array.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {array.dtype}")
    if len(array.shape) != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got {len(array.shape)} dimensions")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, array.shape)):
            if want is not None and want != got:
                raise ValueError(f"{name} must have {want} entries along axis {axis}, got {got}")
    if not array.c_contiguous():
        raise ValueError(f"{name} must be C-contiguous (use cupy.ascontiguousarray), got strides {array.strides}")
    if writable and array.readonly:
        raise ValueError(f"{name} must be writeable")
    return array


def as_cupy(obj):
    """A cupy view of a GPU array (no copy): through __cuda_array_interface__, else DLPack."""
    import cupy

    if isinstance(obj, cupy.ndarray):
        return obj
    if has_cuda_interface(obj):
        return cupy.asarray(obj)
    return cupy.from_dlpack(obj)


def current_stream() -> int:
    """The caller's current cupy stream (0: the legacy default stream)."""
    import cupy

    return int(cupy.cuda.get_current_stream().ptr)


def current_device() -> int:
    import cupy

    return int(cupy.cuda.runtime.getDevice())


def check_same_device(arrays: dict) -> int:
    """The device every named GPU array lives on; ValueError naming two that differ."""
    from recore import _cuda

    found = None
    for name, array in arrays.items():
        if array is None or array.size == 0:
            continue
        device = _cuda.pointer_device(array.pointer)
        if device < 0:
            raise ValueError(f"{name} is not CUDA device memory")
        if found is None:
            found = (name, device)
        elif device != found[1]:
            raise ValueError(f"{name} is on CUDA device {device} but {found[0]} is on device {found[1]}")
    return current_device() if found is None else found[1]
