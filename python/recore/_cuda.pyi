"""Type stubs of recore._cuda, the compiled CUDA engine (cuda/bindings/*.cpp).

Buffers are passed as device pointers (plain integers, 0 for an absent optional buffer)
with their sizes; python/recore/_device.py reads them from ``__cuda_array_interface__``
after checking dtype, shape and layout, and the binding checks that each pointer is
device memory on ``device``. ``stream`` is the CUDA stream handle the call runs on (0:
the default stream); every call synchronizes it before returning. Integer arguments take
anything with ``__index__``, float arguments anything with ``__float__`` or ``__index__``.
"""

from typing import SupportsFloat, SupportsIndex

from typing_extensions import TypeAlias

_Int: TypeAlias = SupportsIndex
_Float: TypeAlias = SupportsFloat | SupportsIndex
# A device address, as an integer.
_Pointer: TypeAlias = SupportsIndex

class CudaError(RuntimeError):
    """A CUDA runtime or cuBLAS call failed."""

# cuda/bindings/module.cpp

cublas: bool
run_ratings: int

def status() -> str: ...
def device_count() -> int: ...
def runtime_version() -> int: ...
def driver_version() -> int: ...
def device_name(device: _Int) -> str: ...
def pointer_device(address: _Pointer) -> int: ...

# cuda/bindings/als.cpp: float32 factors; indptr and indices int64 with wide=True, else int32.

def gram_matrix(device: _Int, stream: _Int, factors: _Pointer, n: _Int, f: _Int, gram: _Pointer) -> None: ...
def als_solve(
    device: _Int,
    stream: _Int,
    wide: bool,
    rows: _Int,
    cols: _Int,
    nnz: _Int,
    indptr: _Pointer,
    indices: _Pointer,
    data: _Pointer,
    fixed: _Pointer,
    gram: _Pointer,
    target: _Pointer,
    f: _Int,
    feedback: str,
    confidence: str,
    solver: str,
    regularization: _Float,
    alpha: _Float,
    cg_steps: _Int,
    weighted_regularization: bool,
    unobserved_weight: _Float,
    regularization_exponent: _Float,
    block_size: _Int,
    subspace_sweeps: _Int,
) -> None: ...
def als_loss(
    device: _Int,
    stream: _Int,
    wide: bool,
    rows: _Int,
    cols: _Int,
    nnz: _Int,
    indptr: _Pointer,
    indices: _Pointer,
    data: _Pointer,
    users: _Pointer,
    items: _Pointer,
    gram: _Pointer,
    f: _Int,
    feedback: str,
    confidence: str,
    regularization: _Float,
    alpha: _Float,
    weighted_regularization: bool,
    unobserved_weight: _Float,
    regularization_exponent: _Float,
) -> float: ...

# cuda/bindings/topk.cpp: float32 queries and items; ids int64 with wide_ids=True, else int32.

def topk(
    device: _Int,
    stream: _Int,
    queries: _Pointer,
    n_queries: _Int,
    items: _Pointer,
    n_items: _Int,
    f: _Int,
    k: _Int,
    exclude_indptr: _Pointer,
    exclude_indices: _Pointer,
    exclude_nnz: _Int,
    exclude_wide: bool,
    denied: _Pointer,
    item_ids: _Pointer,
    catalog_size: _Int,
    bfloat16: bool,
    ids: _Pointer,
    wide_ids: bool,
    scores: _Pointer,
) -> None: ...

# cuda/bindings/sgd.cpp: float32 factors padded to `stride` (a multiple of 16) columns,
# int32 ids, float32 values, biases and rate sums.

def sgd_squared_epoch(
    device: _Int,
    stream: _Int,
    users: _Pointer,
    items: _Pointer,
    values: _Pointer,
    count: _Int,
    user_factors: _Pointer,
    n_users: _Int,
    item_factors: _Pointer,
    n_items: _Int,
    factors: _Int,
    stride: _Int,
    user_biases: _Pointer,
    item_biases: _Pointer,
    global_mean: _Float,
    user_rate_sums: _Pointer,
    item_rate_sums: _Pointer,
    slow_factors: _Int,
    slow_only: bool,
    learning_rate: _Float,
    regularization: _Float,
    bias_regularization: _Float,
    seed: _Int,
) -> float: ...
def sgd_bpr_epoch(
    device: _Int,
    stream: _Int,
    indptr: _Pointer,
    indices: _Pointer,
    nnz: _Int,
    samples: _Int,
    popularity_negatives: bool,
    seed: _Int,
    user_factors: _Pointer,
    n_users: _Int,
    item_factors: _Pointer,
    n_items: _Int,
    factors: _Int,
    stride: _Int,
    item_biases: _Pointer,
    user_rate_sums: _Pointer,
    item_rate_sums: _Pointer,
    learning_rate: _Float,
    regularization: _Float,
    bias_regularization: _Float,
) -> float: ...
def sgd_rmse(
    device: _Int,
    stream: _Int,
    users: _Pointer,
    items: _Pointer,
    values: _Pointer,
    count: _Int,
    user_factors: _Pointer,
    n_users: _Int,
    item_factors: _Pointer,
    n_items: _Int,
    factors: _Int,
    stride: _Int,
    user_biases: _Pointer,
    item_biases: _Pointer,
    global_mean: _Float,
) -> float: ...
