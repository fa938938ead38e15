// A training run as the GUI draws it: one small immutable summary per step, made from the same
// StepRecord the run log stores (metrics.jsonl, read back by moelab::step_record_from_json), so a
// live run, a replayed run, a compared run and a headless export all draw the same numbers.
#pragma once

#include <QString>
#include <QStringList>
#include <QVector>
#include <cmath>
#include <memory>

#include <nlohmann/json_fwd.hpp>

#include "trainer.hpp"

struct StepSummary {
  int64_t step = 0, steps = 0, topK = 0;
  double loss = 0, lmLoss = 0, auxLoss = 0, zLoss = 0, valLoss = NAN, lr = 0, gradNorm = 0, tokensPerS = 0;
  struct Layer {
    int64_t layer = 0;
    QVector<double> load;     // [E] share of the step's choices per expert
    QVector<double> dropped;  // [E] share of each expert's wanted slots dropped by capacity
    double cv = 0, entropy = 0, maxShare = 0, collapse = 0, droppedRate = 0;
    int64_t dead = 0;
    QVector<float> bias;                  // [E] selection bias (bias balancing), else empty
    double specialisation = NAN;          // probe steps only
    QVector<QVector<double>> domainMatrix;  // [D][E] slot counts, probe steps only
    QVector<int32_t> probeExperts;          // [P·K] the probe batch's choices, probe steps only
  };
  QVector<Layer> layers;
  QStringList domains;             // probe steps only
  QVector<double> dropByPosition;  // [T] probe steps only
};
using StepSummaryPtr = std::shared_ptr<const StepSummary>;
using RunHistory = QVector<StepSummaryPtr>;

// One metrics.jsonl record → summary; throws moelab::Error naming `source` when malformed.
StepSummaryPtr summaryFromJson(const nlohmann::json& record, int64_t steps, int64_t topK, const QString& source);
StepSummaryPtr summaryFromRecord(const moelab::StepRecord& r, int64_t steps, int64_t topK);

struct RunData {
  QString dir;     // the run folder ("" for a run not logged)
  QString name;    // short label: the folder name
  QString title;   // the preset's title, or the architecture
  QString preset;  // preset name when known
  int64_t experts = 0, moeLayers = 0, topK = 0;
  moelab::TrainConfig train;
  RunHistory history;
  bool showAux = false, showZ = false;  // draw the balancing losses (their coefficient was on)
  bool hasBias() const;
  bool hasDrops() const;
  bool hasDomains() const;
};

// Read a run folder (run.json + metrics.jsonl). Throws moelab::Error naming the file.
RunData loadRun(const QString& dir);

// The figures a comparison table shows, from a run's last step: loss, CV, busiest expert's share
// and collapse index of the worst MoE layer, dead experts summed over every MoE layer, and the
// specialisation of the best layer at the last probe step. NaN where the run has no such figure.
struct FinalFigures {
  int64_t step = 0, dead = 0;
  double lmLoss = NAN, valLoss = NAN, cv = NAN, maxShare = NAN, collapse = NAN, specialisation = NAN;
};
FinalFigures finalFigures(const RunData& run);
// "none", "aux loss 0.01", "bias 0.001", plus the capacity limit when there is one.
QString balancingText(const moelab::TrainConfig& c);
