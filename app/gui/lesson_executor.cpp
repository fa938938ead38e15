#include "lesson_executor.hpp"

#include <QDateTime>
#include <QBoxLayout>
#include <QDir>
#include <QEvent>
#include <QLabel>
#include <QPainter>
#include <QScrollArea>
#include <QScrollBar>
#include <QTabWidget>
#include <QTimer>
#include <algorithm>
#include <cmath>

#include "chart_panel.hpp"
#include "compare_view.hpp"
#include "lessons.hpp"
#include "main_window.hpp"
#include "model_view.hpp"
#include "theme.hpp"
#include "tokens_view.hpp"
#include "training_view.hpp"

using moelab::LessonAction;
using moelab::LessonMetrics;
using moelab::MetricValue;

namespace {

// A coloured frame drawn over a chart panel's edge (mouse events go through), and its call-out as a
// row of the panel's own layout between the title and the chart: it moves the chart down a little
// rather than covering the title, the axis titles or the caption. Removed with the frame.
class HighlightFrame : public QWidget {
 public:
  HighlightFrame(QWidget* panel, const QString& text) : QWidget(panel) {
    setAttribute(Qt::WA_TransparentForMouseEvents);
    if (!text.isEmpty()) {
      m_label = new QLabel(text, panel);
      m_label->setObjectName(QStringLiteral("lessonHighlightCallout"));
      m_label->setWordWrap(true);
      QFont f = Theme::current().text;
      f.setBold(true);
      m_label->setFont(f);
      // White on a dark orange (contrast about 5:1), the same in both themes.
      m_label->setStyleSheet(QStringLiteral("QLabel { background: #A84A00; color: white; padding: 4px 10px; border-radius: 6px; }"));
      if (auto* column = qobject_cast<QBoxLayout*>(panel->layout())) column->insertWidget(1, m_label);
      m_label->show();
    }
    panel->installEventFilter(this);
    fit();
    raise();
    show();
  }
  ~HighlightFrame() override {
    if (m_label) delete m_label.data();
  }
  QString text() const { return m_label ? m_label->text() : QString(); }

 protected:
  bool eventFilter(QObject*, QEvent* e) override {
    if (e->type() == QEvent::Resize || e->type() == QEvent::Show) fit();
    return false;
  }
  void paintEvent(QPaintEvent*) override {
    QPainter p(this);
    p.setRenderHint(QPainter::Antialiasing);
    const int w = Theme::current().presentation ? 6 : 4;
    p.setPen(QPen(QColor(0xD5, 0x5E, 0x00), w));
    p.drawRoundedRect(QRectF(rect()).adjusted(w / 2.0, w / 2.0, -w / 2.0, -w / 2.0), 8, 8);
  }

 private:
  void fit() {
    setGeometry(parentWidget()->rect());
    raise();
  }
  QPointer<QLabel> m_label;
};

void put(LessonMetrics& m, const std::string& name, double v) { m[name] = MetricValue::of(v); }

}  // namespace

