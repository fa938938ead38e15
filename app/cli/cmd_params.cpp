#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "config.hpp"
#include "params.hpp"

namespace moelab::cli {

namespace {
int g_exit_code = 0;

std::string with_commas(int64_t v) {
  std::string s = std::to_string(v), out;
  int n = 0;
  for (auto it = s.rbegin(); it != s.rend(); ++it, ++n) {
    if (n && n % 3 == 0 && *it != '-') out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
  }
  return out;
}
}  // namespace

int exit_code() { return g_exit_code; }
void set_exit_code(int code) { g_exit_code = code; }

nlohmann::json params_json(const ModelConfig& c) {
  const ParamCount p = count_params(c);
  nlohmann::json comps = nlohmann::json::object();
  for (int i = 0; i < kNumComponents; ++i)
    comps[component_name(Component(i))] = {{"total", p.total_by[size_t(i)]}, {"active", p.active_by[size_t(i)]}};
  return {{"architecture", c.architecture},
          {"total", p.total},
          {"active", p.active},
          {"total_non_embedding", p.total_non_embedding},
          {"active_non_embedding", p.active_non_embedding},
          {"components", comps}};
}

void add_params_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("params", "Count total and active parameters of a config.json or model directory");
  static std::string path;
  static bool json_out = false;
  cmd->add_option("--config", path, "config.json or a model directory")->required();
  cmd->add_flag("--json", json_out, "Machine-readable output on stdout");
  cmd->callback([] {
    const ModelConfig c = load_config(path);
    if (json_out) {
      std::cout << params_json(c).dump(2) << "\n";
      return;
    }
    const ParamCount p = count_params(c);
    std::printf("%s  (%s)\n", c.architecture.c_str(), path.c_str());
    std::printf("  %-20s %20s %20s\n", "component", "total", "active per token");
    for (int i = 0; i < kNumComponents; ++i) {
      if (p.total_by[size_t(i)] == 0) continue;
      std::printf("  %-20s %20s %20s\n", component_name(Component(i)), with_commas(p.total_by[size_t(i)]).c_str(),
                  with_commas(p.active_by[size_t(i)]).c_str());
    }
    std::printf("  %-20s %20s %20s\n", "TOTAL", with_commas(p.total).c_str(), with_commas(p.active).c_str());
    std::printf("  %-20s %20s %20s\n", "without embeddings", with_commas(p.total_non_embedding).c_str(),
                with_commas(p.active_non_embedding).c_str());
    std::printf("  %d of %d layers are MoE, %d experts each, top-%d\n", int(c.num_moe_layers()), int(c.num_layers),
                int(c.num_experts), int(c.top_k));
  });
}

}  // namespace moelab::cli
