// The run log of a training run, one folder per run:
//   run.json       the model config, training settings, seed, corpus, backend, version
//   metrics.jsonl  one JSON object per step (snake_case keys, units in the names), appended and
//                  flushed line by line so a crash loses nothing and readers can follow along
//   checkpoints/step-NNNNNN/  model (Hugging Face layout) + optimizer + trainer state
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace moelab {

class RunLog {
 public:
  // Creates (or, when resume_step >= 0, reopens) the run folder. On resume, records after
  // resume_step are dropped so the log continues exactly where the checkpoint is.
  RunLog(const std::string& dir, const nlohmann::json& run_info, int64_t resume_step = -1);
  ~RunLog();
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

  void append(const nlohmann::json& record);
  std::string checkpoint_dir(int64_t step) const;
  const std::string& dir() const { return dir_; }

  // The newest complete checkpoint folder of a run, or "" when there is none.
  static std::string latest_checkpoint(const std::string& run_dir);
  // The newest complete checkpoint at or before `step` ("" when there is none). A checkpoint is
  // complete when its folder is named step-DIGITS and holds trainer.json.
  static std::string checkpoint_at_or_before(const std::string& run_dir, int64_t step);
  static nlohmann::json read_run_info(const std::string& run_dir);

 private:
  std::string dir_;
  std::FILE* file_ = nullptr;
};

// Read metrics.jsonl (a torn last line from a crash is skipped).
std::vector<nlohmann::json> read_metrics(const std::string& run_dir);
// metrics.jsonl as CSV (step_records_csv); a malformed record is an error naming the file.
void export_metrics_csv(const std::string& run_dir, const std::string& out_path);

}  // namespace moelab
