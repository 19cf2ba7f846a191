// Runs the engine's C++ tests: every registered test under each CPU target this build and
// machine support, or once for tests that compare the targets themselves.
//
//   recore_engine_tests            all tests
//   recore_engine_tests topk       only tests whose name contains "topk"
//
// Exit status 0 when every check passed, 1 otherwise. Some tests run more OpenMP threads
// than a small machine has cores: OMP_WAIT_POLICY=passive (as CTest sets it) keeps the idle
// ones from spinning.
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "check.hpp"
#include "recore/cpu.hpp"

namespace {

using recore::testing::TestCase;

// Runs one test, turning an escaped exception into a failure of that test.
void run(const TestCase& test, const std::string& label) {
  recore::testing::current_test() = label;
  recore::testing::current_test_detail().clear();
  const int64_t failures_before = recore::testing::failures();
  try {
    test.body();
  } catch (const std::exception& error) {
    recore::testing::report_failure(__FILE__, __LINE__, std::string("unexpected exception: ") + error.what());
  }
  std::cout << (recore::testing::failures() == failures_before ? "ok      " : "FAILED  ") << label << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  const std::string filter = argc > 1 ? argv[1] : "";
  const std::vector<std::string> targets = recore::available_cpu_targets();
  std::cout << "CPU targets:";
  for (const std::string& target : targets) std::cout << " " << target;
  std::cout << "\n";

  int64_t ran = 0;
  for (const TestCase& test : recore::testing::registry()) {
    if (test.name.find(filter) == std::string::npos) continue;
    if (test.targets == recore::testing::Targets::compares_them) {
      run(test, test.name);
      recore::set_cpu_target("auto");  // in case the test stopped part way through the targets
      ++ran;
      continue;
    }
    for (const std::string& target : targets) {
      recore::set_cpu_target(target);
      run(test, test.name + " [" + target + "]");
      ++ran;
    }
    recore::set_cpu_target("auto");
  }
  if (ran == 0) {
    std::cerr << "no test matches '" << filter << "'\n";
    return 1;
  }
  std::cout << ran << " test runs, " << recore::testing::failures() << " failed checks\n";
  return recore::testing::failures() == 0 ? 0 : 1;
}
