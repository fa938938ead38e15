// A minimal test harness for the Qt-free suites (core/ and gpu/ tests must build on a GPU
// machine with neither Qt nor GoogleTest). TEST(name) registers a case; CHECK* record failures
// with file and line; main() runs every case and prints "N passed, M failed".
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "error.hpp"

namespace check {

struct Case {
  const char* name;
  std::function<void()> fn;
};
inline std::vector<Case>& cases() {
  static std::vector<Case> c;
  return c;
}
inline int& failures() {
  static int f = 0;
  return f;
}
struct Register {
  Register(const char* n, std::function<void()> f) { cases().push_back({n, std::move(f)}); }
};
inline void report(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "  FAILED %s:%d: %s\n", file, line, what.c_str());
  ++failures();
}

template <class T>
std::string str(const T& v) {
  if constexpr (std::is_arithmetic_v<T>) return std::to_string(v);
  else return std::string(v);
}

// Runs fn and returns the moelab::Error message it throws, or "" (and a failure) if none.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const moelab::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace check

#define CHECK_CAT2(a, b) a##b
#define CHECK_CAT(a, b) CHECK_CAT2(a, b)
#define TEST(name)                                                               \
  static void name();                                                            \
  static check::Register CHECK_CAT(reg_, name)(#name, name);                     \
  static void name()

#define CHECK(cond) \
  do { if (!(cond)) check::report(__FILE__, __LINE__, #cond); } while (0)
#define CHECK_EQ(a, b)                                                                          \
  do {                                                                                          \
    const auto& va_ = (a);                                                                      \
    const auto& vb_ = (b);                                                                      \
    if (!(va_ == vb_))                                                                          \
      check::report(__FILE__, __LINE__, std::string(#a " == " #b " (") + check::str(va_) + \
                                            " vs " + check::str(vb_) + ")");                    \
  } while (0)
#define CHECK_NEAR(a, b, tol)                                                                    \
  do {                                                                                           \
    const double va_ = (a), vb_ = (b);                                                           \
    if (!(std::fabs(va_ - vb_) <= (tol)))                                                        \
      check::report(__FILE__, __LINE__, std::string(#a " ~ " #b " (") + std::to_string(va_) +    \
                                            " vs " + std::to_string(vb_) + ")");                 \
  } while (0)
// The block must throw moelab::Error whose message contains `needle`.
#define CHECK_THROWS_WITH(block, needle)                                                            \
  do {                                                                                              \
    const std::string msg_ = check::error_of([&] { block; });                                      \
    if (msg_.find(needle) == std::string::npos)                                                     \
      check::report(__FILE__, __LINE__, std::string("expected an error containing '") + (needle) + \
                                            "', got '" + msg_ + "'");                               \
  } while (0)

#define CHECK_MAIN()                                                                 \
  int main(int argc, char** argv) {                                                  \
    check::set_args(argc, argv);                                                     \
    int passed = 0, failed = 0, skipped = 0;                                         \
    for (const auto& c : check::cases()) {                                           \
      const int before = check::failures();                                          \
      std::fprintf(stderr, "[ RUN  ] %s\n", c.name);                                \
      try {                                                                          \
        c.fn();                                                                      \
      } catch (const check::Skip& s) {                                               \
        std::fprintf(stderr, "[ SKIP ] %s: %s\n", c.name, s.why.c_str());           \
        ++skipped;                                                                   \
        continue;                                                                    \
      } catch (const std::exception& e) {                                            \
        check::report(__FILE__, __LINE__, std::string("uncaught: ") + e.what());     \
      }                                                                              \
      const bool ok = check::failures() == before;                                   \
      std::fprintf(stderr, "[ %s ] %s\n", ok ? " OK " : "FAIL", c.name);            \
      (ok ? passed : failed)++;                                                      \
    }                                                                                \
    std::printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);      \
    if (failed) return 1;                                                            \
    return passed == 0 && skipped > 0 ? 77 : 0;                                      \
  }

namespace check {
struct Skip {
  std::string why;
};
inline std::vector<std::string>& args() {
  static std::vector<std::string> a;
  return a;
}
inline void set_args(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) args().push_back(argv[i]);
}
}  // namespace check
