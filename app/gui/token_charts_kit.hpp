// Helpers of the Tokens view's charts shared by token_charts.cpp (routing heatmap, expert load)
// and token_detail_charts.cpp (why, co-activation, next token, token through the layers).
#pragma once

#include <QString>
#include <QVector>
#include <cstdint>

#include "token_charts.hpp"

class QCustomPlot;
class QCPAxisRect;
class QCPLegend;

namespace TokenCharts::kit {

QString tr(const char* s);
// A token's label for an axis: one character where possible, long pieces cut with an ellipsis.
QString axisLabel(const QString& label);
// The selected token, or the last one.
int tokenOrLast(const TokensSnapshot& s, int token);
// The name of the i-th most probable next token.
QString nextName(const TokensSnapshot& s, int i);
// What became of the router's choice at one (token, expert) cell, at length or brief.
QString choiceText(const TokensSnapshot::Layer::Cell& c, int64_t capacity, bool brief);

// Marks over a routing heatmap, one graph per kind (each with its legend entry):
//   chosen     white circle, dark outline: visible on every colour and in greyscale;
//   dropped    grey ×, dark outline: the router chose the expert but it was full (capacity);
//   re-routed  orange diamond: the slot went to the token's next-best expert with room.
enum MarkKind { kChosen = 0, kDropped = 1, kRerouted = 2 };
struct Mark {
  double x, y;
  int kind;
};
// The mark of slot i of a layer at (x, y) = (token, expert) or (expert, layer row).
bool slotMark(const TokensSnapshot::Layer& L, int i, bool expertOnX, double other, Mark* m);
// One graph per kind present; size > 0 makes the markers smaller than the theme's.
void addMarks(QCustomPlot* plot, QCPAxisRect* rect, const QVector<Mark>& marks, int K, bool capacity, bool reroute,
              QCPLegend* legend, double outlineWidth, double size = 0);

}  // namespace TokenCharts::kit
