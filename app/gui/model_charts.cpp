#include "model_charts.hpp"

#include <QFontMetricsF>
#include <QObject>
#include <algorithm>
#include <cmath>
#include <functional>
#include <qcustomplot.h>

#include "chart_kit.hpp"
#include "theme.hpp"

namespace ModelCharts {

using namespace ChartKit;

namespace {

QString tr(const char* s) { return QObject::tr(s); }

// Tick labels in the units above instead of QCustomPlot's "1.2·10^6".
class FormattedTicker : public QCPAxisTicker {
 public:
  explicit FormattedTicker(std::function<QString(double)> f) : m_format(std::move(f)) {}

 protected:
  QString getTickLabel(double tick, const QLocale&, QChar, int) override { return m_format(tick); }

 private:
  std::function<QString(double)> m_format;
};

// A log axis with a tick at every power of ten, labels thinned to fit (ChartKit::decadeTicks).
void setLogAxis(QCPAxis* axis, std::function<QString(double)> format) {
  ChartKit::decadeTicks(axis, std::move(format));
}

// Whole decades around [lo, hi], so the log axis starts and ends on a labelled tick.
QCPRange decades(double lo, double hi) {
  lo = std::max(lo, 1.0);
  hi = std::max(hi, lo * 10);
  return QCPRange(std::pow(10.0, std::floor(std::log10(lo))), std::pow(10.0, std::ceil(std::log10(hi))));
}

QString componentLabel(int i) {
  QString s = QString::fromLatin1(moelab::component_name(moelab::Component(i))).replace('_', ' ');
  return s.replace(QStringLiteral("ffn"), QStringLiteral("FFN")).replace(QStringLiteral("lm head"), QStringLiteral("LM head"));
}

// Horizontal bars along a vertical key axis, outlined so neighbours stay apart in greyscale.
QCPBars* horizontalBars(QCPAxis* keys, QCPAxis* values, const QColor& fill, double width, const Theme& t) {
  auto* bars = new QCPBars(keys, values);
  bars->setWidth(width);
  bars->setBrush(fill);
  bars->setPen(QPen(t.foreground, t.presentation ? 1.5 : 1));
  bars->setBaseValue(values->scaleType() == QCPAxis::stLogarithmic ? 1 : 0);  // a log axis has no zero
  return bars;
}

QCPItemText* textItem(QCustomPlot* plot, const QString& text, const QFont& font, const QColor& color, Qt::Alignment align) {
  auto* label = new QCPItemText(plot);
  label->setText(text);
  label->setFont(font);
  label->setColor(color);
  label->setPositionAlignment(align);
  return label;
}

// A point whose x is a fraction of the axis rect (0 = left edge, 1 = right edge) and y a row.
void placeInRow(QCPItemPosition* pos, QCPAxisRect* rect, double x, double key) {
  pos->setAxisRect(rect);
  pos->setAxes(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  pos->setTypeX(QCPItemPosition::ptAxisRectRatio);
  pos->setTypeY(QCPItemPosition::ptPlotCoords);
  pos->setCoords(x, key);
}

// The number column right of the bars, outside the plotting area.
QCPItemText* rowLabel(QCustomPlot* plot, QCPAxisRect* rect, double key, const QString& text, const QFont& font,
                      const QColor& color) {
  auto* label = textItem(plot, text, font, color, Qt::AlignLeft | Qt::AlignVCenter);
  label->setClipToAxisRect(false);
  placeInRow(label->position, rect, 1.0, key);
  label->setPadding(QMargins(6, 0, 0, 0));
  return label;
}

// A thick outline around one row of a horizontal bar chart (the compared model).
void outlineRow(QCustomPlot* plot, QCPAxisRect* rect, double key, const QPen& pen) {
  auto* box = new QCPItemRect(plot);
  box->setClipToAxisRect(false);
  placeInRow(box->topLeft, rect, 0.0, key + 0.48);
  placeInRow(box->bottomRight, rect, 1.0, key - 0.48);
  box->setPen(pen);
  box->setBrush(Qt::NoBrush);
}

// The right margin an axis rect needs for a column of labels.
void reserveRightMargin(QCPAxisRect* rect, const QFont& font, const QStringList& labels) {
  const QFontMetrics fm(font);
  int w = 0;
  for (const QString& s : labels) w = std::max(w, fm.horizontalAdvance(s));
  rect->setAutoMargins(QCP::msLeft | QCP::msTop | QCP::msBottom);
  QMargins m = rect->margins();
  m.setRight(w + 14);
  rect->setMargins(m);
}

// CSV cells: whole numbers (text is quoted: csvQuote).
QString num(double v) { return QString::number(v, 'f', 0); }

}  // namespace

double tokenReadParams(const ModelSnapshot& m) {
  const auto embed = m.params.active_by[int(moelab::Component::Embeddings)];
  if (m.config.tie_word_embeddings) return double(m.params.active);  // the LM head reads the whole matrix
  return double(m.params.active - embed + std::min<int64_t>(embed, m.config.hidden_size));
}

namespace {
// Bytes per element of a dtype as config.json or a safetensors header names it.
double dtypeBytes(const QString& dtype) {
  const QString d = dtype.toLower();
  if (d.contains(QLatin1String("64"))) return 8;
  if (d.contains(QLatin1String("32"))) return 4;
  if (d.contains(QLatin1String("16"))) return 2;
  if (d.contains(QLatin1String("8"))) return 1;
  return 4;
}
QString dtypeShort(const QString& dtype) {
  const QString d = dtype.toLower();
  if (d == QLatin1String("bfloat16")) return QStringLiteral("bf16");
  if (d == QLatin1String("float16")) return QStringLiteral("f16");
  if (d == QLatin1String("float32") || d == QLatin1String("f32")) return QStringLiteral("fp32");
  return d;
}
}  // namespace

QString storageLine(const ModelSnapshot& m) {
  const double total = double(m.params.total);
  if (total <= 0) return {};
  const QString dtype = dtypeShort(m.storedDtype.isEmpty() ? QStringLiteral("float32") : m.storedDtype);
  // Bytes per element: the checkpoint's own average (mixed dtypes included), else the dtype's.
  const double stored = m.storedBytes > 0 ? m.storedBytes : total * dtypeBytes(dtype);
  const double perElement = stored / total;
  const QString read = tr("one token reads %1").arg(bytesText(tokenReadParams(m) * perElement));
  if (dtype == QLatin1String("fp32")) return tr("fp32: %1 · %2").arg(bytesText(stored), read);
  return tr("%1 as stored: %2 · fp32: %3 · %4").arg(dtype, bytesText(stored), bytesText(total * 4), read);
}

QString Row::label() const { return (lab ? QStringLiteral("★ ") : compared ? QStringLiteral("▶ ") : QString()) + name; }

QVector<Row> rows(const ModelSnapshot& m) {
  QVector<Row> rows;
  for (const RealModel& r : m.real)
    rows << Row{r.name, double(r.params.total), double(r.params.active), r.flops, false, r.id == m.compared};
  rows << Row{m.name.isEmpty() ? tr("lab model") : m.name, double(m.params.total), double(m.params.active), m.flops,
              true, false};
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.total < b.total; });
  return rows;
}

