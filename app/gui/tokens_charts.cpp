// Drawing of the Tokens view's charts from the current snapshot (GUI thread, snapshot only).
#include <QLabel>
#include <numeric>
#include <qcustomplot.h>

#include "chart_panel.hpp"
#include "theme.hpp"
#include "token_text.hpp"
#include "tokenizer.hpp"
#include "tokens_view.hpp"

namespace {

constexpr int kMaxSmallMultiples = 8;

// Token labels on the x axis: all of them when they fit, else every n-th.
// Axis labels: one character where possible (specials as symbols), so they need no rotation.
QString axisLabel(const QString& label) {
  if (label == QLatin1String(" ")) return QStringLiteral("␣");
  if (label == QLatin1String("<bos>")) return QStringLiteral("▶");
  if (label == QLatin1String("<eos>")) return QStringLiteral("■");
  return label;
}

QSharedPointer<QCPAxisTickerText> tokenTicker(const TokensSnapshot& s, int maxLabels, bool* needsRotation = nullptr) {
  QSharedPointer<QCPAxisTickerText> t(new QCPAxisTickerText);
  const int every = std::max(1, (s.count() + maxLabels - 1) / maxLabels);
  bool longLabel = false;
  for (int i = 0; i < s.count(); i += every) {
    const QString l = axisLabel(s.labels[i]);
    longLabel = longLabel || l.size() > 2;
    t->addTick(i, l);
  }
  if (needsRotation) *needsRotation = longLabel;
  return t;
}

QCPColorMap* addMap(QCustomPlot* plot, QCPAxisRect* rect, int T, int E, const QVector<float>& probs) {
  auto* map = new QCPColorMap(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  map->data()->setSize(T, E);
  map->data()->setRange(QCPRange(0, T - 1), QCPRange(0, E - 1));
  for (int t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e) map->data()->setCell(t, e, probs[t * E + e]);
  map->setInterpolate(false);  // discrete cells, never smeared
  map->setGradient(viridisGradient());
  map->setDataRange(QCPRange(0, 1));
  (void)plot;
  return map;
}

// Chosen experts as circles: white fill, dark outline — visible on every colour and in greyscale.
void addMarks(QCustomPlot* plot, QCPAxisRect* rect, const TokensSnapshot::Layer& L, int T, int K) {
  auto* g = plot->addGraph(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  g->setLineStyle(QCPGraph::lsNone);
  const Theme& th = Theme::current();
  g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(Qt::black, th.presentation ? 2.5 : 1.5),
                                     QBrush(Qt::white), th.markerSize));
  g->setName(QObject::tr("chosen (top-%1)").arg(K));
  for (int t = 0; t < T; ++t)
    for (int k = 0; k < K; ++k)
      if (L.ids[t * K + k] >= 0) g->addData(t, L.ids[t * K + k]);
}

}  // namespace

