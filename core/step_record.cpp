#include "step_record.hpp"

#include <sstream>

#include <nlohmann/json.hpp>

#include "error.hpp"

namespace moelab {
using nlohmann::json;

json step_record_to_json(const StepRecord& r) {
  json j = {{"step", r.step},          {"loss", r.loss},
            {"lm_loss", r.lm_loss},    {"aux_loss", r.aux_loss},
            {"z_loss", r.z_loss},      {"lr", r.lr},
            {"grad_norm", r.grad_norm}, {"tokens_per_s", r.tokens_per_s},
            {"elapsed_s", r.elapsed_s}};
  if (!std::isnan(r.val_loss)) j["val_loss"] = r.val_loss;
  json layers = json::array();
  for (size_t i = 0; i < r.layers.size(); ++i) {
    const LayerStats& s = r.layers[i];
    json l = {{"layer", s.layer},       {"load", s.load},       {"importance", s.importance},
              {"dropped", s.dropped},   {"entropy", s.entropy}, {"cv", s.cv},
              {"max_over_mean", s.max_over_mean}, {"max_share", s.max_share}, {"dead", s.dead},
              {"collapse", s.collapse}, {"dropped_rate", s.dropped_rate}};
    if (i < r.bias.size()) l["bias"] = r.bias[i];
    if (i < r.specialisation.size()) {
      l["specialisation"] = r.specialisation[i];
      l["domain_matrix"] = r.domain_matrix[i];
    }
    if (i < r.probe_ids.size()) l["probe_experts"] = r.probe_ids[i];
    layers.push_back(l);
  }
  j["layers"] = layers;
  if (!r.domain_names.empty()) j["domains"] = r.domain_names;
  if (!r.drop_by_position.empty()) j["drop_by_position"] = r.drop_by_position;
  return j;
}

namespace {

// A number, or NaN where the key is missing or null (NaN is written as null).
double number(const json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? NAN : it->get<double>();
}

template <class T>
std::vector<T> list(const json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() ? std::vector<T>() : it->get<std::vector<T>>();
}

}  // namespace

StepRecord step_record_from_json(const json& j, const std::string& source) {
  const auto bad = [&](const std::string& why) { fail(source, "malformed step record (" + why + ")"); };
  try {
    if (!j.is_object()) bad("not a JSON object");
    StepRecord r;
    r.step = j.at("step").get<int64_t>();
    r.loss = number(j, "loss");
    r.lm_loss = number(j, "lm_loss");
    r.aux_loss = number(j, "aux_loss");
    r.z_loss = number(j, "z_loss");
    r.lr = number(j, "lr");
    r.grad_norm = number(j, "grad_norm");
    r.tokens_per_s = number(j, "tokens_per_s");
    r.elapsed_s = number(j, "elapsed_s");
    r.val_loss = number(j, "val_loss");
    const auto layers = j.find("layers");
    if (layers != j.end()) {
      if (!layers->is_array()) bad("\"layers\" is not a list");
      for (const json& L : *layers) {
        if (!L.is_object()) bad("a layer is not a JSON object");
        const size_t i = r.layers.size();
        const std::string where = "layer " + std::to_string(i);
        LayerStats s;
        s.layer = L.at("layer").get<int64_t>();
        s.load = list<double>(L, "load");
        s.importance = list<double>(L, "importance");
        s.dropped = list<double>(L, "dropped");
        s.entropy = number(L, "entropy");
        s.cv = number(L, "cv");
        s.max_over_mean = number(L, "max_over_mean");
        s.max_share = number(L, "max_share");
        s.collapse = number(L, "collapse");
        s.dropped_rate = number(L, "dropped_rate");
        const auto dead = L.find("dead");
        s.dead = dead == L.end() || dead->is_null() ? 0 : dead->get<int64_t>();
        r.layers.push_back(std::move(s));
        // The per-layer lists are written for the first layers: a gap would shift them.
        if (L.contains("bias")) {
          if (r.bias.size() != i) bad(where + " has a bias but an earlier layer has none");
          r.bias.push_back(list<float>(L, "bias"));
        }
        if (L.contains("specialisation")) {
          if (r.specialisation.size() != i) bad(where + " has a specialisation but an earlier layer has none");
          r.specialisation.push_back(number(L, "specialisation"));
          r.domain_matrix.push_back(L.at("domain_matrix").get<std::vector<std::vector<double>>>());
        }
        if (L.contains("probe_experts")) {
          if (r.probe_ids.size() != i) bad(where + " has probe experts but an earlier layer has none");
          r.probe_ids.push_back(list<int32_t>(L, "probe_experts"));
        }
      }
    }
    r.domain_names = list<std::string>(j, "domains");
    r.drop_by_position = list<double>(j, "drop_by_position");
    return r;
  } catch (const json::exception& e) {
    bad(e.what());
  }
  return {};  // not reached: bad() throws
}

std::string step_records_csv(const std::vector<StepRecord>& records) {
  struct Column {
    const char* name;
    double (*get)(const StepRecord&);
  };
  static const Column scalars[] = {
      {"step", [](const StepRecord& r) { return double(r.step); }},
      {"loss", [](const StepRecord& r) { return r.loss; }},
      {"lm_loss", [](const StepRecord& r) { return r.lm_loss; }},
      {"aux_loss", [](const StepRecord& r) { return r.aux_loss; }},
      {"z_loss", [](const StepRecord& r) { return r.z_loss; }},
      {"val_loss", [](const StepRecord& r) { return r.val_loss; }},
      {"lr", [](const StepRecord& r) { return r.lr; }},
      {"grad_norm", [](const StepRecord& r) { return r.grad_norm; }},
      {"tokens_per_s", [](const StepRecord& r) { return r.tokens_per_s; }},
      {"elapsed_s", [](const StepRecord& r) { return r.elapsed_s; }},
  };
  struct LayerColumn {
    const char* name;
    double (*get)(const StepRecord&, size_t);
  };
  static const LayerColumn per_layer[] = {
      {"cv", [](const StepRecord& r, size_t i) { return r.layers[i].cv; }},
      {"collapse", [](const StepRecord& r, size_t i) { return r.layers[i].collapse; }},
      {"dead", [](const StepRecord& r, size_t i) { return double(r.layers[i].dead); }},
      {"entropy", [](const StepRecord& r, size_t i) { return r.layers[i].entropy; }},
      {"max_share", [](const StepRecord& r, size_t i) { return r.layers[i].max_share; }},
      {"dropped_rate", [](const StepRecord& r, size_t i) { return r.layers[i].dropped_rate; }},
      {"specialisation",
       [](const StepRecord& r, size_t i) { return i < r.specialisation.size() ? r.specialisation[i] : NAN; }},
  };
  std::ostringstream csv;
  csv.precision(8);
  const auto cell = [&](double v) {
    if (!std::isnan(v)) csv << v;
  };
  const std::vector<LayerStats> none;
  const std::vector<LayerStats>& header_layers = records.empty() ? none : records.front().layers;
  bool first = true;
  for (const Column& c : scalars) csv << (first ? "" : ",") << c.name, first = false;
  for (const LayerStats& L : header_layers)
    for (const LayerColumn& c : per_layer) csv << ",layer" << L.layer << "_" << c.name;
  csv << "\n";
  for (const StepRecord& r : records) {
    first = true;
    for (const Column& c : scalars) {
      csv << (first ? "" : ",");
      cell(c.get(r));
      first = false;
    }
    for (size_t i = 0; i < header_layers.size(); ++i)
      for (const LayerColumn& c : per_layer) {
        csv << ",";
        if (i < r.layers.size()) cell(c.get(r, i));
      }
    csv << "\n";
  }
  return csv.str();
}

}  // namespace moelab
