// The charts of a training run, drawn from its step summaries (run_data.hpp). The Training view
// (live and replay), the Compare view and the headless `moelab export` all call these, so every
// place shows the same picture of the same numbers. `shown` is how many steps to draw (replay
// scrubs through a finished run); `layer` indexes the MoE layers. Each chart has a CSV of exactly
// the data it draws.
#pragma once

#include <QColor>
#include <QString>
#include <QVector>

#include "run_data.hpp"

class QCustomPlot;
class QCPAxisRect;
class QCPColorMap;

namespace RunCharts {

// Clear a plot down to one axis rect with a (hidden) legend in its corner.
QCPAxisRect* resetPlot(QCustomPlot* plot);
// Show the legend in a row under the axes, `columns` entries wide, where it never covers data.
void legendBelow(QCustomPlot* plot, int columns);
// A horizontal reference line across a plot's axes (the even split 1/E, an expert's capacity),
// named in the right margin level with its line, where the name never covers a bar. The Tokens
// view's load chart uses it too. Call after the y range is set; the right margin is fixed to the
// widest name (keep names short; a line break is fine).
struct ReferenceLine {
  double value;
  QString name;
  QColor color;
  Qt::PenStyle style = Qt::DashLine;
};
void referenceLines(QCustomPlot* plot, const QVector<ReferenceLine>& lines);

// Loss: total, language model, validation; the balancing terms when they are switched on.
void drawLoss(QCustomPlot* plot, const RunData& run, int shown);
QString lossCsv(const RunData& run, int shown);
// Collapse view: step × expert load share of one MoE layer, on one 0–1 colour scale.
QCPColorMap* drawCollapse(QCustomPlot* plot, const RunData& run, int shown, int layer);
QString collapseCsv(const RunData& run, int shown, int layer);
// The load per expert at the last shown step against the even split 1/E.
void drawLoadNow(QCustomPlot* plot, const RunData& run, int shown, int layer);
QString loadNowCsv(const RunData& run, int shown, int layer);
// Coefficient of variation of the load and dead experts over steps, every MoE layer.
void drawBalance(QCustomPlot* plot, const RunData& run, int shown);
QString balanceCsv(const RunData& run, int shown);
// Router entropy (0 = certain, 1 = cannot tell experts apart) and dropped tokens over steps.
void drawEntropy(QCustomPlot* plot, const RunData& run, int shown);
QString entropyCsv(const RunData& run, int shown);
// The auxiliary-loss-free selection bias of each expert over steps (DeepSeek-V3).
void drawBias(QCustomPlot* plot, const RunData& run, int shown, int layer);
QString biasCsv(const RunData& run, int shown, int layer);
// Router saturation: overlap of each probe step's top-k choices with the last shown probe step's
// (the current model's), per MoE layer, on the same fixed probe batch.
void drawSaturation(QCustomPlot* plot, const RunData& run, int shown);
QString saturationCsv(const RunData& run, int shown);
// Domain × expert: which share of each domain's tokens each expert got (last probe step).
QCPColorMap* drawSpecialisation(QCustomPlot* plot, const RunData& run, int shown, int layer);
QString specialisationCsv(const RunData& run, int shown, int layer);
// The specialisation score I(domain; expert) / H(domain) over steps, every MoE layer.
void drawSpecialisationScore(QCustomPlot* plot, const RunData& run, int shown);
QString specialisationScoreCsv(const RunData& run, int shown);
// Share of slots dropped by the capacity limit at each position of the sequences.
void drawDropByPosition(QCustomPlot* plot, const RunData& run, int shown);
QString dropByPositionCsv(const RunData& run, int shown);

// Overlap in [0, 1] of two probe choice lists [P·K] (ids < 0 = dropped count as no match).
double choiceOverlap(const QVector<int32_t>& a, const QVector<int32_t>& b, int64_t k);
// The last summary among the first `shown` that has probe data (or nullptr).
const StepSummary* lastProbe(const RunData& run, int shown);
// A colour per expert (Okabe–Ito up to 8, viridis beyond).
QColor expertColor(int e, int experts);

}  // namespace RunCharts

namespace RunCharts {

// The figures a comparison table shows, from a run's last step (worst MoE layer where a figure
// is per layer; specialisation: the best layer's last probe).
struct FinalFigures {
  int64_t step = 0, dead = 0;
  double lmLoss = NAN, valLoss = NAN, cv = NAN, maxShare = NAN, collapse = NAN, specialisation = NAN;
};
FinalFigures finalFigures(const RunData& run);
// "none", "aux loss 0.01", "bias 0.001", plus the capacity limit when there is one.
QString balancingText(const moelab::TrainConfig& c);

}  // namespace RunCharts
