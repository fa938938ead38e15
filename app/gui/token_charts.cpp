#include "token_charts.hpp"

#include <QObject>
#include <QFontMetricsF>
#include <QPainterPath>
#include <algorithm>
#include <numeric>
#include <set>
#include <qcustomplot.h>

#include "chart_kit.hpp"
#include "token_charts_kit.hpp"
#include "theme.hpp"
#include "tokenizer.hpp"

namespace TokenCharts {

using namespace ChartKit;

// Helpers shared with token_detail_charts.cpp (declared in token_charts_kit.hpp).
namespace kit {

constexpr int kMaxSmallMultiples = 8;

QString tr(const char* s) { return QObject::tr(s); }

// Token labels on the x axis: all of them when they fit, else every n-th.
// Axis labels: one character where possible (specials as symbols), so they need no rotation.
// Long labels (a 150K vocabulary has pieces of 16 characters and more) are cut with an ellipsis,
// shorter on the projector so that the ticks stay large.
QString axisLabel(const QString& label) {
  if (label == QLatin1String(" ")) return QStringLiteral("␣");
  if (label == QLatin1String("<bos>")) return QStringLiteral("▶");
  if (label == QLatin1String("<eos>")) return QStringLiteral("■");
  return shortLabel(label, Theme::current().presentation ? 6 : 9);
}

// Token labels on a heatmap's x axis, level, as many as fit side by side (fittingTicks): every
// token for one-character labels, every 2nd, 3rd… where long pieces need the room. (Labels
// turned 60° would take the height that 64–256 expert rows need.)
void tokenTicks(QCPAxis* axis, const TokensSnapshot& s) {
  fittingTicks(axis, s.count(), [labels = s.labels](int i) { return i < labels.size() ? axisLabel(labels[i]) : QString(); });
  axis->setTickLabelRotation(0);
}

// The selected token, or the last one.
int tokenOrLast(const TokensSnapshot& s, int token) { return std::clamp(token < 0 ? s.count() - 1 : token, 0, s.count() - 1); }

// The name of the i-th most probable next token, for the next-token chart and its CSV.
QString nextName(const TokensSnapshot& s, int i) {
  return i < s.nextLabels.size() ? s.nextLabels[i] : QString::number(s.next[i].first);
}

// One layer's router probabilities [T, E] as a heatmap of tokens × experts, on the 0–1 scale.
QCPColorMap* addMap(QCPAxisRect* rect, int T, int E, const QVector<float>& probs) {
  QCPColorMap* map = heatmap(rect, T, E, QCPRange(0, T - 1), QCPRange(0, E - 1), QCPRange(0, 1));
  for (int t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e) map->data()->setCell(t, e, probs[t * E + e]);
  return map;
}

// What became of the router's choice of expert at one (token, expert) cell, in words: at length
// for the heatmap's tooltip, or brief for the Why table. The four cases, once.
QString choiceText(const TokensSnapshot::Layer::Cell& c, int64_t capacity, bool brief) {
  if (c.flag == 1)
    return brief ? tr("#%1 dropped: expert full").arg(c.wantedRank)
                 : tr("choice %1, DROPPED: the expert was full (capacity %2),\nthe token passes on through the residual only")
                       .arg(c.wantedRank)
                       .arg(capacity);
  if (c.movedTo >= 0)
    return brief ? tr("#%1 full → expert %2").arg(c.wantedRank).arg(c.movedTo)
                 : tr("choice %1, but the expert was full: re-routed to expert %2").arg(c.wantedRank).arg(c.movedTo);
  if (c.flag == 2)
    return brief ? tr("#%1 re-routed here, w = %2").arg(c.rank).arg(c.weight, 0, 'f', 2)
                 : tr("choice %1 RE-ROUTED here (expert %2 was full), gate weight %3")
                       .arg(c.rank).arg(c.from).arg(c.weight, 0, 'f', 3);
  if (c.rank)  // brief: kept on one line in the Why table (no-break spaces)
    return brief ? tr("#%1,\u00a0w\u00a0=\u00a0%2").arg(c.rank).arg(c.weight, 0, 'f', 2)
                 : tr("choice %1, gate weight %2").arg(c.rank).arg(c.weight, 0, 'f', 3);
  return brief ? QStringLiteral("–") : tr("not chosen");
}

// Marks over a routing heatmap (Mark, MarkKind): see token_charts_kit.hpp.

// The mark of slot i of a layer at (x, y) = (token, expert) or (expert, layer row): a dropped
// slot at the expert it wanted. False for a slot that neither ran nor was dropped.
bool slotMark(const TokensSnapshot::Layer& L, int i, bool expertOnX, double other, Mark* m) {
  const int flag = i < L.dropped.size() ? L.dropped[i] : 0;
  int expert = -1, kind = kChosen;
  if (flag == 1 && i < L.wanted.size()) expert = L.wanted[i], kind = kDropped;
  else if (L.ids[i] >= 0) expert = L.ids[i], kind = flag == 2 ? kRerouted : kChosen;
  else return false;
  *m = expertOnX ? Mark{double(expert), other, kind} : Mark{other, double(expert), kind};
  return true;
}

// Slot marks of one layer: x = token, y = expert.
QVector<Mark> layerMarks(const TokensSnapshot::Layer& L, int T, int K) {
  QVector<Mark> marks;
  Mark m;
  for (int t = 0; t < T; ++t)
    for (int k = 0; k < K; ++k)
      if (slotMark(L, t * K + k, false, double(t), &m)) marks.push_back(m);
  return marks;
}

QPainterPath crossPath() {  // an × for QCPScatterStyle::ssCustom (drawn at size / 6 scale)
  QPainterPath p;
  const double a = 0.8, l = 3.4;  // arm half-width and length
  p.addPolygon(QPolygonF({{a, a}, {a, l}, {-a, l}, {-a, a}, {-l, a}, {-l, -a}, {-a, -a}, {-a, -l}, {a, -l}, {a, -a},
                          {l, -a}, {l, a}, {a, a}}));
  return QTransform().rotate(45).map(p);
}

// One graph per kind present (chosen always, so an empty text still has its graph); a graph
// carries its kind in the "mark" property, for reading the chart back (heatmapMark).
void addMarks(QCustomPlot* plot, QCPAxisRect* rect, const QVector<Mark>& marks, int K, bool capacity,
              bool reroute, QCPLegend* legend, double outlineWidth, double size) {
  Theme th = Theme::current();
  if (size > 0) th.markerSize = int(std::lround(size));  // smaller than the cells, where there are many
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
      g->setName(capacity ? tr("chosen") : tr("chosen (top-%1)").arg(K));
    } else if (kind == kDropped) {
      g->setScatterStyle(QCPScatterStyle(crossPath(), thin, QBrush(QColor("#d9d9d9")), th.markerSize * 2.0));
      g->setName(tr("dropped (expert full)"));
    } else {
      g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDiamond, outline, QBrush(QColor("#E69F00")),
                                         th.markerSize * 1.8));
      g->setName(tr("re-routed (next-best)"));
    }
    for (const Mark& m : marks)
      if (m.kind == kind) g->addData(m.x, m.y);
    if (legend) g->addToLegend(legend);
  }
}

