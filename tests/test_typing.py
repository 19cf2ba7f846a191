"""The package's type information: the stubs of the compiled modules (python/recore/_core.pyi,
_cuda.pyi) against the modules themselves, and mypy over the package with the settings of
pyproject.toml's [tool.mypy].

mypy.stubtest checks that the stubs and the modules hold the same names, and the types of
constants; pybind11 functions carry no introspectable signature, so each function's
parameters (names, order, keyword-only markers, defaults, scalar types) are checked here
against the signature pybind11 writes on the first line of its docstring. Each mypy run is
a subprocess with its cache in a temporary directory.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import recore

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"
COMPILED = ["recore._core", "recore._cuda"]

needs_cuda_build = pytest.mark.skipif(
    not recore.cuda.built,
    reason="recore._cuda is not built here (no CUDA toolkit at build time, or RECORE_DISABLE_CUDA was set)",
)


def compiled_modules():
    """Each compiled module, the CUDA one skipped (with the reason) where it is not built."""
    return [pytest.param(name, marks=needs_cuda_build) if name == "recore._cuda" else name for name in COMPILED]


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mypy-cache")


def run_mypy(args, cache: Path, module: str = "mypy") -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` from the project root with its configuration."""
    env = dict(os.environ, MYPY_CACHE_DIR=str(cache), MYPY_FORCE_COLOR="0", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def stub_file(module: str) -> Path:
    """The stub mypy reads: the source tree's, else the installed package's."""
    name = module.rsplit(".", 1)[1] + ".pyi"
    source = ROOT / "python" / "recore" / name
    return source if source.exists() else Path(recore.__file__).with_name(name)


# -- stubtest ----------------------------------------------------------------------------------


@pytest.mark.parametrize("module", compiled_modules())
def test_stubtest_finds_no_difference(module, mypy_cache):
    result = run_mypy([module, "--mypy-config-file", str(CONFIG)], mypy_cache, module="mypy.stubtest")
    assert result.returncode == 0, result.stdout + result.stderr


# -- signatures against pybind11's docstrings --------------------------------------------------

# pybind11's spelling of a parameter's type (3.x, then 2.x) -> the stub's spellings that mean
# the same.
SCALAR_PARAMETERS = {
    "typing.SupportsInt | typing.SupportsIndex": {"_Int", "_Pointer"},
    "int": {"_Int", "_Pointer"},
    "typing.SupportsFloat | typing.SupportsIndex": {"_Float"},
    "float": {"_Float"},
    "bool": {"bool", "Literal[False]", "Literal[True]"},
    "str": {"str"},
}


def split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for position, char in enumerate(text):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:position].strip())
            start = position + 1
    if text[start:].strip():
        parts.append(text[start:].strip())
    return parts


def runtime_signature(function) -> tuple[list[tuple[str, str, str | None, str]], str]:
    """([(name, kind, default, type)], return type) from pybind11's first docstring line,
    ``name(a: int, *, b: str = 'x') -> None``."""
    line = function.__doc__.splitlines()[0]
    assert line.startswith(function.__name__ + "("), line
    inside, returns = line[len(function.__name__) + 1 :].rsplit(") -> ", 1)
    parameters, kind = [], "positional-or-keyword"
    for part in split_top_level(inside):
        if part == "*":
            kind = "keyword-only"
            continue
        name, annotation = part.split(": ", 1)
        default = None
        if " = " in annotation:
            annotation, default = annotation.split(" = ", 1)
        parameters.append((name, kind, default, annotation))
    return parameters, returns


def stub_definitions(path: Path):
    """(functions: name -> [ast.FunctionDef, one per overload], type aliases: name -> text,
    classes defined in the stub)."""
    tree = ast.parse(path.read_text())
    functions: dict[str, list[ast.FunctionDef]] = {}
    aliases, classes = {}, set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.AnnAssign) and ast.unparse(node.annotation) == "TypeAlias":
            aliases[ast.unparse(node.target)] = ast.unparse(node.value)
        elif isinstance(node, ast.ClassDef):
            classes.add(node.name)
    return functions, aliases, classes


def stub_parameters(definition: ast.FunctionDef) -> list[tuple[str, str, str | None, str]]:
    arguments = definition.args
    assert not arguments.posonlyargs and arguments.vararg is None and arguments.kwarg is None, definition.name
    positional = arguments.args
    defaults = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    parameters = [
        (a.arg, "positional-or-keyword", None if d is None else ast.unparse(d), ast.unparse(a.annotation))
        for a, d in zip(positional, defaults)
    ]
    parameters += [
        (a.arg, "keyword-only", None if d is None else ast.unparse(d), ast.unparse(a.annotation))
        for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults)
    ]
    return parameters


def check_parameter_type(function: str, name: str, runtime_type: str, stub_type: str) -> None:
    if runtime_type in SCALAR_PARAMETERS:
        assert stub_type in SCALAR_PARAMETERS[runtime_type], (function, name, runtime_type, stub_type)
    else:
        # pybind11 takes the object as it is and the binding checks it: an array or sparse type.
        assert runtime_type == "object", (function, name, runtime_type)
        scalars = set().union(*SCALAR_PARAMETERS.values())
        assert not set(stub_type.replace(" ", "").split("|")) & scalars, (function, name, stub_type)