LessonMetrics trainingMetrics(const RunData& run) {
  LessonMetrics m;
  if (run.history.isEmpty()) return m;
  const StepSummary& last = *run.history.back();
  put(m, "step", double(last.step));
  put(m, "loss", last.lmLoss);
  double val = NAN;
  for (const auto& s : run.history)
    if (!std::isnan(s->valLoss)) val = s->valLoss;
  put(m, "val_loss", val);
  // The load of each layer averaged over the window (core/metrics.cpp's definitions).
  const qsizetype from = std::max<qsizetype>(0, run.history.size() - moelab::kLessonWindow);
  double worstCv = -1, worstShare = 0;
  int worstLayer = -1, busiest = -1;
  int64_t worstDead = 0;
  bool allBalanced = !last.layers.isEmpty();
  for (qsizetype l = 0; l < last.layers.size(); ++l) {
    const qsizetype E = last.layers[l].load.size();
    if (E == 0) continue;
    QVector<double> load(E, 0.0);
    int n = 0;
    for (qsizetype i = from; i < run.history.size(); ++i) {
      if (run.history[i]->layers.size() <= l || run.history[i]->layers[l].load.size() != E) continue;
      for (qsizetype e = 0; e < E; ++e) load[e] += run.history[i]->layers[l].load[e];
      ++n;
    }
    double sum = 0;
    for (double& x : load) sum += x;
    if (sum <= 0) continue;
    const double mean = 1.0 / double(E);
    double var = 0, share = 0;
    int64_t dead = 0;
    int top = 0;
    for (qsizetype e = 0; e < E; ++e) {
      const double x = load[e] / sum;
      var += (x - mean) * (x - mean);
      if (x > share) share = x, top = int(e);
      dead += x < 1.0 / (10.0 * double(E)) ? 1 : 0;
    }
    const double cv = std::sqrt(var / double(E)) / mean;
    if (cv > worstCv) worstCv = cv, worstShare = share, worstLayer = int(l), busiest = top, worstDead = dead;
    allBalanced = allBalanced && cv < moelab::kBalancedCv && share < moelab::kBalancedMaxShare && dead == 0;
  }
  if (worstLayer >= 0) {
    put(m, "worst_layer", worstLayer);
    put(m, "worst_cv", worstCv);
    put(m, "busiest_expert", busiest);
    put(m, "busiest_share", worstShare);
    put(m, "dead_experts", double(worstDead));
    put(m, "collapsed", worstCv >= moelab::kCollapsedCv && worstShare >= moelab::kCollapsedMaxShare &&
                            worstDead >= moelab::kCollapsedDead);
    put(m, "balanced", allBalanced);
  }
  double dropped = 0;
  int layers = 0;
  for (const auto& L : last.layers) dropped += L.droppedRate, ++layers;
  put(m, "dropped_share", layers ? dropped / layers : NAN);
  // Specialisation: the best layer at the last probe step, against its first probe.
  const StepSummary* first = nullptr;
  const StepSummary* lastProbe = nullptr;
  for (const auto& s : run.history)
    if (!s->layers.isEmpty() && !std::isnan(s->layers[0].specialisation)) {
      if (!first) first = s.get();
      lastProbe = s.get();
    }
  if (lastProbe) {
    double now = -1, start = NAN;
    for (qsizetype l = 0; l < lastProbe->layers.size(); ++l)
      if (lastProbe->layers[l].specialisation > now) {
        now = lastProbe->layers[l].specialisation;
        start = l < first->layers.size() ? first->layers[l].specialisation : NAN;
      }
    put(m, "specialisation", now);
    put(m, "specialisation_start", start);
    put(m, "specialised", now >= moelab::kSpecialisedScore && now - start >= moelab::kSpecialisedRise);
  }
  double secs = 0;
  for (const auto& s : run.history)
    if (s->tokensPerS > 0) secs += double(run.train.batch * run.train.seq_len) / s->tokensPerS;
  put(m, "seconds", secs);
  return m;
}

LessonExecutor::LessonExecutor(MainWindow* window, QObject* parent) : QObject(parent), m_w(window) {
  m_poll = new QTimer(this);
  m_poll->setInterval(50);
  connect(m_poll, &QTimer::timeout, this, &LessonExecutor::poll);
}

LessonExecutor::~LessonExecutor() { clearHighlight(); }

QString LessonExecutor::realModelPath() const {
  const QString p = m_w->modelPath();
  const bool fromRun = p.startsWith(QDir(TrainingView::runsFolder()).absolutePath());
  if (p != QLatin1String("builtin") && !fromRun) return p;
  return m_realModel;
}

void LessonExecutor::run(const std::vector<LessonAction>& actions, bool replay) {
  cancel();
  if (const QString p = realModelPath(); !p.isEmpty()) m_realModel = p;
  m_actions = actions;
  m_replay = replay;
  m_index = -1;
  next();
}

