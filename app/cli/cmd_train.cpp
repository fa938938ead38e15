// moelab-cli train: train a lab model from a preset (or a config.json), writing the run log and
// checkpoints into --out. A progress bar on a terminal, plain lines otherwise. Ctrl-C saves a
// checkpoint and stops cleanly; --resume continues a run exactly from its newest checkpoint.
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "corpus.hpp"
#include "error.hpp"
#include "safetensors.hpp"
#include "files.hpp"
#include "params.hpp"
#include "presets.hpp"
#include "runlog.hpp"
#include "tokenizer.hpp"
#include "trainer.hpp"
#include "training_run.hpp"

namespace moelab::cli {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

struct TrainOptions {
  std::string config, corpus, out, device = "auto", precision = "fp32";
  int64_t steps = 0, checkpoint_every = -1;
  int64_t seed = -1;
  bool resume = false, quiet = false;
  double lr = -1, aux_alpha = -1, z_coef = -1, bias_gamma = -1, capacity_factor = -1, router_lr_scale = -1;
  int64_t batch = 0, seq_len = 0;
  bool reroute = false;
  std::string export_dir, export_dtype = "f32";
};
TrainOptions o;
CLI::App* g_train = nullptr;  // to ask which options were given

// An option given on the command line: it overrides the preset even when its value is out of
// range, so the range check below reports it (a NaN or negative value is never silently ignored).
bool given(const char* option) { return g_train && g_train->count(option) > 0; }

std::string eta_text(double seconds) {
  char buf[32];
  const int s = int(std::clamp(seconds, 0.0, 1e9));  // in range of int (a NaN becomes 0)
  std::snprintf(buf, sizeof buf, "%d:%02d", s / 60, s % 60);
  return buf;
}

void apply_overrides(TrainConfig& t) {
  if (o.steps > 0) t.steps = o.steps;
  if (o.seed >= 0) t.seed = uint64_t(o.seed);
  if (given("--lr")) t.lr = float(o.lr);
  if (o.batch > 0) t.batch = o.batch;
  if (o.seq_len > 0) t.seq_len = o.seq_len;
  if (given("--aux-alpha")) t.aux_alpha = float(o.aux_alpha);
  if (given("--z-coef")) t.z_coef = float(o.z_coef);
  if (given("--bias-gamma")) t.bias_gamma = float(o.bias_gamma);
  if (given("--capacity-factor")) t.capacity.factor = o.capacity_factor;
  if (given("--router-lr-scale")) t.router_lr_scale = float(o.router_lr_scale);
  if (o.reroute) t.capacity.reroute = true;
  if (given("--checkpoint-every")) t.checkpoint_every = o.checkpoint_every;
  t = train_config_from_json(train_config_to_json(t), t, "command line");  // range checks
}

void run_train() {
  std::shared_ptr<Backend> backend = cli_backend(o.device, o.precision);
  std::unique_ptr<TrainingRun> run;
  if (o.resume) {
    run = TrainingRun::resume(o.out, backend, o.steps);
  } else {
    if (o.config.empty()) fail("--config", "give a preset name or a preset/config.json path (or --resume)");
    std::error_code ec;
    // A model folder, or a Hugging Face config.json under any name (recognised by its content).
    const bool is_model_config =
        fs::is_directory(o.config, ec) ||
        (fs::is_regular_file(o.config, ec) && (fs::path(o.config).filename() == "config.json" ||
                                               (fs::path(o.config).extension() == ".json" &&
                                                is_model_config_json(read_json_file(o.config, 16 << 20)))));
    RunSpec spec;
    if (is_model_config) {
      spec.model = load_config(o.config);
      spec.source = config_path_of(o.config);
    } else {
      spec = run_spec_from_preset(o.config);
    }
    if (!o.corpus.empty()) spec.corpus = o.corpus;
    apply_overrides(spec.train);
    run = TrainingRun::start(spec, o.out, backend);
  }
  const RunSpec& spec = run->spec();
  const ModelConfig& mc = spec.model;
  const TrainConfig& tc = run->config();
  std::signal(SIGINT, on_sigint);
  const bool tty = ::isatty(2) == 1 && !o.quiet;
  std::fprintf(stderr, "training %s (%s params, %d experts, top-%d) on %s for %lld steps -> %s\n",
               spec.preset.empty() ? mc.architecture.c_str() : spec.preset.c_str(),
               human_count(double(count_params(mc).total)).c_str(), int(mc.num_experts), int(mc.top_k),
               spec.corpus.c_str(), (long long)tc.steps, o.out.c_str());
  if (o.resume) std::fprintf(stderr, "resumed from %s\n", run->last_checkpoint().c_str());
  double smoothed_tps = 0;
  while (!run->done()) {
    if (g_interrupted) {
      if (tty) std::fprintf(stderr, "\n");
      run->checkpoint();
      std::fprintf(stderr, "interrupted at step %lld; checkpoint saved to %s (continue with --resume)\n",
                   (long long)run->steps_done(), run->last_checkpoint().c_str());
      export_metrics_csv(o.out, o.out + "/metrics.csv");
      return;
    }
    StepRecord r;
    try {
      r = run->step();  // logged, and checkpointed on schedule
    } catch (const Error& e) {
      if (tty) std::fprintf(stderr, "\n");
      const std::string& last = run->last_checkpoint();
      throw Error(std::string(e.what()) +
                  (last.empty() ? "; no checkpoint was written yet" : "; the last good checkpoint is " + last));
    }
    smoothed_tps = smoothed_tps == 0 ? r.tokens_per_s : 0.9 * smoothed_tps + 0.1 * r.tokens_per_s;
    const double eta = double(tc.steps - r.step) * double(tc.batch * tc.seq_len * tc.grad_accum) / smoothed_tps;
    double worst_cv = 0;
    for (const auto& L : r.layers) worst_cv = std::max(worst_cv, L.cv);
    if (tty) {
      const int width = 24, filled = int(double(width) * double(r.step) / double(tc.steps));
      std::fprintf(stderr, "\r[%s%s] step %lld/%lld  loss %.3f  load CV %.2f  %.0f tok/s  ETA %s   ",
                   std::string(size_t(filled), '#').c_str(), std::string(size_t(width - filled), '.').c_str(),
                   (long long)r.step, (long long)tc.steps, r.loss, worst_cv, smoothed_tps, eta_text(eta).c_str());
    } else if (!o.quiet && (r.step % 50 == 0 || r.step == tc.steps || r.step == 1)) {
      std::fprintf(stderr, "step %lld/%lld: loss %.4f%s, load CV %.2f, %.0f tok/s, ETA %s\n", (long long)r.step,
                   (long long)tc.steps, r.loss,
                   std::isnan(r.val_loss) ? "" : (", val " + std::to_string(r.val_loss).substr(0, 6)).c_str(), worst_cv,
                   smoothed_tps, eta_text(eta).c_str());
    }
  }
  if (tty) std::fprintf(stderr, "\n");
  run->checkpoint();
  export_metrics_csv(o.out, o.out + "/metrics.csv");
  if (!o.export_dir.empty()) {
    const DType d = o.export_dtype == "bf16" ? DType::BF16 : o.export_dtype == "f16" ? DType::F16 : DType::F32;
    run->model().save(o.export_dir, d);
    std::fprintf(stderr, "model exported to %s (%s)\n", o.export_dir.c_str(), o.export_dtype.c_str());
  }
  std::fprintf(stderr, "done: %lld steps; model in %s (loads with moelab-cli forward%s)\n",
               (long long)run->steps_done(), run->last_checkpoint().c_str(),
               mc.router_noise || mc.scoring == RouterScoring::Sigmoid || (mc.family == Family::Mixtral && !mc.norm_topk_prob) ? "; it uses lab router extensions, so not transformers" : " and transformers");
}

}  // namespace

