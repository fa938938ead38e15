#include "training_view.hpp"

#include <QApplication>
#include <QComboBox>
#include <QDateTime>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QJsonObject>
#include <QLabel>
#include <QPushButton>
#include <QScrollArea>
#include <QSlider>
#include <QSpinBox>
#include <QSplitter>
#include <QStandardPaths>
#include <QTabWidget>
#include <QTimer>
#include <QVBoxLayout>
#include <qcustomplot.h>

#include "chart_panel.hpp"
#include "knob_drawer.hpp"
#include "presets.hpp"
#include "run_charts.hpp"
#include "runlog.hpp"
#include "theme.hpp"

using moelab::TrainConfig;

TrainingView::TrainingView(QWidget* parent) : QWidget(parent) {
  m_worker = new TrainingWorker;
  m_worker->moveToThread(&m_thread);
  connect(&m_thread, &QThread::finished, m_worker, &QObject::deleteLater);
  connect(m_worker, &TrainingWorker::stepDone, this, [this](StepSummaryPtr s) {
    m_run.history.push_back(std::move(s));
    m_dirty = true;  // drawn by the frame timer, at most 25 times a second
  });
  connect(m_worker, &TrainingWorker::started, this,
          [this](const QString& title, const QString& runDir, int64_t experts, int64_t moeLayers, int64_t topK,
                 int64_t stepsDone) {
            if (stepsDone > 0) {  // continuing: the log was cut back to the checkpoint
              try {
                m_run = loadRun(runDir);
                // The worker may already have logged steps past the checkpoint; those arrive as
                // stepDone signals queued behind this one, so the view keeps only the steps before.
                while (!m_run.history.isEmpty() && m_run.history.back()->step > stepsDone) m_run.history.removeLast();
              } catch (const std::exception& e) {
                emit errorOccurred(QString::fromUtf8(e.what()));
              }
            } else {
              m_run.dir = runDir;
              m_run.name = runDir.isEmpty() ? title : QDir(runDir).dirName();
            }
            m_run.title = title;
            m_run.experts = experts;
            m_run.moeLayers = moeLayers;
            m_run.topK = topK;
            m_shown = -1;
            m_layer->blockSignals(true);
            const int keep = m_layer->currentIndex();
            m_layer->clear();
            for (int64_t l = 0; l < moeLayers; ++l) m_layer->addItem(tr("MoE layer %1").arg(l));
            m_layer->setCurrentIndex(std::clamp(keep, 0, int(moeLayers) - 1));
            m_layer->blockSignals(false);
            m_status->setText(tr("Training: %1 on %2").arg(title, m_deviceName));
            m_dirty = true;
            emit runChanged();
          });
  connect(m_worker, &TrainingWorker::deviceInUse, this,
          [this](const QString& name, const QString& deviceProblem, const QString& precisionProblem) {
            m_deviceName = name;
            emit deviceInUse(name, deviceProblem, precisionProblem);
          });
  connect(m_worker, &TrainingWorker::finished, this, [this](const QString& m) {
    m_running = false;
    m_status->setText(m);
    m_dirty = true;
    emit trainingFinished(m);
    emit runChanged();
  });
  connect(m_worker, &TrainingWorker::checkpointSaved, this, [this](const QString& dir, int64_t step) {
    m_status->setText(tr("Checkpoint of step %1 saved").arg(step));
    if (m_openWhenSaved) {
      m_openWhenSaved = false;
      emit openModelRequested(dir);
    }
  });
  connect(m_worker, &TrainingWorker::errorOccurred, this, [this](const QString& m) {
    m_running = false;
    m_openWhenSaved = false;
    emit errorOccurred(m);
  });
  m_thread.start();

  auto* controls = new QWidget;
  auto* form = new QFormLayout(controls);
  m_preset = new QComboBox(controls);
  for (const auto& n : moelab::list_presets())
    if (n != "builtin-model") m_preset->addItem(QString::fromStdString(n));
  form->addRow(tr("Preset"), m_preset);
  m_description = new QLabel(controls);
  m_description->setWordWrap(true);
  form->addRow(m_description);
  m_corpus = new QComboBox(controls);
  m_corpus->addItems({tr("the preset's"), tr("built-in: 4 domains"), tr("a text file…")});
  m_corpus->setToolTip(tr("What the model reads while it trains"));
  form->addRow(tr("Corpus"), m_corpus);
  m_router = new QComboBox(controls);
  m_router->addItems({tr("the preset's"), tr("softmax"), tr("noisy top-k"), tr("sigmoid")});
  m_router->setToolTip(tr("How the router scores the experts (sigmoid is needed for the bias method)"));
  form->addRow(tr("Router"), m_router);
  m_balance = new QComboBox(controls);
  m_balance->addItems({tr("none"), tr("auxiliary loss"), tr("bias (sigmoid router)")});
  m_balance->setToolTip(tr("Change it while training: it takes effect at the next step"));
  form->addRow(tr("Balancing"), m_balance);
  m_coef = new QDoubleSpinBox(controls);
  m_coef->setDecimals(4);
  m_coef->setRange(0, 1);
  m_coef->setSingleStep(0.001);
  m_coef->setToolTip(tr("alpha of the auxiliary loss, or gamma of the bias update"));
  form->addRow(tr("Coefficient"), m_coef);
  m_z = new QDoubleSpinBox(controls);
  m_z->setDecimals(4);
  m_z->setRange(0, 1);
  m_z->setSingleStep(0.001);
  m_z->setSpecialValueText(tr("off"));
  m_z->setToolTip(tr("Router z-loss (ST-MoE): keeps the router's logits small so its softmax stays stable"));
  form->addRow(tr("z-loss"), m_z);
  m_capacity = new QDoubleSpinBox(controls);
  m_capacity->setRange(0, 8);
  m_capacity->setSingleStep(0.25);
  m_capacity->setSpecialValueText(tr("no limit"));
  m_capacity->setToolTip(tr("Each expert takes at most factor × (tokens × k / experts) tokens a step"));
  form->addRow(tr("Capacity factor"), m_capacity);
  m_overflow = new QComboBox(controls);
  m_overflow->addItems({tr("dropped"), tr("re-routed to next best")});
  m_overflow->setToolTip(tr("What happens to a token whose expert is full"));
  form->addRow(tr("Overflow"), m_overflow);
  m_lr = new QDoubleSpinBox(controls);
  m_lr->setDecimals(4);
  m_lr->setRange(0.0001, 0.1);
  m_lr->setSingleStep(0.0005);
  form->addRow(tr("Learning rate"), m_lr);
  m_steps = new QSpinBox(controls);
  m_steps->setRange(1, 1000000);
  form->addRow(tr("Steps"), m_steps);
  m_layer = new QComboBox(controls);
  form->addRow(tr("Layer shown"), m_layer);
  auto* buttons = new QGridLayout;
  m_start = new QPushButton(tr("Start"), controls);
  m_pause = new QPushButton(tr("Pause"), controls);
  m_resume = new QPushButton(tr("Resume"), controls);
  m_step = new QPushButton(tr("Step"), controls);
  m_stop = new QPushButton(tr("Stop"), controls);
  m_openRun = new QPushButton(tr("Open Run…"), controls);
  m_continue = new QPushButton(tr("Continue Run"), controls);
  m_toTokens = new QPushButton(tr("Open Model in Tokens"), controls);
  m_start->setToolTip(tr("Train a new model from the preset with these settings"));
  m_step->setToolTip(tr("One training step, then pause"));
  m_openRun->setToolTip(tr("Open a finished run's folder and replay it"));
  m_continue->setToolTip(tr("Continue the shown run from its newest checkpoint"));
  m_toTokens->setToolTip(tr("Look at how this model routes text, in the Tokens view"));
  buttons->addWidget(m_start, 0, 0);
  buttons->addWidget(m_pause, 0, 1);
  buttons->addWidget(m_resume, 1, 0);
  buttons->addWidget(m_step, 1, 1);
  buttons->addWidget(m_stop, 2, 0);
  buttons->addWidget(m_openRun, 2, 1);
  buttons->addWidget(m_continue, 3, 0);
  buttons->addWidget(m_toTokens, 3, 1);
  form->addRow(buttons);
  m_status = new QLabel(controls);
  m_status->setWordWrap(true);
  form->addRow(m_status);
  m_scroll = new QScrollArea(this);
  auto* scroll = m_scroll;
  scroll->setWidget(controls);
  scroll->setWidgetResizable(true);
  scroll->setFrameShape(QFrame::NoFrame);
  scroll->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);

  // Replay bar: scrub through the steps, or play them at a chosen speed.
  auto* replayBar = new QWidget(this);
  auto* rb = new QHBoxLayout(replayBar);
  rb->setContentsMargins(4, 0, 4, 0);
  m_play = new QPushButton(tr("Play"), replayBar);
  m_play->setCheckable(true);
  m_play->setToolTip(tr("Replay the run from the position of the slider"));
  m_scrub = new QSlider(Qt::Horizontal, replayBar);
  m_scrub->setToolTip(tr("Drag to see the run at any step"));
  m_position = new QLabel(replayBar);
  m_speed = new QComboBox(replayBar);
  for (int s : {5, 10, 25, 50, 100, 200}) m_speed->addItem(tr("%1 steps/s").arg(s), s);
  m_speed->setCurrentIndex(3);
  rb->addWidget(m_play);
  rb->addWidget(m_scrub, 1);
  rb->addWidget(m_position);
  rb->addWidget(m_speed);

  setupCharts();
  auto* right = new QWidget(this);
  auto* rv = new QVBoxLayout(right);
  rv->setContentsMargins(0, 0, 0, 0);
  rv->addWidget(replayBar);
  rv->addWidget(m_pages, 1);
  auto* split = new QSplitter(this);
  m_drawer = new KnobDrawer(scroll);
  split->addWidget(m_drawer);
  split->addWidget(right);
  split->setStretchFactor(1, 4);
  auto* outer = new QHBoxLayout(this);
  outer->setContentsMargins(0, 0, 0, 0);
  outer->addWidget(split);

  m_frame = new QTimer(this);
  m_frame->setInterval(40);  // up to 25 frames a second
  connect(m_frame, &QTimer::timeout, this, [this] {
    if (m_dirty) redraw();
  });
  m_frame->start();
  m_replay = new QTimer(this);
  connect(m_replay, &QTimer::timeout, this, [this] {
    const int n = shownSteps();
    if (n >= m_run.history.size()) return playReplay(false);
    setShownSteps(n + 1);
  });
  connect(m_preset, &QComboBox::currentTextChanged, this, &TrainingView::selectPreset);
  connect(m_start, &QPushButton::clicked, this, [this] { startTraining(); });
  connect(m_pause, &QPushButton::clicked, this, &TrainingView::pauseTraining);
  connect(m_resume, &QPushButton::clicked, this, &TrainingView::resumeTraining);
  connect(m_step, &QPushButton::clicked, this, &TrainingView::stepTraining);
  connect(m_stop, &QPushButton::clicked, this, &TrainingView::stopTraining);
  connect(m_openRun, &QPushButton::clicked, this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Open a run folder (run.json + metrics.jsonl)"), runsFolder());
    if (!dir.isEmpty()) openRun(dir);
  });
  connect(m_continue, &QPushButton::clicked, this, &TrainingView::continueRun);
  connect(m_toTokens, &QPushButton::clicked, this, &TrainingView::openInTokens);
  connect(m_layer, &QComboBox::currentIndexChanged, this, [this] { redraw(); });
  connect(m_pages, &QTabWidget::currentChanged, this, [this] { redraw(); });
  connect(m_scrub, &QSlider::valueChanged, this, [this](int v) {
    if (v != shownSteps()) setShownSteps(v);
  });
  connect(m_play, &QPushButton::toggled, this, &TrainingView::playReplay);
  connect(m_speed, &QComboBox::currentIndexChanged, this, [this] { setReplaySpeed(m_speed->currentData().toInt()); });
  connect(m_corpus, &QComboBox::activated, this, [this](int i) {
    if (i != 2) return;
    const QString f = QFileDialog::getOpenFileName(this, tr("A UTF-8 text file to train on"));
    if (f.isEmpty()) {
      m_corpus->setCurrentIndex(0);
      return;
    }
    m_corpusFile = f;
    m_corpus->setItemText(2, QFileInfo(f).fileName());
  });
  auto live = [this] {
    if (m_running) {
      const TrainConfig c = configFromKnobs();
      if (c.aux_alpha > 0) m_run.showAux = true;
      if (c.z_coef > 0) m_run.showZ = true;
      QMetaObject::invokeMethod(m_worker, [w = m_worker, c] { w->updateConfig(c); });
    }
  };
  connect(m_balance, &QComboBox::currentIndexChanged, this, live);
  connect(m_coef, &QDoubleSpinBox::valueChanged, this, live);
  connect(m_capacity, &QDoubleSpinBox::valueChanged, this, live);
  connect(m_z, &QDoubleSpinBox::valueChanged, this, live);
  connect(m_overflow, &QComboBox::currentIndexChanged, this, live);
  connect(m_lr, &QDoubleSpinBox::valueChanged, this, live);
  selectPreset(QStringLiteral("lesson-collapse"));
  setReplaySpeed(m_speed->currentData().toInt());
  applyTheme(Theme::current());
  updateReplayBar();
}