// "Capacity ..." sentence of a caption, with the dropped / re-routed counts of the given layers.
QString capacityStats(const TokensSnapshot& s, const QVector<const TokensSnapshot::Layer*>& layers) {
  int dropped = 0, rerouted = 0, choices = 0;
  for (const auto* L : layers) dropped += L->droppedSlots(), rerouted += L->reroutedSlots(), choices += int(L->ids.size());
  const QString where = layers.size() == 1 ? tr("Layer %1").arg(layers[0]->layer) : tr("All MoE layers");
  return s.reroute ? tr("%1: %2 of %3 choices re-routed, %4 dropped.").arg(where).arg(rerouted).arg(choices).arg(dropped)
                   : tr("%1: %2 of %3 choices dropped.").arg(where).arg(dropped).arg(choices);
}

// The heatmap shows one layer (selected, or the only one); else every layer.
bool oneLayer(const TokensSnapshot& s, int layer) { return layer >= 0 || s.layers.size() == 1; }

// The drawn heatmap's first colour map (the selected layer's, or the first strip's).
QCPColorMap* firstMap(QCustomPlot* plot) {
  return plot->plottableCount() ? qobject_cast<QCPColorMap*>(plot->plottable(0)) : nullptr;
}

}  // namespace kit

using namespace kit;

const TokensSnapshot::Layer* layerAt(const TokensSnapshot& s, int layer) {
  if (s.layers.isEmpty()) return nullptr;
  return &s.layers[std::clamp(layer < 0 ? 0 : layer, 0, int(s.layers.size()) - 1)];
}

