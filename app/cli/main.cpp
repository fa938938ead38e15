// moelab-cli: the lab's command line. Subcommands with --help each; machine output (--json) on
// stdout, messages on stderr; exit 0 ok, 1 error, 2 usage.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "error.hpp"
#include "version.hpp"

int main(int argc, char** argv) {
  CLI::App app{"MoE Lab command line: count, run and benchmark Mixture-of-Experts models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("moelab-cli ") + moelab::moelab_version());
  moelab::cli::add_params_command(app);
  moelab::cli::add_run_commands(app);
  moelab::cli::add_bench_command(app);
  moelab::cli::add_train_commands(app);
  moelab::cli::add_tokenize_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  } catch (const moelab::Error& e) {
    std::fprintf(stderr, "moelab-cli: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "moelab-cli: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moelab-cli: %s\n", e.what());
    return 1;
  }
  return moelab::cli::exit_code();
}
