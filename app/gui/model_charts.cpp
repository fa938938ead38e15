// The Model view's charts: parameters by component, real models, memory vs compute, and their CSV.
#include "model_view.hpp"

#include <QComboBox>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QRegularExpression>
#include <QRegularExpressionValidator>
#include <QScrollArea>
#include <QScrollBar>
#include <QSpinBox>
#include <QSplitter>
#include <QTimer>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <qcustomplot.h>

#include "block_diagram.hpp"
#include "chart_panel.hpp"
#include "error.hpp"
#include "presets.hpp"
#include "registry.hpp"

#include "model_charts_util.hpp"

using namespace model_charts;

QVector<ModelView::Row> ModelView::rows() const {
  QVector<Row> rows;
  const QString compared = m_compare->currentData().toString();
  for (const RealModel& m : m_real)
    rows << Row{m.name, double(m.params.total), double(m.params.active), m.flops, false, m.id == compared};
  rows << Row{m_name.isEmpty() ? tr("lab model") : m_name, double(m_params.total), double(m_params.active), m_flops,
              true, false};
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.total < b.total; });
  return rows;
}

void ModelView::updateParamsChart() {
  const Theme& t = m_theme;
  QCustomPlot* plot = m_paramsChart->plot();
  plot->clearPlottables();
  plot->clearItems();
  QCPAxis* keys = plot->yAxis;
  QCPAxis* values = plot->xAxis;
  const double total = double(m_params.total), active = double(m_params.active);
  QCPBars* below = nullptr;
  for (int i = 0; i < moelab::kNumComponents; ++i) {
    if (m_params.total_by[i] == 0) continue;
    auto* bars = horizontalBars(keys, values, Theme::component(i), 0.6, t);
    const double share = total > 0 ? 100.0 * double(m_params.total_by[i]) / total : 0;
    bars->setName(QStringLiteral("%1 (%2)").arg(componentLabel(i),
                                                share < 1 ? QStringLiteral("<1%") : QString::number(share, 'f', 0) + '%'));
    bars->setData({1, 2}, {double(m_params.active_by[i]), double(m_params.total_by[i])}, true);
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
    head->setText(tr("%1 total / %2 active per token (%3%)")
                      .arg(countText(total), countText(active))
                      .arg(total > 0 ? QString::number(100.0 * active / total, 'f', 0) : QStringLiteral("0")));
    head->setFont(t.axisLabel);
    head->setTextColor(t.foreground);
  }
  plot->legend->setWrap(2);
  m_paramsChart->replot();
}

void ModelView::updateRealModelsChart() {
  const Theme& t = m_theme;
  QCustomPlot* plot = m_realChart->plot();
  plot->clearPlottables();
  plot->clearItems();
  const QVector<Row> rows = this->rows();
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
  plot->legend->setWrap(2);
  m_realChart->replot();
}

void ModelView::updateMemoryChart() {
  const Theme& t = m_theme;
  QCustomPlot* plot = m_memoryChart->plot();
  plot->clearPlottables();
  plot->clearItems();
  const QList<QCPAxisRect*> rects = plot->axisRects();
  if (rects.size() < 2) return;
  QCPAxisRect* mem = rects[0];
  QCPAxisRect* flop = rects[1];
  const QVector<Row> rows = this->rows();
  auto names = QSharedPointer<QCPAxisTickerText>::create();
  for (int i = 0; i < int(rows.size()); ++i) names->addTick(i, rows[i].label());
  for (QCPAxisRect* r : {mem, flop}) {
    QCPAxis* y = r->axis(QCPAxis::atLeft);
    y->setTicker(names);
    y->setRange(-0.6, rows.size() - 0.4);
    y->grid()->setVisible(false);
  }
  flop->axis(QCPAxis::atLeft)->setTickLabels(false);

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
  // The largest models sit at the top, right of the line, so its label goes top left of it.
  auto* gpuLabel = textItem(plot, tr("80 GB GPU"), t.tickLabel, t.foreground, Qt::AlignRight | Qt::AlignTop);
  gpuLabel->setClipAxisRect(mem);
  gpuLabel->position->setAxisRect(mem);
  gpuLabel->position->setAxes(memX, memY);
  gpuLabel->position->setTypeY(QCPItemPosition::ptAxisRectRatio);
  gpuLabel->position->setCoords(80e9, 0.0);
  gpuLabel->setPadding(QMargins(0, 2, 6, 0));
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
  plot->legend->setWrap(4);
  m_memoryChart->replot();
}

QString ModelView::paramsCsv() const {
  QStringList lines{QStringLiteral("component,total_params,active_params_per_token")};
  for (int i = 0; i < moelab::kNumComponents; ++i)
    lines << QStringList{QString::fromLatin1(moelab::component_name(moelab::Component(i))), num(m_params.total_by[i]),
                         num(m_params.active_by[i])}
                 .join(',');
  lines << QStringList{QStringLiteral("all"), num(m_params.total), num(m_params.active)}.join(',');
  return lines.join('\n') + '\n';
}

QString ModelView::realModelsCsv() const {
  QStringList lines{QStringLiteral("model,total_params,active_params,headline,compared")};
  for (const RealModel& m : m_real)
    lines << QStringList{quoted(m.name), num(m.params.total), num(m.params.active), quoted(m.headline),
                         m.id == m_compare->currentData().toString() ? QStringLiteral("1") : QStringLiteral("0")}
                 .join(',');
  lines << QStringList{quoted(m_name + tr(" (lab)")), num(m_params.total), num(m_params.active), QString(), QStringLiteral("0")}
               .join(',');
  return lines.join('\n') + '\n';
}

QString ModelView::memoryCsv() const {
  QStringList lines{QStringLiteral("model,total_params,active_params,bytes_fp32,bytes_bf16,bytes_int8,bytes_int4,"
                                   "flops_per_token_ctx%1").arg(kContext)};
  for (const Row& r : rows())
    lines << QStringList{quoted(r.name), num(r.total), num(r.active), num(r.total * 4), num(r.total * 2), num(r.total),
                         num(r.total / 2), num(r.flops)}
                 .join(',');
  return lines.join('\n') + '\n';
}

QString ModelView::blockCsv() const {
  QStringList lines{QStringLiteral("layer,kind,routed_experts,top_k,shared_ffn_size,dense_ffn_size,highlighted_experts")};
  for (int64_t l = 0; l < m_config.num_layers; ++l) {
    const bool moe = m_config.is_moe_layer(l);
    QStringList hi;
    for (int e : m_highlights.value(int(l))) hi << QString::number(e);
    lines << QStringList{num(l), moe ? QStringLiteral("moe") : QStringLiteral("dense"), num(moe ? m_config.num_experts : 0),
                         num(moe ? m_config.top_k : 0), num(moe ? m_config.shared_ffn_size : 0),
                         num(moe ? 0 : m_config.dense_ffn_size), quoted(hi.join(' '))}
                 .join(',');
  }
  return lines.join('\n') + '\n';
}