void TokensView::drawHeatmap() {
  QCustomPlot* plot = m_heatmap->plot();
  plot->clearPlottables();
  plot->clearItems();
  plot->plotLayout()->clear();
  if (!m_snap || m_snap->layers.isEmpty()) {
    plot->plotLayout()->addElement(0, 0, new QCPAxisRect(plot));
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const Theme& th = Theme::current();
  const int T = m_snap->count(), E = int(m_snap->experts()), K = int(m_snap->topK);
  const int nLayers = int(m_snap->layers.size());
  auto* scale = new QCPColorScale(plot);
  scale->setGradient(viridisGradient());
  scale->setDataRange(QCPRange(0, 1));
  scale->axis()->setLabel(tr("probability"));
  const int sel = selectedLayer();
  if (sel >= 0 || nLayers == 1) {
    const auto& L = m_snap->layers[std::clamp(sel, 0, nLayers - 1)];
    auto* rect = new QCPAxisRect(plot);
    plot->plotLayout()->addElement(0, 0, rect);
    plot->plotLayout()->addElement(0, 1, scale);
    addMap(plot, rect, T, E, L.probs);
    addMarks(plot, rect, L, L.ids.size() / K, K);
    bool rotate = false;
    rect->axis(QCPAxis::atBottom)->setTicker(tokenTicker(*m_snap, th.presentation ? 24 : 48, &rotate));
    rect->axis(QCPAxis::atBottom)->setTickLabelRotation(rotate ? 60 : 0);
    rect->axis(QCPAxis::atBottom)->setLabel(th.presentation ? QString() : tr("token"));
    rect->axis(QCPAxis::atLeft)->setLabel(tr("expert"));
    rect->axis(QCPAxis::atBottom)->setRange(-0.5, T - 0.5);
    rect->axis(QCPAxis::atLeft)->setRange(-0.5, E - 0.5);
    if (E <= 16) {
      QSharedPointer<QCPAxisTickerFixed> fixed(new QCPAxisTickerFixed);
      fixed->setTickStep(1);
      rect->axis(QCPAxis::atLeft)->setTicker(fixed);
    }
    if (m_token >= 0 && m_token < T) {  // selected token: a frame around its column
      auto* box = new QCPItemRect(plot);
      box->setClipAxisRect(rect);
      box->topLeft->setAxes(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
      box->bottomRight->setAxes(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
      box->topLeft->setCoords(m_token - 0.5, E - 0.5);
      box->bottomRight->setCoords(m_token + 0.5, -0.5);
      box->setPen(QPen(QColor("#D55E00"), th.presentation ? 4 : 2.5));
    }
    m_heatmap->setTitle(tr("Routing in layer %1: tokens × experts").arg(L.layer));
  } else if (nLayers <= kMaxSmallMultiples) {
    // Small multiples: one strip per MoE layer on one colour scale.
    for (int i = 0; i < nLayers; ++i) {
      const auto& L = m_snap->layers[i];
      auto* rect = new QCPAxisRect(plot);
      plot->plotLayout()->addElement(i, 0, rect);
      addMap(plot, rect, T, E, L.probs);
      if (T * nLayers <= 4000) addMarks(plot, rect, L, L.ids.size() / K, K);
      rect->axis(QCPAxis::atLeft)->setLabel(tr("L%1").arg(L.layer));
      rect->axis(QCPAxis::atLeft)->setRange(-0.5, E - 0.5);
      rect->axis(QCPAxis::atBottom)->setRange(-0.5, T - 0.5);
      rect->axis(QCPAxis::atBottom)->setTicker(tokenTicker(*m_snap, 32));
      rect->axis(QCPAxis::atBottom)->setTickLabels(i == nLayers - 1);
      rect->setMargins(QMargins(0, 0, 0, 0));
    }
    plot->plotLayout()->addElement(0, 1, scale);
    m_heatmap->setTitle(tr("Routing in every MoE layer (one strip per layer)"));
  } else {
    // Many layers (e.g. 60 x 256): aggregate to layers x experts, the share of choices.
    auto* rect = new QCPAxisRect(plot);
    plot->plotLayout()->addElement(0, 0, rect);
    plot->plotLayout()->addElement(0, 1, scale);
    auto* map = new QCPColorMap(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
    map->data()->setSize(E, nLayers);
    map->data()->setRange(QCPRange(0, E - 1), QCPRange(0, nLayers - 1));
    double mx = 0;
    for (int i = 0; i < nLayers; ++i) {
      const auto& L = m_snap->layers[i];
      QVector<double> counts(E, 0.0);
      for (int id : L.ids)
        if (id >= 0) counts[id] += 1;
      for (int e = 0; e < E; ++e) {
        const double share = counts[e] / std::max<qsizetype>(1, L.ids.size());
        map->data()->setCell(e, i, share);
        mx = std::max(mx, share);
      }
    }
    map->setInterpolate(false);
    map->setGradient(viridisGradient());
    map->setDataRange(QCPRange(0, std::max(mx, 1e-6)));
    scale->setDataRange(QCPRange(0, std::max(mx, 1e-6)));
    scale->axis()->setLabel(tr("share of the choices"));
    rect->axis(QCPAxis::atBottom)->setLabel(tr("expert"));
    rect->axis(QCPAxis::atLeft)->setLabel(tr("MoE layer"));
    rect->axis(QCPAxis::atBottom)->setRange(-0.5, E - 0.5);
    rect->axis(QCPAxis::atLeft)->setRange(-0.5, nLayers - 0.5);
    m_heatmap->setTitle(tr("Expert load in all %1 MoE layers (aggregated over the text)").arg(nLayers));
  }
  plot->setInteractions(QCP::iRangeZoom | QCP::iRangeDrag);
  th.applyTo(plot);
  for (QCPAxisRect* r : plot->axisRects()) r->setRangeZoom(Qt::Horizontal);
  scale->axis()->setLabelFont(th.axisLabel);
  scale->axis()->setTickLabelFont(th.tickLabel);
  plot->replot(QCustomPlot::rpQueuedReplot);
}

void TokensView::drawLoad() {
  QCustomPlot* plot = m_load->plot();
  plot->clearPlottables();
  plot->clearItems();
  const auto* L = layerData();
  if (!m_snap || !L) {
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const int E = int(m_snap->experts());
  QVector<double> keys(E), shares(E, 0.0);
  int valid = 0;
  for (int id : L->ids)
    if (id >= 0) shares[id] += 1, ++valid;
  for (int e = 0; e < E; ++e) keys[e] = e, shares[e] /= std::max(1, valid);
  auto* bars = new QCPBars(plot->xAxis, plot->yAxis);
  bars->setData(keys, shares, true);
  bars->setWidth(0.75);
  bars->setBrush(Theme::series(0));
  bars->setPen(QPen(Theme::series(0).darker(140)));
  auto* uniform = new QCPItemStraightLine(plot);
  uniform->point1->setCoords(0, 1.0 / E);
  uniform->point2->setCoords(1, 1.0 / E);
  uniform->setPen(QPen(Theme::series(3), Theme::current().lineWidth, Qt::DashLine));
  auto* label = new QCPItemText(plot);
  label->position->setCoords(E - 0.5, 1.0 / E);
  label->setPositionAlignment(Qt::AlignRight | Qt::AlignBottom);
  label->setText(tr("even split 1/%1").arg(E));
  label->setFont(Theme::current().text);
  label->setColor(Theme::series(3));
  label->setBrush(QColor(255, 255, 255, 210));
  plot->xAxis->setLabel(tr("expert (layer %1)").arg(L->layer));
  plot->yAxis->setLabel(tr("share"));
  plot->xAxis->setRange(-0.6, E - 0.4);
  plot->yAxis->setRange(0, std::max(*std::max_element(shares.begin(), shares.end()), 1.0 / E) * 1.25);
  plot->yAxis->ticker()->setTickCount(Theme::current().presentation ? 3 : 5);
  if (E <= 16) {
    QSharedPointer<QCPAxisTickerFixed> fixed(new QCPAxisTickerFixed);
    fixed->setTickStep(1);
    plot->xAxis->setTicker(fixed);
  }
  Theme::current().applyTo(plot);
  plot->replot(QCustomPlot::rpQueuedReplot);
}

void TokensView::drawWhy() {
  const auto* L = layerData();
  if (!m_snap || !L || m_snap->count() == 0) {
    m_whyLabel->setText(tr("Step a token, then click it."));
    return;
  }
  const int64_t E = m_snap->experts(), K = m_snap->topK;
  const int routed = int(L->ids.size() / std::max<int64_t>(1, K));
  const int t = std::clamp(m_token < 0 ? routed - 1 : m_token, 0, routed - 1);
  const bool sigmoid = m_snap->config.scoring == moelab::RouterScoring::Sigmoid;
  // Rows: the chosen experts first, then the most probable others (at most 8 rows).
  QVector<int> order(static_cast<int>(E));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return L->probs[t * E + a] > L->probs[t * E + b]; });
  QString rows;
  double chosenSum = 0;
  for (int k = 0; k < K; ++k)
    if (L->ids[t * K + k] >= 0) chosenSum += L->probs[t * E + L->ids[t * K + k]];
  for (int i = 0; i < std::min<int64_t>(E, Theme::current().presentation ? 4 : 6); ++i) {
    const int e = order[i];
    int rank = 0;
    double w = 0;
    for (int k = 0; k < K; ++k)
      if (L->ids[t * K + k] == e) rank = k + 1, w = L->weights[t * K + k];
    const QString style = rank ? QStringLiteral(" style='font-weight:bold'") : QString();
    rows += QStringLiteral("<tr%1><td>%2</td><td align=right>%3</td><td align=right>%4</td><td>%5</td></tr>")
                .arg(style)
                .arg(e)
                .arg(L->logits[t * E + e], 0, 'f', 2)
                .arg(L->probs[t * E + e], 0, 'f', 3)
                .arg(rank ? tr("#%1, w = %2").arg(rank).arg(w, 0, 'f', 2) : QStringLiteral("–"));
  }
  QString mix;
  for (int k = 0; k < K; ++k)
    if (L->ids[t * K + k] >= 0)
      mix += QStringLiteral("%1%2·expert<sub>%3</sub>(x)").arg(mix.isEmpty() ? "" : " + ").arg(L->weights[t * K + k], 0, 'f', 2).arg(L->ids[t * K + k]);
  const bool renorm = std::abs(std::accumulate(L->weights.begin() + t * K, L->weights.begin() + (t + 1) * K, 0.0) - 1.0) < 1e-4 &&
                      std::abs(chosenSum - 1.0) > 1e-4;
  m_whyLabel->setText(
      tr("<b>Token %1 '%2', layer %3.</b> Its hidden state, RMS-normed (length %11), is scored against each expert "
         "(logit = router row · state); %4 "
         "The top-%5 are kept%6.<table cellspacing=4><tr><th align=left>expert</th><th>logit</th><th>%7</th>"
         "<th align=left>chosen</th></tr>%8</table>Output: <b>%9</b>")
          .arg(t)
          .arg(m_snap->labels[t].toHtmlEscaped())
          .arg(L->layer)
          .arg(sigmoid ? tr("sigmoid gives each a score in (0, 1).") : tr("softmax turns them into probabilities."))
          .arg(K)
          .arg(renorm ? tr(" and divided by their sum (%1) so the weights add to 1").arg(chosenSum, 0, 'f', 3)
                      : tr("; their probabilities are the weights"))
          .arg(sigmoid ? tr("score") : tr("prob."))
          .arg(rows)
          .arg(mix)
          .arg(t < L->inputNorm.size() ? QString::number(L->inputNorm[t], 'f', 2) : QStringLiteral("?")));
}

void TokensView::drawCoactivation() {
  QCustomPlot* plot = m_coact->plot();
  plot->clearPlottables();
  plot->plotLayout()->clear();
  auto* rect = new QCPAxisRect(plot);
  plot->plotLayout()->addElement(0, 0, rect);
  const auto* L = layerData();
  if (!m_snap || !L) {
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const int E = int(m_snap->experts()), K = int(m_snap->topK);
  auto* map = new QCPColorMap(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  map->data()->setSize(E, E);
  map->data()->setRange(QCPRange(0, E - 1), QCPRange(0, E - 1));
  map->data()->fill(0);
  double mx = 0;
  for (int t = 0; t < L->ids.size() / K; ++t)
    for (int a = 0; a < K; ++a)
      for (int b = 0; b < K; ++b) {
        const int i = L->ids[t * K + a], j = L->ids[t * K + b];
        if (i < 0 || j < 0 || (a != b && i == j)) continue;
        const double v = map->data()->cell(i, j) + 1;
        map->data()->setCell(i, j, v);
        mx = std::max(mx, v);
      }
  map->setInterpolate(false);
  map->setGradient(viridisGradient());
  map->setDataRange(QCPRange(0, std::max(1.0, mx)));
  auto* scale = new QCPColorScale(plot);
  scale->setGradient(viridisGradient());
  scale->setDataRange(QCPRange(0, std::max(1.0, mx)));
  scale->axis()->setLabel(tr("tokens"));
  plot->plotLayout()->addElement(0, 1, scale);
  rect->axis(QCPAxis::atBottom)->setLabel(tr("expert i"));
  rect->axis(QCPAxis::atLeft)->setLabel(tr("expert j"));
  rect->axis(QCPAxis::atBottom)->setRange(-0.5, E - 0.5);
  rect->axis(QCPAxis::atLeft)->setRange(-0.5, E - 0.5);
  if (E <= 16) {
    QSharedPointer<QCPAxisTickerFixed> fixed(new QCPAxisTickerFixed);
    fixed->setTickStep(1);
    rect->axis(QCPAxis::atBottom)->setTicker(fixed);
    rect->axis(QCPAxis::atLeft)->setTicker(fixed);
  }
  Theme::current().applyTo(plot);
  scale->axis()->setLabelFont(Theme::current().axisLabel);
  plot->replot(QCustomPlot::rpQueuedReplot);
}

void TokensView::drawNext() {
  QCustomPlot* plot = m_next->plot();
  plot->clearPlottables();
  if (!m_snap || m_snap->next.isEmpty()) {
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const bool bytes = m_snap->config.tokenizer == "bytes";
  QVector<double> keys, values;
  QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
  const int shown = std::min<int>(int(m_snap->next.size()), Theme::current().presentation ? 5 : 10);
  for (int i = 0; i < shown; ++i) {
    const auto& [id, p] = m_snap->next[i];
    keys << i;
    values << p;
    ticker->addTick(i, axisLabel(bytes ? QString::fromStdString(moelab::token_label(id)) : QString::number(id)));
  }
  auto* bars = new QCPBars(plot->yAxis, plot->xAxis);  // horizontal bars, most likely on top
  for (double& k : keys) k = double(shown - 1) - k;
  QSharedPointer<QCPAxisTickerText> flipped(new QCPAxisTickerText);
  for (auto it = ticker->ticks().constBegin(); it != ticker->ticks().constEnd(); ++it)
    flipped->addTick(double(shown - 1) - it.key(), it.value());
  bars->setData(keys, values);
  bars->setBrush(Theme::series(2));
  bars->setPen(QPen(Theme::series(2).darker(140)));
  plot->yAxis->setTicker(flipped);
  plot->yAxis->setRange(-0.6, shown - 0.4);
  plot->xAxis->setRange(0, 1);
  plot->xAxis->setLabel(tr("probability of the next token"));
  Theme::current().applyTo(plot);
  plot->replot(QCustomPlot::rpQueuedReplot);
}

void TokensView::drawTokenLayers() {
  QCustomPlot* plot = m_tokenLayers->plot();
  plot->clearPlottables();
  plot->plotLayout()->clear();
  auto* rect = new QCPAxisRect(plot);
  plot->plotLayout()->addElement(0, 0, rect);
  if (!m_snap || m_snap->layers.isEmpty() || m_snap->count() == 0) {
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const int t = std::clamp(m_token < 0 ? m_snap->count() - 1 : m_token, 0, m_snap->count() - 1);
  const int E = int(m_snap->experts()), K = int(m_snap->topK), nL = int(m_snap->layers.size());
  auto* map = new QCPColorMap(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  map->data()->setSize(E, nL);
  map->data()->setRange(QCPRange(0, E - 1), QCPRange(0, nL - 1));
  auto* marks = plot->addGraph(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  marks->setLineStyle(QCPGraph::lsNone);
  marks->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(Qt::black, 1.5), QBrush(Qt::white),
                                         Theme::current().markerSize));
  QSharedPointer<QCPAxisTickerText> rows(new QCPAxisTickerText);
  for (int i = 0; i < nL; ++i) {
    const auto& L = m_snap->layers[i];
    for (int e = 0; e < E; ++e) map->data()->setCell(e, i, L.probs[t * E + e]);
    for (int k = 0; k < K; ++k)
      if (L.ids[t * K + k] >= 0 && nL * E <= 4096) marks->addData(L.ids[t * K + k], i);
    if (nL <= 16 || i % (nL / 12 + 1) == 0) rows->addTick(i, tr("L%1").arg(L.layer));
  }
  map->setInterpolate(false);
  map->setGradient(viridisGradient());
  map->setDataRange(QCPRange(0, 1));
  auto* scale = new QCPColorScale(plot);
  scale->setGradient(viridisGradient());
  scale->setDataRange(QCPRange(0, 1));
  scale->axis()->setLabel(tr("probability"));
  plot->plotLayout()->addElement(0, 1, scale);
  rect->axis(QCPAxis::atLeft)->setTicker(rows);
  rect->axis(QCPAxis::atBottom)->setLabel(tr("expert (token %1 '%2')").arg(t).arg(axisLabel(m_snap->labels[t])));
  rect->axis(QCPAxis::atBottom)->setRange(-0.5, E - 0.5);
  rect->axis(QCPAxis::atLeft)->setRange(-0.5, nL - 0.5);
  if (E <= 16) {
    QSharedPointer<QCPAxisTickerFixed> fixed(new QCPAxisTickerFixed);
    fixed->setTickStep(1);
    rect->axis(QCPAxis::atBottom)->setTicker(fixed);
  }
  Theme::current().applyTo(plot);
  scale->axis()->setLabelFont(Theme::current().axisLabel);
  scale->axis()->setTickLabelFont(Theme::current().tickLabel);
  plot->replot(QCustomPlot::rpQueuedReplot);
}