void setupParams(QCustomPlot* plot) {
  plot->plotLayout()->insertRow(0);
  plot->plotLayout()->addElement(0, 0, new QCPTextElement(plot, QString()));
  legendBelow(plot, 0, 2);
}

void drawParams(QCustomPlot* plot, const ModelSnapshot& m, const Theme& t) {
  plot->clearPlottables();
  plot->clearItems();
  QCPAxis* keys = plot->yAxis;
  QCPAxis* values = plot->xAxis;
  const double total = double(m.params.total), active = double(m.params.active);
  QCPBars* below = nullptr;
  for (int i = 0; i < moelab::kNumComponents; ++i) {
    if (m.params.total_by[i] == 0) continue;
    auto* bars = horizontalBars(keys, values, Theme::component(i), 0.6, t);
    const double share = total > 0 ? 100.0 * double(m.params.total_by[i]) / total : 0;
    bars->setName(QStringLiteral("%1 (%2)").arg(componentLabel(i),
                                                share < 1 ? QStringLiteral("<1%") : QString::number(share, 'f', 0) + '%'));
    bars->setData({1, 2}, {double(m.params.active_by[i]), double(m.params.total_by[i])}, true);
    if (below) bars->moveAbove(below);
    below = bars;
  }
  auto ticker = QSharedPointer<QCPAxisTickerText>::create();
  ticker->addTick(2, tr("Total"));
  ticker->addTick(1, tr("Active\nper token"));
  keys->setTicker(ticker);
  keys->setRange(0.4, 2.6);
  keys->grid()->setVisible(false);
  auto countTicker = QSharedPointer<FormattedTicker>::create(countText);
  countTicker->setTickCount(t.presentation ? 3 : 4);
  values->setTicker(countTicker);
  values->setLabel(tr("parameters"));
  values->setRange(0, std::max(1.0, total) * 1.22);
  for (const auto& [key, v] : {std::pair{2.0, total}, std::pair{1.0, active}}) {
    auto* label = textItem(plot, countText(v), t.axisLabel, t.foreground, Qt::AlignLeft | Qt::AlignVCenter);
    label->position->setCoords(v, key);
    label->setPadding(QMargins(6, 0, 0, 0));
  }
  if (auto* head = qobject_cast<QCPTextElement*>(plot->plotLayout()->element(0, 0))) {
    head->setText(tr("%1 total / %2 active per token (%3%)\n%4")
                      .arg(countText(total), countText(active))
                      .arg(total > 0 ? QString::number(100.0 * active / total, 'f', 0) : QStringLiteral("0"))
                      .arg(t.presentation ? storageLine(m).replace(QStringLiteral(" · one token"), QStringLiteral("\none token"))
                                          : storageLine(m)));
    head->setFont(t.axisLabel);
    head->setTextColor(t.foreground);
  }
  legendColumns(plot->legend, 2);
  plot->replot(QCustomPlot::rpQueuedReplot);
}

