#include "run_charts.hpp"

#include <QObject>
#include <algorithm>
#include <qcustomplot.h>

#include "theme.hpp"

namespace RunCharts {

namespace {

QString tr(const char* s) { return QObject::tr(s); }

int clampShown(const RunData& run, int shown) { return std::clamp(shown, 0, int(run.history.size())); }

void integerTicks(QCPAxis* axis, int count) {
  if (count > 16) return;
  QSharedPointer<QCPAxisTickerFixed> fixed(new QCPAxisTickerFixed);
  fixed->setTickStep(1);
  axis->setTicker(fixed);
}

QCPGraph* line(QCustomPlot* plot, QCPAxis* y, const QString& name, const QColor& c, Qt::PenStyle style = Qt::SolidLine) {
  QCPGraph* g = plot->addGraph(plot->xAxis, y);
  g->setName(name);
  g->setPen(QPen(c, Theme::current().lineWidth, style));
  return g;
}

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

// A message in the middle of an empty chart, so an empty chart says why it is empty. Wrapped,
// so it fits a half-width chart (about 500 px) in either theme's font.
void emptyMessage(QCustomPlot* plot, const QString& text) {
  auto* label = new QCPItemText(plot);
  label->position->setType(QCPItemPosition::ptAxisRectRatio);
  label->position->setCoords(0.5, 0.5);
  label->setText(wrapWords(text, Theme::current().presentation ? 40 : 60));
  label->setTextAlignment(Qt::AlignCenter);
  label->setFont(Theme::current().text);
  label->setColor(Theme::current().subtle);
  plot->xAxis->setTickLabels(false);
  plot->yAxis->setTickLabels(false);
}

QCPColorScale* colorScale(QCustomPlot* plot, QCPColorMap* map, const QString& label, QCPRange range) {
  map->setInterpolate(false);
  map->setGradient(viridisGradient());
  map->setDataRange(range);
  auto* scale = new QCPColorScale(plot);
  scale->setGradient(viridisGradient());
  scale->setDataRange(range);
  scale->axis()->setLabel(label);
  plot->plotLayout()->addElement(0, 1, scale);
  return scale;
}

void finish(QCustomPlot* plot, QCPColorScale* scale = nullptr) {
  Theme::current().applyTo(plot);
  if (scale) {
    scale->axis()->setLabelFont(Theme::current().axisLabel);
    scale->axis()->setTickLabelFont(Theme::current().tickLabel);
    scale->axis()->setLabelColor(Theme::current().foreground);
    scale->axis()->setTickLabelColor(Theme::current().foreground);
  }
  plot->replot(QCustomPlot::rpQueuedReplot);
}

}  // namespace

// The legend in a row under the axes, `columns` entries wide: it never covers the data.
void legendBelow(QCustomPlot* plot, int columns) {
  plot->legend->setVisible(true);
  if (auto* inset = qobject_cast<QCPLayoutInset*>(plot->legend->layout())) inset->take(plot->legend);
  plot->plotLayout()->addElement(1, 0, plot->legend);
  plot->plotLayout()->setRowStretchFactor(1, 0.001);
  plot->legend->setFillOrder(QCPLayoutGrid::foColumnsFirst);
  plot->legend->setWrap(columns);
  plot->legend->setMargins(QMargins(6, 2, 6, 2));
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

namespace {

QString csvNum(double v) { return std::isnan(v) ? QString() : QString::number(v, 'g', 8); }

bool validLayer(const RunData& run, int shown, int layer) {
  return shown > 0 && layer >= 0 && layer < run.history[shown - 1]->layers.size() && run.experts > 0;
}

}  // namespace

QColor expertColor(int e, int experts) {
  if (experts <= 8) return Theme::series(e);
  return viridisColor(experts > 1 ? double(e) / (experts - 1) : 0.0);
}

QCPAxisRect* resetPlot(QCustomPlot* plot) {
  plot->clearPlottables();
  plot->clearItems();
  plot->plotLayout()->clear();  // deletes the axis rects and with them the legend
  plot->plotLayout()->simplify();
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

// ---- loss ----

void drawLoss(QCustomPlot* plot, const RunData& run, int shown) {
  resetPlot(plot);
  shown = clampShown(run, shown);
  legendBelow(plot, 3);  // a falling curve crosses every corner of the axes at some step
  QCPGraph* total = line(plot, plot->yAxis, tr("total"), Theme::series(0));
  QCPGraph* lm = line(plot, plot->yAxis, tr("language model"), Theme::series(1));
  QCPGraph* aux = run.showAux ? line(plot, plot->yAxis, tr("aux loss"), Theme::series(2)) : nullptr;
  QCPGraph* z = run.showZ ? line(plot, plot->yAxis, tr("z-loss"), Theme::series(3)) : nullptr;
  QCPGraph* val = plot->addGraph();
  val->setName(tr("validation"));
  val->setLineStyle(QCPGraph::lsNone);
  val->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, Theme::series(4), Theme::current().markerSize + 2));
  for (int i = 0; i < shown; ++i) {
    const StepSummary& s = *run.history[i];
    total->addData(double(s.step), s.loss);
    lm->addData(double(s.step), s.lmLoss);
    if (aux) aux->addData(double(s.step), s.auxLoss);
    if (z) z->addData(double(s.step), s.zLoss);
    if (!std::isnan(s.valLoss)) val->addData(double(s.step), s.valLoss);
  }
  plot->xAxis->setLabel(tr("training step"));
  plot->yAxis->setLabel(tr("loss"));
  plot->rescaleAxes(true);
  plot->yAxis->setRangeLower(0);
  finish(plot);
}

QString lossCsv(const RunData& run, int shown) {
  QString out = QStringLiteral("step,loss,lm_loss,aux_loss,z_loss,val_loss\n");
  for (int i = 0; i < clampShown(run, shown); ++i) {
    const StepSummary& s = *run.history[i];
    out += QStringLiteral("%1,%2,%3,%4,%5,%6\n")
               .arg(s.step)
               .arg(csvNum(s.loss), csvNum(s.lmLoss), csvNum(s.auxLoss), csvNum(s.zLoss), csvNum(s.valLoss));
  }
  return out;
}

// ---- collapse ----

QCPColorMap* drawCollapse(QCustomPlot* plot, const RunData& run, int shown, int layer) {
  QCPAxisRect* rect = resetPlot(plot);
  shown = clampShown(run, shown);
  const int E = int(run.experts);
  if (!validLayer(run, shown, layer)) {
    emptyMessage(plot, tr("No steps yet: press Start, or open a run"));
    finish(plot);
    return nullptr;
  }
  auto* map = new QCPColorMap(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  map->data()->setSize(shown, E);
  map->data()->setRange(QCPRange(run.history.front()->step, run.history[shown - 1]->step), QCPRange(0, E - 1));
  for (int i = 0; i < shown; ++i)
    for (int e = 0; e < E; ++e) map->data()->setCell(i, e, run.history[i]->layers[layer].load.value(e));
  // One scale for every run and layer: the share of the step's choices.
  QCPColorScale* scale = colorScale(plot, map, tr("share of tokens"), QCPRange(0, 1));
  plot->xAxis->setLabel(tr("training step"));
  plot->yAxis->setLabel(tr("expert"));
  const double step0 = run.history.front()->step, step1 = run.history[shown - 1]->step;
  const double half = shown > 1 ? (step1 - step0) / (shown - 1) / 2 : 0.5;
  plot->xAxis->setRange(step0 - half, step1 + half);
  plot->yAxis->setRange(-0.5, E - 0.5);
  integerTicks(plot->yAxis, E);
  finish(plot, scale);
  return map;
}

QString collapseCsv(const RunData& run, int shown, int layer) {
  QString out = QStringLiteral("step");
  for (int e = 0; e < run.experts; ++e) out += QStringLiteral(",expert%1").arg(e);
  out += '\n';
  if (layer < 0 || layer >= run.moeLayers) return out;
  for (int i = 0; i < clampShown(run, shown); ++i) {
    out += QString::number(run.history[i]->step);
    for (double v : run.history[i]->layers[layer].load) out += ',' + csvNum(v);
    out += '\n';
  }
  return out;
}

// ---- load now ----

void drawLoadNow(QCustomPlot* plot, const RunData& run, int shown, int layer) {
  resetPlot(plot);
  shown = clampShown(run, shown);
  const int E = int(run.experts);
  if (!validLayer(run, shown, layer)) {
    emptyMessage(plot, tr("No steps yet"));
    finish(plot);
    return;
  }
  const auto& L = run.history[shown - 1]->layers[layer];
  QVector<double> keys(E);
  for (int e = 0; e < E; ++e) keys[e] = e;
  auto* bars = new QCPBars(plot->xAxis, plot->yAxis);
  bars->setData(keys, L.load, true);
  bars->setBrush(Theme::series(0));
  bars->setPen(QPen(Theme::current().foreground, Theme::current().presentation ? 1.5 : 1));
  bars->setName(tr("load"));
  plot->xAxis->setLabel(tr("expert (MoE layer %1, step %2)").arg(layer).arg(run.history[shown - 1]->step));
  plot->yAxis->setLabel(tr("share of tokens"));
  plot->xAxis->setRange(-0.6, E - 0.4);
  integerTicks(plot->xAxis, E);
  plot->yAxis->setRange(0, std::max(*std::max_element(L.load.begin(), L.load.end()), 1.0 / E) * 1.15);
  // Vermillion, as in the Tokens view: the same idea in the same colour, and it stands out from the blue bars.
  referenceLines(plot, {{1.0 / E, tr("even split\n1/%1").arg(E), Theme::series(3)}});
  finish(plot);
}

QString loadNowCsv(const RunData& run, int shown, int layer) {
  QString out = QStringLiteral("expert,load,even_split\n");
  shown = clampShown(run, shown);
  if (!validLayer(run, shown, layer)) return out;
  const auto& L = run.history[shown - 1]->layers[layer];
  for (int e = 0; e < L.load.size(); ++e) out += QStringLiteral("%1,%2,%3\n").arg(e).arg(csvNum(L.load[e]), csvNum(1.0 / run.experts));
  return out;
}

// ---- balance ----

void drawBalance(QCustomPlot* plot, const RunData& run, int shown) {
  resetPlot(plot);
  shown = clampShown(run, shown);
  legendBelow(plot, 2);
  for (int l = 0; l < run.moeLayers; ++l) {
    QCPGraph* g = line(plot, plot->yAxis, tr("CV, layer %1").arg(l), Theme::series(l));
    QCPGraph* d = line(plot, plot->yAxis2, tr("dead experts, layer %1").arg(l), Theme::series(l), Qt::DotLine);
    d->setLineStyle(QCPGraph::lsStepLeft);
    for (int i = 0; i < shown; ++i) {
      const StepSummary& s = *run.history[i];
      if (l >= s.layers.size()) continue;
      g->addData(double(s.step), s.layers[l].cv);
      d->addData(double(s.step), double(s.layers[l].dead));
    }
  }
  plot->yAxis2->setVisible(true);
  plot->yAxis2->setLabel(tr("dead experts (dotted)"));
  plot->xAxis->setLabel(tr("training step"));
  plot->yAxis->setLabel(tr("CV of load (solid)"));
  plot->rescaleAxes();
  plot->yAxis->setRangeLower(0);
  plot->yAxis->setRangeUpper(std::max(1.0, plot->yAxis->range().upper * 1.1));
  plot->yAxis2->setRange(0, std::max<double>(2, double(run.experts)));
  integerTicks(plot->yAxis2, int(run.experts));
  finish(plot);
}

QString balanceCsv(const RunData& run, int shown) {
  QString out = QStringLiteral("step");
  for (int l = 0; l < run.moeLayers; ++l) out += QStringLiteral(",layer%1_cv,layer%1_dead").arg(l);
  out += '\n';
  for (int i = 0; i < clampShown(run, shown); ++i) {
    out += QString::number(run.history[i]->step);
    for (const auto& L : run.history[i]->layers) out += ',' + csvNum(L.cv) + ',' + QString::number(L.dead);
    out += '\n';
  }
  return out;
}

// ---- entropy and drops ----

void drawEntropy(QCustomPlot* plot, const RunData& run, int shown) {
  resetPlot(plot);
  shown = clampShown(run, shown);
  legendBelow(plot, 2);
  const bool drops = run.hasDrops();
  for (int l = 0; l < run.moeLayers; ++l) {
    QCPGraph* g = line(plot, plot->yAxis, tr("entropy, layer %1").arg(l), Theme::series(l));
    QCPGraph* d = drops ? line(plot, plot->yAxis2, tr("dropped %, layer %1").arg(l), Theme::series(l), Qt::DashLine) : nullptr;
    for (int i = 0; i < shown; ++i) {
      const StepSummary& s = *run.history[i];
      if (l >= s.layers.size()) continue;
      g->addData(double(s.step), s.layers[l].entropy);
      if (d) d->addData(double(s.step), 100.0 * s.layers[l].droppedRate);
    }
  }
  plot->xAxis->setLabel(tr("training step"));
  plot->yAxis->setLabel(tr("router entropy"));
  plot->rescaleAxes();
  plot->yAxis->setRange(0, 1.05);
  if (drops) {
    plot->yAxis2->setVisible(true);
    plot->yAxis2->setLabel(tr("dropped, % (dashed)"));
    plot->yAxis2->setRange(0, std::max(5.0, plot->yAxis2->range().upper * 1.1));
  }
  finish(plot);
}

QString entropyCsv(const RunData& run, int shown) {
  QString out = QStringLiteral("step");
  for (int l = 0; l < run.moeLayers; ++l) out += QStringLiteral(",layer%1_entropy,layer%1_dropped_rate").arg(l);
  out += '\n';
  for (int i = 0; i < clampShown(run, shown); ++i) {
    out += QString::number(run.history[i]->step);
    for (const auto& L : run.history[i]->layers) out += ',' + csvNum(L.entropy) + ',' + csvNum(L.droppedRate);
    out += '\n';
  }
  return out;
}

// ---- bias ----

void drawBias(QCustomPlot* plot, const RunData& run, int shown, int layer) {
  resetPlot(plot);
  shown = clampShown(run, shown);
  if (!run.hasBias() || !validLayer(run, shown, layer)) {
    emptyMessage(plot, run.hasBias() ? tr("No steps yet")
                                     : tr("This run has no selection bias: choose \"bias (sigmoid router)\" balancing"));
    finish(plot);
    return;
  }
  const int E = int(run.experts);
  if (E <= 8) legendBelow(plot, 4);
  for (int e = 0; e < E; ++e) {
    QCPGraph* g = line(plot, plot->yAxis, tr("expert %1").arg(e), expertColor(e, E));
    for (int i = 0; i < shown; ++i) {
      const auto& b = run.history[i]->layers[layer].bias;
      if (e < b.size()) g->addData(double(run.history[i]->step), b[e]);
    }
  }
  auto* zero = new QCPItemStraightLine(plot);
  zero->point1->setCoords(0, 0);
  zero->point2->setCoords(1, 0);
  zero->setPen(QPen(Theme::current().subtle, 1, Qt::DashLine));
  plot->xAxis->setLabel(tr("training step"));
  plot->yAxis->setLabel(tr("selection bias (MoE layer %1)").arg(layer));
  plot->rescaleAxes();
  finish(plot);
}

QString biasCsv(const RunData& run, int shown, int layer) {
  QString out = QStringLiteral("step");
  for (int e = 0; e < run.experts; ++e) out += QStringLiteral(",expert%1").arg(e);
  out += '\n';
  if (layer < 0 || layer >= run.moeLayers) return out;
  for (int i = 0; i < clampShown(run, shown); ++i) {
    const auto& b = run.history[i]->layers[layer].bias;
    if (b.isEmpty()) continue;
    out += QString::number(run.history[i]->step);
    for (float v : b) out += ',' + csvNum(v);
    out += '\n';
  }
  return out;
}

// ---- router saturation ----

double choiceOverlap(const QVector<int32_t>& a, const QVector<int32_t>& b, int64_t k) {
  if (k <= 0 || a.size() != b.size() || a.isEmpty()) return NAN;
  const int64_t P = a.size() / k;
  int64_t same = 0;
  for (int64_t p = 0; p < P; ++p)
    for (int64_t i = 0; i < k; ++i) {
      const int32_t e = a[p * k + i];
      if (e < 0) continue;
      for (int64_t j = 0; j < k; ++j)
        if (b[p * k + j] == e) {
          ++same;
          break;
        }
    }
  return double(same) / double(P * k);
}

const StepSummary* lastProbe(const RunData& run, int shown) {
  for (int i = clampShown(run, shown) - 1; i >= 0; --i)
    if (!run.history[i]->layers.isEmpty() && !run.history[i]->layers[0].probeExperts.isEmpty()) return run.history[i].get();
  return nullptr;
}

namespace {
template <class F>
void forEachSaturation(const RunData& run, int shown, F f) {
  const StepSummary* ref = lastProbe(run, shown);
  if (!ref) return;
  for (int i = 0; i < clampShown(run, shown); ++i) {
    const StepSummary& s = *run.history[i];
    if (s.layers.isEmpty() || s.layers[0].probeExperts.isEmpty()) continue;
    QVector<double> overlaps;
    for (int l = 0; l < s.layers.size() && l < ref->layers.size(); ++l)
      overlaps.push_back(choiceOverlap(s.layers[l].probeExperts, ref->layers[l].probeExperts, run.topK));
    f(s.step, overlaps);
  }
}
}  // namespace

void drawSaturation(QCustomPlot* plot, const RunData& run, int shown) {
  resetPlot(plot);
  const StepSummary* ref = lastProbe(run, shown);
  if (!ref) {
    emptyMessage(plot, tr("The probe batch is routed every %1 steps; none yet").arg(run.train.probe_every));
    finish(plot);
    return;
  }
  legendBelow(plot, std::clamp(int(run.moeLayers), 1, 4));
  QVector<QCPGraph*> graphs;
  for (int l = 0; l < run.moeLayers; ++l) {
    graphs.push_back(line(plot, plot->yAxis, tr("layer %1").arg(l), Theme::series(l)));
    graphs.back()->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, Theme::current().markerSize));
  }
  forEachSaturation(run, shown, [&](int64_t step, const QVector<double>& o) {
    for (int l = 0; l < o.size() && l < graphs.size(); ++l) graphs[l]->addData(double(step), o[l]);
  });
  plot->xAxis->setLabel(tr("training step"));
  // On two lines at projector size, where on one it is taller than the axes and gets cut off.
  plot->yAxis->setLabel(Theme::current().presentation ? tr("same choices as\nat step %1").arg(ref->step)
                                                      : tr("same choices as at step %1").arg(ref->step));
  plot->rescaleAxes();
  plot->yAxis->setRange(0, 1.05);
  finish(plot);
}

