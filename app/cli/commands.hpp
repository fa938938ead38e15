#pragma once

#include <cstdint>

#include <CLI/CLI.hpp>

namespace moelab::cli {

// Each adds a subcommand whose callback does the work (errors thrown as moelab::Error).
void add_params_command(CLI::App& app);   // params
void add_run_commands(CLI::App& app);     // info, forward, generate, demo
void add_bench_command(CLI::App& app);    // bench
void add_train_commands(CLI::App& app);   // train, presets, log-csv
void add_tokenize_command(CLI::App& app); // tokenize

// A seed: a whole number from 0 (CLI11's NonNegativeNumber names a 300-digit upper bound, and an
// unsigned option alone wraps -1 to 2^64-1).
inline const CLI::Validator kSeed(
    [](std::string& s) -> std::string {
      if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) return "a seed is a whole number from 0";
      return "";
    },
    "SEED");

// A subcommand may set a non-zero exit without throwing (e.g. a benchmark target missed).
int exit_code();
void set_exit_code(int code);

}  // namespace moelab::cli