void LessonExecutor::next() {
  while (++m_index < int(m_actions.size())) {
    const LessonAction& a = m_actions[size_t(m_index)];
    const bool replayRun = a.action == "train" && m_replay && m_runs.contains(QString::fromStdString(a.name)) &&
                           !m_runs[QString::fromStdString(a.name)].dir.isEmpty();
    if (!replayRun && (a.action == "train" || a.action == "generate" || a.action == "model")) {
      startLong(a);
      if (m_wait != Wait::None) return;  // poll() goes on
      if (m_index < 0) return;           // startLong failed and finished
      continue;
    }
    if (const QString err = quick(a); !err.isEmpty()) return finish(err);
  }
  // A knob of the Tokens view recomputes the text on its worker: the numbers the step quotes
  // are those of the recomputed text.
  if (!m_w->tokensView()->idle()) {
    m_wait = Wait::Settle;
    m_started = QDateTime::currentMSecsSinceEpoch();
    m_poll->start();
    return;
  }
  finish({});
}

void LessonExecutor::finish(const QString& error) {
  m_poll->stop();
  m_wait = Wait::None;
  m_index = -1;
  emit done(error);
}

void LessonExecutor::cancel() {
  if (m_index < 0) return;
  if (m_wait == Wait::Train && m_w->trainingView()->isRunning()) m_w->trainingView()->stopTraining();
  if (m_wait == Wait::Generate) m_w->tokensView()->pause();
  m_poll->stop();
  m_wait = Wait::None;
  m_index = -1;
}

ChartPanel* LessonExecutor::chart(const QString& id) const {
  QList<ChartPanel*> all = m_w->modelView()->charts();
  all += m_w->tokensView()->charts();
  all += m_w->trainingView()->charts();
  all += m_w->compareView()->charts();
  for (ChartPanel* c : all)
    if (c->id() == id) return c;
  return nullptr;
}

void LessonExecutor::showChart(ChartPanel* panel) {
  QTabWidget* tabs = m_w->tabs();
  for (int i = 0; i < tabs->count(); ++i)
    if (tabs->widget(i)->isAncestorOf(panel)) tabs->setCurrentIndex(i);
  for (QTabWidget* pages : {m_w->tokensView()->pages(), m_w->trainingView()->pages(), m_w->compareView()->pages()})
    for (int i = 0; i < pages->count(); ++i)
      if (pages->widget(i)->isAncestorOf(panel)) pages->setCurrentIndex(i);
  // Scroll it into view where its page scrolls (presentation stacks the panels).
  for (QWidget* p = panel->parentWidget(); p; p = p->parentWidget())
    if (auto* area = qobject_cast<QScrollArea*>(p)) {
      // A panel not wholly in view is scrolled to its top (its title, and the call-out that the
      // highlight inserts after this, which makes it taller); ensureWidgetVisible would centre a
      // tall one and cut its title off.
      const int top = panel->mapTo(area->widget(), QPoint(0, 0)).y();
      QScrollBar* bar = area->verticalScrollBar();
      if (top - 8 < bar->value() || top + panel->height() + 8 > bar->value() + area->viewport()->height())
        bar->setValue(std::max(0, top - 8));
      break;
    }
}

void LessonExecutor::clearHighlight() {
  if (m_highlight) delete m_highlight.data();
  m_highlight = nullptr;
  m_highlightPanel = nullptr;
}

