"""Low-level kernels: the building blocks the estimators, and the distributed and GPU
layers, call per shard. This is the CPU backend's public face (:mod:`recore.backends.cpu`).

Each kernel takes its buffers exactly as given: a scipy.sparse CSR matrix whose ``data`` is
float32 or float64 and whose ``indptr``/``indices`` are both int32 or both int64, and
C-contiguous factor arrays of the same float dtype. Nothing is converted or copied; a
buffer of the wrong type, shape or layout raises ``TypeError`` or ``ValueError`` naming the
argument, an index out of range raises ``IndexError``, and all of this happens before any
work starts. Every kernel releases the GIL while it runs.
"""

from recore.backends.cpu import (
    SGD_ROW_FLOATS,
    SGD_SLOW_FACTORS,
    als_half_step,
    als_loss,
    als_regularization,
    gram_chunk_bounds,
    gram_fold,
    gram_matrix,
    gram_partials,
    sgd_bpr_epoch,
    sgd_bpr_triples,
    sgd_rmse,
    sgd_squared_epoch,
)

__all__ = [
    "SGD_ROW_FLOATS",
    "SGD_SLOW_FACTORS",
    "als_half_step",
    "als_loss",
    "als_regularization",
    "gram_chunk_bounds",
    "gram_fold",
    "gram_matrix",
    "gram_partials",
    "sgd_bpr_epoch",
    "sgd_bpr_triples",
    "sgd_rmse",
    "sgd_squared_epoch",
]
