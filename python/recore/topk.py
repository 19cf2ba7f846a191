"""Exact top-k search over factor matrices.

:func:`topk` finds, for every query vector, the ``k`` item vectors with the largest scores
(dot product or cosine), in blocks that stay in cache: the full queries x items score matrix
is never formed, and each query's excluded items are skipped inside the search.
"""

from __future__ import annotations

import numpy as np

from recore._filters import (
    INT32_MAX,
    as_exclusions,
    denied_bits,
    exclusion_rows,
    exclusions_as_denied,
    factor_matrix,
    finite_in_calling_thread,
    item_ids,
    unit_rows,
)
from recore._validation import check_bool, check_choice, check_int
from recore.backends import _device, cpu

__all__ = ["ItemIndex", "bfloat16_supported", "topk"]

# Work per engine call of a large batch, in multiply-adds (queries x items x factors): about
# 0.4 s on 2 cores, so that Ctrl-C is answered between calls within about a second.
SEARCH_CHUNK_MULTIPLY_ADDS = 1 << 35

# Arrays of at most this many values are checked for NaN and infinity in the calling thread:
# the engine's parallel check would start a thread team for microseconds of work.
CALLING_THREAD_CHECK_VALUES = 1 << 14


def all_finite(array: np.ndarray, num_threads: int) -> bool:
    """Whether a float32 C-contiguous array holds no NaN or infinity, read by the threads a
    search of ``num_threads`` may use: one query, or any array searched with one thread, in
    the calling thread only."""
    if num_threads == 1 or array.size <= CALLING_THREAD_CHECK_VALUES:
        return finite_in_calling_thread(array)
    return cpu.all_finite(array)


def bfloat16_supported() -> bool:
    """Whether batch searches with ``precision="bfloat16"`` score in bfloat16 here.

    That needs a CPU with AVX512-BF16 and a kernel for it, which this build does not have:
    batches then search in float32, which gives the same results. Single queries searched
    on an :class:`ItemIndex` with ``precision="bfloat16"`` read bfloat16 items on every CPU
    (half the memory traffic), then re-rank the candidates exactly in float32.

    Returns
    -------
    bool
    """
    return False


