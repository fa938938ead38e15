// Drawing of the Training view's charts from the run's step summaries (GUI thread).
#include <qcustomplot.h>

#include "chart_panel.hpp"
#include "theme.hpp"
#include "training_view.hpp"

using moelab::TrainConfig;

void TrainingView::drawLoss() {
  QCustomPlot* plot = m_loss->plot();
  plot->clearGraphs();
  if (!plot->legend->visible()) plot->legend->setVisible(true);
  const char* names[] = {"total", "language model", "aux loss", "z-loss"};
  for (int i = 0; i < 4; ++i) {
    QCPGraph* g = plot->addGraph();
    g->setName(tr(names[i]));
    g->setPen(QPen(Theme::series(i), Theme::current().lineWidth));
  }
  QCPGraph* val = plot->addGraph();
  val->setName(tr("validation"));
  val->setLineStyle(QCPGraph::lsNone);
  val->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, Theme::series(4), Theme::current().markerSize));
  for (const auto& s : m_history) {
    plot->graph(0)->addData(double(s->step), s->loss);
    plot->graph(1)->addData(double(s->step), s->lmLoss);
    plot->graph(2)->addData(double(s->step), s->auxLoss);
    plot->graph(3)->addData(double(s->step), s->zLoss);
    if (!std::isnan(s->valLoss)) val->addData(double(s->step), s->valLoss);
  }
  // The balancing terms only where they are switched on (a z-loss of 80 with coefficient 0 would
  // squash the curves that matter).
  const TrainConfig c = configFromKnobs();
  if (c.aux_alpha <= 0) plot->removeGraph(plot->graph(2));
  if (c.z_coef <= 0) plot->removeGraph(plot->graph(c.aux_alpha <= 0 ? 2 : 3));
  plot->legend->setFont(Theme::current().text);
  plot->xAxis->setLabel(tr("step"));
  plot->yAxis->setLabel(tr("loss"));
  plot->rescaleAxes(true);
  plot->yAxis->setRangeLower(0);
  Theme::current().applyTo(plot);
  plot->replot(QCustomPlot::rpQueuedReplot);
}

void TrainingView::drawCollapse() {
  QCustomPlot* plot = m_collapse->plot();
  plot->clearPlottables();
  plot->plotLayout()->clear();
  auto* rect = new QCPAxisRect(plot);
  plot->plotLayout()->addElement(0, 0, rect);
  const int layer = selectedLayer(), n = int(m_history.size()), E = int(m_experts);
  if (n == 0 || E == 0 || layer >= m_history.back()->layers.size()) {
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  auto* map = new QCPColorMap(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  map->data()->setSize(n, E);
  map->data()->setRange(QCPRange(m_history.front()->step, m_history.back()->step), QCPRange(0, E - 1));
  for (int i = 0; i < n; ++i)
    for (int e = 0; e < E; ++e) map->data()->setCell(i, e, m_history[i]->layers[layer].load[e]);
  map->setInterpolate(false);
  map->setGradient(viridisGradient());
  map->setDataRange(QCPRange(0, 1));  // one scale for every run and layer: share of the tokens
  auto* scale = new QCPColorScale(plot);
  scale->setGradient(viridisGradient());
  scale->setDataRange(QCPRange(0, 1));
  scale->axis()->setLabel(tr("share of tokens"));
  plot->plotLayout()->addElement(0, 1, scale);
  rect->axis(QCPAxis::atBottom)->setLabel(tr("training step"));
  rect->axis(QCPAxis::atLeft)->setLabel(tr("expert"));
  m_collapse->setTitle(tr("Collapse view: expert load over training (MoE layer %1)").arg(layer));
  rect->axis(QCPAxis::atBottom)->setRange(m_history.front()->step - 0.5, m_history.back()->step + 0.5);
  rect->axis(QCPAxis::atLeft)->setRange(-0.5, E - 0.5);
  if (E <= 16) {
    QSharedPointer<QCPAxisTickerFixed> fixed(new QCPAxisTickerFixed);
    fixed->setTickStep(1);
    rect->axis(QCPAxis::atLeft)->setTicker(fixed);
  }
  Theme::current().applyTo(plot);
  scale->axis()->setLabelFont(Theme::current().axisLabel);
  scale->axis()->setTickLabelFont(Theme::current().tickLabel);
  plot->replot(QCustomPlot::rpQueuedReplot);
}

void TrainingView::drawLoadNow() {
  QCustomPlot* plot = m_loadNow->plot();
  plot->clearPlottables();
  plot->clearItems();
  const int layer = selectedLayer(), E = int(m_experts);
  if (m_history.isEmpty() || E == 0 || layer >= m_history.back()->layers.size()) {
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const auto& L = m_history.back()->layers[layer];
  QVector<double> keys(E);
  for (int e = 0; e < E; ++e) keys[e] = e;
  auto* bars = new QCPBars(plot->xAxis, plot->yAxis);
  bars->setData(keys, L.load, true);
  bars->setBrush(Theme::series(0));
  bars->setPen(QPen(Theme::series(0).darker(140)));
  auto* even = new QCPItemStraightLine(plot);
  even->point1->setCoords(0, 1.0 / E);
  even->point2->setCoords(1, 1.0 / E);
  even->setPen(QPen(Theme::series(3), Theme::current().lineWidth, Qt::DashLine));
  plot->xAxis->setLabel(tr("expert (MoE layer %1)").arg(layer));
  plot->yAxis->setLabel(tr("share"));
  plot->xAxis->setRange(-0.6, E - 0.4);
  if (E <= 16) {
    QSharedPointer<QCPAxisTickerFixed> fixed(new QCPAxisTickerFixed);
    fixed->setTickStep(1);
    plot->xAxis->setTicker(fixed);
  }
  plot->yAxis->setRange(0, std::max(*std::max_element(L.load.begin(), L.load.end()), 1.0 / E) * 1.2);
  Theme::current().applyTo(plot);
  plot->replot(QCustomPlot::rpQueuedReplot);
}

void TrainingView::drawBalance() {
  QCustomPlot* plot = m_balanceChart->plot();
  plot->clearGraphs();
  plot->legend->setVisible(true);
  if (m_history.isEmpty()) {
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const int nL = int(m_history.back()->layers.size());
  for (int l = 0; l < nL; ++l) {
    QCPGraph* g = plot->addGraph();
    g->setName(tr("CV, layer %1").arg(l));
    g->setPen(QPen(Theme::series(l), Theme::current().lineWidth));
    QCPGraph* d = plot->addGraph(plot->xAxis, plot->yAxis2);
    d->setName(tr("dead experts, layer %1").arg(l));
    d->setPen(QPen(Theme::series(l), Theme::current().lineWidth, Qt::DotLine));
    d->setLineStyle(QCPGraph::lsStepLeft);
    for (const auto& s : m_history) {
      if (l >= s->layers.size()) continue;
      g->addData(double(s->step), s->layers[l].cv);
      d->addData(double(s->step), double(s->layers[l].dead));
    }
  }
  plot->yAxis2->setVisible(true);
  plot->yAxis2->setLabel(tr("dead experts"));
  plot->xAxis->setLabel(tr("step"));
  plot->yAxis->setLabel(tr("CV of load"));
  plot->rescaleAxes();
  plot->yAxis->setRangeLower(0);
  plot->yAxis2->setRange(0, std::max<double>(2, double(m_experts)));
  Theme::current().applyTo(plot);
  plot->replot(QCustomPlot::rpQueuedReplot);
}
