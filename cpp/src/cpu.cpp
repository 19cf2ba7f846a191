#include "recore/cpu.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace recore {
namespace {

bool cpu_supports(CpuTarget target) {
#if defined(__x86_64__) || defined(_M_X64)
  switch (target) {
    case CpuTarget::baseline:
      return true;
    case CpuTarget::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuTarget::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("fma");
  }
  return false;
#else
  return target == CpuTarget::baseline;
#endif
}

bool built_with(CpuTarget target) {
  switch (target) {
    case CpuTarget::baseline:
      return true;
    case CpuTarget::avx2:
#ifdef RECORE_HAVE_AVX2
      return true;
#else
      return false;
#endif
    case CpuTarget::avx512:
#ifdef RECORE_HAVE_AVX512
      return true;
#else
      return false;
#endif
  }
  return false;
}

bool usable(CpuTarget target) { return built_with(target) && cpu_supports(target); }

bool parse_target(const std::string& name, CpuTarget* target) {
  if (name == "baseline") *target = CpuTarget::baseline;
  else if (name == "avx2") *target = CpuTarget::avx2;
  else if (name == "avx512") *target = CpuTarget::avx512;
  else return false;
  return true;
}

// RECORE_CPU_TARGET may lower the choice (for testing a narrower path); an unknown or
// unsupported value is ignored here and reported by set_cpu_target() when set from Python.
CpuTarget initial_target() {
  const char* requested = std::getenv("RECORE_CPU_TARGET");
  CpuTarget target;
  if (requested && parse_target(requested, &target) && usable(target)) return target;
  return best_cpu_target();
}

std::atomic<int>& active() {
  static std::atomic<int> value{static_cast<int>(initial_target())};
  return value;
}

}  // namespace

CpuTarget best_cpu_target() {
  for (CpuTarget t : {CpuTarget::avx512, CpuTarget::avx2})
    if (usable(t)) return t;
  return CpuTarget::baseline;
}

CpuTarget active_cpu_target() { return static_cast<CpuTarget>(active().load(std::memory_order_relaxed)); }

void set_cpu_target(const std::string& name) {
  CpuTarget target;
  if (name == "auto") {
    target = best_cpu_target();
  } else if (!parse_target(name, &target)) {
    throw std::invalid_argument("unknown CPU target '" + name + "': expected auto, baseline, avx2 or avx512");
  } else if (!usable(target)) {
    throw std::invalid_argument("CPU target '" + name + "' is not available: " +
                                (built_with(target) ? "this CPU does not support it" : "this build does not include it"));
  }
  active().store(static_cast<int>(target), std::memory_order_relaxed);
}

std::string cpu_target_name(CpuTarget target) {
  switch (target) {
    case CpuTarget::baseline:
      return "baseline";
    case CpuTarget::avx2:
      return "avx2";
    case CpuTarget::avx512:
      return "avx512";
  }
  return "baseline";
}

std::vector<std::string> available_cpu_targets() {
  std::vector<std::string> names;
  for (CpuTarget t : {CpuTarget::baseline, CpuTarget::avx2, CpuTarget::avx512})
    if (usable(t)) names.push_back(cpu_target_name(t));
  return names;
}

}  // namespace recore
