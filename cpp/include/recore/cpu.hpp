// Run-time choice of the instruction set the hot kernels run with.
#pragma once

#include <string>
#include <vector>

namespace recore {

enum class CpuTarget { baseline = 0, avx2 = 1, avx512 = 2 };

// The best target that this build contains and this CPU supports.
CpuTarget best_cpu_target();
// The target in use: best_cpu_target(), unless lowered by RECORE_CPU_TARGET or set_cpu_target().
CpuTarget active_cpu_target();
// Selects a target by name ("baseline", "avx2", "avx512" or "auto"); throws
// std::invalid_argument when unknown, unbuilt or unsupported by this CPU.
void set_cpu_target(const std::string& name);
std::string cpu_target_name(CpuTarget target);
// Targets this build contains and this CPU can run.
std::vector<std::string> available_cpu_targets();

}  // namespace recore
