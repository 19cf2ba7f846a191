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

# Python itself is not instrumented: the sanitizer runtimes must be loaded first.
runtimes="$(${CXX:-g++} -print-file-name=libasan.so) $(${CXX:-g++} -print-file-name=libubsan.so)"
cd "$root"
LD_PRELOAD="$runtimes" \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  PYTHONPATH="$stage" \
  "$python" -m pytest -p no:cacheprovider "$@"
