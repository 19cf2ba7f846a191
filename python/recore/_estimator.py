"""The estimator conventions shared by recore's models (scikit-learn style): every
hyperparameter is an ``__init__`` argument stored under its own name, checked on
construction, on ``set_params`` and again on ``fit``."""

from __future__ import annotations

import abc
import inspect


class Estimator(abc.ABC):
    @classmethod
    def _param_names(cls) -> list[str]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in parameters if p.name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """The hyperparameters, by name."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> Estimator:
        """Sets hyperparameters by name and checks them; returns self."""
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

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
