// Drawing of the Tokens view's charts from the current snapshot (GUI thread, snapshot only).
#include <QLabel>
#include <QPainterPath>
#include <algorithm>
#include <set>
#include <numeric>
#include <qcustomplot.h>

#include "chart_panel.hpp"
#include "chart_kit.hpp"
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

// Marks over a routing heatmap, one graph per kind (each with its legend entry):
//   chosen     white circle, dark outline: visible on every colour and in greyscale;
//   dropped    grey ×, dark outline: the router chose the expert but it was full (capacity);
//   re-routed  orange diamond: the slot went to the token's next-best expert with room.
enum MarkKind { kChosen = 0, kDropped = 1, kRerouted = 2 };
struct Mark {
  double x, y;
  int kind;
};

// Slot marks of one layer: x = token, y = expert (a dropped slot at the expert it wanted).
QVector<Mark> layerMarks(const TokensSnapshot::Layer& L, int T, int K) {
  QVector<Mark> m;
  for (int t = 0; t < T; ++t)
    for (int k = 0; k < K; ++k) {
      const int i = t * K + k, flag = i < L.dropped.size() ? L.dropped[i] : 0;
      if (flag == 1 && i < L.wanted.size()) m.push_back({double(t), double(L.wanted[i]), kDropped});
      else if (L.ids[i] >= 0) m.push_back({double(t), double(L.ids[i]), flag == 2 ? kRerouted : kChosen});
    }
  return m;
}

QPainterPath crossPath() {  // an × for QCPScatterStyle::ssCustom (drawn at size / 6 scale)
  QPainterPath p;
  const double a = 0.8, l = 3.4;  // arm half-width and length
  p.addPolygon(QPolygonF({{a, a}, {a, l}, {-a, l}, {-a, a}, {-l, a}, {-l, -a}, {-a, -a}, {-a, -l}, {a, -l}, {a, -a},
                          {l, -a}, {l, a}, {a, a}}));
  return QTransform().rotate(45).map(p);
}

// One graph per kind present (chosen always, so an empty text still has its graph); a graph
// carries its kind in the "mark" property for the tests' reading of the chart.
void addMarks(QCustomPlot* plot, QCPAxisRect* rect, const QVector<Mark>& marks, int K, bool capacity,
              bool reroute, QCPLegend* legend, double outlineWidth) {
  const Theme& th = Theme::current();
  QPen outline(Qt::black, outlineWidth);
  QPen thin(Qt::black, th.presentation ? 2.0 : 1.2);
  thin.setCosmetic(true);
  for (int kind : {kChosen, kDropped, kRerouted}) {
    const bool any = std::any_of(marks.begin(), marks.end(), [kind](const Mark& m) { return m.kind == kind; });
    const bool expected = capacity && (kind == kDropped ? !reroute : reroute);  // legend entry even when none yet
    if (kind != kChosen && !any && !expected) continue;
    auto* g = plot->addGraph(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
    g->setLineStyle(QCPGraph::lsNone);
    g->setProperty("mark", kind);
    if (kind == kChosen) {
      g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, outline, QBrush(Qt::white), th.markerSize));
      g->setName(capacity ? QObject::tr("chosen") : QObject::tr("chosen (top-%1)").arg(K));
    } else if (kind == kDropped) {
      g->setScatterStyle(QCPScatterStyle(crossPath(), thin, QBrush(QColor("#d9d9d9")), th.markerSize * 2.0));
      g->setName(QObject::tr("dropped (expert full)"));
    } else {
      g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDiamond, outline, QBrush(QColor("#E69F00")),
                                         th.markerSize * 1.8));
      g->setName(QObject::tr("re-routed (next-best)"));
    }
    for (const Mark& m : marks)
      if (m.kind == kind) g->addData(m.x, m.y);
    if (legend) g->addToLegend(legend);
  }
}

// A legend row under the chart (for the capacity marks), styled by the theme.
QCPLegend* legendBelow(QCustomPlot* plot, int row) {
  auto* legend = new QCPLegend;
  plot->legend = legend;
  plot->plotLayout()->addElement(row, 0, legend);
  plot->plotLayout()->setRowStretchFactor(row, 0.001);
  legend->setLayer(QStringLiteral("legend"));
  legend->setFillOrder(QCPLayoutGrid::foColumnsFirst);
  legend->setMargins(QMargins(6, 2, 6, 2));
  return legend;
}

