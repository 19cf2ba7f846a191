"""recore: fast matrix-factorization recommenders on a compiled C++/OpenMP engine.

>>> import recore
>>> model = recore.ALS(factors=64, iterations=15).fit(user_items)   # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from recore import cuda, datasets, evaluation, kernels
from recore.backends.cpu import available_cpu_targets, cpu_target, set_cpu_target
from recore._persistence import ModelFileError
from recore._persistence import load_model as load
from recore.als import ALS
from recore.interactions import Interactions
from recore.sgd import SGD
from recore.topk import ItemIndex, bfloat16_supported, topk

try:
    __version__ = version("recore")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

__all__ = [
    "ALS",
    "Interactions",
    "ItemIndex",
    "ModelFileError",
    "SGD",
    "available_cpu_targets",
    "bfloat16_supported",
    "cuda",
    "cpu_target",
    "datasets",
    "evaluation",
    "kernels",
    "load",
    "set_cpu_target",
    "topk",
]