QString LessonExecutor::quick(const LessonAction& a) {
  const QString name = QString::fromStdString(a.name);
  const QString choice = QString::fromStdString(a.choice);
  TokensView* tokens = m_w->tokensView();
  TrainingView* training = m_w->trainingView();
  ModelView* model = m_w->modelView();
  if (a.action == "view") {
    QWidget* views[] = {model, tokens, training, m_w->compareView()};
    static const char* names[] = {"model", "tokens", "training", "compare"};
    for (int i = 0; i < 4; ++i)
      if (a.view == names[i]) {
        m_w->tabs()->setCurrentWidget(views[i]);
        QTabWidget* pages = i == 1 ? tokens->pages() : i == 2 ? training->pages() : i == 3 ? m_w->compareView()->pages() : nullptr;
        if (pages && !a.page.empty()) {
          const QString page = QString::fromStdString(a.page);
          int found = -1;
          for (int p = 0; p < pages->count(); ++p)
            if (pages->tabText(p).remove(QLatin1Char('&')) == page) found = p;
          if (found < 0) return tr("the %1 view has no page \"%2\"").arg(QString::fromStdString(a.view), page);
          pages->setCurrentIndex(found);
        }
      }
  } else if (a.action == "preset") {
    if (a.target != "model") {
      training->selectPreset(name);
    }
    if (a.target != "training")
      if (const QString err = model->selectPreset(name); !err.isEmpty()) return err;
  } else if (a.action == "knob") {
    const QString key = name.section(QLatin1Char('.'), 1);
    const double v = a.number;
    if (name.startsWith(QLatin1String("model."))) return model->setKnob(key, v, choice);
    if (key == QLatin1String("top_k") && name.startsWith(QLatin1String("tokens."))) tokens->setTopKOverride(int(v));
    else if (name == QLatin1String("tokens.banned")) tokens->setBannedExperts(choice);
    else if (name == QLatin1String("tokens.forced")) tokens->setForcedExpert(int(v));
    else if (name == QLatin1String("tokens.renormalize"))
      tokens->setRenormalize(choice == QLatin1String("off") ? 0 : choice == QLatin1String("on") ? 1 : -1);
    else if (name == QLatin1String("tokens.capacity")) tokens->setCapacityFactor(v);
    else if (name == QLatin1String("tokens.overflow")) tokens->setOverflowReroute(choice == QLatin1String("reroute"));
    else if (name == QLatin1String("tokens.text_experts")) tokens->setTextExperts(choice);
    else if (name == QLatin1String("tokens.layer")) tokens->selectLayer(int(v));
    else if (name == QLatin1String("training.balancing"))
      training->setBalancingMode(choice == QLatin1String("aux") ? 1 : choice == QLatin1String("bias") ? 2 : 0);
    else if (name == QLatin1String("training.coefficient")) training->setBalancingCoefficient(v);
    else if (name == QLatin1String("training.router")) {
      static const QStringList routers = {QStringLiteral("preset"), QStringLiteral("softmax"), QStringLiteral("noisy"),
                                          QStringLiteral("sigmoid")};
      training->setRouterChoice(int(routers.indexOf(choice)));
    } else if (name == QLatin1String("training.capacity")) training->setCapacityFactor(v);
    else if (name == QLatin1String("training.overflow")) training->setOverflowReroute(choice == QLatin1String("reroute"));
    else if (name == QLatin1String("training.lr")) training->setLearningRate(v);
    else if (name == QLatin1String("training.z_loss")) training->setZLoss(v);
    else if (name == QLatin1String("training.steps")) training->setSteps(int(v));
    else if (name == QLatin1String("training.layer")) {
      int layer = int(v);
      if (layer < 0) {  // the most uneven layer of the run shown (the worst_layer metric)
        const LessonMetrics m = trainingMetrics(training->run());
        const auto it = m.find("worst_layer");
        if (it == m.end()) return tr("training.layer -1 needs a trained run to find its most uneven layer");
        layer = int(it->second.number);
      }
      training->selectLayer(layer);
    }
    else return tr("the lab has no knob %1").arg(name);
  } else if (a.action == "prompt") {
    tokens->setPrompt(QString::fromStdString(a.text));
  } else if (a.action == "token") {
    const int n = tokens->snapshot() ? tokens->snapshot()->count() : 0;
    if (n == 0) return tr("no text to select a token in");
    tokens->selectToken(a.count < 0 ? std::max<int>(0, n + int(a.count)) : std::min<int>(n - 1, int(a.count)));
  } else if (a.action == "train") {  // replayed: reopen the run this step made last time
    if (!training->openRun(m_runs[name].dir)) return tr("cannot reopen run %1").arg(name);
  } else if (a.action == "compare") {
    m_w->compareView()->clearRuns();
    for (const std::string& r : a.runs)
      if (!m_runs.contains(QString::fromStdString(r))) return tr("run %1 has not been trained in this lesson").arg(QString::fromStdString(r));
    for (const std::string& r : a.runs) {
      RunData shown = m_runs[QString::fromStdString(r)];
      shown.preset = QString::fromStdString(r);  // the lesson's name for the run labels it in Compare
      m_w->compareView()->addRunData(shown);
    }
    m_w->tabs()->setCurrentWidget(m_w->compareView());
  } else if (a.action == "real_model") {
    if (const QString err = model->setCompared(name); !err.isEmpty()) return err;
  } else if (a.action == "highlight") {
    clearHighlight();
    ChartPanel* panel = chart(QString::fromStdString(a.chart));
    if (!panel) return tr("the lab has no chart %1").arg(QString::fromStdString(a.chart));
    showChart(panel);
    m_highlightPanel = panel;
    m_highlight = new HighlightFrame(panel, QString::fromStdString(moelab::format_lesson_text(a.text, metrics())));
  } else {
    return tr("the lab cannot run action %1").arg(QString::fromStdString(a.action));
  }
  return {};
}

