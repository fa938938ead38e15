// The Tokens view's charts, drawn from one immutable snapshot of the text so far (generation_worker.hpp):
// the routing heatmap (tokens × experts, with the top-k marked and, under a capacity limit, the
// dropped and re-routed choices), the expert load, the router's arithmetic for one token ("why"),
// expert co-activation, the next-token probabilities and one token through every layer. Each is a
// free function of (plot, snapshot, layer, token) with a CSV of exactly the data it draws, like
// RunCharts; the Tokens view only keeps the controls, the worker and the selection. `layer`
// indexes snapshot.layers (-1 = all layers: the heatmap shows every layer, the charts of one
// layer the first); `token` is the selected token (-1 = the last).
#pragma once

#include <QPointF>
#include <QString>
#include <QVector>

#include "generation_worker.hpp"

class QCustomPlot;

namespace TokenCharts {

// The layer the charts of one layer show (the first for -1), or null when there is none.
const TokensSnapshot::Layer* layerAt(const TokensSnapshot& s, int layer);

// Routing heatmap: one layer's probabilities (tokens × experts), every layer as strips, or for
// many layers their load aggregated to layers × experts. Marks show where each slot ran.
void drawRoutingHeatmap(QCustomPlot* plot, const TokensSnapshot& s, int layer, int token);
QString routingHeatmapTitle(const TokensSnapshot& s, int layer);
QString routingHeatmapCaption(const TokensSnapshot& s, int layer);
QString routingHeatmapCsv(const TokensSnapshot& s);  // every layer, token and expert
// The heatmap's tooltip for a cell: probability, logit, and what became of the choice.
QString heatmapToolTip(const TokensSnapshot& s, int layer, int token, int expert);
// Token t as the tooltips and the Why panel name it: its vocabulary piece, label and id
// ("\"Ġworld\"  ␣world  (id 1879)"), the label and id for the byte tokenizer, the id alone
// for a model without a tokenizer.
QString tokenDescription(const TokensSnapshot& s, int t);
// A label short enough for an axis tick: long labels end in an ellipsis.
QString shortLabel(const QString& label, int maxChars);
// The heatmap cell (token, expert) under a pixel of the drawn plot; false when none is drawn.
bool heatmapCellAt(QCustomPlot* plot, QPointF pixel, int* token, int* expert);
// Reading the drawn heatmap back (tests): the cell's value, and the mark drawn on it:
// -1 none, 0 chosen, 1 dropped (over capacity), 2 re-routed here.
double heatmapValue(QCustomPlot* plot, int token, int expert);
int heatmapMark(QCustomPlot* plot, int token, int expert);
int markedPerToken(QCustomPlot* plot, int token);  // chosen or re-routed marks of a token

// The text coloured by expert is a widget (token_text.hpp); its data: each token's first choice.
QString textCsv(const TokensSnapshot& s, int layer);

// Share of the choices each expert took in one layer against the even split (and the capacity).
void drawLoad(QCustomPlot* plot, const TokensSnapshot& s, int layer);
QString loadCaption(const TokensSnapshot& s);
QString loadCsv(const TokensSnapshot& s, int layer);
// Share of a layer's T·K choices each expert ran, and the share it refused when full (dropped).
void expertLoad(const TokensSnapshot::Layer& L, int E, QVector<double>* ran, QVector<double>* refused);

// The router's arithmetic for one token in one layer, as rich text, and its table as CSV.
// It lists the top experts only: those the token was sent to (or meant for, under a capacity) and
// the next most probable (whyRowCount rows), then one line for the rest.
QString whyHtml(const TokensSnapshot& s, int layer, int token);
int whyRowCount(const TokensSnapshot& s, const TokensSnapshot::Layer& L, int token);
QString whyCsv(const TokensSnapshot& s, int layer, int token);

// How often experts i and j were chosen for the same token in one layer.
void drawCoactivation(QCustomPlot* plot, const TokensSnapshot& s, int layer);
QString coactivationCsv(const TokensSnapshot& s, int layer);

// The most likely next tokens.
void drawNext(QCustomPlot* plot, const TokensSnapshot& s);
QString nextCsv(const TokensSnapshot& s);

// The selected token's probabilities in every layer (layers × experts), its choices marked.
void drawTokenLayers(QCustomPlot* plot, const TokensSnapshot& s, int token);
QString tokenLayersCaption(const TokensSnapshot& s);
QString tokenLayersCsv(const TokensSnapshot& s, int token);

}  // namespace TokenCharts
