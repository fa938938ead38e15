// One error path for bad input: the core throws moelab::Error whose message names the file
// (or the thing) and the problem in one line. The command line prints it and exits 1; the GUI
// shows it. Nothing in core/ calls exit() or abort().
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace moelab {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// What Model::load throws when its progress callback cancels it: everything it mapped or
// allocated is released by then. Not a failure: callers show no error for it.
class LoadCancelled : public Error {
 public:
  LoadCancelled() : Error("loading cancelled") {}
};

// "where: what" — where is a file path or a config key, what is the problem.
[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw Error(where.empty() ? what : where + ": " + what);
}

// Invariants of our own code (not bad input): a bug if it fires, reported with file and line.
#define MOELAB_ASSERT(cond, msg)                                                            \
  do {                                                                                     \
    if (!(cond))                                                                           \
      throw ::moelab::Error(std::string("internal error at ") + __FILE__ + ":" +           \
                            std::to_string(__LINE__) + ": " + (msg) + " (" #cond ")");     \
  } while (0)

// Checked arithmetic for sizes that come from files and configs (validate before allocating).
inline int64_t checked_mul(int64_t a, int64_t b, const std::string& where) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) fail(where, "size overflows");
  return r;
}
inline int64_t checked_add(int64_t a, int64_t b, const std::string& where) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) fail(where, "size overflows");
  return r;
}

// "12.3 GiB", "512 MiB": for messages a person reads.
std::string human_bytes(double bytes);
// "46.7B", "12.9M", "900": parameter counts the way model cards write them.
std::string human_count(double n);

}  // namespace moelab