TrainingView::~TrainingView() {
  QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->pause(); });
  m_thread.quit();
  m_thread.wait();
}

void TrainingView::setupCharts() {
  // One panel per run chart, with the title, caption, drawing and CSV that `moelab export` uses.
  for (const RunCharts::RunChart& c : RunCharts::runCharts()) {
    auto* panel = new ChartPanel(c.id, c.titleFor(0), c.caption);
    panel->setCsvProvider([this, &c] { return c.csv(m_run, shownSteps(), selectedLayer()); });
    m_charts.push_back(panel);
  }
  m_chartPage.fill(0, m_charts.size());
  // Normal: a wide chart over two half-width ones, or two side by side. Presentation: one
  // column, every chart the page's full width and tall enough to read, and the page scrolls.
  m_pages = new QTabWidget(this);
  auto add = [this](ChartPage* page, const char* id, int row, int column, int columnSpan = 1) {
    ChartPanel* panel = chart(QLatin1String(id));
    page->add(panel, row, column, 1, columnSpan);
    m_chartPage[m_charts.indexOf(panel)] = m_pages->count();  // the page being filled
  };
  auto* p1 = new ChartPage(ChartPage::Presentation::Stack);
  add(p1, "collapse", 0, 0, 2);
  add(p1, "load-now", 1, 0);
  add(p1, "loss", 1, 1);
  p1->setRowStretch(0, 3);
  p1->setRowStretch(1, 2);
  m_pages->addTab(p1, tr("Collapse"));
  // Side by side: each chart gets the page's full height.
  auto* p2 = new ChartPage(ChartPage::Presentation::Stack);
  add(p2, "balance", 0, 0);
  add(p2, "entropy", 0, 1);
  m_pages->addTab(p2, tr("Unevenness over time"));
  auto* p3 = new ChartPage(ChartPage::Presentation::Stack);
  add(p3, "bias", 0, 0);
  add(p3, "saturation", 0, 1);
  m_pages->addTab(p3, tr("Router"));
  auto* p4 = new ChartPage(ChartPage::Presentation::Stack);
  add(p4, "specialisation", 0, 0, 2);
  add(p4, "specialisation-score", 1, 0);
  add(p4, "drop-by-position", 1, 1);
  p4->setRowStretch(0, 3);
  p4->setRowStretch(1, 2);
  m_pages->addTab(p4, tr("Specialisation and drops"));
  m_chartPages = {p1, p2, p3, p4};
  // Presentation: about 400 px of chart under the title, so axis titles (the longest run along
  // a right axis above a two-row legend), a colour bar's title and a legend all fit at projector
  // font sizes; a panel with its title and caption still fits the page's height at 1280×800.
  for (ChartPanel* c : charts()) c->setMinimumChartHeight(160, 400);
}

