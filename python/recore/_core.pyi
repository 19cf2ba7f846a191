"""Type stubs of recore._core, the compiled CPU engine (cpp/bindings/*.cpp).

Every buffer is taken exactly as given: the binding checks its dtype, shape and
contiguity and raises TypeError / ValueError naming the argument, never converting or
copying. The array types below say which dtype each binding requires. Integer arguments
take anything with ``__index__`` (int, bool, numpy integers) and float arguments
anything with ``__float__`` or ``__index__``, as pybind11 converts them.
"""

from typing import Literal, SupportsFloat, SupportsIndex, TypedDict, overload

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_array, csr_matrix
from typing_extensions import TypeAlias

_Int: TypeAlias = SupportsIndex
_Float: TypeAlias = SupportsFloat | SupportsIndex
# A scipy.sparse CSR matrix or array; its indptr and indices are both int32 or both int64.
_Csr: TypeAlias = csr_matrix | csr_array
_Float32: TypeAlias = NDArray[np.float32]
_Float64: TypeAlias = NDArray[np.float64]
_Ids: TypeAlias = NDArray[np.int32] | NDArray[np.int64]

# cpp/bindings/module.cpp

openmp: bool

def default_threads() -> int: ...

# cpp/bindings/cpu.cpp

def cpu_target() -> str: ...
def available_cpu_targets() -> list[str]: ...
def set_cpu_target(name: str) -> None: ...

# cpp/bindings/als.cpp. user_items.data has the dtype of the factor arrays.

def check_als_options(
    *,
    feedback: str,
    confidence: str,
    solver: str,
    regularization: _Float,
    alpha: _Float,
    cg_steps: _Int,
    weighted_regularization: bool,
    num_threads: _Int,
    unobserved_weight: _Float,
    regularization_exponent: _Float,
    block_size: _Int,
    subspace_sweeps: _Int,
) -> None: ...
@overload
def als_solve(
    user_items: _Csr,
    fixed_factors: _Float32,
    fixed_gram: _Float32 | None,
    target_factors: _Float32,
    *,
    regularization: _Float,
    alpha: _Float,
    feedback: str,
    confidence: str,
    solver: str,
    cg_steps: _Int,
    weighted_regularization: bool,
    num_threads: _Int,
    unobserved_weight: _Float,
    regularization_exponent: _Float,
    block_size: _Int,
    subspace_sweeps: _Int,
) -> None: ...
@overload
def als_solve(
    user_items: _Csr,
    fixed_factors: _Float64,
    fixed_gram: _Float64 | None,
    target_factors: _Float64,
    *,
    regularization: _Float,
    alpha: _Float,
    feedback: str,
    confidence: str,
    solver: str,
    cg_steps: _Int,
    weighted_regularization: bool,
    num_threads: _Int,
    unobserved_weight: _Float,
    regularization_exponent: _Float,
    block_size: _Int,
    subspace_sweeps: _Int,
) -> None: ...
def _set_gather_limit_for_testing(rows: _Int) -> None: ...
def _set_block_rows_for_testing(rows: _Int) -> None: ...
@overload
def gram_matrix(factors: _Float32, *, num_threads: _Int = 0) -> _Float32: ...  # type: ignore[overload-overlap]
@overload
def gram_matrix(factors: _Float64, *, num_threads: _Int = 0) -> _Float64: ...
def gram_chunk_bounds(n_rows: _Int, factors: _Int) -> NDArray[np.int64]: ...
@overload
def gram_partials(factors: _Float32, chunk_bounds: NDArray[np.int64], *, num_threads: _Int = 0) -> _Float32: ...  # type: ignore[overload-overlap]
@overload
def gram_partials(factors: _Float64, chunk_bounds: NDArray[np.int64], *, num_threads: _Int = 0) -> _Float64: ...
@overload
def gram_fold(partials: _Float32) -> _Float32: ...  # type: ignore[overload-overlap]
@overload
def gram_fold(partials: _Float64) -> _Float64: ...
@overload
def als_loss(
    user_items: _Csr,
    user_factors: _Float32,
    item_factors: _Float32,
    *,
    regularization: _Float,
    alpha: _Float,
    feedback: str,
    confidence: str,
    weighted_regularization: bool,
    num_threads: _Int,
    unobserved_weight: _Float,
    regularization_exponent: _Float,
    item_regularization: bool,
) -> float: ...
@overload
def als_loss(
    user_items: _Csr,
    user_factors: _Float64,
    item_factors: _Float64,
    *,
    regularization: _Float,
    alpha: _Float,
    feedback: str,
    confidence: str,
    weighted_regularization: bool,
    num_threads: _Int,
    unobserved_weight: _Float,
    regularization_exponent: _Float,
    item_regularization: bool,
) -> float: ...

def als_regularization(
    factors: _Float32 | _Float64,
    counts: NDArray[np.int64],
    n_other: _Int,
    *,
    regularization: _Float,
    feedback: str,
    weighted_regularization: bool,
    unobserved_weight: _Float,
    regularization_exponent: _Float,
) -> float: ...

# cpp/bindings/topk.cpp. ids are int64 with wide_ids=True, else int32.