void expertLoad(const TokensSnapshot::Layer& L, int E, QVector<double>* ran, QVector<double>* refused) {
  ran->fill(0.0, E);
  refused->fill(0.0, E);
  const double choices = std::max<qsizetype>(1, L.ids.size());
  for (int i = 0; i < L.ids.size(); ++i) {
    if (L.ids[i] >= 0) (*ran)[L.ids[i]] += 1 / choices;
    else if (i < L.dropped.size() && L.dropped[i] == 1 && i < L.wanted.size()) (*refused)[L.wanted[i]] += 1 / choices;
  }
}

// ---- routing heatmap ----

void drawRoutingHeatmap(QCustomPlot* plot, const TokensSnapshot& s, int layer, int token) {
  clearPlot(plot);
  if (s.layers.isEmpty()) {
    plot->plotLayout()->addElement(0, 0, new QCPAxisRect(plot));
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const Theme& th = Theme::current();
  const int T = s.count(), E = int(s.experts()), K = int(s.topK);
  const int nLayers = int(s.layers.size());
  const bool capacity = s.capacity > 0;
  QCPColorScale* scale = nullptr;
  if (oneLayer(s, layer)) {
    const auto& L = s.layers[std::clamp(layer, 0, nLayers - 1)];
    auto* rect = new QCPAxisRect(plot);
    plot->plotLayout()->addElement(0, 0, rect);
    scale = colorScale(plot, QCPRange(0, 1), tr("probability"));
    addMap(rect, T, E, L.probs);
    // Marks that leave the cells visible where the rows are thin: 64–256 experts get small dots
    // with a thin outline.
    const bool many = E > 32;
    addMarks(plot, rect, layerMarks(L, int(L.ids.size()) / K, K), K, capacity, s.reroute,
             capacity ? legendBelow(plot, 0, 1) : nullptr, many ? 1.0 : th.presentation ? 2.5 : 1.5,
             many ? 4.0 : E > 16 ? std::max(4.0, th.markerSize - 2.0) : 0.0);
    tokenTicks(rect->axis(QCPAxis::atBottom), s);
    rect->axis(QCPAxis::atBottom)->setLabel(th.presentation ? QString() : tr("token"));
    rect->axis(QCPAxis::atLeft)->setLabel(tr("expert"));
    rect->axis(QCPAxis::atBottom)->setRange(-0.5, T - 0.5);
    rect->axis(QCPAxis::atLeft)->setRange(-0.5, E - 0.5);
    integerTicks(rect->axis(QCPAxis::atLeft), E);
    boundedPanZoom(rect->axis(QCPAxis::atLeft), -0.5, E - 0.5);
    if (token >= 0 && token < T) {  // selected token: a frame around its column
      auto* box = new QCPItemRect(plot);
      box->setClipAxisRect(rect);
      box->topLeft->setAxes(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
      box->bottomRight->setAxes(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
      box->topLeft->setCoords(token - 0.5, E - 0.5);
      box->bottomRight->setCoords(token + 0.5, -0.5);
      box->setPen(QPen(QColor("#D55E00"), th.presentation ? 4 : 2.5));
    }
  } else if (nLayers <= kMaxSmallMultiples) {
    // Small multiples: one strip per MoE layer on one colour scale.
    for (int i = 0; i < nLayers; ++i) {
      const auto& L = s.layers[i];
      auto* rect = new QCPAxisRect(plot);
      plot->plotLayout()->addElement(i, 0, rect);
      addMap(rect, T, E, L.probs);
      if (T * nLayers <= 4000)
        addMarks(plot, rect, layerMarks(L, int(L.ids.size()) / K, K), K, capacity, s.reroute, nullptr,
                 th.presentation ? 2.5 : 1.5);
      rect->axis(QCPAxis::atLeft)->setLabel(tr("L%1").arg(L.layer));
      rect->axis(QCPAxis::atLeft)->setRange(-0.5, E - 0.5);
      rect->axis(QCPAxis::atBottom)->setRange(-0.5, T - 0.5);
      tokenTicks(rect->axis(QCPAxis::atBottom), s);
      rect->axis(QCPAxis::atBottom)->setTickLabels(i == nLayers - 1);
      rect->setMargins(QMargins(0, 0, 0, 0));
    }
    scale = colorScale(plot, QCPRange(0, 1), tr("probability"));
    if (capacity && T * nLayers <= 4000) {  // one legend for every strip
      QCPLegend* legend = legendBelow(plot, 0, nLayers);
      std::set<int> kinds;
      for (int i = 0; i < plot->graphCount(); ++i)
        if (kinds.insert(plot->graph(i)->property("mark").toInt()).second) plot->graph(i)->addToLegend(legend);
    }
  } else {
    // Many layers (e.g. 60 x 256): aggregate to layers x experts, the share of choices.
    auto* rect = new QCPAxisRect(plot);
    plot->plotLayout()->addElement(0, 0, rect);
    QVector<double> shares(nLayers * E, 0.0);
    double mx = 0;
    for (int i = 0; i < nLayers; ++i) {
      const auto& L = s.layers[i];
      for (int id : L.ids)
        if (id >= 0) shares[i * E + id] += 1;
      for (int e = 0; e < E; ++e) {
        shares[i * E + e] /= std::max<qsizetype>(1, L.ids.size());
        mx = std::max(mx, shares[i * E + e]);
      }
    }
    const QCPRange range(0, std::max(mx, 1e-6));
    scale = colorScale(plot, range, th.presentation ? tr("share") : tr("share of the choices"));  // fits the scale's height
    QCPColorMap* map = heatmap(rect, E, nLayers, QCPRange(0, E - 1), QCPRange(0, nLayers - 1), range);
    for (int i = 0; i < nLayers; ++i)
      for (int e = 0; e < E; ++e) map->data()->setCell(e, i, shares[i * E + e]);
    rect->axis(QCPAxis::atBottom)->setLabel(tr("expert"));
    rect->axis(QCPAxis::atLeft)->setLabel(tr("MoE layer"));
    rect->axis(QCPAxis::atBottom)->setRange(-0.5, E - 0.5);
    rect->axis(QCPAxis::atLeft)->setRange(-0.5, nLayers - 0.5);
    integerTicks(rect->axis(QCPAxis::atBottom), E);
    QVector<int> numbers;  // row → the layer's number (DeepSeek-V3's MoE layers start at 3)
    for (const auto& L : s.layers) numbers << int(L.layer);
    fittingTicks(rect->axis(QCPAxis::atLeft), nLayers, [numbers](int i) { return QString::number(numbers.value(i)); });
    boundedPanZoom(rect->axis(QCPAxis::atLeft), -0.5, nLayers - 0.5);
  }
  // Wheel zooms and dragging pans, within the cells; one layer and the overview in both
  // directions (experts too), the strips along the tokens. A double click shows everything again.
  plot->setInteractions(QCP::iRangeZoom | QCP::iRangeDrag);
  const bool both = oneLayer(s, layer) || nLayers > kMaxSmallMultiples;
  for (QCPAxisRect* r : plot->axisRects()) {
    r->setRangeZoom(both ? Qt::Horizontal | Qt::Vertical : Qt::Horizontal);
    r->setRangeDrag(both ? Qt::Horizontal | Qt::Vertical : Qt::Horizontal);
    const QCPRange x = r->axis(QCPAxis::atBottom)->range();
    boundedPanZoom(r->axis(QCPAxis::atBottom), x.lower, x.upper);
  }
  finish(plot, scale);
}

QString routingHeatmapTitle(const TokensSnapshot& s, int layer) {
  if (s.layers.isEmpty()) return tr("Routing: tokens × experts");
  const int nLayers = int(s.layers.size());
  if (oneLayer(s, layer))
    return tr("Routing in layer %1: tokens × experts").arg(s.layers[std::clamp(layer, 0, nLayers - 1)].layer);
  if (nLayers <= kMaxSmallMultiples) return tr("Routing in every MoE layer (one strip per layer)");
  return tr("Expert load in all %1 MoE layers (aggregated over the text)").arg(nLayers);
}

QString routingHeatmapCaption(const TokensSnapshot& s, int layer) {
  // Many experts: how to get closer (the tick labels follow the zoom).
  const QString zoom = s.experts() > 16 && !Theme::current().presentation
                           ? QLatin1Char(' ') + tr("The wheel zooms (experts too), dragging pans, a double click shows all.")
                           : QString();
  if (!s.layers.isEmpty() && s.capacity <= 0 && !oneLayer(s, layer) && int(s.layers.size()) > kMaxSmallMultiples)
    return tr("Each row is a MoE layer, each column an expert; colour is the share of the layer's top-k choices "
              "that went to the expert over the whole text. Pick a layer to see it token by token.") + zoom;
  if (s.layers.isEmpty() || s.capacity <= 0)
    return tr("Each column is a token, each row an expert; colour is the router's probability. "
              "Circles mark the top-k experts the token was actually sent to.") + zoom;
  // The legend names the marks; the caption says what capacity means and how much overflowed.
  QVector<const TokensSnapshot::Layer*> statLayers;
  if (oneLayer(s, layer))
    statLayers = {&s.layers[std::clamp(layer, 0, int(s.layers.size()) - 1)]};
  else
    for (const auto& L : s.layers) statLayers.push_back(&L);
  const QString stats = capacityStats(s, statLayers);
  if (Theme::current().presentation)
    return tr("Capacity %1 per expert, over the whole text as one batch. %2").arg(s.capacity).arg(stats);
  return tr("Colour is the router's probability; circles mark the experts each token was sent to. Capacity: "
            "each expert takes at most %1 of the %2 choices (factor %3, over the whole text as one batch, "
            "as in training). %4 %5")
      .arg(s.capacity).arg(s.count() * s.topK).arg(s.capacityFactor, 0, 'g', 3)
      .arg(s.reroute ? tr("A re-routed choice (◆) went to the token's next-best expert with room.")
                     : tr("A dropped choice (×) adds nothing: the token passes on through the residual only."))
      .arg(stats);
}

QString routingHeatmapCsv(const TokensSnapshot& s) {
  // chosen_rank: the slot that ran on this expert; wanted_rank: the router's own choice before
  // capacity; dropped: 1 the router chose this expert but it was full, 2 a slot was re-routed here.
  QString out = QStringLiteral("layer,token_index,token,expert,probability,logit,chosen_rank,gate_weight,wanted_rank,dropped\n");
  const int64_t E = s.experts(), K = s.topK;
  for (const auto& L : s.layers)
    for (int t = 0; t < L.ids.size() / int(K); ++t)
      for (int e = 0; e < E; ++e) {
        const auto c = L.cell(t, e, int(K));
        out += QStringLiteral("%1,%2,%3,%4,%5,%6,%7,%8,%9,%10\n")
                   .arg(L.layer).arg(t).arg(csvEscape(s.labels[t])).arg(e)
                   .arg(double(L.probs[t * int(E) + e]), 0, 'g', 9)
                   .arg(double(L.logits[t * int(E) + e]), 0, 'g', 9)
                   .arg(c.rank).arg(double(c.weight), 0, 'g', 9).arg(c.wantedRank).arg(c.flag);
      }
  return out;
}

QString shortLabel(const QString& label, int maxChars) {
  if (label.size() <= maxChars) return label;
  return label.left(std::max(1, maxChars - 1)) + QStringLiteral("…");
}

QString tokenDescription(const TokensSnapshot& s, int t) {
  if (t < 0 || t >= s.count()) return {};
  const QString id = tr("id %1").arg(s.tokens[t]);
  if (s.tokenizer.isEmpty() || t >= s.labels.size()) return id;
  const QString label = s.labels[t];
  const QString piece = t < s.pieces.size() ? s.pieces[t] : label;
  if (piece == label) return QStringLiteral("%1  (%2)").arg(label, id);
  return QStringLiteral("\"%1\"  %2  (%3)").arg(piece, label, id);
}

QString heatmapToolTip(const TokensSnapshot& s, int layer, int token, int expert) {
  const TokensSnapshot::Layer* L = layerAt(s, layer);
  const int64_t E = s.experts(), K = s.topK;
  if (!L || token < 0 || token >= s.count() || expert < 0 || expert >= E) return {};
  return tr("token %1: %2, expert %3\nprobability %4 (logit %5)\n%6")
      .arg(token).arg(tokenDescription(s, token)).arg(expert)
      .arg(L->probs[token * int(E) + expert], 0, 'f', 4)
      .arg(L->logits[token * int(E) + expert], 0, 'f', 3)
      .arg(choiceText(L->cell(token, expert, int(K)), s.capacity, false));
}

bool heatmapCellAt(QCustomPlot* plot, QPointF pixel, int* token, int* expert) {
  QCPColorMap* map = firstMap(plot);
  if (!map) return false;
  // Cell centres sit on whole numbers: the nearest one.
  *token = int(std::lround(map->keyAxis()->pixelToCoord(pixel.x())));
  *expert = int(std::lround(map->valueAxis()->pixelToCoord(pixel.y())));
  return true;
}

double heatmapValue(QCustomPlot* plot, int token, int expert) {
  QCPColorMap* map = firstMap(plot);
  return map ? map->data()->cell(token, expert) : std::nan("");
}

int heatmapMark(QCustomPlot* plot, int token, int expert) {
  for (int i = 0; i < plot->graphCount(); ++i) {
    const QVariant kind = plot->graph(i)->property("mark");
    if (!kind.isValid()) continue;
    for (auto it = plot->graph(i)->data()->constBegin(); it != plot->graph(i)->data()->constEnd(); ++it)
      if (int(std::lround(it->key)) == token && int(std::lround(it->value)) == expert) return kind.toInt();
  }
  return -1;
}

int markedPerToken(QCustomPlot* plot, int token) {
  int n = 0;
  for (int i = 0; i < plot->graphCount(); ++i) {
    const int kind = plot->graph(i)->property("mark").toInt();
    if (kind != kChosen && kind != kRerouted) continue;
    for (auto it = plot->graph(i)->data()->constBegin(); it != plot->graph(i)->data()->constEnd(); ++it)
      n += int(std::lround(it->key)) == token;
  }
  return n;
}

QString textCsv(const TokensSnapshot& s, int layer) {
  QString out = QStringLiteral("token_index,token,first_choice_expert\n");
  const auto* L = layerAt(s, layer);
  if (!L) return out;
  for (int t = 0; t < s.count() && t * s.topK < L->ids.size(); ++t)
    out += QStringLiteral("%1,%2,%3\n").arg(t).arg(csvEscape(s.labels[t])).arg(L->ids[t * int(s.topK)]);
  return out;
}

// ---- expert load ----

void drawLoad(QCustomPlot* plot, const TokensSnapshot& s, int layer) {
  plot->clearPlottables();
  plot->clearItems();
  const auto* L = layerAt(s, layer);
  if (!L) {
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const int E = int(s.experts());
  QVector<double> keys(E), shares, droppedShares;
  expertLoad(*L, E, &shares, &droppedShares);
  for (int e = 0; e < E; ++e) keys[e] = e;
  const bool capacity = s.capacity > 0;
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
    cap = double(s.capacity) / choices;
    top = std::max(top, cap);
  }
  plot->xAxis->setLabel(tr("expert (layer %1)").arg(L->layer));
  plot->yAxis->setLabel(tr("share"));
  plot->xAxis->setRange(-0.6, E - 0.4);
  plot->yAxis->setRange(0, top * 1.15);
  plot->yAxis->ticker()->setTickCount(Theme::current().presentation ? 3 : 5);
  // The lines' names go in the right margin, where they never cover a bar.
  QVector<ReferenceLine> lines{{1.0 / E, tr("even split\n1/%1").arg(E), Theme::series(3)}};
  if (capacity) lines.push_back({cap, tr("capacity\n%1").arg(s.capacity), Theme::current().foreground, Qt::DotLine});
  referenceLines(plot, lines);
  integerTicks(plot->xAxis, E);
  finish(plot);
}

QString loadCaption(const TokensSnapshot& s) {
  return s.capacity > 0 ? tr("Share of the choices each expert took; grey: choices it refused when full "
                             "(dropped). Dotted: its capacity; dashed: an even split (1/E).")
                        : tr("Share of the top-k choices each expert received. The dashed line is a perfectly "
                             "even split (1/E); tall bars are busy experts, empty ones are idle.");
}

QString loadCsv(const TokensSnapshot& s, int layer) {
  QString out = QStringLiteral("expert,share_of_choices,share_dropped\n");
  const auto* L = layerAt(s, layer);
  if (!L) return out;
  QVector<double> ran, refused;
  expertLoad(*L, int(s.experts()), &ran, &refused);
  for (int e = 0; e < ran.size(); ++e)
    out += QStringLiteral("%1,%2,%3\n").arg(e).arg(ran[e], 0, 'g', 9).arg(refused[e], 0, 'g', 9);
  return out;
}


}  // namespace TokenCharts