// "Capacity ..." sentence of a caption, with the dropped / re-routed counts of the given layers.
QString capacityStats(const TokensSnapshot& s, const QVector<const TokensSnapshot::Layer*>& layers) {
  int dropped = 0, rerouted = 0, choices = 0;
  for (const auto* L : layers) dropped += L->droppedSlots(), rerouted += L->reroutedSlots(), choices += int(L->ids.size());
  const QString where = layers.size() == 1 ? QObject::tr("Layer %1").arg(layers[0]->layer) : QObject::tr("All MoE layers");
  return s.reroute ? QObject::tr("%1: %2 of %3 choices re-routed, %4 dropped.").arg(where).arg(rerouted).arg(choices).arg(dropped)
                   : QObject::tr("%1: %2 of %3 choices dropped.").arg(where).arg(dropped).arg(choices);
}

}  // namespace

// Share of a layer's T·K choices each expert ran, and the share it refused when full (dropped).
void expertLoad(const TokensSnapshot::Layer& L, int E, QVector<double>* ran, QVector<double>* refused) {
  ran->fill(0.0, E);
  refused->fill(0.0, E);
  const double choices = std::max<qsizetype>(1, L.ids.size());
  for (int i = 0; i < L.ids.size(); ++i) {
    if (L.ids[i] >= 0) (*ran)[L.ids[i]] += 1 / choices;
    else if (i < L.dropped.size() && L.dropped[i] == 1 && i < L.wanted.size()) (*refused)[L.wanted[i]] += 1 / choices;
  }
}

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
  const bool capacity = m_snap->capacity > 0;
  QVector<const TokensSnapshot::Layer*> statLayers;
  if (sel >= 0 || nLayers == 1) {
    const auto& L = m_snap->layers[std::clamp(sel, 0, nLayers - 1)];
    auto* rect = new QCPAxisRect(plot);
    plot->plotLayout()->addElement(0, 0, rect);
    plot->plotLayout()->addElement(0, 1, scale);
    addMap(plot, rect, T, E, L.probs);
    addMarks(plot, rect, layerMarks(L, int(L.ids.size()) / K, K), K, capacity, m_snap->reroute,
             capacity ? legendBelow(plot, 1) : nullptr, th.presentation ? 2.5 : 1.5);
    statLayers = {&L};
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
      if (T * nLayers <= 4000) addMarks(plot, rect, layerMarks(L, int(L.ids.size()) / K, K), K, capacity, m_snap->reroute, nullptr,
                 th.presentation ? 2.5 : 1.5);
      statLayers.push_back(&L);
      rect->axis(QCPAxis::atLeft)->setLabel(tr("L%1").arg(L.layer));
      rect->axis(QCPAxis::atLeft)->setRange(-0.5, E - 0.5);
      rect->axis(QCPAxis::atBottom)->setRange(-0.5, T - 0.5);
      rect->axis(QCPAxis::atBottom)->setTicker(tokenTicker(*m_snap, 32));
      rect->axis(QCPAxis::atBottom)->setTickLabels(i == nLayers - 1);
      rect->setMargins(QMargins(0, 0, 0, 0));
    }
    plot->plotLayout()->addElement(0, 1, scale);
    if (capacity && T * nLayers <= 4000) {  // one legend for every strip
      QCPLegend* legend = legendBelow(plot, nLayers);
      std::set<int> kinds;
      for (int i = 0; i < plot->graphCount(); ++i)
        if (kinds.insert(plot->graph(i)->property("mark").toInt()).second) plot->graph(i)->addToLegend(legend);
    }
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
      statLayers.push_back(&L);
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
  QString caption = tr("Each column is a token, each row an expert; colour is the router's probability. "
                       "Circles mark the top-k experts the token was actually sent to.");
  if (capacity) {
    // The legend names the marks; the caption says what capacity means and how much overflowed.
    const QString stats = capacityStats(*m_snap, statLayers);
    caption = th.presentation
                  ? tr("Capacity %1 per expert, over the whole text as one batch. %2").arg(m_snap->capacity).arg(stats)
                  : tr("Colour is the router's probability; circles mark the experts each token was sent to. Capacity: "
                       "each expert takes at most %1 of the %2 choices (factor %3, over the whole text as one batch, "
                       "as in training). %4 %5")
                        .arg(m_snap->capacity)
                        .arg(T * K)
                        .arg(m_snap->capacityFactor, 0, 'g', 3)
                        .arg(m_snap->reroute ? tr("A re-routed choice (◆) went to the token's next-best expert with room.")
                                             : tr("A dropped choice (×) adds nothing: the token passes on through the "
                                                  "residual only."))
                        .arg(stats);
  }
  m_heatmap->setCaption(caption);
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
  QVector<double> keys(E), shares, droppedShares;
  expertLoad(*L, E, &shares, &droppedShares);
  for (int e = 0; e < E; ++e) keys[e] = e;
  const bool capacity = m_snap->capacity > 0;
  auto* bars = new QCPBars(plot->xAxis, plot->yAxis);
  bars->setData(keys, shares, true);
  bars->setWidth(0.75);
  bars->setBrush(Theme::series(0));
  bars->setPen(QPen(Theme::series(0).darker(140)));
  double top = std::max(*std::max_element(shares.begin(), shares.end()), 1.0 / E);
  double cap = 0;  // the capacity as a share of the choices
  const double choices = std::max<qsizetype>(1, L->ids.size());
  if (capacity) {
    // Choices the experts refused (over capacity), stacked on what they took; the capacity as a share.
    auto* refused = new QCPBars(plot->xAxis, plot->yAxis);
    refused->setData(keys, droppedShares, true);
    refused->setWidth(0.75);
    refused->setBrush(QBrush(QColor("#c8c8c8")));
    refused->setPen(QPen(QColor("#707070")));
    refused->moveAbove(bars);
    for (int e = 0; e < E; ++e) top = std::max(top, shares[e] + droppedShares[e]);
    cap = double(m_snap->capacity) / choices;
    top = std::max(top, cap);
  }
  m_load->setCaption(capacity ? tr("Share of the choices each expert took; grey: choices it refused when full "
                                   "(dropped). Dotted: its capacity; dashed: an even split (1/E).")
                              : tr("Share of the top-k choices each expert received. The dashed line is a perfectly "
                                   "even split (1/E); tall bars are busy experts, empty ones are idle."));
  plot->xAxis->setLabel(tr("expert (layer %1)").arg(L->layer));
  plot->yAxis->setLabel(tr("share"));
  plot->xAxis->setRange(-0.6, E - 0.4);
  plot->yAxis->setRange(0, top * 1.15);
  plot->yAxis->ticker()->setTickCount(Theme::current().presentation ? 3 : 5);
  // The lines' names go in the right margin, where they never cover a bar.
  QVector<ChartKit::ReferenceLine> lines{{1.0 / E, tr("even split\n1/%1").arg(E), Theme::series(3)}};
  if (capacity) lines.push_back({cap, tr("capacity\n%1").arg(m_snap->capacity), Theme::current().foreground, Qt::DotLine});
  ChartKit::referenceLines(plot, lines);
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
  // Rows: the experts the token was sent to or meant for first, then the most probable others.
  QVector<int> order(static_cast<int>(E));
  std::iota(order.begin(), order.end(), 0);
  QVector<TokensSnapshot::Layer::Cell> cells(static_cast<int>(E));
  for (int e = 0; e < E; ++e) cells[e] = L->cell(t, e, int(K));
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    const bool ia = cells[a].rank || cells[a].wantedRank, ib = cells[b].rank || cells[b].wantedRank;
    if (ia != ib) return ia;
    return L->probs[t * E + a] > L->probs[t * E + b];
  });
  QString rows;
  double chosenSum = 0;
  for (int k = 0; k < K; ++k)
    if (L->ids[t * K + k] >= 0) chosenSum += L->probs[t * E + L->ids[t * K + k]];
  // With a capacity, every expert the token was sent to or meant for gets its row.
  const int involved = int(std::count_if(cells.begin(), cells.end(), [](const auto& c) { return c.rank || c.wantedRank; }));
  const int shown = int(std::min<int64_t>(E, std::max(Theme::current().presentation ? 4 : 6, m_snap->capacity > 0 ? involved : 0)));
  for (int i = 0; i < shown; ++i) {
    const int e = order[i];
    const auto& c = cells[e];
    QString chosen = QStringLiteral("–");
    if (c.flag == 1) chosen = tr("#%1 dropped: expert full").arg(c.wantedRank);
    else if (c.movedTo >= 0) chosen = tr("#%1 full → expert %2").arg(c.wantedRank).arg(c.movedTo);
    else if (c.flag == 2) chosen = tr("#%1 re-routed here, w = %2").arg(c.rank).arg(c.weight, 0, 'f', 2);
    else if (c.rank) chosen = tr("#%1, w = %2").arg(c.rank).arg(c.weight, 0, 'f', 2);
    const QString style = c.rank ? QStringLiteral(" style='font-weight:bold'")
                          : c.wantedRank ? QStringLiteral(" style='color:#888888'") : QString();
    rows += QStringLiteral("<tr%1><td>%2</td><td align=right>%3</td><td align=right>%4</td><td>%5</td></tr>")
                .arg(style)
                .arg(e)
                .arg(L->logits[t * E + e], 0, 'f', 2)
                .arg(L->probs[t * E + e], 0, 'f', 3)
                .arg(chosen);
  }
  QString mix;
  for (int k = 0; k < K; ++k)
    if (L->ids[t * K + k] >= 0)
      mix += QStringLiteral("%1%2·expert<sub>%3</sub>(x)").arg(mix.isEmpty() ? "" : " + ").arg(L->weights[t * K + k], 0, 'f', 2).arg(L->ids[t * K + k]);
  if (mix.isEmpty()) mix = tr("nothing: every choice was dropped, x passes on unchanged");
  // Capacity: what happened to this token's choices, in words.
  QString capacity;
  for (int k = 0; k < K; ++k) {
    const int i = int(t * K + k), flag = i < L->dropped.size() ? L->dropped[i] : 0;
    const int want = i < L->wanted.size() ? L->wanted[i] : L->ids[i];
    if (flag == 1)
      capacity += tr("<br>Choice #%1 (expert %2) was <b>dropped</b>: expert %2 already had its %3 choices, so this "
                     "slot adds nothing and the token passes on through the residual connection only.")
                      .arg(k + 1).arg(want).arg(m_snap->capacity);
    else if (flag == 2)
      capacity += tr("<br>Choice #%1 (expert %2) was full, so it was <b>re-routed</b> to expert %3, the next-best "
                     "expert with room.")
                      .arg(k + 1).arg(want).arg(L->ids[i]);
  }
  if (m_snap->capacity > 0 && capacity.isEmpty())
    capacity = tr("<br>Every choice fitted: no expert it chose was full (capacity %1).").arg(m_snap->capacity);
  const bool renorm = std::abs(std::accumulate(L->weights.begin() + t * K, L->weights.begin() + (t + 1) * K, 0.0) - 1.0) < 1e-4 &&
                      std::abs(chosenSum - 1.0) > 1e-4;
  m_whyLabel->setText(
      tr("<b>Token %1 '%2', layer %3.</b> Its hidden state, RMS-normed (length %11), is scored against each expert "
         "(logit = router row · state); %4 "
         "The top-%5 are kept%6.<table cellspacing=4><tr><th align=left>expert</th><th>logit</th><th>%7</th>"
         "<th align=left>chosen</th></tr>%8</table>Output: <b>%9</b>%10")
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
          .arg(capacity)
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
  QVector<Mark> marks;  // x = expert, y = layer row
  QSharedPointer<QCPAxisTickerText> rows(new QCPAxisTickerText);
  for (int i = 0; i < nL; ++i) {
    const auto& L = m_snap->layers[i];
    for (int e = 0; e < E; ++e) map->data()->setCell(e, i, L.probs[t * E + e]);
    if (nL * E <= 4096)
      for (int k = 0; k < K; ++k) {
        const int j = t * K + k, flag = j < L.dropped.size() ? L.dropped[j] : 0;
        if (flag == 1 && j < L.wanted.size()) marks.push_back({double(L.wanted[j]), double(i), kDropped});
        else if (L.ids[j] >= 0) marks.push_back({double(L.ids[j]), double(i), flag == 2 ? kRerouted : kChosen});
      }
    if (nL <= 16 || i % (nL / 12 + 1) == 0) rows->addTick(i, tr("L%1").arg(L.layer));
  }
  addMarks(plot, rect, marks, K, m_snap->capacity > 0, m_snap->reroute, nullptr, 1.5);
  m_tokenLayers->setCaption(
      tr("The selected token's router probabilities in each MoE layer (rows); circles mark the experts it was sent "
         "to. Click a token in the text or the heatmap.") +
      (m_snap->capacity > 0 ? QLatin1Char(' ') + (m_snap->reroute ? tr("◆: re-routed (the expert it chose was full).")
                                                                  : tr("×: dropped (the expert was full)."))
                            : QString()));
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
