"""Exact top-k search over factor matrices.

:func:`topk` finds, for every query vector, the ``k`` item vectors with the largest scores
(dot product or cosine), in blocks that stay in cache: the full queries x items score matrix
is never formed, and each query's excluded items are skipped inside the search.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import scipy.sparse as sp

from recore._filters import (
    INT32_MAX,
    as_exclusions,
    denied_bits,
    exclusion_rows,
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
    on an :class:`ItemIndex` (either precision) read bfloat16 items on every CPU (half the
    memory traffic), then score the candidates left exactly in float32.

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
        Reject NaN or infinity in ``queries`` and ``items`` (ValueError). The queries are
        checked before searching. One or two queries by dot product with no ``allow`` list
        are searched by reading every item row, and that same pass detects a NaN or
        infinity (the ValueError then comes before any result); otherwise the items are
        read once more before searching (with ``num_threads=1``, in the calling thread). A
        server that checked its factors when it loaded them can turn it off (a model's own
        methods do).

    Large batches are searched in pieces of about half a second each, so that Ctrl-C
    (KeyboardInterrupt) is answered within about a second.

    ``topk`` keeps nothing between calls: each call checks the items and searches them in
    their row layout, and an array changed in place is searched as it is now. Repeated
    single queries against the same items belong on an :class:`ItemIndex`, made once: it
    checks the items once and reads them, for one query, in a factor-major bfloat16 layout
    made on first use (the candidates it leaves scored again exactly in float32). A cache
    of prepared items here could not tell whether the caller changed the array in place
    without reading all of it, which costs as much as the check it would save (README
    "Speed" has the figures). After :data:`REPEATED_SINGLE_QUERIES` single queries in a row
    against the same array, ``topk`` says so with a ``UserWarning`` (shown once per calling
    line by Python's default filter; the results are unaffected).

    Returns
    -------
    ids : ndarray (n_queries, k), int32 (int64 for catalogs of 2**31 items or more)
    scores : ndarray (n_queries, k), float32
        Sorted by score, descending; equal scores by id, ascending. Each score is the dot
        product summed in factor order in float32, the same whatever the batch or threads.

    GPU arrays (cupy, torch.cuda, anything with ``__cuda_array_interface__`` or a CUDA
    ``__dlpack__``) for ``queries`` and ``items`` search on the GPU and return cupy arrays,
    with the same ids and scores as the CPU engine; ``exclude`` may then be a
    ``cupyx.scipy.sparse`` or scipy matrix, ``allow`` and ``deny`` numpy or cupy id lists,
    and ``num_threads`` is ignored.
    """
    if type(queries) is np.ndarray and queries.ndim == 1:
        _count_single_query(items)
    if type(metric) is str and metric == "dot" and allow is None and deny is None:
        ready = _one_query_arguments(queries, items, k, exclude, precision, num_threads, check_finite)
        if ready is not None:
            # Items in the engine's form: searched as given, the engine checking them (when
            # asked) in the scoring pass itself.
            query, exclusions = ready
            ids, scores = cpu.topk(query, items, k, exclusions, None, None, items.shape[0], False, check_finite,
                                   num_threads, None, None, 0.0, not check_finite)  # fmt: skip
            return ids[0], scores[0]
    if _device.on_gpu(queries) or _device.on_gpu(items):
        from recore.backends import cuda

        return cuda.search(queries, items, k, metric=metric, exclude=exclude, allow=allow, deny=deny,
                           precision=precision, check_finite=check_finite)  # fmt: skip
    items = factor_matrix(items, "items")
    check_choice(metric, "metric", ("dot", "cosine"))
    checked_by_search = check_bool(check_finite, "check_finite") and _search_checks_items(queries, metric, allow)
    # The catalog is read here with the threads the search may use (one, for a single-threaded
    # search); the index then takes it as checked. A single query's search reads every item
    # row anyway and tells whether it met a NaN or infinity, so it checks them itself.
    threads = _integer(num_threads, "num_threads", 0)
    if check_finite and not checked_by_search and not all_finite(items, threads):
        raise ValueError("items must not contain NaN or infinity")
    index = ItemIndex._for_one_search(items, metric, items_checked=not checked_by_search)
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


