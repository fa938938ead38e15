#include "run_data.hpp"

#include <QDir>
#include <QFileInfo>
#include <QObject>
#include <algorithm>
#include <nlohmann/json.hpp>

#include "error.hpp"
#include "presets.hpp"
#include "runlog.hpp"

using nlohmann::json;

namespace {

template <class T>
QVector<T> qvec(const std::vector<T>& v) {
  return QVector<T>(v.begin(), v.end());
}

}  // namespace

StepSummaryPtr summaryFromJson(const json& r, int64_t steps, int64_t topK, const QString& source) {
  return summaryFromRecord(moelab::step_record_from_json(r, source.toStdString()), steps, topK);
}

StepSummaryPtr summaryFromRecord(const moelab::StepRecord& r, int64_t steps, int64_t topK) {
  auto s = std::make_shared<StepSummary>();
  s->step = r.step;
  s->steps = steps;
  s->topK = topK;
  s->loss = r.loss;
  s->lmLoss = r.lm_loss;
  s->auxLoss = r.aux_loss;
  s->zLoss = r.z_loss;
  s->valLoss = r.val_loss;
  s->lr = r.lr;
  s->gradNorm = r.grad_norm;
  s->tokensPerS = r.tokens_per_s;
  for (size_t i = 0; i < r.layers.size(); ++i) {
    const moelab::LayerStats& L = r.layers[i];
    StepSummary::Layer l;
    l.layer = L.layer;
    l.load = qvec(L.load);
    l.dropped = qvec(L.dropped);
    l.cv = L.cv;
    l.entropy = L.entropy;
    l.maxShare = L.max_share;
    l.collapse = L.collapse;
    l.droppedRate = L.dropped_rate;
    l.dead = L.dead;
    if (i < r.bias.size()) l.bias = qvec(r.bias[i]);
    if (i < r.specialisation.size()) {
      l.specialisation = r.specialisation[i];
      for (const auto& row : r.domain_matrix[i]) l.domainMatrix.push_back(qvec(row));
    }
    if (i < r.probe_ids.size()) l.probeExperts = qvec(r.probe_ids[i]);
    s->layers.push_back(std::move(l));
  }
  for (const std::string& d : r.domain_names) s->domains.push_back(QString::fromStdString(d));
  s->dropByPosition = qvec(r.drop_by_position);
  return s;
}

bool RunData::hasBias() const {
  for (const auto& s : history)
    for (const auto& l : s->layers)
      if (!l.bias.isEmpty()) return true;
  return false;
}

bool RunData::hasDrops() const {
  for (const auto& s : history)
    for (const auto& l : s->layers)
      if (l.droppedRate > 0) return true;
  return train.capacity.limited();
}

bool RunData::hasDomains() const {
  for (const auto& s : history)
    if (!s->domains.isEmpty()) return true;
  return false;
}

RunData loadRun(const QString& dir) {
  const std::string d = dir.toStdString();
  if (!QFileInfo(dir).isDir()) moelab::fail(d, "not a run folder");
  const json info = moelab::RunLog::read_run_info(d);
  const std::string runJson = (QDir(dir).filePath(QStringLiteral("run.json"))).toStdString();
  RunData run;
  run.dir = QDir(dir).absolutePath();
  run.name = QDir(run.dir).dirName();
  try {
    const moelab::ModelConfig mc = moelab::parse_config(info.at("model"), runJson);
    run.experts = mc.num_experts;
    run.moeLayers = mc.num_moe_layers();
    run.topK = mc.top_k;
    run.train = moelab::train_config_from_json(info.at("train"), moelab::TrainConfig{}, runJson);
    run.showAux = run.train.aux_alpha > 0;
    run.showZ = run.train.z_coef > 0;
    run.preset = QString::fromStdString(info.value("preset", std::string()));
    run.title = QString::fromStdString(mc.architecture);
    if (!run.preset.isEmpty()) {
      try {
        run.title = QString::fromStdString(moelab::load_preset(run.preset.toStdString()).title);
      } catch (const std::exception&) {
        run.title = run.preset;  // a preset that is no longer installed: its name will do
      }
    }
  } catch (const json::exception& e) {
    moelab::fail(runJson, std::string("malformed run description (") + e.what() + ")");
  }
  const std::string metrics = QDir(dir).filePath(QStringLiteral("metrics.jsonl")).toStdString();
  const QString src = QString::fromStdString(metrics);
  for (const json& r : moelab::read_metrics(d)) {
    run.history.push_back(summaryFromJson(r, run.train.steps, run.topK, src));
    // Balancing switched on during a live run shows in the total loss.
    const StepSummary& s = *run.history.back();
    if (s.loss > s.lmLoss + 1e-9 && !run.showZ && run.train.bias_gamma <= 0) run.showAux = true;
    if (run.history.back()->layers.size() != run.moeLayers)
      moelab::fail(metrics, "a step record has " + std::to_string(run.history.back()->layers.size()) +
                                " MoE layers, the model " + std::to_string(run.moeLayers));
    for (const auto& l : run.history.back()->layers)
      if (l.load.size() != run.experts) moelab::fail(metrics, "a step record's load does not have one value per expert");
  }
  return run;
}

FinalFigures finalFigures(const RunData& run) {
  FinalFigures f;
  if (run.history.isEmpty()) return f;
  const StepSummary& last = *run.history.back();
  f.step = last.step;
  f.lmLoss = last.lmLoss;
  for (int i = int(run.history.size()) - 1; i >= 0 && std::isnan(f.valLoss); --i) f.valLoss = run.history[i]->valLoss;
  for (const auto& L : last.layers) {
    f.cv = std::isnan(f.cv) ? L.cv : std::max(f.cv, L.cv);
    f.maxShare = std::isnan(f.maxShare) ? L.maxShare : std::max(f.maxShare, L.maxShare);
    f.collapse = std::isnan(f.collapse) ? L.collapse : std::max(f.collapse, L.collapse);
    f.dead += L.dead;
  }
  for (int i = int(run.history.size()) - 1; i >= 0; --i) {
    const StepSummary& s = *run.history[i];
    if (s.layers.isEmpty() || std::isnan(s.layers[0].specialisation)) continue;
    for (const auto& L : s.layers)
      f.specialisation = std::isnan(f.specialisation) ? L.specialisation : std::max(f.specialisation, L.specialisation);
    break;
  }
  return f;
}

QString balancingText(const moelab::TrainConfig& c) {
  QString s = c.aux_alpha > 0    ? QObject::tr("aux loss %1").arg(double(c.aux_alpha))
              : c.bias_gamma > 0 ? QObject::tr("bias %1").arg(double(c.bias_gamma))
                                 : QObject::tr("none");
  if (c.capacity.limited())
    s += QObject::tr(", capacity %1 (%2)").arg(c.capacity.factor).arg(c.capacity.reroute ? QObject::tr("re-route") : QObject::tr("drop"));
  return s;
}
