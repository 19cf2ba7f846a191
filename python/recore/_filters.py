"""What a search is asked for, checked and put in the engines' forms: factor matrices,
per-query exclusions, allow and deny lists, and unit-length rows for cosine. Shared by the
CPU and GPU searches; no engine is imported here."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from recore._validation import _check_compressed, check_ids

INT32_MAX = np.iinfo(np.int32).max

# Rows normalized at a time: a float64 block of this many rows stays in cache.
_UNIT_ROWS_BLOCK = 4096


def factor_matrix(array, name: str) -> np.ndarray:
    """A float32 C-contiguous 2-D numpy array, as given (never converted)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got {array.ndim} dimensions")
    if array.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {array.dtype} (convert it with .astype(np.float32))")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return array


def finite_in_calling_thread(array: np.ndarray) -> bool:
    """Whether a float32 numpy array holds no NaN or infinity, read by numpy in the calling
    thread (no thread team is started: the check of one query, or of a catalog searched with
    ``num_threads=1``, stays on the caller's core).

    One pass: a float sum that comes out finite proves every term finite, since NaN and the
    infinities survive addition. Only a sum that does not (a NaN or infinity, or finite
    values whose sum overflows) has its values tested one by one, a block of rows at a time.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(array, axis=None)
    if math.isfinite(total):
        return True
    rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array
    return all(bool(np.isfinite(rows[first : first + _UNIT_ROWS_BLOCK]).all())
               for first in range(0, rows.shape[0], _UNIT_ROWS_BLOCK))  # fmt: skip


def unit_rows(xp, vectors):
    """Rows scaled to unit length (float32; ``xp`` is numpy or cupy); a zero row stays zero,
    so that its cosine with any vector is 0.

    Each row's squared norm is summed in float64 factor by factor, in factor order, with
    separate multiplications and additions: the same operations in the same order on either
    device, so CPU and GPU cosine scores are equal bit for bit.
    """
    n, f = vectors.shape
    out = xp.empty((n, f), dtype=xp.float32)
    # Quietly: with check_finite=False a caller may pass infinities, and gets what they give.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for first in range(0, n, _UNIT_ROWS_BLOCK):
            block = vectors[first : first + _UNIT_ROWS_BLOCK]
            wide = block.astype(xp.float64)
            sums = xp.zeros(block.shape[0], dtype=xp.float64)
            for j in range(f):
                column = wide[:, j]
                sums += column * column
            norms = xp.sqrt(sums)
            positive = norms > 0
            scale = xp.where(positive, 1.0 / xp.where(positive, norms, 1.0), 0.0).astype(xp.float32)
            out[first : first + _UNIT_ROWS_BLOCK] = block * scale[:, None]
    return out


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
    index_dtype = np.int64 if max(csr.nnz, n_items) > INT32_MAX else np.int32
    if not (csr.has_canonical_format and csr.indices.dtype == index_dtype and csr.indptr.dtype == index_dtype):
        csr = sp.csr_matrix(
            (np.ones(csr.nnz, dtype=np.float32), csr.indices.copy(), csr.indptr.copy()), shape=csr.shape
        )
        csr.sum_duplicates()
        csr.indices = csr.indices.astype(index_dtype, copy=False)
        csr.indptr = csr.indptr.astype(index_dtype, copy=False)
    return csr


class TakenRows:
    """A few users' rows of a CSR matrix as the CPU engine takes exclusions: what it reads of
    a canonical scipy CSR matrix (``format``, ``shape``, ``indptr``, ``indices``, ``data``,
    ``nnz``), with none of scipy's construction and checks, which cost a tenth of a search
    for one user. Made by :func:`few_taken_rows`, whose checks make it canonical; a search
    on another device takes :meth:`to_scipy`."""

    __slots__ = ("indptr", "indices", "data", "shape")
    format = "csr"
    has_canonical_format = True
    ndim = 2
    dtype = np.dtype(np.float32)  # of data

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, shape: tuple[int, int]):
        self.indptr, self.indices, self.shape = indptr, indices, shape
        self.data = np.ones(indices.shape[0], np.float32)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def to_scipy(self) -> sp.csr_matrix:
        rows = sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)
        rows.has_canonical_format = True
        return rows


def few_taken_rows(matrix, rows, name: str) -> TakenRows | None:
    """Rows ``rows`` (a few: one user served as they act) of a CSR matrix with int32 indices
    whose taken rows' pointers :func:`check_taken_row_pointers` has checked, as exclusions in
    :func:`as_exclusions`' form (see :class:`TakenRows`), or None when they are not already in
    it (int64 indices, or a row whose items are unsorted or repeated: the general path
    canonicalizes those).

    Built from slices of the matrix's arrays, each row's items checked alone for range and
    order: scipy's row indexing does the same work in several times the time of a search of
    a small catalog, for one row.
    """
    indptr, indices = matrix.indptr, matrix.indices
    if indices.dtype != np.int32 or indptr.dtype != np.int32:
        return None
    n_items = matrix.shape[1]
    pieces = []
    canonical = True
    for row in rows.tolist():
        begin, end = indptr[row : row + 2].tolist()
        piece = indices[begin:end]
        if end - begin > 1 and not bool((piece[1:] > piece[:-1]).all()):
            canonical = False
            low, high = int(piece.min()), int(piece.max())
        else:  # sorted: its ends bound it
            low, high = (int(piece[0]), int(piece[-1])) if end > begin else (0, 0)
        if low < 0 or high >= n_items:
            raise IndexError(f"{name} has column indices outside [0, {n_items})")
        pieces.append(piece)
    if not canonical:
        return None
    if len(pieces) == 1:
        return TakenRows(np.array([0, pieces[0].shape[0]], np.int32), pieces[0], (1, n_items))
    pointers = np.zeros(len(pieces) + 1, dtype=np.int32)
    np.cumsum([piece.shape[0] for piece in pieces], out=pointers[1:])
    taken = np.concatenate(pieces) if pieces else indices[:0]
    return TakenRows(pointers, taken, (len(pieces), n_items))


def exclusion_rows(exclusions, first: int, last: int):
    """Rows ``[first, last)`` of exclusions made by :func:`as_exclusions`, in the same form
    (views of its arrays, index dtype kept, still canonical)."""
    indptr = exclusions.indptr
    begin, end = int(indptr[first]), int(indptr[last])
    rows = sp.csr_matrix((last - first, exclusions.shape[1]), dtype=exclusions.dtype)
    rows.data = exclusions.data[begin:end]
    rows.indices = exclusions.indices[begin:end]
    rows.indptr = indptr[first : last + 1] - indptr.dtype.type(begin)
    rows.has_canonical_format = True
    return rows


def item_ids(ids, n_items: int, name: str) -> np.ndarray:
    """A list of item ids, checked, sorted and unique."""
    array = check_ids(np.atleast_1d(np.asarray(ids)), n_items, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-dimensional list of item ids")
    if array.size < 2 or bool((array[1:] > array[:-1]).all()):
        return array  # already sorted and unique (the usual case): one comparison, no sort
    return np.unique(array)


def exclusions_as_denied(exclusions, denied, n_items: int) -> np.ndarray:
    """One query's exclusions (a one-row CSR made by :func:`as_exclusions`) as a deny
    bitmap over the catalog, joined with ``denied`` (a bitmap from :func:`denied_bits`, or
    None).

    For one query the two mean the same, and a bitmap reaches the engine with a check of its
    length, where a CSR has its whole structure checked again by the engine's parallel
    loops (a thread team started for a hundred entries).
    """
    indptr = exclusions.indptr
    bits = denied_bits(exclusions.indices[int(indptr[0]) : int(indptr[1])], n_items)
    return bits if denied is None else bits | denied


def denied_bits(ids: np.ndarray, n_items: int) -> np.ndarray:
    """A bitmap over the catalog, 64 items per uint64 word, bit ``i % 64`` of word ``i // 64``
    set for each id ``i``."""
    bits = np.zeros(((n_items + 63) // 64) * 64, dtype=bool)
    bits[ids] = True
    # Flat: byte b holds items 8b..8b+7, lowest first, so eight bytes read little-endian are
    # one word (packing along an axis of rows of 8 gives the same bytes, far more slowly).
    return np.packbits(bits, bitorder="little").view("<u8")
