// Shared pieces of the command line: the built-in model, model opening, JSON of a routing trace.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "backend.hpp"
#include "config.hpp"
#include "model.hpp"
#include "routing.hpp"

namespace moelab::cli {

// The built-in lab model's architecture (Mixtral family, byte tokenizer). Its trained weights ship
// in resources/models/builtin; where they are missing, "builtin" runs this architecture with
// random weights from a fixed seed (the same everywhere).
ModelConfig builtin_config();
constexpr uint64_t kBuiltinSeed = 20261123;

// moelab::make_backend (devices.hpp), saying on stderr in one line why when "cuda" falls back to
// the CPU, in the given precision ("fp32", "tf32", "bf16"; a mode the device lacks is an error).
std::shared_ptr<Backend> cli_backend(const std::string& device, const std::string& precision = "fp32");
// --device (cpu, cuda or auto) and --precision (fp32, bf16, tf32) of a command that runs a model.
void add_device_options(CLI::App* cmd, std::string& device, std::string& precision);
// Where the trained built-in model lives (resources/models/builtin).
std::string builtin_model_dir();
// "builtin" (or empty) means the built-in model; otherwise a model directory.
Model open_model(const std::string& dir, std::shared_ptr<Backend> backend);

// {"layer": L, "experts": [[..] per position], "weights": [[..]], "probs": [[..]], "logits": [[..]]}
nlohmann::json routing_to_json(const RoutingTrace& trace, bool with_logits = false);

// Write JSON to a file atomically (temporary + rename).
void write_json_file(const std::string& path, const nlohmann::json& j);

bool stdout_is_terminal();

}  // namespace moelab::cli
