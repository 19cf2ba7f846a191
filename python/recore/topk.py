"""Exact top-k search over factor matrices.

:func:`topk` finds, for every query vector, the ``k`` item vectors with the largest scores
(dot product or cosine), in blocks that stay in cache: the full queries x items score matrix
is never formed, and each query's excluded items are skipped inside the search.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recore import _core
from recore._validation import _check_compressed, check_bool, check_choice, check_ids, check_int

__all__ = ["ItemIndex", "bfloat16_supported", "topk"]

_INT32_MAX = np.iinfo(np.int32).max


def bfloat16_supported() -> bool:
    """Whether batch searches with ``precision="bfloat16"`` score in bfloat16 here.

    That needs a CPU with AVX512-BF16 and a kernel for it, which this build does not have:
    batches then search in float32, which gives the same results. Single queries searched
    on an :class:`ItemIndex` with ``precision="bfloat16"`` read bfloat16 items on every CPU
    (half the memory traffic), then re-rank the candidates exactly in float32.
    """
    return False


def _factor_matrix(array, name: str) -> np.ndarray:
    """A float32 C-contiguous 2-D array, as given (never converted)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got {array.ndim} dimensions")
    if array.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {array.dtype} (convert it with .astype(np.float32))")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return array


# Batches this small take the item-parallel path, which reads the panels.
_SINGLE_QUERY_PATH_MAX = 2
_PANEL_ITEMS = 96  # items per panel (kPanelItems in cpp/include/recore/topk.hpp)


def _all_finite(array: np.ndarray) -> bool:
    return bool(_core.all_finite(array))


def normalized_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); a zero row stays zero, so that its cosine with
    any vector is 0."""
    # Quietly: with check_finite=False a caller may pass infinities, and gets what they give.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return np.ascontiguousarray(vectors * scale[:, None].astype(np.float32), dtype=np.float32)


def as_exclusions(exclude, n_queries: int, n_items: int):
    """Per-query exclusions as a CSR matrix with sorted, unique indices (int32 or int64);
    every stored entry excludes its item, whatever its value. Not copied when already so."""
    if not sp.issparse(exclude):
        raise TypeError(f"exclude must be a scipy.sparse matrix, got {type(exclude).__name__}")
    if exclude.ndim != 2 or exclude.shape != (n_queries, n_items):
        raise ValueError(
            f"exclude must have one row per query and one column per item: shape "
            f"{(n_queries, n_items)}, got {exclude.shape}"
        )
    if exclude.format == "csr":
        _check_compressed(exclude, "exclude")
    csr = exclude if exclude.format == "csr" else exclude.tocsr()
    index_dtype = np.int64 if max(csr.nnz, n_items) > _INT32_MAX else np.int32
    if not (csr.has_canonical_format and csr.indices.dtype == index_dtype and csr.indptr.dtype == index_dtype):
        csr = sp.csr_matrix(
            (np.ones(csr.nnz, dtype=np.float32), csr.indices.copy(), csr.indptr.copy()), shape=csr.shape
        )
        csr.sum_duplicates()
        csr.indices = csr.indices.astype(index_dtype, copy=False)
        csr.indptr = csr.indptr.astype(index_dtype, copy=False)
    return csr


def _item_ids(ids, n_items: int, name: str) -> np.ndarray:
    array = check_ids(np.atleast_1d(np.asarray(ids)), n_items, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-dimensional list of item ids")
    return np.unique(array)


def denied_bits(ids: np.ndarray, n_items: int) -> np.ndarray:
    """A bitmap over the catalog, 64 items per uint64 word, bit ``i % 64`` of word ``i // 64``
    set for each id ``i``."""
    bits = np.zeros(((n_items + 63) // 64) * 64, dtype=bool)
    bits[ids] = True
    return np.packbits(bits.reshape(-1, 8), axis=1, bitorder="little").reshape(-1).view("<u8")


def topk(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    *,
    metric: str = "dot",
    exclude=None,
    allow=None,
    deny=None,
    precision: str = "float32",
    num_threads: int = 0,
    check_finite: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items for each query, best first.

    Parameters
    ----------
    queries : ndarray (n_queries, f) or (f,), float32, C-contiguous
        A 1-D query gives 1-D results.
    items : ndarray (n_items, f), float32, C-contiguous
    k : int >= 1
        Any size: with fewer than ``k`` candidates a row ends with id -1 and score -inf.
    metric : "dot" or "cosine"
        Cosine scores are dot products of unit-length rows, each computed once per call; a
        zero vector (query or item) has cosine 0 with everything.
    exclude : scipy.sparse matrix (n_queries, n_items), optional
        Row q lists the items query q must never get (for example a user's training
        items): every stored entry excludes its item, whatever its value.
    allow : array-like of item ids, optional
        Only these items are searched, for every query.
    deny : array-like of item ids, optional
        These items are never returned, for any query.
    precision : "float32" or "bfloat16"
        bfloat16 results are always identical to float32 results (see
        :func:`bfloat16_supported`).
    num_threads : int, default 0 (all cores)
    check_finite : bool, default True
        Reject NaN or infinity in ``queries`` and ``items`` (ValueError) before searching.
        This reads every item once more; a server that checked its factors when it loaded
        them can turn it off (a model's own methods do).

    Returns
    -------
    ids : ndarray (n_queries, k), int32 (int64 for catalogs of 2**31 items or more)
    scores : ndarray (n_queries, k), float32
        Sorted by score, descending; equal scores by id, ascending. Each score is the dot
        product summed in factor order in float32, the same whatever the batch or threads.

    GPU arrays (cupy, torch.cuda, anything with ``__cuda_array_interface__`` or a CUDA
    ``__dlpack__``) for ``queries`` and ``items`` search on the GPU and return cupy arrays,
    with the same ids and scores as the CPU engine; ``exclude`` may then be a
    ``cupyx.scipy.sparse`` or scipy matrix, ``allow`` is not supported, and ``num_threads``
    is ignored.
    """
    from recore import _device

    if _device.on_gpu(queries) or _device.on_gpu(items):
        return _gpu_topk(queries, items, k, metric=metric, exclude=exclude, allow=allow, deny=deny,
                         precision=precision, check_finite=check_finite)  # fmt: skip
    items = _factor_matrix(items, "items")
    check_choice(metric, "metric", ("dot", "cosine"))
    index = ItemIndex(items, metric=metric, check_finite=check_finite)
    index._single_query_layout = False  # used once: a panel copy would cost more than it saves
    return index.search(
        queries,
        k,
        exclude=exclude,
        allow=allow,
        deny=deny,
        precision=precision,
        num_threads=num_threads,
        check_finite=check_finite,
    )


