#include "training_run.hpp"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "params.hpp"
#include "presets.hpp"
#include "tokenizer.hpp"

namespace moelab {
namespace fs = std::filesystem;
using nlohmann::json;

RunSpec run_spec_from_preset(const std::string& name_or_path) {
  const Preset p = load_preset(name_or_path);
  RunSpec s;
  s.model = p.model;
  s.train = p.train;
  s.corpus = p.corpus;
  s.preset = p.name;
  s.source = name_or_path;
  return s;
}

RunSpec run_spec_of(const std::string& run_dir) {
  const json info = RunLog::read_run_info(run_dir);
  RunSpec s;
  s.source = (fs::path(run_dir) / "run.json").string();
  s.model = parse_config(info.at("model"), s.source);
  s.train = train_config_from_json(info.at("train"), TrainConfig{}, s.source);
  try {
    s.corpus = info.value("corpus", std::string("builtin:domains"));
    s.preset = info.value("preset", std::string());
  } catch (const json::exception& e) {
    fail(s.source, std::string("malformed run description (") + e.what() + ")");
  }
  return s;
}

TrainingRun::TrainingRun(const RunSpec& spec, std::shared_ptr<Backend> backend) : spec_(spec) {
  if (spec_.corpus.empty()) spec_.corpus = "builtin:domains";
  // Lab training reads byte tokens.
  spec_.model.tokenizer = "bytes";
  if (spec_.model.vocab_size < kByteVocab)
    fail(spec_.source, "lab training uses byte tokens: the vocabulary needs at least 260 entries");
  corpus_ = open_corpus(spec_.corpus);
  Rng check_rng(0);
  corpus_->sample(1, spec_.train.seq_len, check_rng, false);  // fails early on a too-short corpus
  try {
    model_ = std::make_unique<Model>(Model::random(spec_.model, spec_.train.weights_seed(), std::move(backend)));
  } catch (const Error& e) {
    if (spec_.source.empty()) throw;
    fail(spec_.source, e.what());  // "the model needs 2.0 TiB ...": say which file asked for it
  }
  trainer_ = std::make_unique<Trainer>(*model_, *corpus_, spec_.train);
}

std::unique_ptr<TrainingRun> TrainingRun::start(const RunSpec& spec, const std::string& run_dir,
                                                std::shared_ptr<Backend> backend) {
  std::error_code ec;
  if (!run_dir.empty() && fs::exists(fs::path(run_dir) / "run.json", ec))
    fail(run_dir, "already holds a run; continue it with --resume or choose another folder");
  std::unique_ptr<TrainingRun> run(new TrainingRun(spec, std::move(backend)));
  if (run_dir.empty()) return run;
  const RunSpec& s = run->spec_;
  const Backend& b = run->model_->backend();
  const json info = {{"version", moelab_version()},
                     {"model", config_to_json(s.model)},
                     {"train", train_config_to_json(s.train)},
                     {"seed", s.train.seed},
                     {"backend", b.name()},
                     {"precision", precision_name(b.precision())},
                     {"corpus", s.corpus},
                     {"preset", s.preset},
                     {"params", count_params(s.model).total}};
  run->log_ = std::make_unique<RunLog>(run_dir, info);
  run->dir_ = run_dir;
  return run;
}

std::unique_ptr<TrainingRun> TrainingRun::resume(const std::string& run_dir, std::shared_ptr<Backend> backend,
                                                 int64_t steps) {
  RunSpec spec = run_spec_of(run_dir);
  const std::string checkpoint = RunLog::latest_checkpoint(run_dir);
  if (checkpoint.empty()) fail(run_dir, "no checkpoint to resume from");
  if (steps > 0) spec.train.steps = steps;
  std::unique_ptr<TrainingRun> run(new TrainingRun(spec, std::move(backend)));
  run->trainer_->load_checkpoint(checkpoint);
  run->last_checkpoint_ = checkpoint;
  run->log_ = std::make_unique<RunLog>(run_dir, RunLog::read_run_info(run_dir), run->trainer_->steps_done());
  run->dir_ = run_dir;
  return run;
}

StepRecord TrainingRun::step() {
  StepRecord r = trainer_->step();
  if (!log_) return r;
  log_->append(step_record_to_json(r));
  const TrainConfig& c = trainer_->config();
  if (c.checkpoint_every > 0 && r.step % c.checkpoint_every == 0 && r.step < c.steps) checkpoint();
  return r;
}

std::string TrainingRun::checkpoint(const std::string& unlogged_dir) {
  const std::string dir = log_ ? log_->checkpoint_dir(trainer_->steps_done()) : unlogged_dir;
  if (dir.empty()) return {};
  std::error_code ec;
  fs::create_directories(fs::path(dir).parent_path(), ec);
  trainer_->save_checkpoint(dir);
  last_checkpoint_ = dir;
  return dir;
}

}  // namespace moelab
