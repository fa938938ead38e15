// The Model view's charts, drawn from one immutable description of the model shown and the
// published models beside it: parameters by component (total vs active per token), the model
// among real MoE models (log scale), and memory vs compute per token; plus the CSV of each and of
// the block drawing (block_diagram.hpp). Free functions, like RunCharts: the Model view keeps the
// knobs and only hands these a ModelSnapshot. A chart's layout (headline, legend row, axis rects)
// is made once by its setup function; its draw function redraws the data into it.
#pragma once

#include <QHash>
#include <QString>
#include <QVector>

#include "config.hpp"
#include "params.hpp"

class QCustomPlot;
struct Theme;

namespace ModelCharts {

constexpr int64_t kContext = 1024;  // context length for "compute per token"

// A published model from resources/real-models.
struct RealModel {
  QString id, name, headline;
  moelab::ModelConfig config;
  moelab::ParamCount params;
  double flops = 0;  // forward FLOPs per token at a context of kContext
};

// What the charts show.
struct ModelSnapshot {
  QString name;  // the model shown ("lab model", a preset's or an opened model's name)
  moelab::ModelConfig config;
  moelab::ParamCount params;
  double flops = 0;                        // forward FLOPs per token at a context of kContext
  QVector<RealModel> real;                 // the published models beside it
  QString compared;                        // id of the published model marked, "" for none
  QHash<int, QVector<int>> highlights;     // layer → experts the last token chose (block drawing)
  // How the weights are stored: an opened checkpoint's dtype and tensor bytes (its safetensors
  // headers), else the dtype config.json names ("float32" for a lab model from the knobs).
  QString storedDtype;                     // "bf16", "f16", "f32"
  double storedBytes = 0;                  // the weights in that dtype
  bool fromCheckpoint = false;
};

// Weights one token reads in a forward pass: every active parameter (attention, norms, router,
// shared experts, dense FFNs, its K experts in each MoE layer, the LM head) but only one row of
// an untied embedding matrix. Times the stored bytes per element, the bytes one token reads.
double tokenReadParams(const ModelSnapshot& m);
// One line for the chart headline and the summary: "bf16 as stored 13.8 GB · fp32 27.7 GB · one
// token reads 2.6 GB".
QString storageLine(const ModelSnapshot& m);

// One row of the comparison charts (real models and the shown model), sorted by total.
struct Row {
  QString name;
  double total = 0, active = 0, flops = 0;
  bool lab = false, compared = false;
  QString label() const;  // "★ lab model", "▶ Mixtral 8x7B"
};
QVector<Row> rows(const ModelSnapshot& m);

// Parameters by component: a headline row above the bars, the legend under them.
void setupParams(QCustomPlot* plot);
void drawParams(QCustomPlot* plot, const ModelSnapshot& m, const Theme& t);
QString paramsCsv(const ModelSnapshot& m);

// Total and active parameters of every model, log scale; the legend above.
void setupRealModels(QCustomPlot* plot);
void drawRealModels(QCustomPlot* plot, const ModelSnapshot& m, const Theme& t);
QString realModelsCsv(const ModelSnapshot& m);

// Two axis rects sharing the model rows: weights in memory at four precisions, FLOP per token.
void setupMemory(QCustomPlot* plot);
void drawMemory(QCustomPlot* plot, const ModelSnapshot& m, const Theme& t);
QString memoryCsv(const ModelSnapshot& m);

// The block drawing's data: every layer's kind and experts, and the experts highlighted.
QString blockCsv(const ModelSnapshot& m);

}  // namespace ModelCharts
