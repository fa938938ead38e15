#include "training_view.hpp"

#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFormLayout>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QTabWidget>
#include <QTimer>
#include <QVBoxLayout>
#include <qcustomplot.h>

#include "chart_panel.hpp"
#include "presets.hpp"
#include "theme.hpp"

using moelab::TrainConfig;

TrainingView::TrainingView(QWidget* parent) : QWidget(parent) {
  m_worker = new TrainingWorker;
  m_worker->moveToThread(&m_thread);
  connect(&m_thread, &QThread::finished, m_worker, &QObject::deleteLater);
  connect(m_worker, &TrainingWorker::stepDone, this, [this](StepSummaryPtr s) {
    m_history.push_back(std::move(s));
    m_dirty = true;  // drawn by the frame timer, at most 20 times a second
  });
  connect(m_worker, &TrainingWorker::started, this, [this](const QString& title, int64_t experts, int64_t moeLayers) {
    m_experts = experts;
    m_layer->blockSignals(true);
    m_layer->clear();
    for (int64_t l = 0; l < moeLayers; ++l) m_layer->addItem(tr("MoE layer %1").arg(l));
    m_layer->blockSignals(false);
    m_status->setText(tr("Training: %1").arg(title));
  });
  connect(m_worker, &TrainingWorker::finished, this, [this](const QString& m) {
    m_running = false;
    m_status->setText(m);
    emit trainingFinished(m);
  });
  connect(m_worker, &TrainingWorker::errorOccurred, this, [this](const QString& m) {
    m_running = false;
    emit errorOccurred(m);
  });
  m_thread.start();

  auto* controls = new QWidget(this);
  auto* form = new QFormLayout(controls);
  m_preset = new QComboBox(controls);
  for (const auto& n : moelab::list_presets())
    if (n != "builtin-model") m_preset->addItem(QString::fromStdString(n));
  form->addRow(tr("Preset"), m_preset);
  m_description = new QLabel(controls);
  m_description->setWordWrap(true);
  form->addRow(m_description);
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
  m_capacity = new QDoubleSpinBox(controls);
  m_capacity->setRange(0, 8);
  m_capacity->setSingleStep(0.25);
  m_capacity->setSpecialValueText(tr("no limit"));
  form->addRow(tr("Capacity factor"), m_capacity);
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
  m_stop = new QPushButton(tr("Stop"), controls);
  buttons->addWidget(m_start, 0, 0);
  buttons->addWidget(m_pause, 0, 1);
  buttons->addWidget(m_resume, 1, 0);
  buttons->addWidget(m_stop, 1, 1);
  form->addRow(buttons);
  m_status = new QLabel(controls);
  m_status->setWordWrap(true);
  form->addRow(m_status);

  m_loss = new ChartPanel(QStringLiteral("loss"), tr("Loss"),
                          tr("How wrong the model's next-token guesses are (lower is better); the balancing losses "
                             "are the extra terms that push the router toward an even load."));
  m_collapse = new ChartPanel(QStringLiteral("collapse"), tr("Collapse view: expert load over training"),
                              tr("Each column is a training step, each row an expert; bright = that expert got a large "
                                 "share of the tokens. Collapse looks like one or two bright rows and dark rest."));
  m_loadNow = new ChartPanel(QStringLiteral("load-now"), tr("Load per expert now"),
                             tr("Share of the tokens each expert got in the last step; the dashed line is an even "
                                "split. Bars far above it are overloaded, empty ones are dead."));
  m_balanceChart = new ChartPanel(QStringLiteral("balance"), tr("How uneven is the load?"),
                                  tr("Coefficient of variation of the load (0 = perfectly even) for every MoE layer, and "
                                     "the number of dead experts (almost no tokens)."));
  // Two pages, so each chart stays readable on a projector.
  auto* collapsePage = new QWidget(this);
  auto* grid = new QGridLayout(collapsePage);
  grid->addWidget(m_collapse, 0, 0, 1, 2);
  grid->addWidget(m_loadNow, 1, 0);
  grid->addWidget(m_loss, 1, 1);
  grid->setRowStretch(0, 3);
  grid->setRowStretch(1, 2);
  auto* curvesPage = new QWidget(this);
  auto* grid2 = new QVBoxLayout(curvesPage);
  grid2->addWidget(m_balanceChart, 1);
  m_pages = new QTabWidget(this);
  m_pages->addTab(collapsePage, tr("Collapse"));
  m_pages->addTab(curvesPage, tr("Unevenness over time"));
  auto* chartsHost = m_pages;
  auto* split = new QSplitter(this);
  split->addWidget(controls);
  split->addWidget(chartsHost);
  split->setStretchFactor(1, 4);
  auto* outer = new QHBoxLayout(this);
  outer->setContentsMargins(0, 0, 0, 0);
  outer->addWidget(split);

  m_frame = new QTimer(this);
  m_frame->setInterval(50);
  connect(m_frame, &QTimer::timeout, this, [this] {
    if (m_dirty) redraw();
  });
  m_frame->start();
  connect(m_preset, &QComboBox::currentTextChanged, this, &TrainingView::selectPreset);
  connect(m_start, &QPushButton::clicked, this, [this] { startTraining(); });
  connect(m_pause, &QPushButton::clicked, this, &TrainingView::pauseTraining);
  connect(m_resume, &QPushButton::clicked, this, &TrainingView::resumeTraining);
  connect(m_stop, &QPushButton::clicked, this, &TrainingView::stopTraining);
  connect(m_layer, &QComboBox::currentIndexChanged, this, [this] { redraw(); });
  auto live = [this] {
    if (!m_running) return;
    const TrainConfig c = configFromKnobs();
    QMetaObject::invokeMethod(m_worker, [w = m_worker, c] { w->updateConfig(c); });
  };
  connect(m_balance, &QComboBox::currentIndexChanged, this, live);
  connect(m_coef, &QDoubleSpinBox::valueChanged, this, live);
  connect(m_capacity, &QDoubleSpinBox::valueChanged, this, live);
  connect(m_lr, &QDoubleSpinBox::valueChanged, this, live);
  selectPreset(QStringLiteral("lesson-collapse"));
  applyTheme(Theme::current());
}