void LessonExecutor::startLong(const LessonAction& a) {
  TokensView* tokens = m_w->tokensView();
  m_started = QDateTime::currentMSecsSinceEpoch();
  m_trainSeen = false;
  if (a.action == "generate") {
    m_target = int(a.count);
    m_wait = Wait::Generate;  // the steps are requested once the view is idle (poll)
    emit progress(tr("Generating %1 tokens…").arg(a.count), 0);
  } else if (a.action == "train") {
    TrainingView* tv = m_w->trainingView();
    m_target = int(a.count);
    tv->setSteps(m_target);
    m_w->tabs()->setCurrentWidget(tv);
    tv->startTraining();
    m_wait = Wait::Train;
    emit progress(tr("Training %1 steps…").arg(a.count), 0);
  } else {  // model
    QString path;
    if (a.target == "builtin") path = QStringLiteral("builtin");
    else if (a.target == "real") path = realModelPath();
    if (a.target == "real" && path.isEmpty())
      return finish(tr("no model opened from disk: use File ▸ Open Model first"));
    if (a.target == "run") {
      if (m_w->trainingView()->history().isEmpty()) return finish(tr("no training run to open in the Tokens view"));
      m_w->trainingView()->openInTokens();
    } else if (path == m_w->modelPath() && !tokens->loading()) {
      m_wait = Wait::None;
      return;  // already open
    } else {
      m_w->openModel(path);
    }
    m_wait = Wait::Model;
    emit progress(tr("Opening the model…"), -1);
  }
  m_poll->start();
}

void LessonExecutor::poll() {
  const qint64 elapsed = QDateTime::currentMSecsSinceEpoch() - m_started;
  TokensView* tokens = m_w->tokensView();
  if (m_wait == Wait::Settle) {
    if (tokens->idle() || elapsed > 120000) finish({});
    return;
  }
  if (m_wait == Wait::Generate) {
    if (!tokens->idle()) return;
    const int count = tokens->snapshot() ? tokens->snapshot()->count() : 0;
    if (!m_trainSeen) {  // first idle moment: ask for the tokens
      m_trainSeen = true;
      m_target += count;
      for (int i = count; i < m_target; ++i) tokens->stepOnce();
      return;
    }
    const bool ended = tokens->snapshot() && tokens->snapshot()->ended;
    if (count >= m_target || ended || elapsed > 120000) {
      m_poll->stop();
      m_wait = Wait::None;
      next();
    }
    return;
  }
  if (m_wait == Wait::Model) {
    if (tokens->loading()) m_trainSeen = true;
    if ((m_trainSeen || elapsed > 1500) && tokens->idle()) {
      m_poll->stop();
      m_wait = Wait::None;
      next();
    } else if (elapsed > 300000) {
      finish(tr("the model did not open within 5 minutes"));
    }
    return;
  }
  if (m_wait == Wait::Train) {
    TrainingView* tv = m_w->trainingView();
    const LessonAction& a = m_actions[size_t(m_index)];
    if (tv->isRunning()) m_trainSeen = true;
    const qsizetype steps = tv->history().size();
    emit progress(tr("Training: step %1 of %2").arg(steps).arg(m_target), double(steps) / std::max(1, m_target));
    if (tv->isRunning() && a.until && steps > 0 && moelab::evaluate_check(*a.until, trainingMetrics(tv->run())).held)
      tv->stopTraining();
    if (m_trainSeen && !tv->isRunning()) {
      if (!a.name.empty()) m_runs[QString::fromStdString(a.name)] = tv->run();
      m_poll->stop();
      m_wait = Wait::None;
      next();
    } else if (!m_trainSeen && elapsed > 10000) {
      finish(tr("the training run did not start (see the error above the views)"));
    }
  }
}