@overload
def topk(
    queries: _Float32,
    items: _Float32,
    k: _Int,
    exclude: _Csr | None = None,
    denied: NDArray[np.uint64] | None = None,
    item_ids: NDArray[np.int64] | None = None,
    catalog_size: _Int = -1,
    wide_ids: Literal[False] = False,
    check_finite: bool = True,
    num_threads: _Int = 0,
    item_panels: _Float32 | None = None,
    item_panels_bfloat16: NDArray[np.uint16] | None = None,
    max_item_norm: _Float = 0.0,
    items_checked: bool = False,
) -> tuple[NDArray[np.int32], _Float32]: ...
@overload
def topk(
    queries: _Float32,
    items: _Float32,
    k: _Int,
    exclude: _Csr | None = None,
    denied: NDArray[np.uint64] | None = None,
    item_ids: NDArray[np.int64] | None = None,
    catalog_size: _Int = -1,
    *,
    wide_ids: Literal[True],
    check_finite: bool = True,
    num_threads: _Int = 0,
    item_panels: _Float32 | None = None,
    item_panels_bfloat16: NDArray[np.uint16] | None = None,
    max_item_norm: _Float = 0.0,
    items_checked: bool = False,
) -> tuple[NDArray[np.int64], _Float32]: ...
@overload
def topk(
    queries: _Float32,
    items: _Float32,
    k: _Int,
    exclude: _Csr | None = None,
    denied: NDArray[np.uint64] | None = None,
    item_ids: NDArray[np.int64] | None = None,
    catalog_size: _Int = -1,
    wide_ids: bool = False,
    check_finite: bool = True,
    num_threads: _Int = 0,
    item_panels: _Float32 | None = None,
    item_panels_bfloat16: NDArray[np.uint16] | None = None,
    max_item_norm: _Float = 0.0,
    items_checked: bool = False,
) -> tuple[_Ids, _Float32]: ...
def all_finite(array: _Float32) -> bool: ...
def item_panels(items: _Float32) -> _Float32: ...
def bfloat16_panels(panels: _Float32) -> NDArray[np.uint16]: ...

# Items per panel of item_panels' layout; batches of at most SINGLE_QUERY_PATH_MAX queries
# take the single-query path.
PANEL_ITEMS: int
SINGLE_QUERY_PATH_MAX: int

# cpp/bindings/sgd.cpp. Factor matrices are float32, padded to a multiple of SGD_ROW_FLOATS
# columns; ids are int32; biases, rate sums and values float32; progress a one-entry int64
# counter.

SGD_ROW_FLOATS: int
SGD_SLOW_FACTORS: int

def sgd_squared_epoch(
    users: NDArray[np.int32],
    items: NDArray[np.int32],
    values: _Float32,
    block_starts: NDArray[np.int64],
    block_order: NDArray[np.int32],
    blocks: _Int,
    user_factors: _Float32 | NDArray[np.float16],
    item_factors: _Float32 | NDArray[np.float16],
    factors: _Int,
    user_biases: _Float32 | None,
    item_biases: _Float32 | None,
    global_mean: _Float,
    user_rate_sums: _Float32 | None,
    item_rate_sums: _Float32 | None,
    learning_rate: _Float,
    regularization: _Float,
    bias_regularization: _Float,
    num_threads: _Int,
    slow_factors: _Int = 0,
    slow_only: bool = False,
    progress: NDArray[np.int64] | None = None,
) -> float: ...
def sgd_bpr_triples(
    users: NDArray[np.int32],
    positives: NDArray[np.int32],
    negatives: NDArray[np.int32],
    user_factors: _Float32,
    item_factors: _Float32,
    factors: _Int,
    item_biases: _Float32 | None,
    user_rate_sums: _Float32 | None,
    item_rate_sums: _Float32 | None,
    learning_rate: _Float,
    regularization: _Float,
    bias_regularization: _Float,
) -> int: ...
def sgd_bpr_epoch(
    indptr: NDArray[np.int64],
    indices: NDArray[np.int32],
    samples: _Int,
    popularity_negatives: bool,
    seed: _Int,
    user_factors: _Float32,
    item_factors: _Float32,
    factors: _Int,
    item_biases: _Float32 | None,
    user_rate_sums: _Float32 | None,
    item_rate_sums: _Float32 | None,
    learning_rate: _Float,
    regularization: _Float,
    bias_regularization: _Float,
    num_threads: _Int,
    progress: NDArray[np.int64] | None = None,
) -> float: ...
def sgd_rmse(
    users: NDArray[np.int32],
    items: NDArray[np.int32],
    values: _Float32,
    user_factors: _Float32 | NDArray[np.float16],
    item_factors: _Float32 | NDArray[np.float16],
    factors: _Int,
    user_biases: _Float32 | None,
    item_biases: _Float32 | None,
    global_mean: _Float,
    num_threads: _Int,
) -> float: ...

# cpp/bindings/metrics.cpp. relevant is a float32 CSR with sorted rows.

class _RankingTotals(TypedDict):
    precision: float
    recall: float
    ndcg: float
    map: float
    hit_rate: float
    auc: float
    users: int
    auc_users: int
    covered_items: int

def ranking_totals(
    ids: _Ids,
    relevant: _Csr,
    n_items: _Int,
    candidates: NDArray[np.int64] | None = None,
    num_threads: _Int = 0,
) -> _RankingTotals: ...
