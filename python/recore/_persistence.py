"""Model files: ``model.save(path)`` and ``recore.load(path)``.

The format is a NumPy ``.npz`` archive read with ``allow_pickle=False``, so loading a file
never runs code from it. Its members:

- ``recore_format``: the string ``"recore-model"``; ``format_version``: an int64 (now 1);
- ``model_class``: the estimator's class name (``"ALS"``, ...);
- ``hyperparameters``: a JSON object of the ``__init__`` arguments (a numpy Generator given
  as ``random_state`` is saved as ``null``: its state is not kept);
- ``fitted__<name>``: each fitted attribute ``<name>`` (``user_factors_``, ...) as an array;
- ``checksum``: the SHA-256 of every other member's name, dtype, shape and bytes.

Saving writes a temporary file next to ``path`` and renames it over ``path``, so a crash
mid-save leaves any previous file whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "recore-model"
FORMAT_VERSION = 1
_FITTED_PREFIX = "fitted__"
# Members larger than this many bytes are refused before being read (a hand-made archive
# could declare a huge member to exhaust memory).
_MAX_MEMBER_BYTES = 1 << 40

# Estimator classes that files may name, filled by Estimator.__init_subclass__.
MODEL_CLASSES: dict[str, type] = {}


class ModelFileError(ValueError):
    """A file that is not a valid recore model file (truncated, corrupted, tampered with, or
    from an unknown format version)."""


def _checksum(members: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(members):
        array = np.ascontiguousarray(members[name])
        digest.update(name.encode())
        digest.update(str(array.dtype).encode())
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _json_value(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (np.random.Generator, np.random.SeedSequence)):
        return None
    if isinstance(value, (np.dtype, type)):
        return str(np.dtype(value))
    raise TypeError(f"cannot save a hyperparameter of type {type(value).__name__}")


def save_model(model, path) -> None:
    """Writes ``model`` (fitted) to ``path``; see the module docstring for the format."""
    fitted = model._fitted_state()
    members = {
        "recore_format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "model_class": np.array(type(model).__name__),
        "hyperparameters": np.array(json.dumps({k: _json_value(v) for k, v in model.get_params().items()})),
    }
    for name, value in fitted.items():
        members[_FITTED_PREFIX + name] = np.asarray(value)
    members["checksum"] = np.array(_checksum(members))

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".recore-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **members)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _read_members(path) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.file_size > _MAX_MEMBER_BYTES:
                    raise ModelFileError(f"{path}: member {info.filename} declares {info.file_size} bytes")
            bad = archive.testzip()
            if bad is not None:
                raise ModelFileError(f"{path}: member {bad} is corrupted")
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ModelFileError, FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as error:  # noqa: BLE001 - a damaged archive fails in many ways
        # allow_pickle=False turns any pickled (object) member into a ValueError here; a
        # damaged zip can raise BadZipFile, EOFError, NotImplementedError or zlib.error, among others.
        raise ModelFileError(f"{path} is not a readable recore model file: {error!r}") from None


def _string(members, name, path) -> str:
    value = members.get(name)
    if value is None or value.dtype.kind != "U" or value.shape != ():
        raise ModelFileError(f"{path}: missing or malformed member {name!r}")
    return str(value)


def load_model(path):
    """Reads a model written by ``save``.

    The file is read with ``allow_pickle=False``: nothing in it is ever unpickled.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by a model's ``save``.

    Returns
    -------
    ALS, SGD or another recore model
        A fitted estimator of the saved class, with the saved hyperparameters.

    Raises
    ------
    ModelFileError
        The file is missing, damaged, modified, of another format version, or not a recore model.
    """
    members = _read_members(path)
    if members.get("recore_format") is None or _string(members, "recore_format", path) != FORMAT:
        raise ModelFileError(f"{path} is not a recore model file")
    version = members.get("format_version")
    if version is None or version.dtype != np.int64 or version.shape != ():
        raise ModelFileError(f"{path}: missing or malformed format_version")
    if int(version) != FORMAT_VERSION:
        raise ModelFileError(f"{path} has format version {int(version)}; this recore reads version {FORMAT_VERSION}")
    expected = _string(members, "checksum", path)
    if _checksum({k: v for k, v in members.items() if k != "checksum"}) != expected:
        raise ModelFileError(f"{path}: checksum mismatch (the file is corrupted or was modified)")
    class_name = _string(members, "model_class", path)
    if class_name not in MODEL_CLASSES:
        raise ModelFileError(f"{path}: unknown model class {class_name!r}")
    try:
        hyperparameters = json.loads(_string(members, "hyperparameters", path))
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path}: malformed hyperparameters: {error}") from None
    if not isinstance(hyperparameters, dict):
        raise ModelFileError(f"{path}: malformed hyperparameters")
    cls = MODEL_CLASSES[class_name]
    try:
        model = cls(**hyperparameters)
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: invalid hyperparameters: {error}") from None
    fitted = {k[len(_FITTED_PREFIX) :]: v for k, v in members.items() if k.startswith(_FITTED_PREFIX)}
    try:
        model._restore_fitted_state(fitted)
    except (TypeError, ValueError, KeyError) as error:
        raise ModelFileError(f"{path}: invalid fitted state: {error}") from None
    return model
