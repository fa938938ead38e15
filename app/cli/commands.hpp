#pragma once

#include <cstdint>

#include <CLI/CLI.hpp>

namespace moelab::cli {

// Each adds a subcommand whose callback does the work (errors thrown as moelab::Error).
void add_params_command(CLI::App& app);   // params
void add_run_commands(CLI::App& app);     // info, forward, generate, demo
void add_bench_command(CLI::App& app);    // bench
void add_train_commands(CLI::App& app);   // train, presets, log-csv

// A subcommand may set a non-zero exit without throwing (e.g. a benchmark target missed).
int exit_code();
void set_exit_code(int code);

}  // namespace moelab::cli
