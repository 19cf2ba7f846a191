"""The backend layer: one place that talks to each engine, one check of the ALS options,
one iteration loop, engine constants published rather than copied."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest
import recore
import scipy.sparse as sp
from recore import _core, backends, kernels
from recore.backends import cpu

PACKAGE = pathlib.Path(recore.__file__).parent
ENGINE_MODULES = {"recore._core", "recore._cuda", "cupy", "cupyx"}
# Modules allowed to import an engine or cupy: the backends, and recore.cuda, which loads
# recore._cuda only to say whether the CUDA engine is usable.
ALLOWED = {"backends/cpu.py", "backends/cuda.py", "backends/_device.py", "cuda.py"}


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module a source file imports, at any depth (imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            if isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
    return found


def test_only_backend_modules_import_an_engine_or_cupy():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in ALLOWED:
            continue
        engines = {m for m in imported_modules(path) if m in ENGINE_MODULES or m.split(".")[0] in {"cupy", "cupyx"}}
        if engines:
            offenders[relative] = sorted(engines)
    assert offenders == {}


def test_the_check_finds_an_engine_import(tmp_path):
    # The test above can fail: a file importing the engine inside a function is caught.
    source = tmp_path / "sneaky.py"
    source.write_text("def f():\n    from recore import _core\n    import cupy as cp\n")
    assert {"recore._core", "cupy"} <= imported_modules(source)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(alpha=-1.0, feedback="explicit"), "alpha must be a finite number >= 0"),
        (dict(alpha=-1.0), "alpha must be a finite number >= 0"),
        (dict(cg_steps=0, solver="cholesky"), "cg_steps must be >= 1"),
        (dict(cg_steps=0), "cg_steps must be >= 1"),
        (dict(regularization=-0.5), "regularization must be a finite number >= 0"),
        (dict(num_threads=-1), "num_threads must be >= 0"),
        (dict(unobserved_weight=-0.1), "unobserved_weight must be a finite number >= 0"),
        (dict(regularization_exponent=-0.5), "regularization_exponent must be a finite number >= 0"),
        (dict(block_size=0, solver="subspace"), "block_size must be >= 1"),
        (dict(block_size=-3), "block_size must be >= 1"),
        (dict(subspace_sweeps=0, solver="subspace"), "subspace_sweeps must be >= 1"),
        (dict(subspace_sweeps=0, solver="cholesky"), "subspace_sweeps must be >= 1"),
        (dict(feedback="explicit", unobserved_weight=0.5), "unobserved_weight applies to implicit feedback only"),
        (
            dict(weighted_regularization=True, regularization_exponent=0.5),
            "regularization_exponent and weighted_regularization both scale",
        ),
        (
            dict(feedback="explicit", weighted_regularization=True, regularization_exponent=1.0),
            "regularization_exponent and weighted_regularization both scale",
        ),
    ],
)
def test_every_als_entry_point_refuses_the_same_options_with_the_same_words(options, message):
    """The estimator (on construction and in set_params), the distributed estimator and the
    kernel all ask the engine's one check."""
    from recore.distributed import ALS as DistributedALS

    with pytest.raises(ValueError, match=message):
        recore.ALS(**options)
    with pytest.raises(ValueError, match=message):
        recore.ALS().set_params(**options)
    with pytest.raises(ValueError, match=message):
        DistributedALS(**options)
    matrix = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0]], np.float32))
    factors = np.ones((2, 3), np.float32)
    kernel_options = dict(regularization=0.1, alpha=1.0, feedback="implicit", solver="cg", cg_steps=3, num_threads=0)
    kernel_options.update(options)
    with pytest.raises(ValueError, match=message):
        kernels.als_half_step(matrix, factors, kernels.gram_matrix(factors), factors.copy(), **kernel_options)
    solver_options = {"solver", "cg_steps", "block_size", "subspace_sweeps"}
    if not solver_options & set(options):  # an option of the objective: the loss refuses it too
        objective = {k: v for k, v in kernel_options.items() if k not in solver_options}
        with pytest.raises(ValueError, match=message):
            kernels.als_loss(matrix, factors, factors, **objective)


def test_the_cuda_backend_refuses_the_subspace_solver_before_any_work():
    # The CUDA engine has CG and Cholesky only: its backend says so (its C++ entry refuses in
    # the same words), after the engines' shared check of the values.
    from recore.backends import cuda

    options = dict(feedback="implicit", confidence="linear", regularization=0.1, alpha=1.0, cg_steps=3,
                   weighted_regularization=False, num_threads=0)  # fmt: skip
    with pytest.raises(ValueError, match=r"solver='subspace' is not available on the GPU"):
        cuda.check_als_options(solver="subspace", **options)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        cuda.check_als_options(solver="subspace", block_size=0, **options)
    cuda.check_als_options(solver="cg", unobserved_weight=0.2, regularization_exponent=0.5, **options)
    with pytest.raises(ValueError, match=r"solver='subspace' is not available on the GPU"):
        cuda.als_half_step(None, None, None, None, solver="subspace", regularization=0.1)


def test_layout_constants_come_from_the_engine():
    assert cpu.SINGLE_QUERY_PATH_MAX == _core.SINGLE_QUERY_PATH_MAX >= 1
    assert cpu.PANEL_ITEMS == _core.PANEL_ITEMS and cpu.PANEL_ITEMS % 16 == 0
    assert kernels.SGD_ROW_FLOATS == _core.SGD_ROW_FLOATS == 16


@pytest.mark.parametrize("n_items", [1, 95, 96, 97, 300])
def test_the_engines_panels_hold_the_items_factor_major(n_items):
    rng = np.random.default_rng(n_items)
    items = rng.standard_normal((n_items, 5)).astype(np.float32)
    panels = cpu.item_panels(items)
    width = cpu.PANEL_ITEMS
    count = -(-n_items // width)
    padded = np.zeros((count * width, 5), np.float32)
    padded[:n_items] = items
    expected = padded.reshape(count, width, 5).transpose(0, 2, 1).reshape(-1)
    np.testing.assert_array_equal(panels, expected)
    # bfloat16: round to nearest even of the top 16 bits; 16 values as 8 words, value l in
    # the low half of word l and value l + 8 in its high half.
    words = expected.view(np.uint32).astype(np.uint64)
    rounded = ((words + 0x7FFF + ((words >> 16) & 1)) >> 16).astype(np.uint16)
    layout = rounded.reshape(-1, 2, 8).transpose(0, 2, 1).reshape(-1)
    np.testing.assert_array_equal(cpu.bfloat16_panels(panels), layout)


def test_backend_selection_follows_device_and_data():
    host = sp.csr_matrix((2, 2))
    assert backends.select("auto", host).name == "cpu"
    assert backends.select("cpu", host, None).name == "cpu"
    assert backends.holding(np.zeros(3)).name == "cpu"
    if not recore.cuda.is_available():
        with pytest.raises(RuntimeError, match="device='cuda'"):
            backends.select("cuda", host)


def test_cpu_and_gpu_cosine_normalise_the_same_way():
    """Cosine rows are normalised by one function for numpy and cupy (operation by operation),
    so both devices score alike; on the CPU it is exact for simple rows and zero stays zero."""
    from recore._filters import unit_rows

    vectors = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(unit_rows(np, vectors), np.array([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], np.float32))
    rng = np.random.default_rng(0)
    many = rng.standard_normal((9000, 7)).astype(np.float32)  # more than one block of rows
    np.testing.assert_allclose(np.linalg.norm(unit_rows(np, many), axis=1), 1.0, rtol=1e-6)
