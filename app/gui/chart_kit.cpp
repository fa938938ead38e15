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
  numberTicks(plot->xAxis);  // a chart with ticks of its own sets them after this
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
// A ticker fitted to its axis's length as last laid out (ticks are made before the layout of a
// replot); setFittedTicker below replots once more when the layout then gives the axis another
// length than the ticks were fitted to.
class FittedTicker : public QCPAxisTicker {
 public:
  explicit FittedTicker(QCPAxis* axis) : m_axis(axis) {}
  double pixels() const {
    return m_axis->orientation() == Qt::Vertical ? m_axis->axisRect()->height() : m_axis->axisRect()->width();
  }
  double usedPixels = -1;  // what the ticks were fitted to

 protected:
  // The room one label of `width` pixels takes along the axis, plus a gap: a fifth of a line
  // between rows of labels (as a text's line spacing), half a line between labels side by side.
  double room(double width) const {
    const QFontMetricsF fm(m_axis->tickLabelFont());
    if (m_axis->orientation() == Qt::Vertical) return fm.height() * 1.2;
    const double angle = std::abs(m_axis->tickLabelRotation()) * M_PI / 180.0;
    return (angle > 0.1 ? fm.height() / std::sin(angle) : width) + fm.height() * 0.5;
  }
  QCPAxis* m_axis;  // the axis that owns this ticker
};

// Ticks at whole numbers, every `step` of them, the step chosen at each replot (so after a zoom
// too) as the smallest of `steps` whose labels keep a gap between them on the axis as drawn:
// 64, 128 or 256 experts get 0, 16, 32… at a glance, 8 get every one.
class FittingTicker : public FittedTicker {
 public:
  FittingTicker(QCPAxis* axis, int count, std::function<QString(int)> label, QVector<int> steps)
      : FittedTicker(axis), m_count(count), m_label(std::move(label)), m_steps(std::move(steps)) {}

 protected:
  double getTickStep(const QCPRange& range) override {
    const bool vertical = m_axis->orientation() == Qt::Vertical;
    usedPixels = pixels();
    const double perUnit = usedPixels / std::max(1e-9, range.size());
    const QFontMetricsF fm(m_axis->tickLabelFont());
    const int lo = std::max(0, int(std::floor(range.lower))), hi = std::min(m_count - 1, int(std::ceil(range.upper)));
    double widest = 0;
    for (int i = lo; i <= hi && !vertical; ++i) widest = std::max(widest, fm.horizontalAdvance(labelOf(i)));
    const double need = room(widest);
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
  int m_count;
  std::function<QString(int)> m_label;
  QVector<int> m_steps;
};

// Numbers on a linear axis at QCustomPlot's usual readable steps (1, 2, 2.5, 5 × 10ⁿ), but never
// closer than their labels allow: a narrow chart gets 0, 100, 200 where a wide one has every 25.
class NumberTicker : public FittedTicker {
 public:
  using FittedTicker::FittedTicker;

 protected:
  double getTickStep(const QCPRange& range) override {
    usedPixels = pixels();
    double step = QCPAxisTicker::getTickStep(range);
    if (!(step > 0) || range.size() <= 0 || usedPixels <= 0) return step;
    const double perUnit = usedPixels / range.size();
    const QFontMetricsF fm(m_axis->tickLabelFont());
    const QLocale locale = m_axis->parentPlot()->locale();
    const QChar format = m_axis->numberFormat().isEmpty() ? QLatin1Char('g') : m_axis->numberFormat().at(0);
    for (int guard = 0; guard < 40; ++guard) {
      double widest = 0;
      for (double tick : createTickVector(step, range))
        widest = std::max(widest, fm.horizontalAdvance(getTickLabel(tick, locale, format, m_axis->numberPrecision())));
      if (step * perUnit >= room(widest)) break;
      const double magnitude = std::pow(10.0, std::floor(std::log10(step) + 1e-9));
      const double mantissa = step / magnitude;
      step = (mantissa < 1.5 ? 2 : mantissa < 2.25 ? 2.5 : mantissa < 3.5 ? 5 : 10) * magnitude;
    }
    return step;
  }
};

// A tick and grid line at every power of ten ("each step is 10×"), labelled every 1st, 2nd or
// 3rd decade over up to three decades, else only 1K, 1M, 1B… (every 3rd, 6th, 9th…): the fewest
// skipped that keep the labels apart on the axis as drawn.
class DecadeTicker : public FittedTicker {
 public:
  DecadeTicker(QCPAxis* axis, std::function<QString(double)> f) : FittedTicker(axis), m_format(std::move(f)) {}

