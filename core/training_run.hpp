// A training run, in one place: what it trains (model, settings, corpus, preset), the model and
// its trainer on a backend, and its run log (run.json, metrics.jsonl appended step by step,
// checkpoints on a schedule; runlog.hpp has the folder layout). `moelab-cli train`, the GUI's
// training worker and the tests all start, continue and step runs through this class, so a run
// made anywhere has the same run.json and the same weights for the same seed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "config.hpp"
#include "corpus.hpp"
#include "model.hpp"
#include "runlog.hpp"
#include "trainer.hpp"
#include "version.hpp"

namespace moelab {

// What a run trains.
struct RunSpec {
  ModelConfig model;
  TrainConfig train;
  std::string corpus = "builtin:domains";  // "builtin:domains" or a UTF-8 text file
  std::string preset;                      // the preset's name, "" for a config.json
  std::string source;                      // the file the model came from, named in messages
};

// A preset by name or path, as a RunSpec.
RunSpec run_spec_from_preset(const std::string& name_or_path);
// A run folder's run.json, as a RunSpec (errors name the file).
RunSpec run_spec_of(const std::string& run_dir);

class TrainingRun {
 public:
  // A new run on `backend`, logged into run_dir ("" = not logged). Refuses a folder that already
  // holds a run (its log would be lost). The model, corpus and trainer are made first, so a
  // device failure writes nothing; then run.json (version, model, train, seed, backend,
  // precision, corpus, preset, params) and an empty metrics.jsonl.
  static std::unique_ptr<TrainingRun> start(const RunSpec& spec, const std::string& run_dir,
                                            std::shared_ptr<Backend> backend);
  // Continue run_dir from its newest checkpoint (an error when it has none): its log is cut back
  // to that step. steps > 0 changes the number of steps to train to.
  static std::unique_ptr<TrainingRun> resume(const std::string& run_dir, std::shared_ptr<Backend> backend,
                                             int64_t steps = 0);

  // One optimizer step, appended to metrics.jsonl (flushed), then a checkpoint when the schedule
  // (TrainConfig::checkpoint_every, not on the last step) says so.
  StepRecord step();
  bool done() const { return trainer_->steps_done() >= trainer_->config().steps; }
  int64_t steps_done() const { return trainer_->steps_done(); }
  // Save a checkpoint of the current step into the run folder's checkpoints/ (or into
  // `unlogged_dir` when the run is not logged; "" = nowhere). Returns the folder, or "".
  std::string checkpoint(const std::string& unlogged_dir = "");
  // The newest checkpoint written or resumed from ("" when none yet).
  const std::string& last_checkpoint() const { return last_checkpoint_; }
  // Balancing and learning knobs, from the next step on (the GUI's live switch).
  void set_config(const TrainConfig& c) { trainer_->set_config(c); }

  const RunSpec& spec() const { return spec_; }
  const TrainConfig& config() const { return trainer_->config(); }
  const std::string& dir() const { return dir_; }  // "" when not logged
  bool logged() const { return log_ != nullptr; }
  Model& model() { return *model_; }

 private:
  TrainingRun(const RunSpec& spec, std::shared_ptr<Backend> backend);

  RunSpec spec_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Corpus> corpus_;
  std::unique_ptr<Trainer> trainer_;
  std::unique_ptr<RunLog> log_;
  std::string dir_, last_checkpoint_;
};

}  // namespace moelab
