#include "run_charts.hpp"

#include <QObject>
#include <algorithm>
#include <qcustomplot.h>

#include "chart_kit.hpp"
#include "theme.hpp"

namespace RunCharts {

using namespace ChartKit;

namespace {

QString tr(const char* s) { return QObject::tr(s); }

int clampShown(const RunData& run, int shown) { return std::clamp(shown, 0, int(run.history.size())); }


bool validLayer(const RunData& run, int shown, int layer) {
  return shown > 0 && layer >= 0 && layer < run.history[shown - 1]->layers.size() && run.experts > 0;
}

}  // namespace

QColor expertColor(int e, int experts) {
  if (experts <= 8) return Theme::series(e);
  return viridisColor(experts > 1 ? double(e) / (experts - 1) : 0.0);
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
  plot->yAxis->setRangeUpper(plot->yAxis->range().upper * 1.05);  // a dot at the top stays whole
  if (shown == 1) {  // one step: a line of one point is not drawn, so its points are, at step ± 1
    for (QCPGraph* g : {total, lm, aux, z})
      if (g) g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, Theme::current().markerSize + 2));
    const double step = run.history.front()->step;
    plot->xAxis->setRange(step - 1, step + 1);
    singleTick(plot->xAxis, step);
  }
  finish(plot);
}

QString lossCsv(const RunData& run, int shown) {
  QString out = QStringLiteral("step,loss,lm_loss,aux_loss,z_loss,val_loss\n");
  for (int i = 0; i < clampShown(run, shown); ++i) {
    const StepSummary& s = *run.history[i];
    out += QStringLiteral("%1,%2,%3,%4,%5,%6\n")
               .arg(s.step)
               .arg(csvNumber(s.loss), csvNumber(s.lmLoss), csvNumber(s.auxLoss), csvNumber(s.zLoss), csvNumber(s.valLoss));
  }
  return out;
}

// ---- collapse ----

QCPColorMap* drawCollapse(QCPAxisRect* rect, const RunData& run, int shown, int layer) {
  shown = clampShown(run, shown);
  if (!validLayer(run, shown, layer)) return nullptr;
  const int E = int(run.experts);
  const double step0 = run.history.front()->step, step1 = run.history[shown - 1]->step;
  // One scale for every run and layer: the share of the step's choices.
  // One step: QCustomPlot spreads a single column over the key range, so it gets a step's width.
  const QCPRange keys = shown > 1 ? QCPRange(step0, step1) : QCPRange(step0 - 0.5, step0 + 0.5);
  QCPColorMap* map = heatmap(rect, shown, E, keys, QCPRange(0, E - 1), QCPRange(0, 1));
  for (int i = 0; i < shown; ++i)
    for (int e = 0; e < E; ++e) map->data()->setCell(i, e, run.history[i]->layers[layer].load.value(e));
  const double half = shown > 1 ? (step1 - step0) / (shown - 1) / 2 : 0.5;  // half a column each side
  rect->axis(QCPAxis::atBottom)->setRange(step0 - half, step1 + half);
  rect->axis(QCPAxis::atLeft)->setRange(-0.5, E - 0.5);
  integerTicks(rect->axis(QCPAxis::atLeft), E);
  if (shown > 1) {
    numberTicks(rect->axis(QCPAxis::atBottom));
  } else {  // the one step's number, not fractions of a step
    singleTick(rect->axis(QCPAxis::atBottom), step0);
  }
  return map;
}