void setupRealModels(QCustomPlot* plot) {
  plot->plotLayout()->insertRow(0);
  legendBelow(plot, 0, 0);
}

void drawRealModels(QCustomPlot* plot, const ModelSnapshot& m, const Theme& t) {
  plot->clearPlottables();
  plot->clearItems();
  const QVector<Row> rows = ModelCharts::rows(m);
  setLogAxis(plot->xAxis, countText);
  auto* totalBars = horizontalBars(plot->yAxis, plot->xAxis, Theme::series(0), 0.4, t);
  auto* activeBars = horizontalBars(plot->yAxis, plot->xAxis, Theme::series(1), 0.4, t);
  totalBars->setName(tr("total parameters"));
  activeBars->setName(tr("active per token"));
  auto names = QSharedPointer<QCPAxisTickerText>::create();
  QStringList numbers;
  double lo = 1e300, hi = 0;
  for (int i = 0; i < int(rows.size()); ++i) {
    // Two bars per model, total above active, around the model's row.
    totalBars->addData(i + 0.2, rows[i].total);
    activeBars->addData(i - 0.2, rows[i].active);
    names->addTick(i, rows[i].label());
    numbers << countText(rows[i].total) + QStringLiteral(" / ") + countText(rows[i].active);
    lo = std::min(lo, rows[i].active);
    hi = std::max(hi, rows[i].total);
  }
  plot->yAxis->setTicker(names);
  plot->yAxis->setRange(-0.6, rows.size() - 0.4);
  plot->yAxis->grid()->setVisible(false);
  plot->xAxis->setRange(decades(lo, hi));
  plot->xAxis->setLabel(tr("parameters (log scale)"));
  for (int i = 0; i < int(rows.size()); ++i) {
    rowLabel(plot, plot->axisRect(), i, numbers[i], t.tickLabel, t.foreground);
    if (rows[i].compared) outlineRow(plot, plot->axisRect(), i, QPen(t.foreground, t.presentation ? 4 : 2.5));
  }
  numbers << tr("total / active");
  auto* header = rowLabel(plot, plot->axisRect(), rows.size() - 0.4, tr("total / active"), t.tickLabel, t.subtle);
  header->setPositionAlignment(Qt::AlignLeft | Qt::AlignBottom);
  reserveRightMargin(plot->axisRect(), t.tickLabel, numbers);
  legendColumns(plot->legend, 2);
  plot->replot(QCustomPlot::rpQueuedReplot);
}