QList<ChartPanel*> TrainingView::charts() const { return QList<ChartPanel*>(m_charts.begin(), m_charts.end()); }

ChartPanel* TrainingView::chart(const QString& id) const {
  for (ChartPanel* c : m_charts)
    if (c->id() == id) return c;
  return nullptr;
}

QString TrainingView::runsFolder() {
  return QDir(QStandardPaths::writableLocation(QStandardPaths::AppLocalDataLocation)).filePath(QStringLiteral("runs"));
}

void TrainingView::applyTheme(const Theme& t) {
  for (ChartPanel* c : charts()) c->applyTheme(t);
  for (ChartPage* p : m_chartPages) p->applyTheme(t);
  // The knobs keep their full width in both themes (the charts take what is left).
  m_scroll->setMinimumWidth(QFontMetrics(QApplication::font()).horizontalAdvance(QLatin1Char('x')) * 34);
  redraw();
}

void TrainingView::selectPreset(const QString& name) {
  try {
    const moelab::Preset p = moelab::load_preset(name.toStdString());
    if (m_preset->currentText() != name) m_preset->setCurrentText(name);
    m_presetConfig = p.train;
    m_description->setText(QString::fromStdString(p.description));
    m_balance->setCurrentIndex(p.train.bias_gamma > 0 ? 2 : p.train.aux_alpha > 0 ? 1 : 0);
    m_coef->setValue(p.train.bias_gamma > 0 ? p.train.bias_gamma : p.train.aux_alpha);
    m_capacity->setValue(p.train.capacity.factor);
    m_z->setValue(p.train.z_coef);
    m_overflow->setCurrentIndex(p.train.capacity.reroute ? 1 : 0);
    m_lr->setValue(p.train.lr);
    m_steps->setValue(int(p.train.steps));
    m_router->setCurrentIndex(0);
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
  }
}