def _gpu_topk(queries, items, k, *, metric, exclude, allow, deny, precision, check_finite):
    from recore import _device, _gpu, cuda

    for name, value in (("queries", queries), ("items", items)):
        if not _device.is_gpu_array(value):
            raise TypeError(
                f"queries and items must both be GPU arrays or both numpy arrays; {name} is {type(value).__name__}"
            )
    cuda.require("device")
    import cupy as cp

    k = check_int(k, "k", minimum=1)
    check_choice(metric, "metric", ("dot", "cosine"))
    precision = check_choice(precision, "precision", ("float32", "bfloat16"))
    check_finite = check_bool(check_finite, "check_finite")
    if allow is not None:
        raise ValueError("allow is not supported for GPU arrays: gather the allowed item rows instead")
    single = len(_device.describe(queries, "queries").shape) == 1
    queries, items = _device.as_cupy(queries), _device.as_cupy(items)
    if single:
        queries = queries[None, :]
    _device.require_array(queries, "queries", np.float32, 2)
    _device.require_array(items, "items", np.float32, 2)
    if check_finite:
        for name, value in (("queries", queries), ("items", items)):
            if not bool(cp.isfinite(value).all()):
                raise ValueError(f"{name} must not contain NaN or infinity")
    if metric == "cosine":

        def unit(rows):
            norms = cp.sqrt(cp.einsum("ij,ij->i", rows, rows, dtype=cp.float64))
            scale = cp.where(norms > 0, 1.0 / cp.where(norms > 0, norms, 1.0), 0.0).astype(cp.float32)
            return cp.ascontiguousarray(rows * scale[:, None])

        queries, items = unit(queries), unit(items)
    ids, scores = _gpu.topk(queries, items, k, exclude=exclude, deny=deny, precision=precision)
    return (ids[0], scores[0]) if single else (ids, scores)