void setupMemory(QCustomPlot* plot) {
  QCPAxisRect* mem = plot->axisRect();
  plot->plotLayout()->take(mem);
  auto* pair = new QCPLayoutGrid;
  plot->plotLayout()->addElement(0, 0, pair);
  pair->addElement(0, 0, mem);
  pair->addElement(0, 1, new QCPAxisRect(plot));
  pair->setColumnStretchFactor(0, 1.6);
  pair->setColumnSpacing(4);
  auto* rows = new QCPMarginGroup(plot);
  for (QCPAxisRect* r : plot->axisRects()) r->setMarginGroup(QCP::msTop | QCP::msBottom, rows);
  plot->plotLayout()->insertRow(0);
  legendBelow(plot, 0, 0);
  // Side by side when there is room for both axes' titles and ticks; in a narrow chart (the
  // lesson dock open, projector fonts) compute goes under memory, with the model names again.
  auto* columns = new QCPMarginGroup(plot);
  QObject::connect(plot, &QCustomPlot::beforeReplot, plot, [plot, pair, rows, columns] {
    if (plot->axisRectCount() != 2) return;
    QCPAxisRect* mem = plot->axisRect(0);
    QCPAxisRect* flop = plot->axisRect(1);
    const QFontMetricsF title(mem->axis(QCPAxis::atBottom)->labelFont());
    const QFontMetricsF ticks(mem->axis(QCPAxis::atLeft)->tickLabelFont());
    double names = 0;
    for (const QString& n : mem->axis(QCPAxis::atLeft)->tickVectorLabels()) names = std::max(names, ticks.horizontalAdvance(n));
    const double titles = std::max(title.horizontalAdvance(QObject::tr("weights in memory")),
                                   title.horizontalAdvance(QObject::tr("FLOP per token")));
    const int rowCount = int(mem->axis(QCPAxis::atLeft)->tickVector().size());
    const bool tall = plot->height() >= 2 * rowCount * ticks.height() * 1.1 + 8 * title.height();
    const bool stack = tall && plot->width() - names - 40 < 2.6 * (titles + 2 * title.height());
    // Side by side in a narrow chart: the short titles, so they never run into each other.
    const bool cramped = !stack && plot->width() - names - 40 < 2.6 * (titles + 2 * title.height());
    // Narrower still (projector fonts beside the lesson dock): a title wider than its half of the
    // chart is left out rather than run into the other; the caption says which side is which.
    const double avail = plot->width() - names - 40;
    const QString memTitle = cramped ? QObject::tr("memory") : QObject::tr("weights in memory");
    const QString flopTitle = cramped ? QObject::tr("FLOP/token") : QObject::tr("FLOP per token");
    const bool fitsMem = stack || title.horizontalAdvance(memTitle) < 0.95 * avail * 1.6 / 2.6;
    const bool fitsFlop = stack || title.horizontalAdvance(flopTitle) < 0.95 * avail / 2.6;
    mem->axis(QCPAxis::atBottom)->setLabel(fitsMem && fitsFlop ? memTitle : QString());
    flop->axis(QCPAxis::atBottom)->setLabel(fitsMem && fitsFlop ? flopTitle : QString());
    if (stack == (pair->rowCount() == 2 && pair->element(1, 0) == flop)) return;
    pair->take(flop);
    pair->simplify();
    pair->addElement(stack ? 1 : 0, stack ? 0 : 1, flop);
    if (!stack) pair->setColumnStretchFactor(0, 1.6);
    pair->setRowSpacing(stack ? title.height() : 0);
    for (QCPAxisRect* r : {mem, flop}) {
      r->setMarginGroup(QCP::msAll, nullptr);
      r->setMarginGroup(stack ? QCP::msLeft | QCP::msRight : QCP::msTop | QCP::msBottom, stack ? columns : rows);
    }
    flop->axis(QCPAxis::atLeft)->setTickLabels(stack);
  });
}