def normalized_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); a zero row stays zero (see ``_filters.unit_rows``)."""
    return unit_rows(np, vectors)


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
        This reads every item once more (with ``num_threads=1``, in the calling thread); a
        server that checked its factors when it loaded them can turn it off (a model's own
        methods do).

    Large batches are searched in pieces of about half a second each, so that Ctrl-C
    (KeyboardInterrupt) is answered within about a second.

    ``topk`` keeps nothing between calls: each call checks the items and searches them in
    their row layout, and an array changed in place is searched as it is now. Repeated
    single queries against the same items belong on an :class:`ItemIndex`, made once: it
    checks the items once and reads them, for one query, in a factor-major layout made on
    first use. A cache of prepared items here could not tell whether the caller changed the
    array in place without reading all of it, which costs as much as the check it would
    save (README "Speed" has the figures).

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
    if _device.on_gpu(queries) or _device.on_gpu(items):
        from recore.backends import cuda

        return cuda.search(queries, items, k, metric=metric, exclude=exclude, allow=allow, deny=deny,
                           precision=precision, check_finite=check_finite)  # fmt: skip
    items = factor_matrix(items, "items")
    check_choice(metric, "metric", ("dot", "cosine"))
    # The catalog is read here with the threads the search may use (one, for a single-threaded
    # search); the index then takes it as checked.
    if check_bool(check_finite, "check_finite") and not all_finite(
        items, check_int(num_threads, "num_threads", minimum=0)
    ):
        raise ValueError("items must not contain NaN or infinity")
    index = ItemIndex(items, metric=metric, check_finite=False)
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
        items = factor_matrix(items, "items")
        self.metric = check_choice(metric, "metric", ("dot", "cosine"))
        if check_bool(check_finite, "check_finite") and not cpu.all_finite(items):
            raise ValueError("items must not contain NaN or infinity")
        self.items = normalized_rows(items) if metric == "cosine" else items
        self._panels = None
        self._bfloat16 = None
        self._single_query_layout = True  # single queries read panels, made on first use

    @property
    def n_items(self) -> int:
        """Items in the catalog."""
        return self.items.shape[0]

    def panels(self) -> np.ndarray:
        """The items in the engine's single-query layout: panels of ``PANEL_ITEMS`` rows
        stored factor-major (built by the engine on first use).

        Returns
        -------
        ndarray of float32, 1-D
        """
        if self._panels is None:
            self._panels = cpu.item_panels(self.items)
        return self._panels

    def bfloat16_panels(self) -> tuple[np.ndarray, float]:
        """The panels rounded to bfloat16 (to nearest, ties to even) as uint16 in the engine's
        layout, and the largest row norm, which bounds the error of scores computed from them
        (built on first use).

        Returns
        -------
        panels : ndarray of uint16, 1-D
        max_norm : float
        """
        if self._bfloat16 is None:
            panels = cpu.bfloat16_panels(self.panels())
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
        """The ``k`` best items for each query: see :func:`topk` for every argument.

        Parameters
        ----------
        queries : ndarray (n_queries, f) or (f,), float32, C-contiguous
        k : int >= 1
        exclude, allow, deny, precision, num_threads, check_finite
            As for :func:`topk`.

        Returns
        -------
        ids : ndarray (n_queries, k) or (k,), int32 (int64 for catalogs of 2**31 items or more)
        scores : ndarray of float32, the same shape
        """
        single = isinstance(queries, np.ndarray) and queries.ndim == 1
        if single:
            queries = queries[None, :]
        queries = factor_matrix(queries, "queries")
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
        if check_finite and not all_finite(queries, num_threads):
            raise ValueError("queries must not contain NaN or infinity")
        if self.metric == "cosine":
            queries = normalized_rows(queries)
        allowed = None if allow is None else item_ids(allow, n_items, "allow")
        denied = None if deny is None else denied_bits(item_ids(deny, n_items, "deny"), n_items)
        ids, scores = self._search_checked(queries, k, exclusions, allowed, denied, precision, num_threads)
        return (ids[0], scores[0]) if single else (ids, scores)

    def _search_checked(self, queries, k, exclusions, allowed, denied, precision, num_threads):
        """The search of checked arguments (unit-length queries for cosine), in pieces of
        about half a second, so that Ctrl-C is answered between them."""
        n = queries.shape[0]
        searched_items = self.items.shape[0] if allowed is None else len(allowed)
        per_query = max(1, searched_items * queries.shape[1])
        chunk = max(cpu.SINGLE_QUERY_PATH_MAX + 1, SEARCH_CHUNK_MULTIPLY_ADDS // per_query)
        if n <= chunk:
            return self._engine_search(queries, k, exclusions, allowed, denied, precision, num_threads)
        ids: np.ndarray | None = None
        scores = np.empty((n, k), dtype=np.float32)
        for first in range(0, n, chunk):
            last = min(n, first + chunk)
            rows = None if exclusions is None else exclusion_rows(exclusions, first, last)
            part_ids, part_scores = self._engine_search(
                queries[first:last], k, rows, allowed, denied, precision, num_threads
            )
            if ids is None:
                ids = np.empty((n, k), dtype=part_ids.dtype)
            ids[first:last], scores[first:last] = part_ids, part_scores
        return ids, scores

    def _engine_search(self, queries, k, exclusions, allowed, denied, precision, num_threads):
        items = self.items
        n_items = items.shape[0]
        panels = bfloat16_panels = None
        max_norm = 0.0
        if exclusions is not None and queries.shape[0] == 1:
            denied, exclusions = exclusions_as_denied(exclusions, denied, n_items), None
        if allowed is not None:
            items = np.ascontiguousarray(items[allowed])
        elif queries.shape[0] <= cpu.SINGLE_QUERY_PATH_MAX and self._single_query_layout:
            if precision == "bfloat16":
                bfloat16_panels, max_norm = self.bfloat16_panels()
            else:
                panels = self.panels()
        return cpu.topk(
            queries,
            items,
            k,
            exclude=exclusions,
            denied=denied,
            item_ids=allowed,
            catalog_size=n_items,
            wide_ids=n_items > INT32_MAX,
            check_finite=False,  # checked by the caller, and the items when the index was made
            num_threads=num_threads,
            item_panels=panels,
            item_panels_bfloat16=bfloat16_panels,
            max_item_norm=max_norm,
        )
