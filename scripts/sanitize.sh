#!/usr/bin/env bash
# Runs the test suite against a build of the engine with AddressSanitizer and
# UndefinedBehaviorSanitizer (RECORE_SANITIZE=ON). Any report fails the run.
#
#   scripts/sanitize.sh [pytest arguments...]
#
# Needs gcc (or clang) with the sanitizer runtimes, CMake, Ninja, and the test extras
# (pip install ".[test]"). The instrumented build goes to build-sanitize/; nothing is installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RECORE_SANITIZE_BUILD:-$root/build-sanitize}
python=${PYTHON:-python}

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECORE_SANITIZE=ON \
  -DSKBUILD=ON -DSKBUILD_PROJECT_VERSION=0.0.0 \
  -Dpybind11_DIR="$("$python" -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
  -DPython_EXECUTABLE="$(command -v "$python")" > "$build.configure.log"
cmake --build "$build"

# The package from the source tree, with the instrumented extension beside it.
stage="$build/stage"
rm -rf "$stage" && mkdir -p "$stage"
cp -r "$root/python/recore" "$stage/"
cp "$build"/_core*.so "$stage/recore/"

# The staged package must be the one imported: an editable install of recore adds an import
# hook that would otherwise win over PYTHONPATH and load the uninstrumented engine. The hook
# is dropped at the top of the runner, so that worker processes spawned by the tests (which
# run this file again, as __mp_main__) drop it too.
cat > "$stage/run_tests.py" <<'PY'
import sys

sys.meta_path[:] = [finder for finder in sys.meta_path if not type(finder).__module__.startswith("_editable")]

if __name__ == "__main__":
    import pytest
    import recore._core

    if "/stage/" not in recore._core.__file__:
        sys.exit(f"sanitize.sh: imported {recore._core.__file__}, not the instrumented engine")
    sys.exit(pytest.main(sys.argv[1:]))
PY

# Python itself is not instrumented: the sanitizer runtimes must be loaded first. A request
# for more memory than exists must fail as it does without the sanitizer (recore turns that
# failure into a ValueError), so the allocator may return null.
runtimes="$(${CXX:-g++} -print-file-name=libasan.so) $(${CXX:-g++} -print-file-name=libubsan.so)"
cd "$root"
LD_PRELOAD="$runtimes" \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  PYTHONPATH="$stage" \
  "$python" "$stage/run_tests.py" -p no:cacheprovider "$@"
