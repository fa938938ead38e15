// bench --background-load: one busy process beside the benchmark (see background_load.hpp).
#include "background_load.hpp"

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>

#include "error.hpp"

namespace moelab::cli {
namespace {

volatile sig_atomic_t g_busy_pid = 0;  // the busy process, for the signal handler
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
struct sigaction g_previous[3];

// Kill the busy process, then let the signal do what it did before (normally: end the bench).
void on_signal(int sig) {
  if (g_busy_pid > 0) ::kill(pid_t(g_busy_pid), SIGKILL);
  for (size_t i = 0; i < 3; ++i)
    if (kSignals[i] == sig) ::sigaction(sig, &g_previous[i], nullptr);
  ::raise(sig);
}

// The child: a loop that only burns one core (no memory traffic, no system calls). It dies with
// its parent; only async-signal-safe calls after fork().
[[noreturn]] void busy_child(pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::prctl(PR_SET_NAME, "moelab-busy");
  if (::getppid() != parent) ::_exit(0);  // the parent died before PDEATHSIG was set
  for (unsigned long i = 0;; ++i) __asm__ volatile("" : "+r"(i));
}

}  // namespace

BackgroundLoad::BackgroundLoad() {
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) throw Error(std::string("bench --background-load: cannot start the busy process: ") + std::strerror(errno));
  if (pid_ == 0) busy_child(parent);
  g_busy_pid = pid_;
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < 3; ++i) ::sigaction(kSignals[i], &sa, &g_previous[i]);
  ::usleep(100 * 1000);  // let the scheduler see it before anything is timed
}

BackgroundLoad::~BackgroundLoad() {
  for (size_t i = 0; i < 3; ++i) ::sigaction(kSignals[i], &g_previous[i], nullptr);
  g_busy_pid = 0;
  ::kill(pid_, SIGKILL);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace moelab::cli