void drawMemory(QCustomPlot* plot, const ModelSnapshot& m, const Theme& t) {
  plot->clearPlottables();
  plot->clearItems();
  const QList<QCPAxisRect*> rects = plot->axisRects();
  if (rects.size() < 2) return;
  QCPAxisRect* mem = rects[0];
  QCPAxisRect* flop = rects[1];
  const QVector<Row> rows = ModelCharts::rows(m);
  auto names = QSharedPointer<QCPAxisTickerText>::create();
  for (int i = 0; i < int(rows.size()); ++i) names->addTick(i, rows[i].label());
  for (QCPAxisRect* r : {mem, flop}) {
    QCPAxis* y = r->axis(QCPAxis::atLeft);
    y->setTicker(names);
    y->setRange(-0.6, rows.size() - 0.4);
    y->grid()->setVisible(false);
  }
  // Names on the left of memory only, when compute sits beside it (setupMemory's layout).
  flop->axis(QCPAxis::atLeft)->setTickLabels(flop->layout() && flop->layout()->elementCount() > 0 &&
                                             static_cast<QCPLayoutGrid*>(flop->layout())->columnCount() == 1);

  // Left: one dumbbell per model from int4 to fp32, a marker per precision.
  struct Precision {
    QString name;
    double bytes;
    QCPScatterStyle::ScatterShape shape;
  };
  const Precision precisions[] = {{tr("fp32"), 4, QCPScatterStyle::ssSquare},
                                  {tr("bf16"), 2, QCPScatterStyle::ssDisc},
                                  {tr("int8"), 1, QCPScatterStyle::ssTriangle},
                                  {tr("int4"), 0.5, QCPScatterStyle::ssDiamond}};
  QCPAxis* memX = mem->axis(QCPAxis::atBottom);
  QCPAxis* memY = mem->axis(QCPAxis::atLeft);
  for (int i = 0; i < int(rows.size()); ++i) {
    auto* bar = new QCPItemLine(plot);
    bar->setClipAxisRect(mem);
    bar->start->setAxes(memX, memY);
    bar->end->setAxes(memX, memY);
    bar->start->setCoords(rows[i].total * 0.5, i);
    bar->end->setCoords(rows[i].total * 4, i);
    bar->setPen(QPen(t.subtle, t.presentation ? 3 : 2));
  }
  const double size = t.markerSize + (t.presentation ? 4 : 3);
  for (int p = 0; p < 4; ++p) {
    QCPGraph* g = plot->addGraph(memY, memX);
    g->setName(precisions[p].name);
    g->setLineStyle(QCPGraph::lsNone);
    g->setScatterStyle(QCPScatterStyle(precisions[p].shape, QPen(t.foreground, 1), Theme::series(p), size));
    for (int i = 0; i < int(rows.size()); ++i) g->addData(i, rows[i].total * precisions[p].bytes);
  }
  double lo = 1e300, hi = 0, flo = 1e300, fhi = 0;
  for (const Row& r : rows) {
    lo = std::min(lo, r.total * 0.5);
    hi = std::max(hi, r.total * 4);
    flo = std::min(flo, r.flops);
    fhi = std::max(fhi, r.flops);
  }
  setLogAxis(memX, bytesText);
  memX->setRange(decades(lo, hi));
  memX->setLabel(tr("weights in memory"));
  auto* gpu = new QCPItemStraightLine(plot);
  gpu->setClipAxisRect(mem);
  gpu->point1->setAxes(memX, memY);
  gpu->point2->setAxes(memX, memY);
  gpu->point1->setCoords(80e9, 0);
  gpu->point2->setCoords(80e9, 1);
  gpu->setPen(QPen(t.foreground, t.presentation ? 3 : 2, Qt::DashLine));
  // The largest models sit at the top, right of the line, and the compared model's row may be
  // outlined there; the smallest (the lab's own, a few MB) at the bottom, far left of the line. So
  // its label goes bottom left of it.
  auto* gpuLabel = textItem(plot, tr("80 GB GPU"), t.tickLabel, t.foreground, Qt::AlignRight | Qt::AlignBottom);
  gpuLabel->setClipAxisRect(mem);
  gpuLabel->position->setAxisRect(mem);
  gpuLabel->position->setAxes(memX, memY);
  gpuLabel->position->setTypeY(QCPItemPosition::ptAxisRectRatio);
  gpuLabel->position->setCoords(80e9, 1.0);
  gpuLabel->setPadding(QMargins(0, 0, 6, 2));
  gpuLabel->setBrush(QColor(255, 255, 255, 210));

  // Right: compute per token, one bar per model.
  QCPAxis* flopX = flop->axis(QCPAxis::atBottom);
  setLogAxis(flopX, countText);
  auto* bars = horizontalBars(flop->axis(QCPAxis::atLeft), flopX, Theme::series(2), 0.6, t);
  bars->removeFromLegend();
  for (int i = 0; i < int(rows.size()); ++i) bars->addData(i, rows[i].flops);
  flopX->setRange(decades(flo, fhi));
  flopX->setLabel(tr("FLOP per token"));
  for (int i = 0; i < int(rows.size()); ++i)
    if (rows[i].compared)
      for (QCPAxisRect* r : {mem, flop}) outlineRow(plot, r, i, QPen(t.foreground, t.presentation ? 4 : 2.5));
  legendColumns(plot->legend, 4);
  plot->replot(QCustomPlot::rpQueuedReplot);
}

