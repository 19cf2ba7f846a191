"""MovieLens 100K, 1M, 20M and 25M from GroupLens's official downloads.

The archive is kept in a cache directory (``$RECORE_DATA``, else ``~/.cache/recore``) and
checked against GroupLens's published MD5 before use. Without network access, put the
archive there yourself; a missing or damaged archive raises :class:`DatasetError` saying what
to download and where to put it. Ratings are read straight from the archive.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from typing import cast

import numpy as np
import scipy.sparse as sp

from recore._validation import check_bool, check_choice
from recore.interactions import Interactions


@dataclass(frozen=True)
class _Source:
    url: str
    md5: str
    member: str  # the ratings file inside the archive
    layout: str  # "tab" (user item rating time), "colons" (user::item::rating::time), "csv" (with a header)


SOURCES = {
    "100k": _Source(
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "0e33842e24a9c977be4e0107933c0723",
        "ml-100k/u.data",
        "tab",
    ),
    "1m": _Source(
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "c4d9eecfca2ab87c1945afe126590906",
        "ml-1m/ratings.dat",
        "colons",
    ),
    "20m": _Source(
        "https://files.grouplens.org/datasets/movielens/ml-20m.zip",
        "cd245b17a1ae2cc31bb14903e1204af3",
        "ml-20m/ratings.csv",
        "csv",
    ),
    "25m": _Source(
        "https://files.grouplens.org/datasets/movielens/ml-25m.zip",
        "6b51fb2759a8657d3bfcbfc42b592ada",
        "ml-25m/ratings.csv",
        "csv",
    ),
}


class DatasetError(RuntimeError):
    """A dataset that cannot be had: not downloadable here, or its archive is damaged."""


@dataclass
class MovieLens:
    """A MovieLens dataset: ratings as a users x items matrix, with the original ids.

    Parameters
    ----------
    ratings : scipy.sparse.csr_matrix (n_users, n_items)
        The ratings (1 to 5 stars; 20m and 25m in half stars from 0.5), float32, canonical
        (sorted indices, no duplicates).
    timestamps : int64 ndarray (ratings.nnz,)
        ``timestamps[k]`` is the time of stored entry ``k`` in CSR order, in seconds since
        1970 (see :func:`recore.evaluation.time_split`).
    user_ids : int64 ndarray (n_users,)
        GroupLens's id of each row.
    item_ids : int64 ndarray (n_items,)
        GroupLens's id (movieId) of each column.
    """

    ratings: sp.csr_matrix
    timestamps: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray


def cache_directory() -> str:
    """The directory archives are kept in: ``$RECORE_DATA``, else ``~/.cache/recore``.

    Returns
    -------
    str
    """
    return os.environ.get("RECORE_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "recore")


def _md5(path: str) -> str:
    digest = hashlib.md5()  # GroupLens publishes MD5 sums; used as a checksum, not for security
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(source: _Source, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(source.url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        os.replace(temporary, path)
    except (urllib.error.URLError, OSError) as error:
        raise DatasetError(
            f"could not download {source.url} ({error}). Download it yourself and put it at {path}"
        ) from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _parse(text: bytes, layout: str) -> np.ndarray:
    if layout == "colons":
        text = text.replace(b"::", b"\t")
    delimiter = "," if layout == "csv" else "\t"
    table = np.loadtxt(io.BytesIO(text), delimiter=delimiter, skiprows=1 if layout == "csv" else 0, ndmin=2)
    if table.shape[1] != 4:
        raise DatasetError(f"unexpected ratings layout: {table.shape[1]} columns")
    return table


def movielens(variant: str = "100k", *, download: bool = True) -> MovieLens:
    """Load a MovieLens dataset, downloading GroupLens's archive the first time.

    The archive is kept in :func:`cache_directory` and checked against GroupLens's published
    MD5 before every use; the ratings are read from it directly.

    Parameters
    ----------
    variant : {"100k", "1m", "20m", "25m"}, default "100k"
        Which dataset.
    download : bool, default True
        Whether a missing archive may be downloaded. With False, a missing archive raises
        :class:`DatasetError` saying which file to put where.

    Returns
    -------
    MovieLens
        The ratings, their timestamps and GroupLens's user and movie ids.

    Raises
    ------
    DatasetError
        The archive is missing and cannot be downloaded (``download=False`` or no network),
        or its checksum does not match GroupLens's.
    ValueError
        ``variant`` is not one of the four.
    """
    variant = check_choice(variant, "variant", tuple(SOURCES))
    download = check_bool(download, "download")
    source = SOURCES[variant]
    path = os.path.join(cache_directory(), os.path.basename(source.url))
    if not os.path.exists(path):
        if not download:
            raise DatasetError(f"{path} is missing: download {source.url} and put it there")
        _fetch(source, path)
    checksum = _md5(path)
    if checksum != source.md5:
        raise DatasetError(
            f"{path} has MD5 {checksum}, GroupLens publishes {source.md5}: the file is damaged or not "
            f"MovieLens {variant}. Delete it and download {source.url} again."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read(source.member)
    except (zipfile.BadZipFile, KeyError) as error:
        raise DatasetError(f"{path} is not a readable MovieLens archive: {error}") from None
    table = _parse(text, source.layout)
    try:
        data = Interactions(
            table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2], table[:, 3].astype(np.int64),
            duplicates="error",
        )  # fmt: skip
    except ValueError as error:
        raise DatasetError(f"{path}: {error}") from None
    # Built with timestamps, so Interactions holds them.
    return MovieLens(data.matrix, cast(np.ndarray, data.timestamps), data.user_ids, data.item_ids)