QString saturationCsv(const RunData& run, int shown) {
  QString out = QStringLiteral("step");
  for (int l = 0; l < run.moeLayers; ++l) out += QStringLiteral(",layer%1_overlap").arg(l);
  out += '\n';
  forEachSaturation(run, shown, [&](int64_t step, const QVector<double>& o) {
    out += QString::number(step);
    for (double v : o) out += ',' + csvNum(v);
    out += '\n';
  });
  return out;
}

// ---- specialisation ----

namespace {
// The domain × expert matrix of the last probe step, each domain's row as shares (sum 1).
QVector<QVector<double>> domainShares(const StepSummary& s, int layer) {
  QVector<QVector<double>> rows = s.layers[layer].domainMatrix;
  for (auto& r : rows) {
    double sum = 0;
    for (double v : r) sum += v;
    if (sum > 0)
      for (double& v : r) v /= sum;
  }
  return rows;
}
const StepSummary* lastDomains(const RunData& run, int shown, int layer) {
  for (int i = clampShown(run, shown) - 1; i >= 0; --i)
    if (layer < run.history[i]->layers.size() && !run.history[i]->layers[layer].domainMatrix.isEmpty())
      return run.history[i].get();
  return nullptr;
}
}  // namespace

QCPColorMap* drawSpecialisation(QCustomPlot* plot, const RunData& run, int shown, int layer) {
  QCPAxisRect* rect = resetPlot(plot);
  const StepSummary* s = layer >= 0 ? lastDomains(run, shown, layer) : nullptr;
  if (!s) {
    emptyMessage(plot, run.hasDomains() || run.history.isEmpty()
                           ? tr("The probe batch is routed every %1 steps; none yet").arg(run.train.probe_every)
                           : tr("This corpus has no domains (use the built-in domains corpus)"));
    finish(plot);
    return nullptr;
  }
  const QVector<QVector<double>> rows = domainShares(*s, layer);
  const int D = int(rows.size()), E = int(run.experts);
  auto* map = new QCPColorMap(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  map->data()->setSize(E, D);
  map->data()->setRange(QCPRange(0, E - 1), QCPRange(0, D - 1));
  double top = 2.0 / E;
  for (int d = 0; d < D; ++d)
    for (int e = 0; e < E; ++e) {
      map->data()->setCell(e, d, rows[d].value(e));
      top = std::max(top, rows[d].value(e));
    }
  QCPColorScale* scale = colorScale(plot, map, tr("share of domain"), QCPRange(0, top));
  QSharedPointer<QCPAxisTickerText> names(new QCPAxisTickerText);
  for (int d = 0; d < D; ++d) names->addTick(d, d < s->domains.size() ? s->domains[d] : QString::number(d));
  plot->yAxis->setTicker(names);
  plot->yAxis->setLabel(tr("text domain"));
  plot->xAxis->setLabel(tr("expert (MoE layer %1, step %2, specialisation %3)")
                            .arg(layer)
                            .arg(s->step)
                            .arg(s->layers[layer].specialisation, 0, 'f', 2));
  plot->xAxis->setRange(-0.5, E - 0.5);
  plot->yAxis->setRange(-0.5, D - 0.5);
  integerTicks(plot->xAxis, E);
  finish(plot, scale);
  return map;
}

QString specialisationCsv(const RunData& run, int shown, int layer) {
  QString out = QStringLiteral("domain");
  for (int e = 0; e < run.experts; ++e) out += QStringLiteral(",expert%1").arg(e);
  out += '\n';
  const StepSummary* s = layer >= 0 ? lastDomains(run, shown, layer) : nullptr;
  if (!s) return out;
  const auto rows = domainShares(*s, layer);
  for (int d = 0; d < rows.size(); ++d) {
    out += d < s->domains.size() ? s->domains[d] : QString::number(d);
    for (double v : rows[d]) out += ',' + csvNum(v);
    out += '\n';
  }
  return out;
}

void drawSpecialisationScore(QCustomPlot* plot, const RunData& run, int shown) {
  resetPlot(plot);
  shown = clampShown(run, shown);
  if (!run.hasDomains()) {
    emptyMessage(plot, tr("This corpus has no domains (use the built-in domains corpus)"));
    finish(plot);
    return;
  }
  legendBelow(plot, std::clamp(int(run.moeLayers), 1, 4));
  for (int l = 0; l < run.moeLayers; ++l) {
    QCPGraph* g = line(plot, plot->yAxis, tr("layer %1").arg(l), Theme::series(l));
    for (int i = 0; i < shown; ++i) {
      const StepSummary& s = *run.history[i];
      if (l < s.layers.size() && !std::isnan(s.layers[l].specialisation)) g->addData(double(s.step), s.layers[l].specialisation);
    }
  }
  plot->xAxis->setLabel(tr("training step"));
  plot->yAxis->setLabel(tr("specialisation"));
  plot->rescaleAxes();
  plot->yAxis->setRange(0, std::max(0.6, plot->yAxis->range().upper * 1.1));
  finish(plot);
}

QString specialisationScoreCsv(const RunData& run, int shown) {
  QString out = QStringLiteral("step");
  for (int l = 0; l < run.moeLayers; ++l) out += QStringLiteral(",layer%1_specialisation").arg(l);
  out += '\n';
  for (int i = 0; i < clampShown(run, shown); ++i) {
    const StepSummary& s = *run.history[i];
    if (s.layers.isEmpty() || std::isnan(s.layers[0].specialisation)) continue;
    out += QString::number(s.step);
    for (const auto& L : s.layers) out += ',' + csvNum(L.specialisation);
    out += '\n';
  }
  return out;
}

// ---- drops by position ----

namespace {
const StepSummary* lastDropProbe(const RunData& run, int shown) {
  for (int i = clampShown(run, shown) - 1; i >= 0; --i)
    if (!run.history[i]->dropByPosition.isEmpty()) return run.history[i].get();
  return nullptr;
}
}  // namespace

void drawDropByPosition(QCustomPlot* plot, const RunData& run, int shown) {
  resetPlot(plot);
  const StepSummary* s = run.hasDrops() ? lastDropProbe(run, shown) : nullptr;
  if (!s) {
    emptyMessage(plot, run.hasDrops() ? tr("No probe step yet") : tr("No capacity limit: no token is dropped"));
    finish(plot);
    return;
  }
  const int T = int(s->dropByPosition.size());
  QVector<double> keys(T), pct(T);
  for (int t = 0; t < T; ++t) keys[t] = t, pct[t] = 100.0 * s->dropByPosition[t];
  auto* bars = new QCPBars(plot->xAxis, plot->yAxis);
  bars->setData(keys, pct, true);
  bars->setBrush(Theme::series(5));
  bars->setPen(QPen(Theme::series(5).darker(150)));
  plot->xAxis->setLabel(tr("position in the sequence (step %1)").arg(s->step));
  plot->yAxis->setLabel(tr("slots dropped, %"));
  plot->xAxis->setRange(-0.6, T - 0.4);
  plot->yAxis->setRange(0, std::max(5.0, *std::max_element(pct.begin(), pct.end()) * 1.2));
  finish(plot);
}

QString dropByPositionCsv(const RunData& run, int shown) {
  QString out = QStringLiteral("position,dropped_rate\n");
  const StepSummary* s = run.hasDrops() ? lastDropProbe(run, shown) : nullptr;
  if (!s) return out;
  for (int t = 0; t < s->dropByPosition.size(); ++t) out += QStringLiteral("%1,%2\n").arg(t).arg(csvNum(s->dropByPosition[t]));
  return out;
}

}  // namespace RunCharts