void TrainingView::setBalancing(int mode, double coefficient) {
  m_balance->setCurrentIndex(mode);
  m_coef->setValue(coefficient);
}

void TrainingView::setSteps(int steps) { m_steps->setValue(steps); }
void TrainingView::setBalancingMode(int mode) { m_balance->setCurrentIndex(mode); }
void TrainingView::setBalancingCoefficient(double coefficient) { m_coef->setValue(coefficient); }
void TrainingView::setRouterChoice(int index) { m_router->setCurrentIndex(index); }
void TrainingView::setCapacityFactor(double factor) { m_capacity->setValue(factor); }
void TrainingView::setOverflowReroute(bool reroute) { m_overflow->setCurrentIndex(reroute ? 1 : 0); }
void TrainingView::setLearningRate(double lr) { m_lr->setValue(lr); }
void TrainingView::setZLoss(double coefficient) { m_z->setValue(coefficient); }

void TrainingView::selectLayer(int index) { m_layer->setCurrentIndex(index); }

TrainConfig TrainingView::configFromKnobs() const {
  TrainConfig c = m_presetConfig;
  c.aux_alpha = m_balance->currentIndex() == 1 ? float(m_coef->value()) : 0.0f;
  c.bias_gamma = m_balance->currentIndex() == 2 ? float(m_coef->value()) : 0.0f;
  c.capacity.factor = m_capacity->value();
  c.z_coef = float(m_z->value());
  c.capacity.reroute = m_overflow->currentIndex() == 1;
  c.lr = float(m_lr->value());
  c.steps = m_steps->value();
  c.eval_every = std::max<int64_t>(10, c.steps / 20);
  // A checkpoint about every quarter of the run: replay can open the model at those steps, and a
  // crash loses the log of nothing and the weights of at most a quarter.
  c.checkpoint_every = std::max<int64_t>(25, c.steps / 4);
  return c;
}