def expand(annotation: str, aliases: dict[str, str]) -> str:
    return aliases.get(annotation, annotation)


def check_return_type(function: str, runtime: str, stub: str, aliases: dict[str, str], classes: set) -> None:
    stub = expand(stub, aliases)
    # pybind11 2.x writes List[str] and numpy.ndarray[numpy.int64] where 3.x writes
    # list[str] and numpy.typing.NDArray[numpy.int64].
    spelled = runtime.replace("List[", "list[").replace("numpy.ndarray[", "NDArray[")
    spelled = spelled.replace("numpy.typing.", "").replace("numpy.", "np.")
    if runtime == "numpy.ndarray":  # the dtype follows the input's: one overload per dtype
        assert stub.startswith("NDArray["), (function, runtime, stub)
    elif runtime == "tuple":
        assert stub.startswith("tuple["), (function, runtime, stub)
    elif runtime == "dict":
        assert stub in classes or stub.startswith("dict["), (function, runtime, stub)
    else:
        assert stub == spelled, (function, runtime, stub)


def functions_of(module):
    return [
        getattr(module, name)
        for name in sorted(vars(module))
        if not name.startswith("__") and callable(getattr(module, name)) and not isinstance(getattr(module, name), type)
    ]


@pytest.mark.parametrize("module_name", compiled_modules())
def test_stub_signatures_match_the_bindings(module_name):
    module = importlib.import_module(module_name)
    functions, aliases, classes = stub_definitions(stub_file(module_name))
    checked = 0
    for function in functions_of(module):
        name = function.__name__
        assert name in functions, f"{module_name}.{name} has no stub"
        parameters, returns = runtime_signature(function)
        *narrower, broadest = functions[name]
        # The last (or only) definition takes exactly what the binding takes.
        stub = stub_parameters(broadest)
        assert [p[:3] for p in stub] == [p[:3] for p in parameters], (name, stub, parameters)
        # Overloads before it may narrow: make a parameter keyword-only or drop its default.
        for overload in narrower:
            narrowed = stub_parameters(overload)
            assert [p[0] for p in narrowed] == [p[0] for p in parameters], (name, narrowed)
            for (_, kind, default, _), (_, runtime_kind, runtime_default, _) in zip(narrowed, parameters):
                assert kind == runtime_kind or kind == "keyword-only", (name, narrowed)
                assert default in (None, runtime_default), (name, narrowed)
        for overload in functions[name]:
            for (parameter, _, _, stub_type), (_, _, _, runtime_type) in zip(stub_parameters(overload), parameters):
                check_parameter_type(name, parameter, runtime_type, stub_type)
            check_return_type(name, returns, ast.unparse(overload.returns), aliases, classes)
        checked += 1
    assert checked >= 5, f"only {checked} functions found in {module_name}"


def test_signature_parser_reads_pybind11_lines():
    line = "f(a: object, b: typing.SupportsInt | typing.SupportsIndex = -1, *, c: str = 'x') -> tuple"
    function = types.SimpleNamespace(__name__="f", __doc__=line + "\n\nWhat f does.")
    assert runtime_signature(function) == (
        [
            ("a", "positional-or-keyword", None, "object"),
            ("b", "positional-or-keyword", "-1", "typing.SupportsInt | typing.SupportsIndex"),
            ("c", "keyword-only", "'x'", "str"),
        ],
        "tuple",
    )
    assert split_top_level("a: NDArray[numpy.float32, x], b: int") == ["a: NDArray[numpy.float32, x]", "b: int"]


# -- mypy --------------------------------------------------------------------------------------


def test_package_type_checks(mypy_cache):
    result = run_mypy(["--config-file", str(CONFIG), "-p", "recore"], mypy_cache)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_reports_a_wrong_call_into_core(mypy_cache, tmp_path):
    # Lines 5 to 7 are wrong; line 4 is right and must pass, which shows the stub is read
    # (without it recore._core would be Any and nothing would be reported).
    script = tmp_path / "calls_core.py"
    script.write_text(
        textwrap.dedent(
            """\
            import numpy as np
            from recore import _core
            factors = np.zeros((4, 2), dtype=np.float32)
            gram = _core.gram_matrix(factors, num_threads=2)
            _core.gram_chunk_bounds(10.5, 4)
            _core.topk(factors, factors.tolist(), 3)
            _core.als_solve(None, factors, None, factors, regularization=0.1)
            """
        )
    )
    result = run_mypy(["--config-file", str(CONFIG), str(script)], mypy_cache)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    errors = [line for line in result.stdout.splitlines() if "calls_core.py:" in line and ": error:" in line]
    reported = {int(line.split("calls_core.py:")[1].split(":")[0]) for line in errors}
    assert reported == {5, 6, 7}, output
    assert 'Argument 1 to "gram_chunk_bounds" has incompatible type "float"' in output
