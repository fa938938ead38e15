#include "runlog.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config.hpp"
#include "error.hpp"
#include "safetensors.hpp"

namespace moelab {
namespace fs = std::filesystem;
using nlohmann::json;

std::vector<json> read_metrics(const std::string& run_dir) {
  std::vector<json> out;
  std::ifstream in(fs::path(run_dir) / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      out.push_back(json::parse(line));
    } catch (const json::exception&) {
      break;  // a line torn by a crash ends the readable log
    }
  }
  return out;
}

RunLog::RunLog(const std::string& dir, const json& run_info, int64_t resume_step) : dir_(dir) {
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "checkpoints", ec);
  if (ec) fail(dir, "cannot create the run folder: " + ec.message());
  const std::string metrics = (fs::path(dir) / "metrics.jsonl").string();
  if (resume_step >= 0) {
    std::string kept;
    for (const json& r : read_metrics(dir))
      if (r.value("step", int64_t(0)) <= resume_step) kept += r.dump() + "\n";
    write_text_atomic(metrics, kept);
  } else {
    write_text_atomic((fs::path(dir) / "run.json").string(), run_info.dump(2) + "\n");
    write_text_atomic(metrics, "");
  }
  file_ = std::fopen(metrics.c_str(), "a");
  if (!file_) fail(metrics, std::string("cannot append: ") + std::strerror(errno));
}

RunLog::~RunLog() {
  if (file_) std::fclose(file_);
}

void RunLog::append(const json& record) {
  const std::string line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    fail((fs::path(dir_) / "metrics.jsonl").string(), std::string("write failed: ") + std::strerror(errno));
}

std::string RunLog::checkpoint_dir(int64_t step) const {
  char name[32];
  std::snprintf(name, sizeof name, "step-%06lld", static_cast<long long>(step));
  return (fs::path(dir_) / "checkpoints" / name).string();
}

std::string RunLog::latest_checkpoint(const std::string& run_dir) {
  std::string best;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints", ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) != 0 || n.find('.') != std::string::npos) continue;  // skip .tmp/.old
    if (!fs::exists(e.path() / "trainer.json")) continue;
    if (best.empty() || n > fs::path(best).filename().string()) best = e.path().string();
  }
  return best;
}

json RunLog::read_run_info(const std::string& run_dir) {
  const std::string f = (fs::path(run_dir) / "run.json").string();
  try {
    return json::parse(read_text_file(f, 16 << 20));
  } catch (const json::exception&) {
    fail(f, "malformed JSON");
  }
}

void export_metrics_csv(const std::string& run_dir, const std::string& out_path) {
  const auto records = read_metrics(run_dir);
  if (records.empty()) fail(run_dir, "the run has no metrics yet");
  const char* scalars[] = {"step", "loss", "lm_loss", "aux_loss", "z_loss", "val_loss", "lr", "grad_norm",
                           "tokens_per_s", "elapsed_s"};
  const char* per_layer[] = {"cv", "collapse", "dead", "entropy", "max_share", "dropped_rate", "specialisation"};
  std::ostringstream csv;
  csv.precision(8);
  bool first = true;
  for (const char* s : scalars) csv << (first ? "" : ",") << s, first = false;
  const json& layers0 = records.front()["layers"];
  for (const auto& L : layers0)
    for (const char* k : per_layer) csv << ",layer" << L["layer"].get<int64_t>() << "_" << k;
  csv << "\n";
  for (const json& r : records) {
    first = true;
    for (const char* s : scalars) {
      csv << (first ? "" : ",");
      if (r.contains(s)) csv << r[s].get<double>();
      first = false;
    }
    for (const auto& L : r["layers"])
      for (const char* k : per_layer) {
        csv << ",";
        if (L.contains(k)) csv << L[k].get<double>();
      }
    csv << "\n";
  }
  write_text_atomic(out_path, csv.str());
}

}  // namespace moelab