void TrainingView::startTraining(const QString& runDir) {
  playReplay(false);
  TrainingRequest r;
  r.preset = m_preset->currentText();
  r.config = configFromKnobs();
  static const char* routers[] = {"", "softmax", "noisy", "sigmoid"};
  r.router = QString::fromLatin1(routers[std::clamp(m_router->currentIndex(), 0, 3)]);
  if (r.config.bias_gamma > 0 && r.router.isEmpty()) {
    // The bias method needs the sigmoid router: switch it on rather than train without balancing.
    try {
      if (moelab::load_preset(r.preset.toStdString()).model.scoring != moelab::RouterScoring::Sigmoid)
        r.router = QStringLiteral("sigmoid");
    } catch (const std::exception&) {
    }
  }
  r.corpus = m_corpus->currentIndex() == 1 ? QStringLiteral("builtin:domains")
             : m_corpus->currentIndex() == 2 ? m_corpusFile
                                             : QString();
  r.runDir = runDir;
  if (r.runDir.isEmpty()) {
    const QString name = QFileInfo(r.preset).baseName() + QDateTime::currentDateTime().toString(QStringLiteral("-yyyyMMdd-HHmmss-zzz"));
    r.runDir = QDir(runsFolder()).filePath(name);
    QDir().mkpath(r.runDir);
  }
  m_run = RunData{};
  m_run.train = r.config;
  m_run.preset = r.preset;
  m_run.showAux = r.config.aux_alpha > 0;
  m_run.showZ = r.config.z_coef > 0;
  m_shown = -1;
  m_running = true;
  m_dirty = true;
  QMetaObject::invokeMethod(m_worker, [w = m_worker, r] { w->start(r); });
}

