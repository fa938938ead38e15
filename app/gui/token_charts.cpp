#include "token_charts.hpp"

#include <QObject>
#include <QFontMetricsF>
#include <QPainterPath>
#include <algorithm>
#include <numeric>
#include <set>
#include <qcustomplot.h>

#include "chart_kit.hpp"
#include "theme.hpp"
#include "tokenizer.hpp"

namespace TokenCharts {

using namespace ChartKit;

namespace {

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

// Marks over a routing heatmap, one graph per kind (each with its legend entry):
//   chosen     white circle, dark outline: visible on every colour and in greyscale;
//   dropped    grey ×, dark outline: the router chose the expert but it was full (capacity);
//   re-routed  orange diamond: the slot went to the token's next-best expert with room.
enum MarkKind { kChosen = 0, kDropped = 1, kRerouted = 2 };
struct Mark {
  double x, y;
  int kind;
};

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
              bool reroute, QCPLegend* legend, double outlineWidth, double size = 0) {
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

}  // namespace

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

// ---- why this expert ----

int whyRowCount(const TokensSnapshot& s, const TokensSnapshot::Layer& L, int t) {
  const int E = int(s.experts()), K = int(s.topK);
  int involved = 0;
  for (int e = 0; e < E; ++e) {
    const auto c = L.cell(t, e, K);
    involved += c.rank || c.wantedRank;
  }
  const bool pres = Theme::current().presentation;
  return std::min(E, std::max(pres ? 4 : 6, involved + (pres ? 1 : 2)));
}

QString whyHtml(const TokensSnapshot& s, int layer, int token) {
  const auto* L = layerAt(s, layer);
  if (!L || s.count() == 0) return tr("Step a token, then click it.");
  const int64_t E = s.experts(), K = s.topK;
  const int routed = int(L->ids.size() / std::max<int64_t>(1, K));
  const int t = std::clamp(token < 0 ? routed - 1 : token, 0, routed - 1);
  const bool sigmoid = s.config.scoring == moelab::RouterScoring::Sigmoid;
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
  // The top experts, not all of them (a real model has 64–256): every expert the token was sent
  // to or meant for, then the next most probable (two, one on the projector), at least 6 (4).
  const int shown = whyRowCount(s, *L, t);
  for (int i = 0; i < shown; ++i) {
    const int e = order[i];
    const auto& c = cells[e];
    const QString style = c.rank ? QStringLiteral(" style='font-weight:bold'")
                          : c.wantedRank ? QStringLiteral(" style='color:#888888'") : QString();
    // nowrap: a narrow panel (the lesson dock open) must never break "0.850" into "0." and "850"
    // (the expert's number, a whole number, cannot break).
    rows += QStringLiteral("<tr%1><td>%2</td><td align=right nowrap>%3</td><td align=right nowrap>%4</td>"
                           "<td nowrap>%5</td></tr>")
                .arg(style).arg(e)
                .arg(L->logits[t * E + e], 0, 'f', 2)
                .arg(L->probs[t * E + e], 0, 'f', 3)
                .arg(choiceText(c, s.capacity, true));
  }
  if (shown < E) {  // the rest in one line: how many, and how much probability they hold together
    double rest = 0;
    for (int i = shown; i < E; ++i) rest += L->probs[t * E + order[i]];
    rows += QStringLiteral("<tr style='color:#888888'><td colspan=4>%1</td></tr>")
                .arg(sigmoid ? tr("… %1 more experts, each scored lower").arg(E - shown)
                             : tr("… %1 more experts, together %2").arg(E - shown).arg(rest, 0, 'f', 3));
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
                      .arg(k + 1).arg(want).arg(s.capacity);
    else if (flag == 2)
      capacity += tr("<br>Choice #%1 (expert %2) was full, so it was <b>re-routed</b> to expert %3, the next-best "
                     "expert with room.")
                      .arg(k + 1).arg(want).arg(L->ids[i]);
  }
  if (s.capacity > 0 && capacity.isEmpty())
    capacity = tr("<br>Every choice fitted: no expert it chose was full (capacity %1).").arg(s.capacity);
  const bool renorm = std::abs(std::accumulate(L->weights.begin() + t * K, L->weights.begin() + (t + 1) * K, 0.0) - 1.0) < 1e-4 &&
                      std::abs(chosenSum - 1.0) > 1e-4;
  return tr("<b>Token %1: %2, layer %3.</b> Its hidden state, RMS-normed (length %11), is scored against each expert "
            "(logit = router row · state); %4 "
            "The top-%5 are kept%6.<table cellspacing=2><tr><th align=left nowrap>expert</th><th nowrap>logit</th>"
            "<th nowrap>%7</th><th align=left nowrap>chosen</th></tr>%8</table>Output: <b>%9</b>%10")
      .arg(t)
      .arg(tokenDescription(s, t).toHtmlEscaped())
      .arg(L->layer)
      .arg(sigmoid ? tr("sigmoid gives each a score in (0, 1).") : tr("softmax turns them into probabilities."))
      .arg(K)
      .arg(renorm ? tr(" and divided by their sum (%1) so the weights add to 1").arg(chosenSum, 0, 'f', 3)
                  : tr("; their probabilities are the weights"))
      .arg(sigmoid ? tr("score") : tr("prob."))
      .arg(rows)
      .arg(mix)
      .arg(capacity)
      .arg(t < L->inputNorm.size() ? QString::number(L->inputNorm[t], 'f', 2) : QStringLiteral("?"));
}

QString whyCsv(const TokensSnapshot& s, int layer, int token) {
  QString out = QStringLiteral("expert,logit,probability,chosen_rank,gate_weight,wanted_rank,dropped\n");
  const auto* L = layerAt(s, layer);
  if (!L || s.count() == 0) return out;
  const int t = tokenOrLast(s, token);
  const int64_t E = s.experts(), K = s.topK;
  if (t * K >= L->ids.size()) return out;
  for (int e = 0; e < E; ++e) {
    const auto c = L->cell(t, e, int(K));
    out += QStringLiteral("%1,%2,%3,%4,%5,%6,%7\n")
               .arg(e).arg(L->logits[t * int(E) + e]).arg(L->probs[t * int(E) + e])
               .arg(c.rank).arg(c.weight).arg(c.wantedRank).arg(c.flag);
  }
  return out;
}

// ---- co-activation ----

namespace {
// [E × E] tokens whose choices include both i and j (the diagonal: tokens that chose i).
QVector<double> coactivation(const TokensSnapshot::Layer& L, int E, int K) {
  QVector<double> counts(E * E, 0.0);
  for (int t = 0; t < L.ids.size() / K; ++t)
    for (int a = 0; a < K; ++a)
      for (int b = 0; b < K; ++b) {
        const int i = L.ids[t * K + a], j = L.ids[t * K + b];
        if (i < 0 || j < 0 || (a != b && i == j)) continue;
        counts[i * E + j] += 1;
      }
  return counts;
}
}  // namespace

void drawCoactivation(QCustomPlot* plot, const TokensSnapshot& s, int layer) {
  QCPAxisRect* rect = resetPlot(plot);
  const auto* L = layerAt(s, layer);
  if (!L) {
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const int E = int(s.experts()), K = int(s.topK);
  const QVector<double> counts = coactivation(*L, E, K);
  const QCPRange range(0, std::max(1.0, *std::max_element(counts.begin(), counts.end())));
  QCPColorMap* map = heatmap(rect, E, E, QCPRange(0, E - 1), QCPRange(0, E - 1), range);
  for (int i = 0; i < E; ++i)
    for (int j = 0; j < E; ++j) map->data()->setCell(i, j, counts[i * E + j]);
  QCPColorScale* scale = colorScale(plot, range, tr("tokens"));
  rect->axis(QCPAxis::atBottom)->setLabel(tr("expert i"));
  rect->axis(QCPAxis::atLeft)->setLabel(tr("expert j"));
  rect->axis(QCPAxis::atBottom)->setRange(-0.5, E - 0.5);
  rect->axis(QCPAxis::atLeft)->setRange(-0.5, E - 0.5);
  integerTicks(rect->axis(QCPAxis::atBottom), E);
  integerTicks(rect->axis(QCPAxis::atLeft), E);
  finish(plot, scale);
}

QString coactivationCsv(const TokensSnapshot& s, int layer) {
  QString out = QStringLiteral("expert_i,expert_j,tokens_with_both\n");
  const auto* L = layerAt(s, layer);
  if (!L) return out;
  const int E = int(s.experts());
  const QVector<double> counts = coactivation(*L, E, int(s.topK));
  for (int i = 0; i < E; ++i)
    for (int j = 0; j < E; ++j) out += QStringLiteral("%1,%2,%3\n").arg(i).arg(j).arg(counts[i * E + j]);
  return out;
}

// ---- next token ----

void drawNext(QCustomPlot* plot, const TokensSnapshot& s) {
  plot->clearPlottables();
  if (s.next.isEmpty()) {
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  // Horizontal bars, most likely on top.
  // As many as the chart's height has room for, a line each (10, 5 on the projector).
  const double line = QFontMetricsF(Theme::current().tickLabel).height() * 1.1;
  const double room = plot->axisRect() ? plot->axisRect()->height() : 0;
  const int fit = room > 0 ? std::max(3, int(room / line)) : 10;
  const int shown = std::min<int>({int(s.next.size()), Theme::current().presentation ? 5 : 10, fit});
  QVector<double> keys, values;
  QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
  for (int i = 0; i < shown; ++i) {
    const auto& [id, p] = s.next[i];
    keys << double(shown - 1 - i);
    values << p;
    ticker->addTick(double(shown - 1 - i), axisLabel(nextName(s, i)));
  }
  auto* bars = new QCPBars(plot->yAxis, plot->xAxis);
  bars->setData(keys, values);
  bars->setBrush(Theme::series(2));
  bars->setPen(QPen(Theme::series(2).darker(140)));
  plot->yAxis->setTicker(ticker);
  plot->yAxis->setRange(-0.6, shown - 0.4);
  plot->xAxis->setRange(0, 1);
  plot->xAxis->setLabel(tr("probability of the next token"));
  finish(plot);
}

QString nextCsv(const TokensSnapshot& s) {
  QString out = QStringLiteral("token_id,token,probability\n");
  for (int i = 0; i < s.next.size(); ++i)
    out += QStringLiteral("%1,%2,%3\n").arg(s.next[i].first).arg(csvEscape(nextName(s, i))).arg(s.next[i].second, 0, 'g', 9);
  return out;
}

// ---- one token through every layer ----

void drawTokenLayers(QCustomPlot* plot, const TokensSnapshot& s, int token) {
  QCPAxisRect* rect = resetPlot(plot);
  if (s.layers.isEmpty() || s.count() == 0) {
    plot->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const int t = tokenOrLast(s, token);
  const int E = int(s.experts()), K = int(s.topK), nL = int(s.layers.size());
  QCPColorMap* map = heatmap(rect, E, nL, QCPRange(0, E - 1), QCPRange(0, nL - 1), QCPRange(0, 1));
  QVector<Mark> marks;  // x = expert, y = layer row
  Mark m;
  for (int i = 0; i < nL; ++i) {
    const auto& L = s.layers[i];
    for (int e = 0; e < E; ++e) map->data()->setCell(e, i, L.probs[t * E + e]);
    if (nL * E <= 4096)
      for (int k = 0; k < K; ++k)
        if (slotMark(L, t * K + k, true, double(i), &m)) marks.push_back(m);
  }
  QVector<int> numbers;
  for (const auto& L : s.layers) numbers << int(L.layer);
  // Small dots where 64+ experts leave the cells only a few pixels wide.
  addMarks(plot, rect, marks, K, s.capacity > 0, s.reroute, nullptr, E > 32 ? 1.0 : 1.5, E > 32 ? 4.0 : 0.0);
  QCPColorScale* scale = colorScale(plot, QCPRange(0, 1), tr("probability"));
  fittingTicks(rect->axis(QCPAxis::atLeft), nL, [numbers](int i) { return QStringLiteral("L%1").arg(numbers.value(i)); });
  rect->axis(QCPAxis::atBottom)->setLabel(tr("expert (token %1 '%2')").arg(t).arg(axisLabel(s.labels[t])));
  rect->axis(QCPAxis::atBottom)->setRange(-0.5, E - 0.5);
  rect->axis(QCPAxis::atLeft)->setRange(-0.5, nL - 0.5);
  integerTicks(rect->axis(QCPAxis::atBottom), E);
  finish(plot, scale);
}

QString tokenLayersCaption(const TokensSnapshot& s) {
  return tr("The selected token's router probabilities in each MoE layer (rows); circles mark the experts it was sent "
            "to. Click a token in the text or the heatmap.") +
         (s.capacity > 0 ? QLatin1Char(' ') + (s.reroute ? tr("◆: re-routed (the expert it chose was full).")
                                                         : tr("×: dropped (the expert was full)."))
                         : QString());
}

QString tokenLayersCsv(const TokensSnapshot& s, int token) {
  QString out = QStringLiteral("layer,expert,probability,chosen_rank\n");
  if (s.count() == 0) return out;
  const int t = tokenOrLast(s, token);
  const int64_t E = s.experts(), K = s.topK;
  for (const auto& L : s.layers)
    for (int e = 0; e < E; ++e) {
      int rank = 0;
      for (int k = 0; k < K; ++k)
        if (L.ids[t * int(K) + k] == e) rank = k + 1;
      out += QStringLiteral("%1,%2,%3,%4\n").arg(L.layer).arg(e).arg(double(L.probs[t * int(E) + e]), 0, 'g', 9).arg(rank);
    }
  return out;
}

}  // namespace TokenCharts