TrainingView::~TrainingView() {
  QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->pause(); });
  m_thread.quit();
  m_thread.wait();
}

QList<ChartPanel*> TrainingView::charts() const { return {m_collapse, m_loss, m_loadNow, m_balanceChart}; }

void TrainingView::applyTheme(const Theme& t) {
  for (ChartPanel* c : charts()) c->applyTheme(t);
  redraw();
}

void TrainingView::selectPreset(const QString& name) {
  try {
    const moelab::Preset p = moelab::load_preset(name.toStdString());
    if (m_preset->currentText() != name) m_preset->setCurrentText(name);
    m_presetConfig = p.train;
    m_description->setText(QString::fromStdString(p.description));
    m_balance->setItemData(2, p.model.scoring == moelab::RouterScoring::Sigmoid ? QVariant() : QVariant(0),
                           Qt::UserRole - 1);  // the bias method needs the sigmoid router
    m_balance->setCurrentIndex(p.train.bias_gamma > 0 ? 2 : p.train.aux_alpha > 0 ? 1 : 0);
    m_coef->setValue(p.train.bias_gamma > 0 ? p.train.bias_gamma : p.train.aux_alpha);
    m_capacity->setValue(p.train.capacity_factor);
    m_lr->setValue(p.train.lr);
    m_steps->setValue(int(p.train.steps));
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
  }
}

void TrainingView::setBalancing(int mode, double coefficient) {
  m_balance->setCurrentIndex(mode);
  m_coef->setValue(coefficient);
}

TrainConfig TrainingView::configFromKnobs() const {
  TrainConfig c = m_presetConfig;
  c.aux_alpha = m_balance->currentIndex() == 1 ? float(m_coef->value()) : 0.0f;
  c.bias_gamma = m_balance->currentIndex() == 2 ? float(m_coef->value()) : 0.0f;
  c.capacity_factor = m_capacity->value();
  c.lr = float(m_lr->value());
  c.steps = m_steps->value();
  c.eval_every = std::max<int64_t>(10, c.steps / 20);
  return c;
}

void TrainingView::startTraining(const QString& runDir) {
  m_history.clear();
  m_running = true;
  const TrainConfig c = configFromKnobs();
  const QString preset = m_preset->currentText();
  QMetaObject::invokeMethod(m_worker, [w = m_worker, preset, c, runDir] { w->start(preset, c, runDir); });
}

void TrainingView::pauseTraining() {
  m_running = false;
  QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->pause(); });
  m_status->setText(tr("Paused"));
}

void TrainingView::resumeTraining() {
  m_running = true;
  QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->resume(); });
}

void TrainingView::stopTraining() {
  m_running = false;
  QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->stop(); });
}

int TrainingView::selectedLayer() const { return std::max(0, m_layer->currentIndex()); }

double TrainingView::collapseValue(int stepIndex, int expert) const {
  auto* map = m_collapse->plot()->plottableCount() ? qobject_cast<QCPColorMap*>(m_collapse->plot()->plottable(0)) : nullptr;
  return map ? map->data()->cell(stepIndex, expert) : std::nan("");
}

void TrainingView::redraw() {
  m_dirty = false;
  drawLoss();
  drawCollapse();
  drawLoadNow();
  drawBalance();
  if (!m_history.isEmpty() && m_running) {
    const auto& s = *m_history.back();
    m_status->setText(tr("Step %1 of %2, loss %3, %4 tokens/s").arg(s.step).arg(s.steps).arg(s.loss, 0, 'f', 3).arg(s.tokensPerS, 0, 'f', 0));
  }
}