QCPColorMap* drawCollapse(QCustomPlot* plot, const RunData& run, int shown, int layer) {
  QCPAxisRect* rect = resetPlot(plot);
  QCPColorMap* map = drawCollapse(rect, run, shown, layer);
  if (!map) {
    emptyMessage(plot, tr("No steps yet: press Start in the knobs, or open a run"));
    finish(plot);
    return nullptr;
  }
  QCPColorScale* scale = colorScale(plot, QCPRange(0, 1), tr("share of tokens"));
  plot->xAxis->setLabel(tr("training step"));
  plot->yAxis->setLabel(tr("expert"));
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
    for (double v : run.history[i]->layers[layer].load) out += ',' + csvNumber(v);
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
  for (int e = 0; e < L.load.size(); ++e) out += QStringLiteral("%1,%2,%3\n").arg(e).arg(csvNumber(L.load[e]), csvNumber(1.0 / run.experts));
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
  // Short: it runs along the chart's height, which beside the lesson dock with projector fonts is
  // less than "dead experts (dotted)" needs; the legend names the dead experts in full.
  plot->yAxis2->setLabel(tr("dead (dotted)"));
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
    for (const auto& L : run.history[i]->layers) out += ',' + csvNumber(L.cv) + ',' + QString::number(L.dead);
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
    for (const auto& L : run.history[i]->layers) out += ',' + csvNumber(L.entropy) + ',' + csvNumber(L.droppedRate);
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
  plot->yAxis->setLabel(tr("bias, MoE layer %1").arg(layer));
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
    for (float v : b) out += ',' + csvNumber(v);
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
    for (double v : o) out += ',' + csvNumber(v);
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
  double top = 2.0 / E;
  for (int d = 0; d < D; ++d)
    for (int e = 0; e < E; ++e) top = std::max(top, rows[d].value(e));
  QCPColorMap* map = heatmap(rect, E, D, QCPRange(0, E - 1), QCPRange(0, D - 1), QCPRange(0, top));
  for (int d = 0; d < D; ++d)
    for (int e = 0; e < E; ++e) map->data()->setCell(e, d, rows[d].value(e));
  QCPColorScale* scale = colorScale(plot, QCPRange(0, top), tr("share of domain"));
  QSharedPointer<QCPAxisTickerText> names(new QCPAxisTickerText);
  for (int d = 0; d < D; ++d) names->addTick(d, d < s->domains.size() ? s->domains[d] : QString::number(d));
  plot->yAxis->setTicker(names);
  plot->yAxis->setLabel(tr("text domain"));
  // The score in the label where it fits beside the domain names and the colour scale (about
  // 300 px together); else it is left to the "Specialisation over training" chart.
  const QString full = tr("expert (MoE layer %1, step %2, specialisation %3)")
                           .arg(layer)
                           .arg(s->step)
                           .arg(s->layers[layer].specialisation, 0, 'f', 2);
  const bool fits = QFontMetrics(Theme::current().axisLabel).horizontalAdvance(full) + 300 <= plot->width();
  plot->xAxis->setLabel(fits ? full : tr("expert (MoE layer %1, step %2)").arg(layer).arg(s->step));
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
    for (double v : rows[d]) out += ',' + csvNumber(v);
    out += '\n';
  }
  return out;
}

void drawSpecialisationScore(QCustomPlot* plot, const RunData& run, int shown) {
  resetPlot(plot);
  shown = clampShown(run, shown);
  if (shown == 0) {
    emptyMessage(plot, tr("No steps yet: press Start in the knobs, or open a run"));
    finish(plot);
    return;
  }
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
    for (const auto& L : s.layers) out += ',' + csvNumber(L.specialisation);
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
  for (int t = 0; t < s->dropByPosition.size(); ++t) out += QStringLiteral("%1,%2\n").arg(t).arg(csvNumber(s->dropByPosition[t]));
  return out;
}

}  // namespace RunCharts

