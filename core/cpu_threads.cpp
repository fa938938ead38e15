// The CPU backend's team size from the cores actually free (see cpu_threads.hpp for why).
#include "cpu_threads.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace moelab {
namespace {

using Clock = std::chrono::steady_clock;

// Seconds all CPUs spent busy since boot (user, nice, system, irq, softirq, steal: everything but
// idle and iowait), from the first line of /proc/stat; < 0 where it cannot be read.
double machine_busy_seconds() {
  std::FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return -1;
  unsigned long long v[8] = {};
  const int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                            &v[5], &v[6], &v[7]);
  std::fclose(f);
  if (n < 4) return -1;
  static const double tick = 1.0 / double(std::max(1L, sysconf(_SC_CLK_TCK)));
  return double(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) * tick;
}

// CPU seconds of this process, all threads (spinning OpenMP threads included).
double own_busy_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

constexpr auto kWindow = std::chrono::milliseconds(50);  // 5 clock ticks of each core at 100 Hz
// Others count as holding a core from 0.35 of one: a team thread sharing a core with them gets
// only part of it, and measured here two threads beside a half-busy core are no faster than one.
// While we run two threads, a neighbour wanting a whole core shows as ~0.5-0.67 (the scheduler
// shares its core with one of ours); while we run one, it shows as ~1.
constexpr double kBusyCore = 0.35;

struct Monitor {
  std::mutex mu;
  std::atomic<int64_t> next_ns{0};     // steady-clock time of the next refresh
  std::atomic<int> cores_taken{0};     // whole cores the others hold
  std::atomic<double> busy_elsewhere{0};
  int online = 1;
  bool enabled = false;
  Clock::time_point t0;
  double machine0 = 0, own0 = 0;

  Monitor() {
    const char* env = std::getenv("MOELAB_ADAPTIVE_THREADS");
    online = int(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
    machine0 = machine_busy_seconds();
    enabled = online > 1 && machine0 >= 0 && !(env && std::strcmp(env, "0") == 0);
    own0 = own_busy_seconds();
    t0 = Clock::now();
    next_ns = (t0 + kWindow).time_since_epoch().count();
  }

  void refresh(Clock::time_point now) {
    std::unique_lock<std::mutex> lock(mu, std::try_to_lock);
    if (!lock.owns_lock()) return;  // another thread is refreshing
    const double dt = std::chrono::duration<double>(now - t0).count();
    const double machine = machine_busy_seconds(), own = own_busy_seconds();
    if (machine < 0 || dt <= 0) return;
    const double others = std::max(0.0, (machine - machine0 - (own - own0)) / dt);
    busy_elsewhere = others;
    cores_taken = std::clamp(int(std::ceil(others - kBusyCore)), 0, online - 1);
    t0 = now;
    machine0 = machine;
    own0 = own;
    next_ns = (now + kWindow).time_since_epoch().count();
  }
};

Monitor& monitor() {
  static Monitor m;
  return m;
}

// Touch the monitor when the library loads, so its first window starts with the process.
[[maybe_unused]] const bool kStarted = (monitor(), true);

thread_local int t_ceiling = 0, t_applied = 0;  // per thread: its team size before adapting, and now

}  // namespace

int adapt_cpu_threads() {
#ifdef _OPENMP
  Monitor& m = monitor();
  if (!m.enabled) return omp_get_max_threads();
  int& ceiling = t_ceiling;
  int& applied = t_applied;
  const int now_max = omp_get_max_threads();
  if (ceiling == 0 || now_max != applied) ceiling = now_max;  // first call, or the application changed it
  const Clock::time_point now = Clock::now();
  if (now.time_since_epoch().count() >= m.next_ns.load(std::memory_order_relaxed)) m.refresh(now);
  const int want = std::clamp(m.online - m.cores_taken.load(std::memory_order_relaxed), 1, ceiling);
  if (want != now_max) omp_set_num_threads(want);
  applied = want;
  return want;
#else
  return 1;
#endif
}

double cpu_busy_elsewhere() { return monitor().busy_elsewhere.load(); }

}  // namespace moelab
