#include "error.hpp"

#include <cstdio>

namespace moelab {

namespace {
// v divided by `step` until below it (at most n - 1 times), with one decimal past the first unit.
std::string scaled(double v, double step, const char* const* units, int n, const char* space) {
  int u = 0;
  while (v >= step && u < n - 1) {
    v /= step;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f%s%s" : "%.1f%s%s", v, space, units[u]);
  return buf;
}
}  // namespace

std::string human_bytes(double bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  return scaled(bytes, 1024.0, units, 6, " ");
}

std::string human_count(double n) {
  static const char* const units[] = {"", "K", "M", "B", "T"};
  return scaled(n, 1000.0, units, 5, "");
}

}  // namespace moelab