void TrainingView::setDevice(const QString& device) {
  QMetaObject::invokeMethod(m_worker, [w = m_worker, device] { w->setDevice(device); });
}

void TrainingView::setPrecision(moelab::Precision precision) {
  QMetaObject::invokeMethod(m_worker, [w = m_worker, precision] { w->setPrecision(precision); });
}

void TrainingView::pauseTraining() {
  m_running = false;
  QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->pause(); });
  m_status->setText(tr("Paused"));
}

void TrainingView::resumeTraining() {
  m_running = true;
  m_shown = -1;
  QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->resume(); });
}

void TrainingView::stepTraining() {
  m_running = false;
  m_shown = -1;
  QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->stepOnce(); });
}

void TrainingView::stopTraining() {
  m_running = false;
  QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->stop(); });
}

bool TrainingView::openRun(const QString& dir) {
  try {
    RunData run = loadRun(dir);
    pauseTraining();
    m_run = std::move(run);
    m_layer->blockSignals(true);
    m_layer->clear();
    for (int64_t l = 0; l < m_run.moeLayers; ++l) m_layer->addItem(tr("MoE layer %1").arg(l));
    m_layer->blockSignals(false);
    m_shown = -1;
    m_status->setText(tr("Opened %1: %2 steps of %3").arg(m_run.name).arg(m_run.history.size()).arg(m_run.train.steps));
    redraw();
    emit runChanged();
    return true;
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
    return false;
  }
}

