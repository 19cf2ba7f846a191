"""The estimator conventions shared by recore's models (scikit-learn style): every
hyperparameter is an ``__init__`` argument stored under its own name, checked on
construction, on ``set_params`` and again on ``fit``."""

from __future__ import annotations

import abc
import inspect

import numpy as np

from recore import _persistence


# Members of a model file that hold the training record rather than fitted arrays.
_RECORD = "record."


class Estimator(abc.ABC):
    # Fitted attributes a model file holds (see recore._persistence), in the order saved.
    _fitted_attributes: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _persistence.MODEL_CLASSES[cls.__name__] = cls

    # Old names of hyperparameters, still accepted by __init__ with a FutureWarning but not
    # hyperparameters of their own (get_params leaves them out).
    _deprecated_parameters: tuple[str, ...] = ()

    @classmethod
    def _param_names(cls) -> list[str]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in parameters if p.name != "self" and p.name not in cls._deprecated_parameters]

    def get_params(self, deep: bool = True) -> dict:
        """The hyperparameters, by name (scikit-learn's convention).

        Parameters
        ----------
        deep : bool, default True
            Accepted for scikit-learn compatibility; recore models hold no sub-estimators.

        Returns
        -------
        dict
            Every ``__init__`` argument by name.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> Estimator:
        """Sets hyperparameters by name and checks them.

        Parameters
        ----------
        **params
            Hyperparameters by name. When one is invalid, none is changed.

        Returns
        -------
        self

        Raises
        ------
        ValueError, TypeError
            An unknown name, or an invalid value (the model keeps its previous values).
        """
        valid = set(self._param_names())
        for name in params:
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}; valid: {sorted(valid)}")
        previous = self.get_params()
        for name, value in params.items():
            setattr(self, name, value)
        try:
            self._check_params()
        except (TypeError, ValueError):
            for name, value in previous.items():
                setattr(self, name, value)
            raise
        return self

    @abc.abstractmethod
    def _check_params(self) -> None:
        """Raises TypeError / ValueError naming the first invalid hyperparameter."""

    def _check_fitted(self, *, on_host: bool = True) -> None:
        if not all(hasattr(self, name) for name in self._fitted_attributes):
            raise ValueError(f"this {type(self).__name__} is not fitted yet: call fit() first")
        if on_host and self.fitted_device_ == "cuda":
            raise RuntimeError(
                f"this {type(self).__name__}'s factors live on the GPU (fitted with device='cuda'): "
                "call to_device('cpu') first, or search them with recore.topk on cupy arrays"
            )

    @property
    def fitted_device_(self) -> str:
        """Where the fitted factors live: ``"cpu"`` (numpy) or ``"cuda"`` (cupy)."""
        from recore.backends import _device

        values = [getattr(self, name, None) for name in self._fitted_attributes]
        return "cuda" if any(_device.is_gpu_array(value) for value in values) else "cpu"

    def to_device(self, device: str):
        """Moves the fitted arrays to ``"cpu"`` (numpy) or ``"cuda"`` (cupy, the current GPU).

        Parameters
        ----------
        device : {"cpu", "cuda"}
            Moving to where they are does nothing.

        Returns
        -------
        self
        """
        from recore import backends
        from recore.backends import _device

        check = ("cpu", "cuda")
        if not isinstance(device, str) or device not in check:
            raise ValueError(f"device must be one of {check}, got {device!r}")
        self._check_fitted(on_host=False)
        if device == "cuda":
            from recore import cuda

            cuda.require("device")
        for name in self._fitted_attributes:
            value = getattr(self, name)
            if isinstance(value, np.ndarray) or _device.is_gpu_array(value):
                moved = backends.get("cuda").from_host(value) if device == "cuda" else backends.holding(value).to_host(value)
                setattr(self, name, moved)
        self.__dict__.pop("_serving_cache", None)
        return self

    # -- model files ------------------------------------------------------------------------

    def save(self, path) -> None:
        """Writes the fitted model to ``path``.

        The file is an ``.npz`` archive with no pickled objects, a format version and a
        checksum (see :func:`recore.load`). It appears whole or not at all: a temporary file
        is renamed over ``path``.

        Parameters
        ----------
        path : str or os.PathLike
            Where to write the model.
        """
        _persistence.save_model(self, path)

    def _fitted_state(self) -> dict:
        from recore import backends

        self._check_fitted(on_host=False)
        state = {
            name: np.asarray(backends.holding(value).to_host(value))
            for name, value in ((name, getattr(self, name)) for name in self._fitted_attributes)
        }
        # The training record: how many iterations the factors went through, and history_.
        state[_RECORD + "iterations_completed"] = np.asarray(getattr(self, "iterations_completed_", 0), np.int64)
        for name, values in getattr(self, "history_", {}).items():
            state[_RECORD + "history." + name] = np.asarray(values, dtype=np.float64)
        return state

    def _restore_fitted_state(self, state: dict) -> None:
        state = dict(state)
        history, completed = self._restored_record(state)  # takes the record's members out of state
        missing = [name for name in self._fitted_attributes if name not in state]
        unexpected = [name for name in state if name not in self._fitted_attributes]
        if missing or unexpected:
            raise ValueError(f"fitted attributes missing {missing} or unexpected {unexpected}")
        self._check_restored(state)
        for name in self._fitted_attributes:
            setattr(self, name, state[name])
        self.history_, self.iterations_completed_ = history, completed

    def _restored_record(self, state: dict) -> tuple[dict, int]:
        """The training record of a model file (files without one: no history, and the
        iterations asked for), its members removed from ``state``."""
        history: dict = {}
        completed = getattr(self, "iterations", 0)
        for key in [key for key in state if key.startswith(_RECORD)]:
            value = state.pop(key)
            if key == _RECORD + "iterations_completed":
                if value.dtype != np.int64 or value.shape != () or int(value) < 0:
                    raise ValueError("the record's iterations_completed must be a non-negative int64")
                completed = int(value)
            elif key.startswith(_RECORD + "history."):
                if value.dtype != np.float64 or value.ndim != 1:
                    raise ValueError(f"{key} must be a 1-D float64 array")
                history[key[len(_RECORD + "history.") :]] = [float(v) for v in value]
            else:
                raise ValueError(f"unexpected member {key}")
        return history, completed

    def _check_restored(self, state: dict) -> None:
        """Raises ValueError unless ``state`` is what a fit of these hyperparameters makes.
        Models extend it with their own shapes and dtypes."""
        for name, value in state.items():
            if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
                raise ValueError(f"{name} must be a numeric array")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
