// The chart kit: what every view's charts have in common, in one place. A chart is a free
// function that clears a QCustomPlot and draws one picture from immutable data (run_charts.hpp,
// token_charts.hpp, model_charts.hpp); it builds on these pieces, so the same idea looks the
// same in every view: heatmaps in viridis with discrete cells and a colour scale, integer ticks
// for experts, the legend in a row under the axes, named reference lines, a message in an empty
// chart, the theme applied last. Also the CSV and number formats the charts' data is written in.
#pragma once

#include <QColor>
#include <QString>
#include <QVector>
#include <functional>

class QCPAxis;
class QCPAxisRect;
class QCPColorMap;
class QCPColorScale;
class QCPGraph;
class QCPLegend;
class QCPRange;
class QCustomPlot;

namespace ChartKit {

// Clear a plot down to one axis rect with a (hidden) legend in its corner.
QCPAxisRect* resetPlot(QCustomPlot* plot);
// Clear a plot down to nothing (no axis rect, no legend), for a chart that lays out its own.
void clearPlot(QCustomPlot* plot);

// A heatmap on `rect`'s bottom and left axes: keyCells × valueCells cells whose centres span
// keyRange × valueRange, in viridis over dataRange, never interpolated (discrete cells such as
// tokens × experts must not smear into a blur). The caller fills the cells.
QCPColorMap* heatmap(QCPAxisRect* rect, int keyCells, int valueCells, const QCPRange& keyRange,
                     const QCPRange& valueRange, const QCPRange& dataRange);
// The colour scale of heatmaps coloured over `range`, labelled, placed in the plot's layout at
// (row, column): right of the axes by default.
QCPColorScale* colorScale(QCustomPlot* plot, const QCPRange& range, const QString& label, int row = 0, int column = 1);

// Ticks at whole numbers 0..count-1 (experts): every one when their labels fit, else every 2nd,
// 4th, 8th, 16th… (chosen again at every replot, so zooming in brings them back), never two
// labels closer than half a line.
void integerTicks(QCPAxis* axis, int count);
// Likewise with labels of their own (tokens, "L12"), every 1st, 2nd, 3rd, 4th, 5th, 10th… item;
// the room a label needs is measured in the axis's font (and rotation) as drawn.
void fittingTicks(QCPAxis* axis, int count, std::function<QString(int)> label);
// Numbers on a linear axis (training steps) at readable steps, thinned (every 25 → 50 → 100…)
// until their labels keep apart on the axis as drawn; fitted again at every replot.
void numberTicks(QCPAxis* axis);
// One tick at `at`, labelled with its number (a chart of a single training step).
void singleTick(QCPAxis* axis, double at);
// A log axis with a tick and grid line at every power of ten, labelled (by `label`) every 1st,
// 2nd or 3rd decade, or every 3rd, 6th, 9th… over more than three, as the axis's length allows.
void decadeTicks(QCPAxis* axis, std::function<QString(double)> label);
// Zoom and pan stay within [lo, hi]: a heatmap never scrolls off its cells.
void boundedPanZoom(QCPAxis* axis, double lo, double hi);
// A line graph on the bottom axis and `y`, in the theme's line width.
QCPGraph* line(QCustomPlot* plot, QCPAxis* y, const QString& name, const QColor& color,
               Qt::PenStyle style = Qt::SolidLine);

// The legend in a row of the layout, where it never covers data: under the axes by default
// (row 1), or in the row given; `columns` entries wide (0: all in one row). Made when the plot
// has none (after clearPlot), moved out of the axes' corner when it is there.
QCPLegend* legendBelow(QCustomPlot* plot, int columns = 0, int row = 1);
// Its columns, when they fit: legendBelow's legend takes as many of them as fit the plot's
// width at each replot (fewer: more rows), never cutting an entry.
void legendColumns(QCPLegend* legend, int columns);

// A horizontal reference line across a plot's axes (the even split 1/E, an expert's capacity),
// named in the right margin level with its line, where the name never covers a bar. Call after
// the y range is set; the right margin is fixed to the widest name (keep names short; a line
// break is fine).
struct ReferenceLine {
  double value;
  QString name;
  QColor color;
  Qt::PenStyle style = Qt::DashLine;
};
void referenceLines(QCustomPlot* plot, const QVector<ReferenceLine>& lines);

// A message in the middle of an empty chart, so an empty chart says why it is empty.
void emptyMessage(QCustomPlot* plot, const QString& text);

// The theme on every axis, the legend and `scale` (if any), then a queued replot. Last.
void finish(QCustomPlot* plot, QCPColorScale* scale = nullptr);

// A CSV field (RFC 4180): in double quotes, inner quotes doubled, when it holds a comma, a
// quote or a line break; as it is otherwise.
QString csvEscape(const QString& field);
// A text field always in double quotes (inner quotes doubled), for columns that quote every cell.
QString csvQuote(QString field);
// A number in a CSV cell: eight significant digits, empty for NaN (no value).
QString csvNumber(double v);

// 46.7B, 1.25M, 900: three significant digits with the largest unit under 1000.
QString countText(double n);
// 93.4 GB, 512 kB: likewise, in bytes (powers of 1000, as disk and GPU makers count).
QString bytesText(double bytes);

}  // namespace ChartKit
