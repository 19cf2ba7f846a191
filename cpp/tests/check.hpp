// A minimal test harness for the engine's C++ tests: tests register themselves by name, a
// failed check reports its file, line and values and lets the test go on (so one run shows
// every mismatch), and the executable exits non-zero when any check failed.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "recore/cpu.hpp"

namespace recore::testing {

// How a test meets the engine's instruction sets: most run once under every target this CPU
// supports (the dispatchers then call that target's kernels); a test that compares targets
// with each other switches between them itself and runs once.
enum class Targets { each, compares_them };

struct TestCase {
  std::string name;
  Targets targets;
  std::function<void()> body;
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

struct Registration {
  Registration(const char* name, Targets targets, std::function<void()> body) {
    registry().push_back(TestCase{name, targets, std::move(body)});
  }
};

// Failed checks so far, and where the running test is (printed with each failure).
inline int64_t& failures() {
  static int64_t count = 0;
  return count;
}
inline std::string& current_test() {
  static std::string name;
  return name;
}
// Which variant of a test's cases is being checked (a solver, a path), when the test says.
inline std::string& current_test_detail() {
  static std::string detail;
  return detail;
}

inline void report_failure(const char* file, int line, const std::string& what) {
  ++failures();
  std::cerr << file << ":" << line << ": FAILED in " << current_test();
  if (!current_test_detail().empty()) std::cerr << " (" << current_test_detail() << ")";
  std::cerr << ": " << what << "\n";
}

// Values printed with every digit, so that a bitwise mismatch is visible in the report.
template <typename T>
std::string show(const T& value) {
  std::ostringstream out;
  out.precision(17);
  out << value;
  return out.str();
}

// |actual - expected| <= tolerance, where both infinities of the same sign are equal.
inline bool near(double actual, double expected, double tolerance) {
  if (std::isinf(expected) || std::isinf(actual)) return actual == expected;
  return std::fabs(actual - expected) <= tolerance;
}

template <typename T>
bool same_bits(const T* a, const T* b, int64_t count) {
  return count == 0 || std::memcmp(a, b, static_cast<size_t>(count) * sizeof(T)) == 0;
}

// Calls body(target) with each CPU target this machine supports made active, then restores
// the best one: for tests that compare what the targets' kernels compute.
inline void for_each_cpu_target(const std::function<void(const std::string&)>& body) {
  for (const std::string& target : available_cpu_targets()) {
    set_cpu_target(target);
    body(target);
  }
  set_cpu_target("auto");
}

}  // namespace recore::testing

#define RECORE_TEST_JOIN2(a, b) a##b
#define RECORE_TEST_JOIN(a, b) RECORE_TEST_JOIN2(a, b)

// RECORE_TEST(name) { body }: runs under every CPU target this machine supports.
#define RECORE_TEST(NAME)                                                  \
  static void NAME();                                                      \
  static ::recore::testing::Registration RECORE_TEST_JOIN(registration_, NAME)( \
      #NAME, ::recore::testing::Targets::each, NAME);                      \
  static void NAME()

// RECORE_TEST_ACROSS_TARGETS(name) { body }: runs once; the body switches targets itself.
#define RECORE_TEST_ACROSS_TARGETS(NAME)                                   \
  static void NAME();                                                      \
  static ::recore::testing::Registration RECORE_TEST_JOIN(registration_, NAME)( \
      #NAME, ::recore::testing::Targets::compares_them, NAME);             \
  static void NAME()

#define CHECK(CONDITION)                                                                 \
  do {                                                                                   \
    if (!(CONDITION)) ::recore::testing::report_failure(__FILE__, __LINE__, #CONDITION); \
  } while (0)

#define CHECK_EQ(ACTUAL, EXPECTED)                                                                    \
  do {                                                                                                \
    const auto& actual_value = (ACTUAL);                                                              \
    const auto& expected_value = (EXPECTED);                                                          \
    if (!(actual_value == expected_value))                                                            \
      ::recore::testing::report_failure(__FILE__, __LINE__,                                           \
                                        std::string(#ACTUAL) + " == " +                               \
                                            ::recore::testing::show(actual_value) + ", expected " +   \
                                            ::recore::testing::show(expected_value));                 \
  } while (0)

#define CHECK_NEAR(ACTUAL, EXPECTED, TOLERANCE)                                                       \
  do {                                                                                                \
    const double actual_value = static_cast<double>(ACTUAL);                                          \
    const double expected_value = static_cast<double>(EXPECTED);                                      \
    if (!::recore::testing::near(actual_value, expected_value, (TOLERANCE)))                          \
      ::recore::testing::report_failure(__FILE__, __LINE__,                                           \
                                        std::string(#ACTUAL) + " == " +                               \
                                            ::recore::testing::show(actual_value) + ", expected " +   \
                                            ::recore::testing::show(expected_value) + " +- " +        \
                                            ::recore::testing::show(TOLERANCE));                      \
  } while (0)

// The statement (the rest of the arguments, so it may hold commas) throws EXCEPTION: bad
// arguments are refused, never undefined.
#define CHECK_THROWS(EXCEPTION, ...)                                                                  \
  do {                                                                                                \
    bool thrown = false;                                                                              \
    try {                                                                                             \
      __VA_ARGS__;                                                                                    \
    } catch (const EXCEPTION&) {                                                                      \
      thrown = true;                                                                                  \
    }                                                                                                 \
    if (!thrown)                                                                                      \
      ::recore::testing::report_failure(__FILE__, __LINE__, #__VA_ARGS__ " did not throw " #EXCEPTION); \
  } while (0)
