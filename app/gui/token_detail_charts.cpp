// The Tokens view's detail charts: why this expert (the top experts of one token), co-activation,
// the next-token distribution and one token through every layer. The routing heatmap and the
// expert load are in token_charts.cpp; the helpers both use are in token_charts_kit.hpp.
#include <QObject>
#include <algorithm>
#include <numeric>
#include <qcustomplot.h>

#include "chart_kit.hpp"
#include "theme.hpp"
#include "token_charts.hpp"
#include "token_charts_kit.hpp"
#include "tokenizer.hpp"

namespace TokenCharts {

using namespace ChartKit;
using namespace kit;

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