LessonMetrics LessonExecutor::metrics() const {
  LessonMetrics m = trainingMetrics(m_w->trainingView()->run());
  for (auto it = m_runs.begin(); it != m_runs.end(); ++it)
    for (const auto& [k, v] : trainingMetrics(it.value())) m["run." + it.key().toStdString() + "." + k] = v;
  // Tokens view.
  TokensView* tv = m_w->tokensView();
  const SnapshotPtr s = tv->snapshot();
  const QString real = realModelPath();
  put(m, "real_model_open", !real.isEmpty() && m_w->modelPath() == real);
  if (s) {
    m["model_name"] = MetricValue::of_text(s->modelName.toStdString());
    put(m, "tokens", s->count());
    put(m, "top_k_used", double(s->topK));
    if (!s->next.isEmpty()) {
      m["next_token"] = MetricValue::of_text((s->nextLabels.isEmpty() ? QString::number(s->next[0].first) : s->nextLabels[0]).toStdString());
      put(m, "next_prob", s->next[0].second);
    }
    const int K = int(s->topK), E = int(s->experts());
    const int L = std::max(0, tv->selectedLayer());
    if (s->count() > 0 && L < s->layers.size() && K > 0 && E > 0) {
      const auto& layer = s->layers[L];
      const int t = tv->selectedToken() >= 0 ? std::min(tv->selectedToken(), s->count() - 1) : s->count() - 1;
      put(m, "token_index", t);
      if (t < s->labels.size()) m["token_text"] = MetricValue::of_text(s->labels[t].toStdString());
      QStringList chosen;
      for (int k = 0; k < K && t * K + k < layer.ids.size(); ++k)
        if (layer.ids[t * K + k] >= 0) chosen << QString::number(layer.ids[t * K + k]);
      m["token_experts"] = MetricValue::of_text(chosen.join(QStringLiteral(", ")).toStdString());
      if (t * K < layer.ids.size()) {
        put(m, "token_expert", layer.ids[t * K] >= 0 ? layer.ids[t * K] : NAN);
        put(m, "token_gate", layer.weights[t * K]);
      }
      float top = 0;
      for (int e = 0; e < E && t * E + e < layer.probs.size(); ++e) top = std::max(top, layer.probs[t * E + e]);
      put(m, "token_top_prob", top);
      QVector<int> counts(E, 0);
      int nslots = 0;
      for (int id : layer.ids)
        if (id >= 0 && id < E) ++counts[id], ++nslots;
      const auto busiest = std::max_element(counts.begin(), counts.end());
      put(m, "text_busiest_expert", double(busiest - counts.begin()));
      put(m, "text_busiest_share", nslots ? double(*busiest) / nslots : NAN);
      put(m, "text_experts_used", double(std::count_if(counts.begin(), counts.end(), [](int c) { return c > 0; })));
      put(m, "dropped_slots", layer.droppedSlots());
      put(m, "rerouted_slots", layer.reroutedSlots());
    }
  }
  // Model view, and the published model it compares with.
  const ModelCharts::ModelSnapshot ms = m_w->modelView()->shown();
  put(m, "total_params", double(ms.params.total));
  put(m, "active_params", double(ms.params.active));
  put(m, "active_fraction", ms.params.total > 0 ? double(ms.params.active) / double(ms.params.total) : NAN);
  put(m, "experts", double(ms.config.num_experts));
  put(m, "top_k", double(ms.config.top_k));
  put(m, "layers", double(ms.config.num_layers));
  put(m, "weight_bytes", 2.0 * double(ms.params.total));
  put(m, "flops_per_token", ms.flops);
  for (const ModelCharts::RealModel& r : ms.real)
    if (r.id == ms.compared) {
      m["real_name"] = MetricValue::of_text(r.name.toStdString());
      put(m, "real_total_params", double(r.params.total));
      put(m, "real_active_params", double(r.params.active));
      put(m, "real_experts", double(r.config.num_experts));
      put(m, "real_top_k", double(r.config.top_k));
    }
  return m;
}
