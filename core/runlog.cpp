#include "runlog.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "files.hpp"
#include "config.hpp"
#include "error.hpp"
#include "safetensors.hpp"
#include "step_record.hpp"

namespace moelab {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The longest record line read back (a step record of the widest lab model is ~10 MB; a hostile
// file with no newline must not be read whole into one string).
constexpr size_t kMaxRecordLine = 64u << 20;

// Calls f(record, line) for every record of metrics.jsonl, streaming. A torn last line (a crash
// while it was appended) is skipped; any other line that is not a JSON object is an error naming
// the file and line, never a silent end of the log (a resume would then rewrite the log without
// the rest). A missing file has no records.
template <class F>
void for_each_metric_line(const std::string& run_dir, F&& f) {
  const std::string file = (fs::path(run_dir) / "metrics.jsonl").string();
  std::error_code ec;
  const auto status = fs::status(file, ec);
  if (!fs::exists(status)) return;
  if (!fs::is_regular_file(status)) fail(file, "not a regular file");  // a FIFO would block the reader
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(file, std::string("cannot read: ") + std::strerror(errno));
  std::streambuf& buf = *in.rdbuf();
  std::string line;
  int64_t number = 0, bad = 0;
  for (bool more = true; more;) {
    line.clear();
    for (;;) {
      const int c = buf.sbumpc();
      if (c == std::char_traits<char>::eof()) {
        more = false;
        break;
      }
      if (c == '\n') break;
      if (line.size() == kMaxRecordLine)
        fail(file, "line " + std::to_string(number + 1) + " is over " + std::to_string(kMaxRecordLine >> 20) + " MB");
      line.push_back(char(c));
    }
    if (!more && line.empty()) break;
    ++number;
    if (line.empty()) continue;
    if (bad > 0) fail(file, "line " + std::to_string(bad) + " is not a JSON object");
    try {
      json r = json::parse(line);
      if (r.is_object()) {
        f(std::move(r), line);
        continue;
      }
    } catch (const json::exception&) {
    }
    bad = number;  // an error unless it is the last line
  }
}

}  // namespace

std::vector<json> read_metrics(const std::string& run_dir) {
  std::vector<json> out;
  for_each_metric_line(run_dir, [&](json&& record, const std::string&) { out.push_back(std::move(record)); });
  return out;
}

RunLog::RunLog(const std::string& dir, const json& run_info, int64_t resume_step) : dir_(dir) {
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "checkpoints", ec);
  if (ec) fail(dir, "cannot create the run folder: " + ec.message());
  const std::string metrics = (fs::path(dir) / "metrics.jsonl").string();
  if (resume_step >= 0) {
    std::string kept;
    for_each_metric_line(dir, [&](json&& r, const std::string& line) {  // the lines as written: no re-dump
      const auto step = r.find("step");
      if (step == r.end() || !step->is_number())
        fail(metrics, "a record has no step number: " + line.substr(0, 60));
      if (step->get<double>() <= double(resume_step)) kept += line + "\n";
    });
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
  return checkpoint_at_or_before(run_dir, std::numeric_limits<int64_t>::max());
}

std::string RunLog::checkpoint_at_or_before(const std::string& run_dir, int64_t step) {
  std::string best, best_number;
  std::error_code ec;
  if (step < 0) return best;
  // The step number as digits without leading zeros: by number, not by name (past step 999999
  // names grow a digit and "step-1000000" < "step-999999"); the longer number is the larger, then
  // the text orders equal lengths. A number past int64 is past every step.
  auto less = [](const std::string& a, const std::string& b) {
    return a.size() < b.size() || (a.size() == b.size() && a < b);
  };
  const std::string limit = std::to_string(step);
  for (const auto& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints", ec)) {
    const std::string n = e.path().filename().string();
    // step-DIGITS only (skips .tmp/.old folders and anything else put there)
    if (n.rfind("step-", 0) != 0 || n.size() == 5 || n.find_first_not_of("0123456789", 5) != std::string::npos) continue;
    if (!fs::exists(e.path() / "trainer.json")) continue;
    const size_t z = n.find_first_not_of('0', 5);
    const std::string number = z == std::string::npos ? "0" : n.substr(z);
    if (less(limit, number)) continue;
    if (best.empty() || less(best_number, number)) {
      best = e.path().string();
      best_number = number;
    }
  }
  return best;
}

json RunLog::read_run_info(const std::string& run_dir) {
  const std::string f = (fs::path(run_dir) / "run.json").string();
  const json info = read_json_file(f, 16 << 20);
  if (!info.is_object() || !info.contains("model") || !info.contains("train"))
    fail(f, "a run description must be a JSON object with \"model\" and \"train\"");
  return info;
}

void export_metrics_csv(const std::string& run_dir, const std::string& out_path) {
  const std::string file = (fs::path(run_dir) / "metrics.jsonl").string();
  std::vector<StepRecord> records;
  for_each_metric_line(run_dir, [&](json&& r, const std::string&) { records.push_back(step_record_from_json(r, file)); });
  if (records.empty()) fail(run_dir, "the run has no metrics yet");
  write_text_atomic(out_path, step_records_csv(records));
}

}  // namespace moelab
