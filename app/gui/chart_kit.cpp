#include "chart_kit.hpp"

#include <QFontMetrics>
#include <QStringList>
#include <algorithm>
#include <cmath>
#include <functional>
#include <qcustomplot.h>

#include "theme.hpp"

namespace ChartKit {

namespace {

// Words on lines of at most `width` characters (a chart item does not wrap by itself).
QString wrapWords(const QString& text, int width) {
  QString out, line;
  for (const QString& word : text.split(' ', Qt::SkipEmptyParts)) {
    if (!line.isEmpty() && line.size() + 1 + word.size() > width) {
      out += line + '\n';
      line.clear();
    }
    line += (line.isEmpty() ? QString() : QStringLiteral(" ")) + word;
  }
  return out + line;
}

QString scaled(double v, const QStringList& units) {
  int u = 0;
  while (std::abs(v) >= 999.5 && u + 1 < units.size()) {
    v /= 1000.0;
    ++u;
  }
  return QString::number(v, 'g', 3) + units[u];
}

}  // namespace

void clearPlot(QCustomPlot* plot) {
  plot->clearPlottables();
  plot->clearItems();
  plot->plotLayout()->clear();  // deletes the axis rects and with them the legend
}

QCPAxisRect* resetPlot(QCustomPlot* plot) {
  clearPlot(plot);
  auto* rect = new QCPAxisRect(plot, true);
  plot->plotLayout()->addElement(0, 0, rect);
  plot->xAxis = rect->axis(QCPAxis::atBottom);
  plot->yAxis = rect->axis(QCPAxis::atLeft);
  plot->xAxis2 = rect->axis(QCPAxis::atTop);
  plot->yAxis2 = rect->axis(QCPAxis::atRight);
  plot->xAxis2->setVisible(false);
  plot->yAxis2->setVisible(false);
  plot->legend = new QCPLegend;
  plot->legend->setVisible(false);
  rect->insetLayout()->addElement(plot->legend, Qt::AlignRight | Qt::AlignTop);  // moved where a chart needs
  rect->insetLayout()->setMargins(QMargins(12, 12, 12, 12));
  plot->legend->setLayer(QStringLiteral("legend"));
  return rect;
}

QCPColorMap* heatmap(QCPAxisRect* rect, int keyCells, int valueCells, const QCPRange& keyRange,
                     const QCPRange& valueRange, const QCPRange& dataRange) {
  auto* map = new QCPColorMap(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  map->data()->setSize(keyCells, valueCells);
  map->data()->setRange(keyRange, valueRange);
  map->setInterpolate(false);  // discrete cells, never smeared
  map->setGradient(viridisGradient());
  map->setDataRange(dataRange);
  return map;
}

QCPColorScale* colorScale(QCustomPlot* plot, const QCPRange& range, const QString& label, int row, int column) {
  auto* scale = new QCPColorScale(plot);
  scale->setGradient(viridisGradient());
  scale->setDataRange(range);
  scale->axis()->setLabel(label);
  plot->plotLayout()->addElement(row, column, scale);
  return scale;
}

namespace {
// Ticks at whole numbers, every `step` of them, the step chosen at each replot (so after a zoom
// too) as the smallest of `steps` whose labels keep a gap between them on the axis as drawn:
// 64, 128 or 256 experts get 0, 16, 32… at a glance, 8 get every one.
class FittingTicker : public QCPAxisTicker {
 public:
  FittingTicker(QCPAxis* axis, int count, std::function<QString(int)> label, QVector<int> steps)
      : m_axis(axis), m_count(count), m_label(std::move(label)), m_steps(std::move(steps)) {}

  // The axis's length in pixels as last laid out (ticks are made before the layout of a replot).
  double pixels() const {
    return m_axis->orientation() == Qt::Vertical ? m_axis->axisRect()->height() : m_axis->axisRect()->width();
  }
  double usedPixels = -1;  // what the ticks were fitted to

 protected:
  double getTickStep(const QCPRange& range) override {
    const bool vertical = m_axis->orientation() == Qt::Vertical;
    usedPixels = pixels();
    const double pixels = usedPixels;
    const double perUnit = pixels / std::max(1e-9, range.size());
    const QFontMetricsF fm(m_axis->tickLabelFont());
    const int lo = std::max(0, int(std::floor(range.lower))), hi = std::min(m_count - 1, int(std::ceil(range.upper)));
    double widest = 0;
    for (int i = lo; i <= hi && !vertical; ++i) widest = std::max(widest, fm.horizontalAdvance(labelOf(i)));
    const double angle = std::abs(m_axis->tickLabelRotation()) * M_PI / 180.0;
    // The room one label takes along the axis, plus a gap: a fifth of a line between rows of
    // labels (as a text's line spacing), half a line between labels side by side.
    const double need = vertical ? fm.height() * 1.2 : (angle > 0.1 ? fm.height() / std::sin(angle) : widest) + fm.height() * 0.5;
    for (int step : m_steps)
      if (step * perUnit >= need) return step;
    return m_steps.isEmpty() ? 1 : m_steps.last();
  }
  int getSubTickCount(double) override { return 0; }
  QString getTickLabel(double tick, const QLocale&, QChar, int) override { return labelOf(int(std::lround(tick))); }
  QVector<double> createTickVector(double step, const QCPRange& range) override {
    QVector<double> ticks;
    const int s = std::max(1, int(std::lround(step)));
    for (int i = std::max(0, int(std::ceil(range.lower / s)) * s); i <= range.upper && i < m_count; i += s) ticks << i;
    return ticks;
  }

 private:
  QString labelOf(int i) const { return m_label ? m_label(i) : QString::number(i); }
  QCPAxis* m_axis;  // the axis that owns this ticker
  int m_count;
  std::function<QString(int)> m_label;
  QVector<int> m_steps;
};
}  // namespace

namespace {
// Ticks are made before a replot lays the axes out: when the layout then gives an axis another
// length than its ticks were fitted to (a new chart, a resize, the other theme), one more replot
// fits them again. Connected once per axis; it reads whichever ticker the axis has then.
void setFittingTicker(QCPAxis* axis, QSharedPointer<FittingTicker> ticker) {
  axis->setTicker(ticker);
  if (axis->property("fittingTicks").toBool()) return;
  axis->setProperty("fittingTicks", true);
  QCustomPlot* plot = axis->parentPlot();
  QObject::connect(plot, &QCustomPlot::afterReplot, axis, [axis, plot] {
    auto* t = dynamic_cast<FittingTicker*>(axis->ticker().data());
    if (t && t->usedPixels >= 0 && std::abs(t->usedPixels - t->pixels()) > 0.5) plot->replot(QCustomPlot::rpQueuedReplot);
  });
}
}  // namespace

void integerTicks(QCPAxis* axis, int count) {
  setFittingTicker(axis, QSharedPointer<FittingTicker>::create(
                             axis, count, nullptr, QVector<int>{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}));
}

void fittingTicks(QCPAxis* axis, int count, std::function<QString(int)> label) {
  setFittingTicker(axis, QSharedPointer<FittingTicker>::create(
                             axis, count, std::move(label), QVector<int>{1, 2, 3, 4, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000}));
}

void boundedPanZoom(QCPAxis* axis, double lo, double hi) {
  QObject::connect(axis, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), axis, [axis, lo, hi](const QCPRange& r) {
    QCPRange b = r;
    if (b.size() > hi - lo) b = QCPRange(lo, hi);
    if (b.lower < lo) b = QCPRange(lo, lo + b.size());
    if (b.upper > hi) b = QCPRange(hi - b.size(), hi);
    if (b.lower != r.lower || b.upper != r.upper) axis->setRange(b);
  });
}

QCPGraph* line(QCustomPlot* plot, QCPAxis* y, const QString& name, const QColor& color, Qt::PenStyle style) {
  QCPGraph* g = plot->addGraph(plot->xAxis, y);
  g->setName(name);
  g->setPen(QPen(color, Theme::current().lineWidth, style));
  return g;
}

QCPLegend* legendBelow(QCustomPlot* plot, int columns, int row) {
  const bool made = !plot->legend;
  if (made) plot->legend = new QCPLegend;
  QCPLegend* legend = plot->legend;
  legend->setVisible(true);
  if (legend->layout() != plot->plotLayout()) {
    if (auto* inset = qobject_cast<QCPLayoutInset*>(legend->layout())) inset->take(legend);
    plot->plotLayout()->addElement(row, 0, legend);
    plot->plotLayout()->setRowStretchFactor(row, 0.001);
  }
  if (made) legend->setLayer(QStringLiteral("legend"));  // once in the layout: it needs its plot
  legend->setFillOrder(QCPLayoutGrid::foColumnsFirst);
  legend->setWrap(columns);
  legend->setMargins(QMargins(6, 2, 6, 2));
  return legend;
}

void referenceLines(QCustomPlot* plot, const QVector<ReferenceLine>& lines) {
  const Theme& t = Theme::current();
  QFont font = t.tickLabel;
  font.setBold(true);
  const QFontMetrics fm(font);
  const int gap = t.presentation ? 8 : 5;  // between the axes' edge and the name
  const double span = plot->yAxis->range().size();
  int widest = 0;
  for (int i = 0; i < int(lines.size()); ++i) {
    const ReferenceLine& l = lines[i];
    auto* line = new QCPItemStraightLine(plot);
    line->point1->setCoords(0, l.value);
    line->point2->setCoords(1, l.value);
    line->setPen(QPen(l.color, t.lineWidth, l.style));
    auto* name = new QCPItemText(plot);
    name->setClipToAxisRect(false);  // it lives in the margin, outside the axes
    name->position->setTypeX(QCPItemPosition::ptAxisRectRatio);
    name->position->setCoords(1.0, l.value);
    // Level with its line; when two lines are close, the upper's name sits above it and the
    // lower's below, so the names never overlap each other either.
    Qt::Alignment vertical = Qt::AlignVCenter;
    for (int j = 0; j < int(lines.size()); ++j)
      if (j != i && std::abs(lines[j].value - l.value) < 0.25 * span)
        vertical = l.value > lines[j].value || (l.value == lines[j].value && i < j) ? Qt::AlignBottom : Qt::AlignTop;
    name->setPositionAlignment(Qt::AlignLeft | vertical);
    name->setTextAlignment(Qt::AlignLeft);
    name->setPadding(QMargins(gap, 0, 0, 0));
    name->setText(l.name);
    name->setFont(font);
    name->setColor(l.color);
    widest = std::max(widest, fm.boundingRect(QRect(), Qt::TextDontClip, l.name).width());
  }
  if (lines.isEmpty()) return;
  QCPAxisRect* rect = plot->axisRect();
  rect->setAutoMargins(QCP::msLeft | QCP::msTop | QCP::msBottom);
  rect->setMargins(QMargins(0, 0, widest + 2 * gap, 0));
}

void emptyMessage(QCustomPlot* plot, const QString& text) {
  auto* label = new QCPItemText(plot);
  label->position->setType(QCPItemPosition::ptAxisRectRatio);
  label->position->setCoords(0.5, 0.5);
  // Wrapped, so it fits a half-width chart (about 500 px) in either theme's font.
  label->setText(wrapWords(text, Theme::current().presentation ? 40 : 60));
  label->setTextAlignment(Qt::AlignCenter);
  label->setFont(Theme::current().text);
  label->setColor(Theme::current().subtle);
  plot->xAxis->setTickLabels(false);
  plot->yAxis->setTickLabels(false);
}

void finish(QCustomPlot* plot, QCPColorScale* scale) {
  const Theme& t = Theme::current();
  t.applyTo(plot);
  if (scale) {
    scale->axis()->setLabelFont(t.axisLabel);
    scale->axis()->setTickLabelFont(t.tickLabel);
    scale->axis()->setLabelColor(t.foreground);
    scale->axis()->setTickLabelColor(t.foreground);
  }
  plot->replot(QCustomPlot::rpQueuedReplot);
}

QString csvQuote(QString field) { return '"' + field.replace('"', QStringLiteral("\"\"")) + '"'; }

QString csvEscape(const QString& field) {
  const bool quote = field.contains(',') || field.contains('"') || field.contains('\n') || field.contains('\r');
  return quote ? csvQuote(field) : field;
}

QString csvNumber(double v) { return std::isnan(v) ? QString() : QString::number(v, 'g', 8); }

QString countText(double n) { return scaled(n, {"", "K", "M", "B", "T"}); }
QString bytesText(double bytes) { return scaled(bytes, {" B", " kB", " MB", " GB", " TB", " PB"}); }

}  // namespace ChartKit