QString paramsCsv(const ModelSnapshot& m) {
  QStringList lines{QStringLiteral("component,total_params,active_params_per_token")};
  for (int i = 0; i < moelab::kNumComponents; ++i)
    lines << QStringList{QString::fromLatin1(moelab::component_name(moelab::Component(i))), num(m.params.total_by[i]),
                         num(m.params.active_by[i])}
                 .join(',');
  lines << QStringList{QStringLiteral("all"), num(m.params.total), num(m.params.active)}.join(',');
  return lines.join('\n') + '\n';
}

QString realModelsCsv(const ModelSnapshot& m) {
  QStringList lines{QStringLiteral("model,total_params,active_params,headline,compared")};
  for (const RealModel& r : m.real)
    lines << QStringList{csvQuote(r.name), num(r.params.total), num(r.params.active), csvQuote(r.headline),
                         r.id == m.compared ? QStringLiteral("1") : QStringLiteral("0")}
                 .join(',');
  lines << QStringList{csvQuote(m.name + tr(" (lab)")), num(m.params.total), num(m.params.active), QString(), QStringLiteral("0")}
               .join(',');
  return lines.join('\n') + '\n';
}

QString memoryCsv(const ModelSnapshot& m) {
  QStringList lines{QStringLiteral("model,total_params,active_params,bytes_fp32,bytes_bf16,bytes_int8,bytes_int4,"
                                   "flops_per_token_ctx%1").arg(kContext)};
  for (const Row& r : rows(m))
    lines << QStringList{csvQuote(r.name), num(r.total), num(r.active), num(r.total * 4), num(r.total * 2), num(r.total),
                         num(r.total / 2), num(r.flops)}
                 .join(',');
  return lines.join('\n') + '\n';
}

QString blockCsv(const ModelSnapshot& m) {
  QStringList lines{QStringLiteral("layer,kind,routed_experts,top_k,shared_ffn_size,dense_ffn_size,highlighted_experts")};
  for (int64_t l = 0; l < m.config.num_layers; ++l) {
    const bool moe = m.config.is_moe_layer(l);
    QStringList hi;
    for (int e : m.highlights.value(int(l))) hi << QString::number(e);
    lines << QStringList{num(l), moe ? QStringLiteral("moe") : QStringLiteral("dense"), num(moe ? m.config.num_experts : 0),
                         num(moe ? m.config.top_k : 0), num(moe ? m.config.shared_ffn_size : 0),
                         num(moe ? 0 : m.config.dense_ffn_size), csvQuote(hi.join(' '))}
                 .join(',');
  }
  return lines.join('\n') + '\n';
}


}  // namespace ModelCharts