void TrainingView::continueRun() {
  if (m_run.dir.isEmpty()) return emit errorOccurred(tr("Open a run folder first (Open Run…)"));
  playReplay(false);
  m_running = true;
  QMetaObject::invokeMethod(m_worker, [w = m_worker, d = m_run.dir] { w->continueRun(d); });
}

void TrainingView::openInTokens() {
  if (m_run.history.isEmpty()) return emit errorOccurred(tr("No run yet: train one or open a run folder"));
  const bool replaying = isReplaying() || m_run.history.back()->step < m_run.train.steps;
  if (!m_running && !replaying) {
    // The live run (paused or finished): save the weights as they are now, then open them.
    m_openWhenSaved = true;
    QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->saveCheckpoint(QString()); });
    return;
  }
  if (m_running) {
    pauseTraining();
    m_openWhenSaved = true;
    QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->saveCheckpoint(QString()); });
    return;
  }
  // A replayed run: the newest checkpoint at or before the step shown.
  const int64_t step = m_run.history[std::max(0, shownSteps() - 1)]->step;
  const std::string dir = m_run.dir.toStdString();
  std::string found = moelab::RunLog::checkpoint_at_or_before(dir, step);
  if (found.empty()) found = moelab::RunLog::latest_checkpoint(dir);  // none that early: the newest there is
  if (found.empty()) return emit errorOccurred(tr("%1: the run has no checkpoint").arg(m_run.dir));
  const QString best = QString::fromStdString(found);
  m_status->setText(tr("Opening the model of %1").arg(QDir(best).dirName()));
  emit openModelRequested(best);
}

int TrainingView::shownSteps() const {
  return m_shown < 0 ? int(m_run.history.size()) : std::min(m_shown, int(m_run.history.size()));
}

bool TrainingView::isReplaying() const { return m_shown >= 0 || m_replay->isActive(); }

void TrainingView::setShownSteps(int n) {
  n = std::clamp(n, 0, int(m_run.history.size()));
  m_shown = (n >= m_run.history.size() && !m_replay->isActive()) ? -1 : n;
  redraw();
}

void TrainingView::playReplay(bool on) {
  if (on && !m_running) {
    if (shownSteps() >= m_run.history.size()) m_shown = 0;  // from the start
    else m_shown = shownSteps();
    m_replay->start();
  } else {
    m_replay->stop();
    if (m_shown >= m_run.history.size()) m_shown = -1;
  }
  if (m_play->isChecked() != m_replay->isActive()) {
    m_play->blockSignals(true);
    m_play->setChecked(m_replay->isActive());
    m_play->blockSignals(false);
  }
  m_play->setText(m_replay->isActive() ? tr("Pause replay") : tr("Play"));
}

void TrainingView::setReplaySpeed(int stepsPerSecond) {
  m_replay->setInterval(std::max(1, 1000 / std::max(1, stepsPerSecond)));
  const int i = m_speed->findData(stepsPerSecond);
  if (i >= 0 && i != m_speed->currentIndex()) m_speed->setCurrentIndex(i);
}

int TrainingView::selectedLayer() const { return std::max(0, m_layer->currentIndex()); }

double TrainingView::collapseValue(int stepIndex, int expert) const {
  QCustomPlot* p = chart(QStringLiteral("collapse"))->plot();
  auto* map = p->plottableCount() ? qobject_cast<QCPColorMap*>(p->plottable(0)) : nullptr;
  return map ? map->data()->cell(stepIndex, expert) : std::nan("");
}