namespace RunCharts {

FinalFigures finalFigures(const RunData& run) {
  FinalFigures f;
  if (run.history.isEmpty()) return f;
  const StepSummary& last = *run.history.back();
  f.step = last.step;
  f.lmLoss = last.lmLoss;
  for (int i = int(run.history.size()) - 1; i >= 0 && std::isnan(f.valLoss); --i) f.valLoss = run.history[i]->valLoss;
  for (const auto& L : last.layers) {
    f.cv = std::isnan(f.cv) ? L.cv : std::max(f.cv, L.cv);
    f.maxShare = std::isnan(f.maxShare) ? L.maxShare : std::max(f.maxShare, L.maxShare);
    f.collapse = std::isnan(f.collapse) ? L.collapse : std::max(f.collapse, L.collapse);
    f.dead += L.dead;
  }
  for (int i = int(run.history.size()) - 1; i >= 0; --i) {
    const StepSummary& s = *run.history[i];
    if (s.layers.isEmpty() || std::isnan(s.layers[0].specialisation)) continue;
    for (const auto& L : s.layers)
      f.specialisation = std::isnan(f.specialisation) ? L.specialisation : std::max(f.specialisation, L.specialisation);
    break;
  }
  return f;
}

QString balancingText(const moelab::TrainConfig& c) {
  QString s = c.aux_alpha > 0    ? QObject::tr("aux loss %1").arg(double(c.aux_alpha))
              : c.bias_gamma > 0 ? QObject::tr("bias %1").arg(double(c.bias_gamma))
                                 : QObject::tr("none");
  if (c.capacity.limited())
    s += QObject::tr(", capacity %1 (%2)").arg(c.capacity.factor).arg(c.capacity.reroute ? QObject::tr("re-route") : QObject::tr("drop"));
  return s;
}

}  // namespace RunCharts
