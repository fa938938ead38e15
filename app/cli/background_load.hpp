// bench --background-load: a separate process that keeps one core busy (a busy loop, like a
// browser tab or a video call on a teacher's laptop) while the benchmark runs, so our figures
// and the PyTorch peer's can be read under the load a real machine carries.
#pragma once

#include <sys/types.h>

namespace moelab::cli {

// Starts the busy process on construction and kills it (SIGKILL, then waits for it) on
// destruction, also when the benchmark throws. While it lives, SIGINT, SIGTERM and SIGHUP kill the
// busy process before the bench dies of them, and the busy process dies with the bench if the
// bench is killed outright (PR_SET_PDEATHSIG): it never outlives the bench.
class BackgroundLoad {
 public:
  BackgroundLoad();
  ~BackgroundLoad();
  BackgroundLoad(const BackgroundLoad&) = delete;
  BackgroundLoad& operator=(const BackgroundLoad&) = delete;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

}  // namespace moelab::cli
