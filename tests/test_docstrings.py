"""The public API's docstrings, validated with numpydoc: every public object has one, and
every function's (and class constructor's) parameters are documented in the order of its
signature, with a Returns section where it returns something.

KNOWN_FAILURES lists what does not pass yet. The test fails for any other object that
breaks a rule, and for a listed object whose failures change, so that fixing a docstring
means removing its entry: the list only shrinks.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import recore
import recore.distributed
from numpydoc.validate import validate

# numpydoc's codes: GL08 no docstring; PR01 a parameter not documented; PR02 a documented
# parameter the signature does not have; PR03 parameters documented out of order; RT01 no
# Returns section in a function that returns a value.
CHECKS = {"GL08", "PR01", "PR02", "PR03", "RT01"}

MODULES = ["recore.evaluation", "recore.datasets", "recore.kernels", "recore.cuda", "recore.distributed"]
CLASSES = ["ALS", "SGD", "ItemIndex", "Interactions"]

# Objects whose docstrings do not pass yet, with the checks they fail: the list may only
# shrink (a listed object that passes fails the test too).
KNOWN_FAILURES: dict[str, set[str]] = {}


def is_documentable(member) -> bool:
    return (
        inspect.isroutine(member) or inspect.isclass(member) or inspect.ismodule(member) or isinstance(member, property)
    )


def public_api() -> list[str]:
    """Dotted names of the public objects: recore's own, the public names of MODULES, and
    the public methods and properties (inherited ones too) of CLASSES."""
    names = {f"recore.{name}" for name in recore.__all__ if is_documentable(getattr(recore, name))}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        names.update(f"{module_name}.{name}" for name in module.__all__ if is_documentable(getattr(module, name)))
    for class_name in CLASSES:
        for name, member in inspect.getmembers(getattr(recore, class_name)):
            if not name.startswith("_") and is_documentable(member):
                names.add(f"recore.{class_name}.{name}")
    return sorted(names)


PUBLIC_API = public_api()


def resolve(name: str):
    """The object a dotted name stands for: the longest importable module, then attributes."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for attribute in parts[end:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(name)


def failures(name: str) -> set[str]:
    # numpydoc cannot locate a module that defines nothing itself (only re-exports), so
    # modules are checked for a docstring here: their names are validated one by one.
    if inspect.ismodule(resolve(name)):
        return set() if inspect.getdoc(resolve(name)) else {"GL08"}
    return {code for code, _ in validate(name)["errors"] if code in CHECKS}


@pytest.mark.parametrize("name", PUBLIC_API)
def test_docstring(name):
    found = failures(name)
    expected = KNOWN_FAILURES.get(name, set())
    if found != expected:
        messages = [f"{code}: {message}" for code, message in validate(name)["errors"] if code in found]
        if name in KNOWN_FAILURES:
            pytest.fail(
                f"{name} was listed as failing {sorted(expected)} and now fails {sorted(found)}: "
                f"update (or remove) its entry in KNOWN_FAILURES. {messages}"
            )
        pytest.fail(f"{name}: " + "; ".join(messages))


def test_known_failures_are_public_objects():
    stale = sorted(set(KNOWN_FAILURES) - set(PUBLIC_API))
    assert not stale, f"KNOWN_FAILURES lists objects that are not in the public API any more: {stale}"


def test_the_walk_covers_the_api():
    # A walk that silently found nothing would pass every check above.
    expected = [
        "recore.ALS",
        "recore.ALS.fit",
        "recore.ALS.recommend",
        "recore.Interactions.from_csv",
        "recore.evaluation.ranking_metrics",
        "recore.datasets.movielens",
        "recore.kernels.gram_matrix",
        "recore.cuda.is_available",
        "recore.distributed.recommend_all",
        "recore.ItemIndex.search",
    ]
    assert not set(expected) - set(PUBLIC_API)


def test_a_broken_docstring_is_caught(tmp_path, monkeypatch):
    # The rules themselves, on a module written here: an undocumented parameter, a documented
    # one the signature lacks, no docstring, and a function that passes.
    (tmp_path / "docstring_samples.py").write_text(
        '''
def undocumented(a, b):
    """Summary.

    Parameters
    ----------
    a : int
        The first.
    """


def unknown(a):
    """Summary.

    Parameters
    ----------
    a : int
        The first.
    c : int
        Not a parameter.
    """


def bare(a):
    pass


def documented(a):
    """Summary.

    Parameters
    ----------
    a : int
        The first.

    Returns
    -------
    int
        ``a`` itself.
    """
    return a
'''
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert failures("docstring_samples.undocumented") == {"PR01"}
    assert failures("docstring_samples.unknown") == {"PR02"}
    assert "GL08" in failures("docstring_samples.bare")
    assert failures("docstring_samples.documented") == set()
