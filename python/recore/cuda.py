"""The CUDA engine: whether it is built and usable here, and why not.

recore trains and searches on an NVIDIA GPU when the data lives there (cupy arrays,
``cupyx.scipy.sparse`` matrices, or any object with ``__cuda_array_interface__`` or a CUDA
``__dlpack__``), or when an estimator is made with ``device="cuda"``. That needs the
compiled module ``recore._cuda`` (built when a CUDA toolkit is found at install time), a
driver and a device, and cupy for the arrays it returns. Without them recore works as
before on the CPU; asking for ``"cuda"`` raises a ``RuntimeError`` that says what is
missing.

>>> import recore
>>> recore.cuda.is_available(), recore.cuda.unavailable_reason()   # doctest: +SKIP
(False, 'no CUDA driver: cudaErrorInsufficientDriver: ...')
"""

from __future__ import annotations

import importlib
import importlib.util

__all__ = ["built", "device_count", "is_available", "require", "unavailable_reason"]

#: Whether this installation has the compiled CUDA module (the build found a toolkit).
built: bool = importlib.util.find_spec("recore._cuda") is not None

_state: dict = {}


def _module():
    """recore._cuda, or None with the reason recorded."""
    if "module" not in _state:
        try:
            _state["module"] = importlib.import_module("recore._cuda")
            _state["import_error"] = None
        except ImportError as error:
            _state["module"] = None
            _state["import_error"] = str(error)
    return _state["module"]


def unavailable_reason() -> str | None:
    """Why the CUDA engine cannot run here.

    Returns
    -------
    str or None
        What is missing (the compiled module, a driver, a device or cupy), in words; None
        when the engine can run.
    """
    if not built:
        return "recore was built without CUDA (no CUDA toolkit at build time, or RECORE_DISABLE_CUDA was set)"
    module = _module()
    if module is None:
        return f"recore._cuda could not be loaded: {_state['import_error']}"
    status = module.status()
    if status != "ok":
        return f"no usable CUDA device: {status}"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "cupy is not installed (pip install cupy-cuda12x or cupy-cuda13x); GPU results are cupy arrays"
    return None


def is_available() -> bool:
    """Whether the CUDA engine can run here.

    Returns
    -------
    bool
        True when the module is built and a driver, a device and cupy are present; see
        :func:`unavailable_reason` for what is missing otherwise.
    """
    return unavailable_reason() is None


def require(argument: str = "device") -> None:
    """Check that the CUDA engine can run, before any work that needs it.

    Parameters
    ----------
    argument : str, default "device"
        The argument that asked for CUDA, named in the error.

    Raises
    ------
    RuntimeError
        The engine cannot run here; the message names ``argument`` and says why.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"{argument}='cuda' needs the CUDA engine, which is unavailable: {reason}")


def device_count() -> int:
    """The number of CUDA devices the engine can use.

    Returns
    -------
    int
        0 when the engine is unavailable.
    """
    if unavailable_reason() is not None:
        return 0
    return int(_module().device_count())