class ItemIndex:
    """Item vectors prepared once for many searches: what :func:`topk` does per call, kept.

    A server that answers one user at a time should search an ``ItemIndex``: the first
    single-query search also stores the items in a factor-major layout that one query reads
    at memory speed (a second copy of the items, made once). A model's own ``recommend`` and
    ``similar_*`` methods keep one per model.

    Parameters
    ----------
    items : ndarray (n_items, f), float32, C-contiguous
        Used without a copy for ``metric="dot"``.
    metric : "dot" or "cosine"
        For cosine the unit-length rows are computed here, once.
    check_finite : bool, default True
        Reject NaN or infinity in ``items`` now; searches then only check the queries.
    """

    def __init__(self, items: np.ndarray, *, metric: str = "dot", check_finite: bool = True):
        items = _factor_matrix(items, "items")
        self.metric = check_choice(metric, "metric", ("dot", "cosine"))
        if check_bool(check_finite, "check_finite") and not _all_finite(items):
            raise ValueError("items must not contain NaN or infinity")
        self.items = normalized_rows(items) if metric == "cosine" else items
        self._panels = None
        self._bfloat16 = None
        self._single_query_layout = True  # single queries read panels, made on first use

    @property
    def n_items(self) -> int:
        return self.items.shape[0]

    def panels(self) -> np.ndarray:
        """The items in panels of 96 rows stored factor-major (built on first use)."""
        if self._panels is None:
            n, f = self.items.shape
            count = -(-n // _PANEL_ITEMS)
            padded = np.zeros((count * _PANEL_ITEMS, f), dtype=np.float32)
            padded[:n] = self.items
            panels = padded.reshape(count, _PANEL_ITEMS, f).transpose(0, 2, 1)
            self._panels = np.ascontiguousarray(panels).reshape(-1)
        return self._panels

    def bfloat16_panels(self) -> tuple[np.ndarray, float]:
        """The panels rounded to bfloat16 (to nearest, ties to even) as uint16, and the largest
        row norm, which bounds the error of scores computed from them (built on first use)."""
        if self._bfloat16 is None:
            words = self.panels().view(np.uint32).astype(np.uint64)
            rounded = ((words + 0x7FFF + ((words >> 16) & 1)) >> 16).astype(np.uint16)
            # Each row of 16 as 8 words: item l in the low half, item l + 8 in the high half.
            panels = np.ascontiguousarray(rounded.reshape(-1, 2, 8).transpose(0, 2, 1)).reshape(-1)
            norms = np.sqrt(np.einsum("ij,ij->i", self.items, self.items, dtype=np.float64))
            max_norm = float(norms.max() * (1 + 1e-12)) if len(norms) else 0.0
            self._bfloat16 = (panels, max_norm)  # one assignment: concurrent searches see both or neither
        return self._bfloat16

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude=None,
        allow=None,
        deny=None,
        precision: str = "float32",
        num_threads: int = 0,
        check_finite: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best items for each query: see :func:`topk` for every argument."""
        single = isinstance(queries, np.ndarray) and queries.ndim == 1
        if single:
            queries = queries[None, :]
        queries = _factor_matrix(queries, "queries")
        k = check_int(k, "k", minimum=1)
        precision = check_choice(precision, "precision", ("float32", "bfloat16"))
        num_threads = check_int(num_threads, "num_threads", minimum=0)
        check_finite = check_bool(check_finite, "check_finite")
        items = self.items
        if queries.shape[1] != items.shape[1]:
            raise ValueError(
                f"queries and items must have the same number of factors, got {queries.shape[1]} and {items.shape[1]}"
            )
        n_items = items.shape[0]
        exclusions = None if exclude is None else as_exclusions(exclude, queries.shape[0], n_items)
        if check_finite and not _all_finite(queries):
            raise ValueError("queries must not contain NaN or infinity")
        if self.metric == "cosine":
            queries = normalized_rows(queries)
        item_ids = panels = bfloat16_panels = None
        max_norm = 0.0
        if allow is not None:
            item_ids = _item_ids(allow, n_items, "allow")
            items = np.ascontiguousarray(items[item_ids])
        elif queries.shape[0] <= _SINGLE_QUERY_PATH_MAX and self._single_query_layout:
            if precision == "bfloat16":
                bfloat16_panels, max_norm = self.bfloat16_panels()
            else:
                panels = self.panels()
        denied = None if deny is None else denied_bits(_item_ids(deny, n_items, "deny"), n_items)
        ids, scores = _core.topk(
            queries,
            items,
            k,
            exclude=exclusions,
            denied=denied,
            item_ids=item_ids,
            catalog_size=n_items,
            wide_ids=n_items > _INT32_MAX,
            check_finite=False,  # checked above, and the items when the index was made
            num_threads=num_threads,
            item_panels=panels,
            item_panels_bfloat16=bfloat16_panels,
            max_item_norm=max_norm,
        )
        return (ids[0], scores[0]) if single else (ids, scores)
