"""Model files: exact round trips, and clear errors (never code execution) for bad files."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import recore


@pytest.fixture(scope="module")
def data():
    return recore.datasets.synthetic(200, 90, 2000, random_state=3)


@pytest.fixture(scope="module", params=[("implicit", "float32"), ("explicit", "float64")])
def model(request, data):
    feedback, dtype = request.param
    return recore.ALS(
        factors=6, iterations=3, feedback=feedback, dtype=dtype, random_state=11, calculate_training_loss=True
    ).fit(data)


def test_round_trip_is_exact(model, data, tmp_path):
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = recore.load(path)
    assert type(loaded) is recore.ALS and loaded.get_params() == model.get_params()
    for name in ("user_factors_", "item_factors_"):
        original, restored = getattr(model, name), getattr(loaded, name)
        assert restored.dtype == original.dtype and restored.flags.c_contiguous
        np.testing.assert_array_equal(restored, original)
    assert loaded.history_["loss"] == model.history_["loss"]
    np.testing.assert_array_equal(loaded.recommend_all(data, k=5)[0], model.recommend_all(data, k=5)[0])


def test_a_generator_random_state_is_saved_as_none(data, tmp_path):
    model = recore.ALS(factors=3, iterations=1, random_state=np.random.default_rng(0)).fit(data)
    model.save(tmp_path / "m.npz")
    assert recore.load(tmp_path / "m.npz").random_state is None


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        recore.ALS().save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


def test_saving_replaces_the_file_whole_or_not_at_all(model, tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


def saved_bytes(model, tmp_path) -> bytes:
    path = tmp_path / "good.npz"
    model.save(path)
    return path.read_bytes()


def test_truncated_file(model, tmp_path):
    good = saved_bytes(model, tmp_path)
    for length in (0, 10, len(good) // 2, len(good) - 1):
        path = tmp_path / f"cut{length}.npz"
        path.write_bytes(good[:length])
        with pytest.raises(recore.ModelFileError):
            recore.load(path)


def test_any_flipped_byte_is_caught(model, tmp_path):
    good = saved_bytes(model, tmp_path)
    rng = np.random.default_rng(0)
    for position in rng.choice(len(good), size=40, replace=False):
        corrupted = bytearray(good)
        corrupted[position] ^= 0x5A
        path = tmp_path / "bad.npz"
        path.write_bytes(bytes(corrupted))
        try:
            recore.load(path)
        except recore.ModelFileError:
            continue
        # A flip in bytes the archive never reads (zip padding, for instance) is harmless:
        # the model loaded must then be the saved one.
        np.testing.assert_array_equal(recore.load(path).user_factors_, model.user_factors_)


def rewrite(path, tmp_path, **changes):
    """A copy of the saved archive with members replaced (None removes one)."""
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    for name, value in changes.items():
        if value is None:
            members.pop(name)
        else:
            members[name] = value
    out = tmp_path / "edited.npz"
    np.savez(out, **members)
    return out


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(format_version=np.array(2, dtype=np.int64)), "format version 2"),
        (dict(recore_format=np.array("something-else")), "not a recore model file"),
        (dict(checksum=None), "checksum"),
        (dict(model_class=np.array("Trojan")), "checksum"),
        (dict(fitted__user_factors_=np.zeros((3, 6), np.float32)), "checksum"),
    ],
)
def test_wrong_version_or_edited_members(model, tmp_path, changes, match):
    path = tmp_path / "good.npz"
    model.save(path)
    with pytest.raises(recore.ModelFileError, match=match):
        recore.load(rewrite(path, tmp_path, **changes))


def test_a_pickled_member_is_never_unpickled(tmp_path):
    """A hand-made file whose member is a pickle that would create a file when loaded."""
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    np.savez(path, recore_format=np.array("recore-model"), fitted__user_factors_=np.array([Payload()], dtype=object))
    with pytest.raises(recore.ModelFileError):
        recore.load(path)
    assert not marker.exists()


def test_a_consistent_file_with_bad_contents_is_refused(model, tmp_path):
    """Members rewritten with a matching checksum (a deliberate forgery) are still checked."""
    from recore import _persistence

    path = tmp_path / "good.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    for name, value in [
        ("fitted__user_factors_", np.full_like(members["fitted__user_factors_"], np.nan)),
        ("fitted__item_factors_", members["fitted__item_factors_"][:, :2].copy()),
        ("hyperparameters", np.array('{"factors": -1}')),
        ("hyperparameters", np.array("[1, 2]")),
    ]:
        forged = dict(members, **{name: value})
        forged.pop("checksum")
        forged["checksum"] = np.array(_persistence._checksum(forged))
        out = tmp_path / "forged.npz"
        np.savez(out, **forged)
        with pytest.raises(recore.ModelFileError):
            recore.load(out)


def test_not_a_zip_and_missing_file(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello")
    with pytest.raises(recore.ModelFileError):
        recore.load(path)
    with pytest.raises(FileNotFoundError):
        recore.load(tmp_path / "absent.npz")
    assert zipfile.is_zipfile(path) is False


def test_files_of_the_earlier_layout_still_load(tmp_path):
    """Before the training record, an ALS file kept its losses as loss_history_ and nothing else
    of the fit: it loads, with those losses as history_['loss']."""
    matrix = recore.datasets.synthetic(30, 20, 150, random_state=1)
    model = recore.ALS(factors=3, iterations=2, calculate_training_loss=True, random_state=0).fit(matrix)
    earlier = {
        "user_factors_": model.user_factors_,
        "item_factors_": model.item_factors_,
        "loss_history_": np.asarray(model.history_["loss"], np.float64),
    }
    model._fitted_state = lambda: earlier  # the layout earlier releases wrote
    model.save(tmp_path / "earlier.npz")
    loaded = recore.load(tmp_path / "earlier.npz")
    assert loaded.history_ == {"loss": model.history_["loss"]}
    np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)


def test_the_training_record_survives_a_round_trip(tmp_path):
    ratings = recore.datasets.synthetic_ratings(60, 40, 800, random_state=0)
    model = recore.SGD(factors=4, iterations=6, early_stopping=1, num_threads=1, random_state=0)
    model.fit(ratings, validation=ratings[:20])
    model.save(tmp_path / "sgd.npz")
    loaded = recore.load(tmp_path / "sgd.npz")
    assert loaded.history_ == model.history_
    assert loaded.iterations_completed_ == model.iterations_completed_
