"""MovieLens loaders, on small archives made here: the tests never touch the network."""

from __future__ import annotations

import hashlib
import urllib.error
import zipfile

import numpy as np
import pytest
from recore import movielens as ml
from recore.datasets import DatasetError, movielens

ROWS = [(7, 100, 4.0, 30), (3, 100, 2.5, 10), (7, 5, 1.0, 20), (3, 9, 5.0, 40)]


def text_for(layout):
    if layout == "tab":
        return "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS)
    if layout == "colons":
        return "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in ROWS)
    return "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)


@pytest.fixture
def fake_archive(tmp_path, monkeypatch):
    """Writes variant's archive into a cache directory and registers its checksum."""
    monkeypatch.setenv("RECORE_DATA", str(tmp_path))

    def make(variant, contents=None):
        source = ml.SOURCES[variant]
        path = tmp_path / source.url.rsplit("/", 1)[1]
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(source.member, contents if contents is not None else text_for(source.layout))
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        monkeypatch.setitem(ml.SOURCES, variant, ml._Source(source.url, digest, source.member, source.layout))
        return path

    return make


@pytest.mark.parametrize("variant", ["100k", "1m", "20m", "25m"])
def test_every_layout_loads(fake_archive, variant):
    fake_archive(variant)
    data = movielens(variant, download=False)
    np.testing.assert_array_equal(data.user_ids, [3, 7])
    np.testing.assert_array_equal(data.item_ids, [5, 9, 100])
    dense = data.ratings.toarray()
    expected = np.array([[0, 5.0, 2.5], [1.0, 0, 4.0]])
    if variant in ("100k", "1m"):  # these layouts hold whole-star ratings (written as int above)
        expected = np.floor(expected)
    np.testing.assert_array_equal(dense, expected)
    assert data.ratings.has_canonical_format
    np.testing.assert_array_equal(data.timestamps, [40, 10, 20, 30])  # CSR order


def test_missing_archive_without_download_says_what_to_get(fake_archive, tmp_path):
    with pytest.raises(DatasetError, match="ml-1m.zip"):
        movielens("1m", download=False)


def test_offline_download_fails_clearly(fake_archive, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(ml.urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError, match="Download it yourself and put it at"):
        movielens("20m")


def test_bad_checksum(fake_archive):
    path = fake_archive("100k")
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(DatasetError, match="MD5"):
        movielens("100k", download=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        movielens("10g")
    with pytest.raises(TypeError, match="download"):
        movielens("100k", download="yes")