namespace RunCharts {

QString RunChart::titleFor(int layer) const { return title.contains(QLatin1String("%1")) ? title.arg(layer) : title; }

QString RunChart::exportNameFor(int layer) const {
  const QString name = exportName.isEmpty() ? id : exportName;
  return perLayer ? QStringLiteral("%1-layer%2").arg(name).arg(layer) : name;
}

const QVector<RunChart>& runCharts() {
  // Charts of every layer take (plot, run, shown) and ignore the layer; a per-layer chart's
  // draw and CSV take it. Captions are prose, one line each.
  using Draw = void (*)(QCustomPlot*, const RunData&, int);
  using Csv = QString (*)(const RunData&, int);
  auto all = [](Draw d) { return [d](QCustomPlot* p, const RunData& r, int n, int) { d(p, r, n); }; };
  auto allCsv = [](Csv c) { return [c](const RunData& r, int n, int) { return c(r, n); }; };
  static const QVector<RunChart> charts = {
      {QStringLiteral("collapse"), tr("Collapse view: expert load over training (MoE layer %1)"),
       tr("Each column is a training step, each row an expert; bright = that expert got a large share of the tokens. Collapse looks like one or two bright rows and dark rest."),
       true, [](QCustomPlot* p, const RunData& r, int n, int l) { drawCollapse(p, r, n, l); }, collapseCsv, {}, {}},
      {QStringLiteral("loss"), tr("Loss"),
       tr("How wrong the model's next-token guesses are (lower is better); dots are the validation loss on text it never trains on. The balancing losses are the extra terms that push the router toward an even load."),
       false, all(drawLoss), allCsv(lossCsv), {}, {}},
      {QStringLiteral("load-now"), tr("Load per expert now"),
       tr("Share of the tokens each expert got in the step shown; the dashed line is an even split. Bars far above it are overloaded, empty ones are dead."),
       true, drawLoadNow, loadNowCsv, QStringLiteral("load-final"), {}},
      {QStringLiteral("balance"), tr("How uneven is the load?"),
       tr("Coefficient of variation of the load (0 = perfectly even) for every MoE layer, and the number of dead experts (almost no tokens)."),
       false, all(drawBalance), allCsv(balanceCsv), {}, {}},
      {QStringLiteral("entropy"), tr("How sure is the router? Are tokens dropped?"),
       tr("Router entropy: 1 = it cannot tell the experts apart, near 0 = it is certain. With a capacity limit, the dashed lines are the share of tokens an overfull expert turned away."),
       false, all(drawEntropy), allCsv(entropyCsv), {}, {}},
      {QStringLiteral("bias"), tr("Balancing bias per expert"),
       tr("DeepSeek-V3's method: a bias added to each expert's score for choosing only. It goes up for underused experts and down for busy ones, so the load evens out without a loss term."),
       true, drawBias, biasCsv, {}, [](const RunData& r) { return r.hasBias(); }},
      {QStringLiteral("saturation"), tr("Router saturation: do the choices still change?"),
       tr("For the same probe text, the share of expert choices that are already the ones the current model makes. Near 1 = routing has settled."),
       false, all(drawSaturation), allCsv(saturationCsv), {}, {}},
      {QStringLiteral("specialisation"), tr("Which expert reads which kind of text?"),
       tr("Rows are kinds of text, columns experts; bright = that expert gets much of this domain's tokens. A bright cell per row means experts have specialised."),
       true, [](QCustomPlot* p, const RunData& r, int n, int l) { drawSpecialisation(p, r, n, l); }, specialisationCsv,
       {}, [](const RunData& r) { return r.hasDomains(); }},
      {QStringLiteral("specialisation-score"), tr("Specialisation over training"),
       tr("How much knowing the chosen expert tells about the kind of text (0 = nothing, 1 = every domain has its own experts)."),
       false, all(drawSpecialisationScore), allCsv(specialisationScoreCsv), {}, [](const RunData& r) { return r.hasDomains(); }},
      {QStringLiteral("drop-by-position"), tr("Dropped tokens by position"),
       tr("With a capacity limit, the share of each position's choices an overfull expert turned away (on the probe text)."),
       false, all(drawDropByPosition), allCsv(dropByPositionCsv), {}, [](const RunData& r) { return r.hasDrops(); }},
  };  return charts;
}

}  // namespace RunCharts