# Single queries in a row against one items array after which recore.topk points to ItemIndex.
REPEATED_SINGLE_QUERIES = 1000
# (id of the items array of the last single query, how many single queries in a row had it).
# Kept without a reference to the array; threads may race on it, which only moves the count.
_single_queries = [0, 0]


def _count_single_query(items) -> None:
    """Counts single queries against the same ``items``; at REPEATED_SINGLE_QUERIES in a row,
    warns that an ItemIndex would serve them faster."""
    key = id(items)
    if _single_queries[0] != key:
        _single_queries[0], _single_queries[1] = key, 1
        return
    _single_queries[1] += 1
    if _single_queries[1] == REPEATED_SINGLE_QUERIES:
        warnings.warn(
            f"recore.topk searched the same items for {REPEATED_SINGLE_QUERIES} single queries in a row: "
            "an ItemIndex made once (recore.ItemIndex(items)) checks them once and searches each query in "
            "about half the time, with the same results",
            UserWarning,
            stacklevel=3,
        )


def _one_query_arguments(
    query, items, k, exclude, precision, num_threads, check_finite
) -> tuple[np.ndarray, sp.csr_matrix | None] | None:
    """``(query as one row, exclusions)`` for the engine when one query's arguments are all
    in the engine's own form already (float32 C-contiguous numpy arrays of matching sizes,
    a plain int ``k`` and ``num_threads`` in range, a bool ``check_finite``, no exclusion or a
    one-row CSR that :func:`_ready_exclusions` hands over); None otherwise, for the general
    path to check and convert. The usual single query of a server thus costs the engine's
    own checks and a few attribute reads here, not the general path's tens of microseconds."""
    if not (
        type(query) is np.ndarray
        and type(items) is np.ndarray
        and query.ndim == 1
        and items.ndim == 2
        and query.dtype == np.float32
        and items.dtype == np.float32
        and query.shape[0] == items.shape[1] > 0
        and 0 < items.shape[0] <= INT32_MAX
        and query.flags.c_contiguous
        and items.flags.c_contiguous
        and type(k) is int
        and k >= 1
        and type(num_threads) is int
        and num_threads >= 0
        and (check_finite is True or check_finite is False)
        and type(precision) is str
        and precision in ("float32", "bfloat16")
    ):
        return None
    if exclude is None:
        return query[None, :], None
    exclusions = _ready_exclusions(exclude, 1, items.shape[0])
    return None if exclusions is None else (query[None, :], exclusions)


def _search_checks_items(queries, metric: str, allow) -> bool:
    """Whether the engine's search of ``queries`` reads every row of the items as given, so
    that it can check them for NaN and infinity in the same pass: one or two queries (the
    single-query path), dot products (cosine searches unit rows made from the items) and no
    allow list (which searches a gathered subset)."""
    if metric != "dot" or allow is not None or not isinstance(queries, np.ndarray):
        return False
    return queries.ndim == 1 or (queries.ndim == 2 and queries.shape[0] <= cpu.SINGLE_QUERY_PATH_MAX)


# Spare rows an index (or a model's factor matrix) keeps when it grows, as a share of its
# size: appending rows one at a time then copies the catalog O(log n) times, not once a row.
GROWTH_FACTOR = 1.5


def grown_capacity(rows: int, needed: int) -> int:
    """Rows to allocate for a matrix of ``rows`` rows that must now hold ``needed``."""
    return max(needed, int(rows * GROWTH_FACTOR) + 1)


