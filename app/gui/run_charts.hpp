// The charts of a training run, drawn from its step summaries (run_data.hpp). The Training view
// (live and replay), the Compare view and the headless `moelab export` all call these, so every
// place shows the same picture of the same numbers; runCharts() is the one table of them (id,
// title, caption, draw, CSV) that the Training view and the export iterate. `shown` is how many
// steps to draw (replay scrubs through a finished run); `layer` indexes the MoE layers. Each
// chart has a CSV of exactly the data it draws. The drawing pieces are the chart kit's.
#pragma once

#include <QColor>
#include <QString>
#include <QVector>
#include <functional>

#include "run_data.hpp"

class QCustomPlot;
class QCPAxisRect;
class QCPColorMap;

namespace RunCharts {

// One chart of a run, as the Training view shows it and `moelab export` writes it.
struct RunChart {
  QString id;               // the panel's id, and the name of the files it exports to
  QString title;            // one title everywhere; "%1": the layer, where the axes do not name it
  QString caption;          // what it shows, in plain words, under the chart
  bool perLayer = false;    // of one MoE layer: the export writes one per layer
  std::function<void(QCustomPlot*, const RunData&, int shown, int layer)> draw;
  std::function<QString(const RunData&, int shown, int layer)> csv;
  QString exportName;       // `moelab export`'s file name when not the id (per layer: + "-layerN")
  std::function<bool(const RunData&)> exported;  // whether the export writes it for a run (null: always)

  QString titleFor(int layer) const;       // "Collapse view: … (MoE layer 1)"
  QString exportNameFor(int layer) const;  // "load-final-layer1"
};
// Every run chart, in the Training view's order (collapse first).
const QVector<RunChart>& runCharts();

// Loss: total, language model, validation; the balancing terms when they are switched on.
void drawLoss(QCustomPlot* plot, const RunData& run, int shown);
QString lossCsv(const RunData& run, int shown);
// Collapse view: step × expert load share of one MoE layer, on one 0–1 colour scale.
QCPColorMap* drawCollapse(QCustomPlot* plot, const RunData& run, int shown, int layer);
// The same heatmap in one axis rect of a larger plot, without labels or colour scale: the Compare
// view puts one per run side by side on a shared scale. Null when there is nothing to draw.
QCPColorMap* drawCollapse(QCPAxisRect* rect, const RunData& run, int shown, int layer);
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
