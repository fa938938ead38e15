// One training step's record: the schema of metrics.jsonl, in one place. The trainer fills a
// StepRecord, the run log stores it as one JSON line (step_record_to_json), and everything that
// reads a run back (the GUI's charts, replay, Compare, the CSV export) goes through
// step_record_from_json, so a key is named once for writing and once for reading, here.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "metrics.hpp"

namespace moelab {

struct StepRecord {
  int64_t step = 0;  // 1-based: the update just made
  double loss = 0, lm_loss = 0, aux_loss = 0, z_loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_s = 0, elapsed_s = 0;
  double val_loss = NAN;  // when evaluated this step
  std::vector<LayerStats> layers;
  std::vector<std::vector<float>> bias;  // per MoE layer, when the router has a selection bias
  std::vector<std::string> domain_names;
  std::vector<std::vector<std::vector<double>>> domain_matrix;  // per MoE layer [D][E]
  std::vector<double> specialisation;                           // per MoE layer
  std::vector<std::vector<int32_t>> probe_ids;                  // per MoE layer [P·K], probe steps only
  std::vector<double> drop_by_position;                         // [T], probe steps only
  std::vector<StepRouting> routing;                             // the step's raw routing (not logged)
};

nlohmann::json step_record_to_json(const StepRecord& r);

// The record a metrics.jsonl line holds. "step" and "layers" (each with its "layer") are
// required; a missing or null number reads as NaN (the JSON writer stores NaN as null), a missing
// list as empty. The per-layer lists (bias, specialisation with domain_matrix, probe_experts) must
// cover the first layers without a gap, as the writer stores them. Throws moelab::Error
// "SOURCE: malformed step record (…)" on anything else.
StepRecord step_record_from_json(const nlohmann::json& j, const std::string& source);

// The CSV of records: the step's scalars, then cv, collapse, dead, entropy, max_share,
// dropped_rate and specialisation of each MoE layer of the first record. NaN is an empty cell.
std::string step_records_csv(const std::vector<StepRecord>& records);

}  // namespace moelab
