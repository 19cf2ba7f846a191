// Checks split between threads only when they are long enough to pay for a thread team.
#pragma once

#include <cstdint>

namespace recore {

// Below this much work (values read) a check runs on the calling thread: starting a thread
// team costs more than reading them (and, on a loaded machine, can wait milliseconds for a
// core). Such checks stay out of OpenMP altogether: even a region that runs on one thread ends
// in a barrier whose wake-up is a system call, a microsecond or more on every single-query
// search.
constexpr int64_t kParallelCheckMin = int64_t{1} << 16;

// Whether bad(i) holds for some i in [0, n), `work` being the values it reads in all: read by
// a thread team when that is large.
template <typename Predicate>
bool any_index(int64_t n, int64_t work, const Predicate& bad) {
  bool found = false;
  if (work > kParallelCheckMin) {
#pragma omp parallel for reduction(|| : found) schedule(static)
    for (int64_t i = 0; i < n; ++i) found = found || bad(i);
  } else {
    for (int64_t i = 0; i < n; ++i) found = found || bad(i);
  }
  return found;
}

}  // namespace recore