void TrainingView::updateReplayBar() {
  const int n = int(m_run.history.size());
  m_scrub->blockSignals(true);
  m_scrub->setRange(std::min(1, n), n);
  m_scrub->setValue(shownSteps());
  m_scrub->blockSignals(false);
  m_scrub->setEnabled(n > 0);
  m_play->setEnabled(n > 0 && !m_running);
  const int s = shownSteps();
  m_position->setText(n == 0 ? tr("no steps") : tr("step %1 of %2").arg(s > 0 ? m_run.history[s - 1]->step : 0).arg(m_run.history.back()->step));
  m_continue->setEnabled(!m_running && !m_run.dir.isEmpty() && !m_run.history.isEmpty() &&
                         m_run.history.back()->step < m_run.train.steps);
}

void TrainingView::redraw(bool all) {
  m_dirty = false;
  ++m_frames;
  const int n = shownSteps(), layer = selectedLayer();
  // The first page always (the collapse view is the lesson); the others when they are showing,
  // or all of them before an export.
  const int page = m_pages->currentIndex();
  for (int i = 0; i < int(m_charts.size()); ++i) {
    if (!all && m_chartPage[i] != 0 && m_chartPage[i] != page) continue;
    const RunCharts::RunChart& c = RunCharts::runCharts()[i];
    c.draw(m_charts[i]->plot(), m_run, n, layer);
    if (c.perLayer) m_charts[i]->setTitle(c.titleFor(layer));
  }
  updateReplayBar();
  if (!m_run.history.isEmpty() && m_running) {
    const auto& s = *m_run.history.back();
    m_status->setText(tr("Step %1 of %2, loss %3, %4 tokens/s on %5")
                          .arg(s.step)
                          .arg(s.steps)
                          .arg(s.loss, 0, 'f', 3)
                          .arg(s.tokensPerS, 0, 'f', 0)
                          .arg(m_deviceName));
  }
}

QJsonObject TrainingView::state() const {
  return {{"preset", m_preset->currentText()},   {"corpus", m_corpus->currentIndex()},
          {"corpus_file", m_corpusFile},         {"router", m_router->currentIndex()},
          {"balancing", m_balance->currentIndex()}, {"coefficient", m_coef->value()},
          {"capacity", m_capacity->value()},     {"reroute", m_overflow->currentIndex() == 1},
          {"z_loss", m_z->value()},
          {"lr", m_lr->value()},                 {"steps", m_steps->value()},
          {"layer", m_layer->currentIndex()},    {"page", m_pages->currentIndex()},
          {"run", m_run.dir},                    {"shown", m_shown}};
}

void TrainingView::restoreState(const QJsonObject& s) {
  if (s.contains("preset")) selectPreset(s.value("preset").toString());
  m_corpusFile = s.value("corpus_file").toString();
  if (!m_corpusFile.isEmpty()) m_corpus->setItemText(2, QFileInfo(m_corpusFile).fileName());
  m_corpus->setCurrentIndex(std::clamp(s.value("corpus").toInt(), 0, m_corpusFile.isEmpty() ? 1 : 2));
  m_router->setCurrentIndex(std::clamp(s.value("router").toInt(), 0, 3));
  m_balance->setCurrentIndex(std::clamp(s.value("balancing").toInt(), 0, 2));
  m_coef->setValue(s.value("coefficient").toDouble());
  m_capacity->setValue(s.value("capacity").toDouble());
  m_z->setValue(s.value("z_loss").toDouble());
  m_overflow->setCurrentIndex(s.value("reroute").toBool() ? 1 : 0);
  if (s.contains("lr")) m_lr->setValue(s.value("lr").toDouble());
  if (s.contains("steps")) m_steps->setValue(s.value("steps").toInt());
  const QString run = s.value("run").toString();
  if (!run.isEmpty() && openRun(run)) {
    m_layer->setCurrentIndex(std::clamp(s.value("layer").toInt(), 0, std::max(0, m_layer->count() - 1)));
    const int shown = s.value("shown").toInt(-1);
    if (shown >= 0) setShownSteps(shown);
  }
  m_pages->setCurrentIndex(std::clamp(s.value("page").toInt(), 0, m_pages->count() - 1));
  redraw();
}