 protected:
  int getSubTickCount(double) override { return 0; }
  QVector<double> createTickVector(double, const QCPRange& range) override {
    QVector<double> ticks;
    if (range.lower <= 0) return ticks;
    const int lo = int(std::ceil(std::log10(range.lower) - 1e-9)), hi = int(std::floor(std::log10(range.upper) + 1e-9));
    for (int e = lo; e <= hi; ++e) ticks << std::pow(10.0, e);
    usedPixels = pixels();
    const double perDecade = usedPixels / std::max(1e-9, std::log10(range.upper / range.lower));
    const QFontMetricsF fm(m_axis->tickLabelFont());
    double widest = 0;
    for (double t : ticks) widest = std::max(widest, fm.horizontalAdvance(m_format(t)));
    const QVector<int> every = hi - lo > 3 ? QVector<int>{3, 6, 9, 12} : QVector<int>{1, 2, 3};
    m_labelEvery = every.last();
    for (int n : every)
      if (n * perDecade >= room(widest)) {
        m_labelEvery = n;
        break;
      }
    return ticks;
  }
  QString getTickLabel(double tick, const QLocale&, QChar, int) override {
    const int e = int(std::lround(std::log10(tick)));
    return ((e % m_labelEvery) + m_labelEvery) % m_labelEvery == 0 ? m_format(tick) : QString();
  }

 private:
  std::function<QString(double)> m_format;
  int m_labelEvery = 1;
};
}  // namespace

namespace {
// Ticks are made before a replot lays the axes out: when the layout then gives an axis another
// length than its ticks were fitted to (a new chart, a resize, the other theme), one more replot
// fits them again. Connected once per axis; it reads whichever ticker the axis has then.
void setFittingTicker(QCPAxis* axis, QSharedPointer<FittedTicker> ticker) {
  axis->setTicker(ticker);
  if (axis->property("fittingTicks").toBool()) return;
  axis->setProperty("fittingTicks", true);
  QCustomPlot* plot = axis->parentPlot();
  QObject::connect(plot, &QCustomPlot::afterReplot, axis, [axis, plot] {
    auto* t = dynamic_cast<FittedTicker*>(axis->ticker().data());
    if (t && t->usedPixels >= 0 && std::abs(t->usedPixels - t->pixels()) > 0.5) plot->replot(QCustomPlot::rpQueuedReplot);
  });
}
}  // namespace

void numberTicks(QCPAxis* axis) { setFittingTicker(axis, QSharedPointer<NumberTicker>::create(axis)); }

void singleTick(QCPAxis* axis, double at) {
  QSharedPointer<QCPAxisTickerText> one(new QCPAxisTickerText);
  one->addTick(at, QString::number(at));
  axis->setTicker(one);
}

void decadeTicks(QCPAxis* axis, std::function<QString(double)> label) {
  axis->setScaleType(QCPAxis::stLogarithmic);
  setFittingTicker(axis, QSharedPointer<DecadeTicker>::create(axis, std::move(label)));
}

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

namespace {
// Before each replot, a legend under the axes takes as many of its columns (up to the number it
// was given) as fit the plot's width, so a narrow chart wraps "CV, layer 0" onto more rows
// instead of cutting it. Connected once per plot.
void fitLegendColumns(QCustomPlot* plot) {
  if (plot->property("legendFits").toBool()) return;
  plot->setProperty("legendFits", true);
  QObject::connect(plot, &QCustomPlot::beforeReplot, plot, [plot] {
    QCPLegend* legend = plot->legend;
    if (!legend || !legend->visible() || legend->layout() != plot->plotLayout()) return;
    const QVariant wanted = legend->property("maxColumns");
    if (!wanted.isValid()) return;
    QVector<double> itemWidths;  // in fill order; the grid's empty cells left out
    for (int i = 0; i < legend->itemCount(); ++i)
      if (QCPAbstractLegendItem* item = legend->item(i)) itemWidths << item->minimumOuterSizeHint().width();
    const int n = int(itemWidths.size());
    if (n == 0) return;
    const int most = wanted.toInt() <= 0 ? n : std::min(n, wanted.toInt());
    const QMargins m = legend->margins();
    const double room = plot->viewport().width() - m.left() - m.right() - 4;
    int columns = 1;
    for (int c = most; c >= 1; --c) {
      QVector<double> widths(c, 0.0);
      for (int i = 0; i < n; ++i) widths[i % c] = std::max(widths[i % c], itemWidths[i]);
      double total = legend->columnSpacing() * (c - 1);
      for (double w : widths) total += w;
      if (total <= room) {
        columns = c;
        break;
      }
    }
    if (columns != legend->wrap()) {
      legend->setWrap(columns);
      legend->setFillOrder(QCPLayoutGrid::foColumnsFirst, true);
    }
  });
}
}  // namespace

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
  legend->setProperty("maxColumns", columns);
  legend->setMargins(QMargins(6, 2, 6, 2));
  fitLegendColumns(plot);
  return legend;
}

void legendColumns(QCPLegend* legend, int columns) {
  legend->setProperty("maxColumns", columns);
  legend->setWrap(columns);
  legend->setFillOrder(QCPLayoutGrid::foColumnsFirst, true);
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
