#include "commands.hpp"

namespace moelab::cli {
void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Benchmark prefill and decode against PyTorch");
  cmd->callback([] {});
}
}  // namespace moelab::cli