void add_train_commands(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a lab model; writes the run log and checkpoints");
  g_train = cmd;
  cmd->add_option("--config", o.config, "Preset name (see --list) or a preset JSON or config.json path");
  cmd->add_option("--corpus", o.corpus, "builtin:domains or a UTF-8 text file (default: the preset's)");
  cmd->add_option("--steps", o.steps, "Optimizer steps")->check(CLI::Range(int64_t(1), int64_t(10000000)));
  cmd->add_option("--out", o.out, "Run folder")->required();
  cmd->add_option("--seed", o.seed, "Seed")->check(kSeed);
  cmd->add_flag("--resume", o.resume, "Continue the run in --out from its newest checkpoint");
  cmd->add_option("--lr", o.lr, "Peak learning rate");
  cmd->add_option("--batch", o.batch, "Sequences per step")->check(CLI::Range(int64_t(1), int64_t(4096)));
  cmd->add_option("--seq-len", o.seq_len, "Tokens per sequence")->check(CLI::Range(int64_t(2), int64_t(8192)));
  cmd->add_option("--aux-alpha", o.aux_alpha, "Auxiliary load-balancing loss coefficient");
  cmd->add_option("--z-coef", o.z_coef, "Router z-loss coefficient");
  cmd->add_option("--bias-gamma", o.bias_gamma, "DeepSeek-V3 bias update speed (sigmoid router)");
  cmd->add_option("--capacity-factor", o.capacity_factor, "Expert capacity factor (0 = no limit)");
  cmd->add_flag("--reroute", o.reroute, "Re-route overflow to the next-best expert instead of dropping it");
  cmd->add_option("--router-lr-scale", o.router_lr_scale, "Router learning-rate multiplier");
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "Checkpoint every N steps (0 = only at the end)");
  add_device_options(cmd, o.device, o.precision);
  cmd->add_flag("--quiet", o.quiet, "No progress output");
  cmd->add_option("--export", o.export_dir, "Also write the final model (config.json + model.safetensors) here");
  cmd->add_option("--export-dtype", o.export_dtype, "f32, bf16 or f16")->check(CLI::IsMember({"f32", "bf16", "f16"}));
  cmd->callback(run_train);

  auto* list = app.add_subcommand("presets", "List the lab presets");
  list->callback([] {
    for (const auto& n : list_presets()) {
      const Preset p = load_preset(n);
      std::printf("%-26s %s\n", n.c_str(), p.title.c_str());
    }
  });

  auto* csv = app.add_subcommand("log-csv", "Export a run's metrics.jsonl as CSV");
  static std::string run, out;
  csv->add_option("--run", run, "Run folder")->required();
  csv->add_option("--out", out, "CSV file (default RUN/metrics.csv)");
  csv->callback([] {
    export_metrics_csv(run, out.empty() ? run + "/metrics.csv" : out);
    std::fprintf(stderr, "wrote %s\n", (out.empty() ? run + "/metrics.csv" : out).c_str());
  });
}

}  // namespace moelab::cli
