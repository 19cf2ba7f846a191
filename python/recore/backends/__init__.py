"""The engines recore runs on, behind one interface.

An estimator picks its backend once, at the start of ``fit``, from its ``device`` argument
and where the data lives (:func:`select`), then runs the same loop whatever the backend:

- :mod:`recore.backends.cpu`: the compiled CPU engine (``recore._core``) over numpy and
  scipy data. :mod:`recore.kernels` is its public face.
- :mod:`recore.backends.cuda`: the CUDA engine (``recore._cuda``) over cupy arrays.

Both offer the same functions for training (``interactions``, ``transpose``,
``largest_abs``, ``from_host``, ``to_host``, ``all_finite``, ``gram_matrix``,
``als_half_step``, ``als_loss``, ``sgd_state``, ``sgd_squared_epochs``, ``sgd_bpr_epochs``,
``sgd_held_out``, ``sgd_rmse_of``) and ``xp``, the array module of their arrays. Only these
modules (and ``_device``, which reads GPU buffers) import a compiled engine or cupy.
"""

from __future__ import annotations

from types import ModuleType

from recore.backends import _device

DEVICES = _device.DEVICES


def select(device, *data, names=()) -> ModuleType:
    """The backend for a ``device`` argument and the data given (see
    ``_device.resolve_device``: ``"auto"`` follows the data)."""
    return get(_device.resolve_device(device, *data, names=names))


def get(name: str) -> ModuleType:
    """The backend module called ``name`` (``"cpu"`` or ``"cuda"``)."""
    if name == "cuda":
        from recore.backends import cuda

        return cuda
    from recore.backends import cpu

    return cpu


def holding(array) -> ModuleType:
    """The backend whose arrays ``array`` is (GPU arrays: cuda; anything else: cpu)."""
    return get("cuda" if _device.is_gpu_array(array) else "cpu")