def _panel_values(n_items: int, factors: int) -> int:
    """Values of the single-query layout of ``n_items`` items (whole panels)."""
    return -(-n_items // cpu.PANEL_ITEMS) * cpu.PANEL_ITEMS * factors


class _IndexVersion:
    """One version of an index's arrays, consistent with itself: what one search reads.

    ``storage`` holds the item rows; rows ``[0, n)`` are the catalog and the rest are zeros
    kept for growth. The single-query layouts are built on first use, with room for the
    same number of rows. A version is changed in place only while no search holds it (see
    :meth:`ItemIndex.update`).
    """

    __slots__ = ("storage", "n", "owned", "items", "panel_storage", "bfloat16", "norms")

    def __init__(self, storage: np.ndarray, n: int, owned: bool):
        self.storage = storage
        self.owned = owned  # False: the caller's array, never written
        self.panel_storage: np.ndarray | None = None
        # (bfloat16 words with room for the capacity, largest row norm), set as one tuple so
        # that a search reads both or neither.
        self.bfloat16: tuple[np.ndarray, float] | None = None
        self.norms: np.ndarray | None = None  # float64 row norms behind the bound, with the bfloat16 words
        self.n = n
        self.items = storage
        self.resize(n)

    @property
    def capacity(self) -> int:
        return self.storage.shape[0]

    def resize(self, n: int) -> None:
        self.n = n
        self.items = self.storage if n == self.capacity else self.storage[:n]

    def panels(self) -> np.ndarray:
        panels = self.panel_storage
        if panels is None:
            panels = _aligned_copy(cpu.item_panels(self.items), _panel_values(self.capacity, self.storage.shape[1]))
            self.panel_storage = panels  # concurrent first uses build the same values
        return panels[: _panel_values(self.n, self.storage.shape[1])]

    def bfloat16_panels(self) -> tuple[np.ndarray, float]:
        bfloat16 = self.bfloat16
        if bfloat16 is None:
            # From float32 panels, kept only where already built: single queries read these.
            used = _panel_values(self.n, self.storage.shape[1])
            source = cpu.item_panels(self.items) if self.panel_storage is None else self.panel_storage[:used]
            words = _aligned_copy(cpu.bfloat16_panels(source), _panel_values(self.capacity, self.storage.shape[1]))
            norms = np.zeros(self.capacity)
            norms[: self.n] = _row_norms(self.items)
            self.norms = norms
            bfloat16 = self.bfloat16 = (words, _norm_bound(norms[: self.n]))
        words, max_norm = bfloat16
        return words[: _panel_values(self.n, self.storage.shape[1])], max_norm

    def copy(self, capacity: int) -> _IndexVersion:
        """An owned copy with room for ``capacity`` rows (layouts copied where built)."""
        f = self.storage.shape[1]
        storage = np.zeros((capacity, f), np.float32)
        storage[: self.n] = self.items
        fresh = _IndexVersion(storage, self.n, owned=True)
        used = _panel_values(self.n, f)
        if self.panel_storage is not None:
            fresh.panel_storage = _aligned_copy(self.panel_storage[:used], _panel_values(capacity, f))
        bfloat16, norms = self.bfloat16, self.norms
        if bfloat16 is not None and norms is not None:
            words = _aligned_copy(bfloat16[0][:used], _panel_values(capacity, f))
            fresh.norms = np.zeros(capacity)
            fresh.norms[: self.n] = norms[: self.n]
            fresh.bfloat16 = (words, bfloat16[1])
        return fresh


# Panels start on a cache line: a single query reads them in 32- or 64-byte vectors, and with
# the 16-byte alignment of a plain allocation every other vector straddles two lines (about
# a tenth of a bfloat16 search's time on an AVX2-only EPYC).
PANEL_ALIGNMENT = 64


def _aligned_copy(values: np.ndarray, size: int) -> np.ndarray:
    """``values`` in the first entries of a new 1-D array of ``size`` entries (zeros after
    them) whose data starts on a multiple of :data:`PANEL_ALIGNMENT` bytes."""
    itemsize = values.dtype.itemsize
    raw = np.zeros(size * itemsize + PANEL_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % PANEL_ALIGNMENT
    out = raw[start : start + size * itemsize].view(values.dtype)
    out[: values.size] = values
    return out


def _row_norms(rows: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))


def _norm_bound(norms: np.ndarray) -> float:
    """The largest row norm, rounded up: the bound of the bfloat16 scores' error."""
    return float(norms.max() * (1 + 1e-12)) if len(norms) else 0.0


class _RowUpdate:
    """New values for some rows of an index, and the panels they change, prepared before
    any array a search may read is touched."""

    def __init__(self, version: _IndexVersion, ids: np.ndarray, rows: np.ndarray):
        f = version.storage.shape[1]
        self.n = max(version.n, int(ids.max()) + 1) if len(ids) else version.n
        if self.n > version.n:
            # Rows between the old end and the new ids are zero rows, written like the others.
            between = np.setdiff1d(np.arange(version.n, self.n), ids, assume_unique=True)
            ids = np.concatenate([ids, between])
            rows = np.concatenate([rows, np.zeros((len(between), f), np.float32)])
        self.ids, self.rows = ids, rows
        self.panels: np.ndarray | None = None
        self.bfloat16: np.ndarray | None = None
        self.norms: np.ndarray | None = None
        self.touched = np.unique(ids // cpu.PANEL_ITEMS)
        if version.panel_storage is not None or version.bfloat16 is not None:
            panels = cpu.item_panels(self._touched_rows(version))
            if version.panel_storage is not None:
                self.panels = panels
            if version.bfloat16 is not None:
                self.bfloat16 = cpu.bfloat16_panels(panels)
                self.norms = _row_norms(rows)

    def _touched_rows(self, version: _IndexVersion) -> np.ndarray:
        """The rows of every touched panel after the update (zeros past the end), in panel order."""
        per_panel = cpu.PANEL_ITEMS
        panel_rows = (self.touched[:, None] * per_panel + np.arange(per_panel)).ravel()
        block = np.zeros((len(panel_rows), version.storage.shape[1]), np.float32)
        existing = panel_rows < version.n
        block[existing] = version.items[panel_rows[existing]]
        place = np.searchsorted(self.touched, self.ids // per_panel) * per_panel + self.ids % per_panel
        block[place] = self.rows
        return block

    def fits(self, version: _IndexVersion) -> bool:
        return version.owned and self.n <= version.capacity

    def write(self, version: _IndexVersion) -> None:
        """Writes the rows and their panels into ``version`` (which no search holds)."""
        version.storage[self.ids] = self.rows
        version.resize(self.n)
        f = version.storage.shape[1]
        size = _panel_values(cpu.PANEL_ITEMS, f)  # values per panel
        # A layout built by a search after this update was prepared is built again on next use.
        if version.panel_storage is not None:
            if self.panels is None:
                version.panel_storage = None
            else:
                version.panel_storage.reshape(-1, size)[self.touched] = self.panels.reshape(-1, size)
        if version.bfloat16 is None:
            return
        if self.bfloat16 is None or version.norms is None:
            version.bfloat16 = version.norms = None
            return
        words = version.bfloat16[0]
        words.reshape(-1, size)[self.touched] = self.bfloat16.reshape(-1, size)
        version.norms[self.ids] = self.norms
        version.bfloat16 = (words, _norm_bound(version.norms[: self.n]))


class _Reading:
    """``with index._reading() as version``: holds the index's current version for the block
    (see :meth:`ItemIndex.update`). A plain class rather than a generator context manager: it
    runs on every search, where the generator's machinery was a measurable share of a
    single query's time."""

    __slots__ = ("index",)

    def __init__(self, index: ItemIndex):
        self.index = index

    def __enter__(self) -> _IndexVersion:
        index = self.index
        with index._guard:
            index._readers += 1
            return index._version

    def __exit__(self, *exception) -> None:
        index = self.index
        with index._guard:
            index._readers -= 1


def _integer(value, name: str, minimum: int) -> int:
    """:func:`check_int`, with the usual case (a plain int in range) answered at once."""
    if type(value) is int and value >= minimum:
        return value
    return check_int(value, name, minimum=minimum)


class ItemIndex:
    """Item vectors prepared once for many searches: what :func:`topk` does per call, kept.

    A server that answers one user at a time should search an ``ItemIndex``: the first
    single-query search also stores the items in a factor-major bfloat16 layout that one
    query reads at memory speed (half the bytes of the items, made once); every item it
    leaves in the running is scored again exactly in float32, so the results are the float32
    results, whatever ``precision`` says. A model's own ``recommend`` and
    ``similar_*`` methods keep one per model.

    The catalog can change while it is served: :meth:`update` replaces or appends rows and
    rewrites only the panels of the layouts that hold them. Updates and searches may run in
    different threads at once; every search reads one version of the catalog from start to
    end, the one before an update or the one after it, never a row of each or a half-written
    row.

    Parameters
    ----------
    items : ndarray (n_items, f), float32, C-contiguous
        Used without a copy for ``metric="dot"`` (and never written: the first
        :meth:`update` copies it).
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
        rows = normalized_rows(items) if metric == "cosine" else items
        self._version = _IndexVersion(rows, rows.shape[0], owned=rows is not items)
        self._single_query_layout = True  # single queries read panels, made on first use
        # False only for recore.topk's single-query searches, whose engine call checks the items.
        self._items_checked = True
        self._make_locks()

    @classmethod
    def _for_one_search(cls, items: np.ndarray, metric: str, *, items_checked: bool) -> ItemIndex:
        """The index :func:`topk` searches once, of arguments it has checked: no second check
        of them, and no panels (a layout made for one search would cost more than it saves).
        ``items_checked=False``: the engine checks the items for NaN and infinity."""
        index = cls.__new__(cls)
        index.metric = metric
        rows = normalized_rows(items) if metric == "cosine" else items
        index._version = _IndexVersion(rows, rows.shape[0], owned=rows is not items)
        index._single_query_layout = False
        index._items_checked = items_checked
        index._make_locks()
        return index

    def _make_locks(self) -> None:
        # _guard: held for a few instructions, to count the searches under way and to swap or
        # write a version; _writer: one update at a time.
        self._guard = threading.Lock()
        self._writer = threading.Lock()
        self._readers = 0

    def __getstate__(self) -> dict:
        state = {name: value for name, value in self.__dict__.items() if name not in ("_guard", "_writer", "_readers")}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._make_locks()
        version = self._version  # unpickled arrays lose the panels' alignment: restored here
        if version.panel_storage is not None:
            version.panel_storage = _aligned_copy(version.panel_storage, version.panel_storage.size)
        if version.bfloat16 is not None:
            words, max_norm = version.bfloat16
            version.bfloat16 = (_aligned_copy(words, words.size), max_norm)

    @property
    def items(self) -> np.ndarray:
        """The catalog's vectors as searched (unit rows for cosine), (n_items, f) float32."""
        return self._version.items

    @property
    def n_items(self) -> int:
        """Items in the catalog."""
        return self._version.n

    def _reading(self) -> _Reading:
        """The current version, held for the block: no update writes into it meanwhile."""
        return _Reading(self)

    def panels(self) -> np.ndarray:
        """The items in the engine's single-query layout: panels of ``PANEL_ITEMS`` rows
        stored factor-major (built by the engine on first use).

        Returns
        -------
        ndarray of float32, 1-D
        """
        with self._reading() as version:
            return version.panels()

    def bfloat16_panels(self) -> tuple[np.ndarray, float]:
        """The panels rounded to bfloat16 (to nearest, ties to even) as uint16 in the engine's
        layout, and the largest row norm, which bounds the error of scores computed from them
        (built on first use).

        Returns
        -------
        panels : ndarray of uint16, 1-D
        max_norm : float
        """
        with self._reading() as version:
            return version.bfloat16_panels()

    def update(self, ids, vectors: np.ndarray) -> None:
        """Replaces the rows of ``ids`` with ``vectors``, appending rows for ids past the end.

        Only the changed rows are written, with the panels of the single-query layouts that
        hold them (float32 and bfloat16, where built) and the norm bound. Ids past the end
        grow the catalog; rows between the old end and a new id become zero vectors (they
        score 0 with every query). A search under way keeps reading the version it started
        with: when one is, the update writes a copy of the catalog and swaps it in (one
        reference assignment), otherwise it writes in place. Updates run one at a time.

        Parameters
        ----------
        ids : int or array-like of int, unique, >= 0
        vectors : ndarray (len(ids), f) float32
            The new rows (normalized here for ``metric="cosine"``).

        Raises
        ------
        TypeError, ValueError, IndexError
            Ids that are not unique non-negative integers, vectors of the wrong dtype or
            shape, or NaN / infinity in them.
        """
        ids = update_ids(ids)
        vectors = factor_matrix(vectors, "vectors")
        f = self._version.storage.shape[1]
        if vectors.shape != (len(ids), f):
            raise ValueError(f"vectors must have shape {(len(ids), f)} (one row per id), got {vectors.shape}")
        if not cpu.all_finite(vectors):
            raise ValueError("vectors must not contain NaN or infinity")
        if self.metric == "cosine":
            vectors = normalized_rows(vectors)
        self._update_checked(ids, vectors)

    def _update_checked(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """:meth:`update` of checked ids and rows (unit rows for cosine)."""
        with self._writer:
            version = self._version
            update = _RowUpdate(version, ids, rows)  # reads only: searches may run meanwhile
            with self._guard:
                if self._readers == 0 and update.fits(version):
                    update.write(version)  # no search holds it, and none starts until written
                    return
            capacity = version.capacity if update.n <= version.capacity else grown_capacity(version.n, update.n)
            fresh = version.copy(capacity)
            update.write(fresh)
            with self._guard:
                self._version = fresh

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
        if self.metric == "dot" and allow is None and deny is None:
            with self._reading() as version:
                ready = _one_query_arguments(queries, version.items, k, exclude, precision, num_threads, check_finite)
                if ready is not None:
                    query, exclusions = ready
                    return self._one_query(version, query, exclusions, k, num_threads, check_finite)
        single = isinstance(queries, np.ndarray) and queries.ndim == 1
        if single:
            queries = queries[None, :]
        queries = factor_matrix(queries, "queries")
        k = _integer(k, "k", 1)
        precision = check_choice(precision, "precision", ("float32", "bfloat16"))
        num_threads = _integer(num_threads, "num_threads", 0)
        check_finite = check_bool(check_finite, "check_finite")
        with self._reading() as version:
            items = version.items
            if queries.shape[1] != items.shape[1]:
                raise ValueError(
                    "queries and items must have the same number of factors, "
                    f"got {queries.shape[1]} and {items.shape[1]}"
                )
            n_items = items.shape[0]
            exclusions = None if exclude is None else _exclusions(exclude, queries.shape[0], n_items)
            # One or two queries by dot product are checked by the engine, in C++ before it
            # searches (the same ValueError): a check in Python costs more than theirs.
            engine_checks = check_finite and self.metric == "dot" and queries.shape[0] <= cpu.SINGLE_QUERY_PATH_MAX
            if check_finite and not engine_checks and not all_finite(queries, num_threads):
                raise ValueError("queries must not contain NaN or infinity")
            if self.metric == "cosine":
                queries = normalized_rows(queries)
            allowed = None if allow is None else item_ids(allow, n_items, "allow")
            denied = None if deny is None else denied_bits(item_ids(deny, n_items, "deny"), n_items)
            ids, scores = self._search_checked(
                version, queries, k, exclusions, allowed, denied, precision, num_threads, engine_checks
            )
        return (ids[0], scores[0]) if single else (ids, scores)

    def _one_query(self, version, query, exclusions, k, num_threads, check_finite):
        """One query whose arguments are in the engine's form (see :func:`_one_query_arguments`),
        searched as :meth:`_engine_search` searches it, without the general path's checks."""
        ids, scores = self._engine_search(version, query, k, exclusions, None, None, "float32", num_threads,
                                          check_finite)  # fmt: skip
        return ids[0], scores[0]

    def _search_checked(self, version, queries, k, exclusions, allowed, denied, precision, num_threads,
                        engine_checks=False):  # fmt: skip
        """The search of checked arguments (unit-length queries for cosine) over ``version``
        (held by the caller, see :meth:`_reading`), in pieces of about half a second, so
        that Ctrl-C is answered between them."""
        n = queries.shape[0]
        if exclusions is not None and exclusions.shape[1] < version.n:
            exclusions = _widened(exclusions, version.n)
        searched_items = version.n if allowed is None else len(allowed)
        per_query = max(1, searched_items * queries.shape[1])
        chunk = max(cpu.SINGLE_QUERY_PATH_MAX + 1, SEARCH_CHUNK_MULTIPLY_ADDS // per_query)
        if n <= chunk:
            return self._engine_search(
                version, queries, k, exclusions, allowed, denied, precision, num_threads, engine_checks
            )
        ids: np.ndarray | None = None
        scores = np.empty((n, k), dtype=np.float32)
        for first in range(0, n, chunk):
            last = min(n, first + chunk)
            rows = None if exclusions is None else exclusion_rows(exclusions, first, last)
            part_ids, part_scores = self._engine_search(
                version, queries[first:last], k, rows, allowed, denied, precision, num_threads, engine_checks
            )
            if ids is None:
                ids = np.empty((n, k), dtype=part_ids.dtype)
            ids[first:last], scores[first:last] = part_ids, part_scores
        return ids, scores

    def _engine_search(self, version, queries, k, exclusions, allowed, denied, precision, num_threads,
                       engine_checks=False):  # fmt: skip
        """One engine call. ``engine_checks``: the engine checks the queries for NaN and
        infinity, and the items too unless the index has (in the scoring pass itself, where
        it scores item rows); otherwise the caller has checked them."""
        items = version.items
        n_items = items.shape[0]
        bfloat16_panels = None
        max_norm = 0.0
        if allowed is not None:
            items = np.ascontiguousarray(items[allowed])
        elif queries.shape[0] <= cpu.SINGLE_QUERY_PATH_MAX and self._single_query_layout:
            # Either precision: one or two queries read the bfloat16 panels, half the bytes of
            # float32 ones, and every item they leave in the running is scored again exactly
            # in float32, so the results are the float32 ones (see recore.topk).
            bfloat16_panels, max_norm = version.bfloat16_panels()
        # Positional: the binding matches them faster than keywords (a single search's call).
        return cpu.topk(queries, items, k, exclusions, denied, allowed, n_items, n_items > INT32_MAX, engine_checks,
                        num_threads, None, bfloat16_panels, max_norm, self._items_checked)  # fmt: skip


def _exclusions(exclude, n_queries: int, n_items: int):
    """``exclude`` as the engine takes it (see :func:`as_exclusions`)."""
    ready = _ready_exclusions(exclude, n_queries, n_items)
    return as_exclusions(exclude, n_queries, n_items) if ready is None else ready


def _ready_exclusions(exclude, n_queries: int, n_items: int):
    """One or two queries' exclusion rows already in the engine's form, the usual case (a
    row of a user-items matrix), handed over as they are after a check of their few row
    pointers, which makes scipy's canonical-format test safe to run: the engine checks the
    indices (IndexError) and their order itself, in C++, where the full check in Python would
    cost more than the search of a small catalog. None for anything else."""
    if (
        n_queries <= cpu.SINGLE_QUERY_PATH_MAX
        and isinstance(exclude, sp.csr_matrix)
        and exclude.shape == (n_queries, n_items)
        and n_items <= INT32_MAX
        and exclude.indptr.dtype == np.int32
        and exclude.indices.dtype == np.int32
        and exclude.indptr.shape == (n_queries + 1,)
        and exclude.data.shape == exclude.indices.shape
    ):
        pointers = exclude.indptr.tolist()  # one or two rows: first <= middle <= last says rising
        rising = pointers[0] <= pointers[1] <= pointers[-1]
        if pointers[0] == 0 and pointers[-1] == exclude.indices.shape[0] and rising and exclude.has_canonical_format:
            return exclude
    return None


def update_ids(ids, name: str = "ids") -> np.ndarray:
    """Ids of rows to write (existing rows, or new ones past the end): unique non-negative
    integers, as int64."""
    array = np.atleast_1d(np.asarray(ids))
    if array.ndim != 1:
        raise ValueError(f"{name} must be an id or a 1-dimensional array of ids, got {array.ndim} dimensions")
    if array.dtype.kind not in "iu":
        if not (array.size == 0 and array.dtype.kind == "f"):
            raise TypeError(f"{name} must be integer ids, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise IndexError(f"{name} has negative ids")
    if len(np.unique(array)) != len(array):
        raise ValueError(f"{name} must not repeat an id")
    return array


def _widened(exclusions, n_items: int):
    """Exclusions made by :func:`as_exclusions` for a catalog that has grown since: the same
    entries, more columns (the newer items are not excluded)."""
    index_dtype = np.int64 if max(exclusions.nnz, n_items) > INT32_MAX else exclusions.indices.dtype
    rows = sp.csr_matrix((exclusions.shape[0], n_items), dtype=exclusions.dtype)
    rows.data = exclusions.data
    rows.indices = exclusions.indices.astype(index_dtype, copy=False)
    rows.indptr = exclusions.indptr.astype(index_dtype, copy=False)
    rows.has_canonical_format = True
    return rows
