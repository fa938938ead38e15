#include "tokens_view.hpp"

#include <QComboBox>
#include <QCoreApplication>
#include <QDeadlineTimer>
#include <QDoubleSpinBox>
#include <QDir>
#include <QFileInfo>
#include <QFormLayout>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QRegularExpression>
#include <QSlider>
#include <QSpinBox>
#include <QSplitter>
#include <QTabWidget>
#include <QTimer>
#include <QToolTip>
#include <QVBoxLayout>
#include <numeric>
#include <qcustomplot.h>

#include "chart_panel.hpp"
#include "knob_drawer.hpp"
#include "theme.hpp"
#include "token_charts.hpp"
#include "token_text.hpp"

TokensView::TokensView(QWidget* parent) : QWidget(parent) {
  m_worker = new GenerationWorker;
  m_worker->moveToThread(&m_thread);
  connect(&m_thread, &QThread::finished, m_worker, &QObject::deleteLater);
  connect(m_worker, &GenerationWorker::snapshotReady, this, &TokensView::onSnapshot);
  connect(m_worker, &GenerationWorker::modelLoaded, this, &TokensView::onModelLoaded);
  connect(m_worker, &GenerationWorker::deviceInUse, this, &TokensView::deviceInUse);
  connect(m_worker, &GenerationWorker::tokenizerLoaded, this, &TokensView::onTokenizerLoaded);
  connect(m_worker, &GenerationWorker::loadProgress, this, [this](const QString& stage, double fraction) {
    if (m_loading) emit loadProgress(stage, fraction);
  });
  connect(m_worker, &GenerationWorker::checkpointRead, this, &TokensView::checkpointRead);
  connect(m_worker, &GenerationWorker::loadFailed, this, [this](const QString& m) {
    if (m_loading) {
      m_loading.reset();
      emit loadFinished(false);
    }
    m_pending = std::max(0, m_pending - 1);
    pause();
    emit errorOccurred(m);
  });
  connect(m_worker, &GenerationWorker::errorOccurred, this, [this](const QString& m) {
    m_pending = std::max(0, m_pending - 1);
    pause();
    emit errorOccurred(m);
  });
  m_thread.start();

  // ---- controls ----
  auto* controls = new QWidget(this);
  auto* form = new QFormLayout(controls);
  m_prompt = new QLineEdit(QStringLiteral("the quiet river "), controls);
  m_prompt->setToolTip(tr("The prompt; press Enter to start again from it"));
  form->addRow(tr("Prompt"), m_prompt);
  auto* buttons = new QHBoxLayout;
  m_step = new QPushButton(tr("Step"), controls);
  m_step->setToolTip(tr("Generate one token (Space)"));
  m_run = new QPushButton(tr("Run"), controls);
  m_pause = new QPushButton(tr("Pause"), controls);
  m_reset = new QPushButton(tr("Reset"), controls);
  for (auto* b : {m_step, m_run, m_pause, m_reset}) buttons->addWidget(b);
  form->addRow(buttons);
  m_speed = new QSlider(Qt::Horizontal, controls);
  m_speed->setRange(1, 30);
  m_speed->setValue(8);
  m_speed->setToolTip(tr("Tokens per second while running"));
  form->addRow(tr("Speed"), m_speed);
  m_temperature = new QDoubleSpinBox(controls);
  m_temperature->setRange(0.0, 2.0);
  m_temperature->setSingleStep(0.1);
  m_temperature->setToolTip(tr("0 = always the most likely token (greedy)"));
  form->addRow(tr("Temperature"), m_temperature);
  m_seed = new QSpinBox(controls);
  m_seed->setRange(0, 1000000);
  m_seed->setValue(1);
  form->addRow(tr("Seed"), m_seed);
  m_layer = new QComboBox(controls);
  form->addRow(tr("Layer"), m_layer);
  m_topk = new QSpinBox(controls);
  m_topk->setRange(0, 64);
  m_topk->setSpecialValueText(tr("model's"));
  m_topk->setToolTip(tr("Experts per token at inference (the model was trained with its own top-k)"));
  form->addRow(tr("Top-k"), m_topk);
  m_renorm = new QComboBox(controls);
  m_renorm->addItems({tr("model's choice"), tr("off"), tr("on")});
  m_renorm->setToolTip(tr("Divide the chosen experts' probabilities by their sum"));
  form->addRow(tr("Renormalise"), m_renorm);
  m_ban = new QLineEdit(controls);
  m_ban->setPlaceholderText(tr("e.g. 0,3"));
  m_ban->setToolTip(tr("Experts the router may never choose, comma-separated (with fewer experts left than top-k, each token gets only those left)"));
  form->addRow(tr("Ban experts"), m_ban);
  m_force = new QSpinBox(controls);
  m_force->setRange(-1, 4095);
  m_force->setValue(-1);
  m_force->setSpecialValueText(tr("none"));
  m_force->setToolTip(tr("An expert every token must use"));
  form->addRow(tr("Force expert"), m_force);
  m_capacity = new QDoubleSpinBox(controls);
  m_capacity->setObjectName(QStringLiteral("capacity"));
  m_capacity->setRange(0.0, 8.0);
  m_capacity->setSingleStep(0.25);
  m_capacity->setDecimals(2);
  m_capacity->setSpecialValueText(tr("no limit"));
  m_capacity->setToolTip(tr("Expert capacity factor, as in training: each expert takes at most "
                            "⌈factor × tokens × k ÷ experts⌉ of the choices. It applies over the whole text as one "
                            "batch, so the whole text is recomputed at every step and a new token can change the "
                            "routing of earlier ones."));
  form->addRow(tr("Capacity"), m_capacity);
  m_overflow = new QComboBox(controls);
  m_overflow->addItems({tr("drop"), tr("re-route to next-best")});
  m_overflow->setToolTip(tr("A choice of an expert that is already full is dropped (the token passes on through the "
                            "residual only for it) or re-routed to the token's next-best expert with room"));
  m_overflow->setEnabled(false);
  form->addRow(tr("Overflow"), m_overflow);
  m_textExperts = new QLineEdit(controls);
  m_textExperts->setPlaceholderText(tr("auto, e.g. 3,17"));
  m_textExperts->setToolTip(tr("The experts the text is coloured by (up to 8, one colour each): a token takes the colour "
                               "of the best-ranked of them it was sent to. Empty: each token's first choice for up to 8 "
                               "experts, else the 4 busiest of the layer. Click a bar of the expert load to pick it."));
  form->addRow(tr("Colour text by"), m_textExperts);
  m_status = new QLabel(this);
  m_status->setWordWrap(true);

  // ---- charts ----
  m_heatmap = new ChartPanel(QStringLiteral("routing-heatmap"), tr("Routing: tokens × experts"),
                             tr("Each column is a token, each row an expert; colour is the router's probability. "
                                "Circles mark the top-k experts the token was actually sent to."));
  m_tokenText = new TokenText;
  m_text = new ChartPanel(QStringLiteral("token-text"), tr("The text, coloured by expert"),
                          tr("Each token is coloured by the expert its router ranked first in the selected layer, "
                             "or, for more than 8 experts, by the experts under \"Colour text by\" (the 4 busiest "
                             "unless you pick: type them, or click a bar of the expert load). Click a token to see why."),
                          m_tokenText);
  m_load = new ChartPanel(QStringLiteral("expert-load"), tr("Expert load in this text"),
                          tr("Share of the top-k choices each expert received. The dashed line is a perfectly even "
                             "split (1/E); tall bars are busy experts, empty ones are idle."));
  m_whyLabel = new QLabel;
  m_whyLabel->setTextFormat(Qt::RichText);
  m_whyLabel->setAlignment(Qt::AlignTop | Qt::AlignLeft);
  m_whyLabel->setWordWrap(true);
  m_whyLabel->setAutoFillBackground(true);
  m_why = new ChartPanel(QStringLiteral("why"), tr("Why this expert? The router's arithmetic"),
                         tr("Router scores → probabilities → the top-k → gate weights that mix the experts' outputs, "
                            "for the selected token and layer."),
                         m_whyLabel);
  m_coact = new ChartPanel(QStringLiteral("coactivation"), tr("Which experts work together"),
                           tr("How often experts i and j were chosen for the same token in this text (the diagonal: "
                              "how often each was chosen at all)."));
  m_tokenLayers = new ChartPanel(QStringLiteral("token-layers"), tr("One token through every layer"),
                                 tr("The selected token's router probabilities in each MoE layer (rows); circles mark "
                                    "the experts it was sent to. Click a token in the text or the heatmap."));
  m_next = new ChartPanel(QStringLiteral("next-token"), tr("What comes next"),
                          tr("The model's probabilities for the next token after the text so far."));

  // Two pages, so every chart stays large enough to read on a projector; a page scrolls rather
  // than squash a chart when the projector fonts need more room than the window has.
  auto* routingPage = new ChartPage(ChartPage::Presentation::Grid, this);
  routingPage->add(m_heatmap, 0, 0, 1, 2);
  routingPage->add(m_text, 1, 0);
  routingPage->add(m_load, 1, 1);
  routingPage->setRowStretch(0, 3);
  routingPage->setRowStretch(1, 2);
  auto* detailsPage = new ChartPage(ChartPage::Presentation::Grid, this);
  detailsPage->add(m_why, 0, 0);
  detailsPage->add(m_tokenLayers, 1, 0);
  detailsPage->add(m_coact, 0, 1);
  detailsPage->add(m_next, 1, 1);
  detailsPage->setRowStretch(0, 3);
  detailsPage->setRowStretch(1, 2);
  m_chartPages = {routingPage, detailsPage};
  m_heatmap->setMinimumChartHeight(180, 300);  // 64–256 expert rows under projector-size labels
  m_coact->setMinimumChartHeight(130, 250);  // eight rows of tick labels at projector size
  m_tokenLayers->setMinimumChartHeight(160, 200);
  m_next->setMinimumChartHeight(160, 200);
  // Projector-size bars and labels need the height; the page scrolls at 1280×800 (ChartPage).
  m_load->setMinimumChartHeight(160, 320);
  m_why->setMinimumChartHeight(0, 250);  // the whole explanation, at projector size
  m_pages = new QTabWidget(this);
  m_pages->addTab(routingPage, tr("Routing"));
  m_pages->addTab(detailsPage, tr("Why, co-activation, next token"));
  auto* chartsHost = m_pages;
  auto* left = new QWidget(this);
  auto* leftLayout = new QVBoxLayout(left);
  leftLayout->addWidget(controls);
  m_status->setContentsMargins(form->contentsMargins().left(), 0, form->contentsMargins().right(), 0);
  leftLayout->addWidget(m_status);  // here, not in the form: a wrapped label gets the height it needs
  leftLayout->addStretch(1);
  auto* split = new QSplitter(this);
  m_drawer = new KnobDrawer(left);
  split->addWidget(m_drawer);
  split->addWidget(chartsHost);
  split->setStretchFactor(1, 4);
  auto* outer = new QHBoxLayout(this);
  outer->setContentsMargins(0, 0, 0, 0);
  outer->addWidget(split);

  m_runTimer = new QTimer(this);
  connect(m_runTimer, &QTimer::timeout, this, [this] {
    if (m_pending == 0 && m_hasModel) request(1), QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->step(1); });
  });
  connect(m_speed, &QSlider::valueChanged, this, [this](int v) { m_runTimer->setInterval(1000 / std::max(1, v)); });
  m_runTimer->setInterval(1000 / m_speed->value());
  connect(m_step, &QPushButton::clicked, this, &TokensView::stepOnce);
  connect(m_run, &QPushButton::clicked, this, &TokensView::run);
  connect(m_pause, &QPushButton::clicked, this, &TokensView::pause);
  connect(m_reset, &QPushButton::clicked, this, &TokensView::resetText);
  connect(m_prompt, &QLineEdit::returnPressed, this, &TokensView::resetText);
  connect(m_layer, &QComboBox::currentIndexChanged, this, [this] { redraw(); });
  connect(m_topk, &QSpinBox::valueChanged, this, &TokensView::routingKnobsChanged);
  connect(m_force, &QSpinBox::valueChanged, this, &TokensView::routingKnobsChanged);
  connect(m_renorm, &QComboBox::currentIndexChanged, this, &TokensView::routingKnobsChanged);
  connect(m_capacity, &QDoubleSpinBox::valueChanged, this, [this](double v) {
    m_overflow->setEnabled(v > 0);
    routingKnobsChanged();
  });
  connect(m_overflow, &QComboBox::currentIndexChanged, this, &TokensView::routingKnobsChanged);
  connect(m_ban, &QLineEdit::editingFinished, this, &TokensView::routingKnobsChanged);
  connect(m_textExperts, &QLineEdit::editingFinished, this, [this] { redraw(); });
  // A bar of the expert load picks that expert for the text colours.
  connect(m_load->plot(), &QCustomPlot::plottableClick, this, [this](QCPAbstractPlottable* p, int index, QMouseEvent*) {
    auto* bars = qobject_cast<QCPBars*>(p);
    if (!bars || index < 0 || index >= bars->data()->size()) return;
    setTextExperts(QString::number(int(std::lround((bars->data()->begin() + index)->key))));
  });
  connect(m_tokenText, &TokenText::tokenClicked, this, [this](int i) {
    m_token = i;
    redraw();
  });
  connect(m_heatmap->plot(), &QCustomPlot::mouseMove, this, [this](QMouseEvent* e) {
    int token = 0, expert = 0;
    if (!TokenCharts::heatmapCellAt(m_heatmap->plot(), QPointF(e->pos()), &token, &expert)) return;
    const QString tip = TokenCharts::heatmapToolTip(snap(), selectedLayer(), token, expert);
    if (!tip.isEmpty()) QToolTip::showText(e->globalPosition().toPoint(), tip, m_heatmap->plot());
  });
  connect(m_heatmap->plot(), &QCustomPlot::mouseDoubleClick, this, [this] { redraw(); });  // zoomed out again
  connect(m_heatmap->plot(), &QCustomPlot::mousePress, this, [this](QMouseEvent* e) {
    int token = 0, expert = 0;
    if (!TokenCharts::heatmapCellAt(m_heatmap->plot(), QPointF(e->pos()), &token, &expert)) return;
    if (token >= 0 && token < snap().count()) {
      m_token = token;
      redraw();
    }
  });

  // CSV of every chart's data, from the snapshot shown.
  m_heatmap->setCsvProvider([this] { return TokenCharts::routingHeatmapCsv(snap()); });
  m_text->setCsvProvider([this] { return TokenCharts::textCsv(snap(), selectedLayer()); });
  m_load->setCsvProvider([this] { return TokenCharts::loadCsv(snap(), selectedLayer()); });
  m_why->setCsvProvider([this] { return TokenCharts::whyCsv(snap(), selectedLayer(), m_token); });
  m_coact->setCsvProvider([this] { return TokenCharts::coactivationCsv(snap(), selectedLayer()); });
  m_tokenLayers->setCsvProvider([this] { return TokenCharts::tokenLayersCsv(snap(), m_token); });
  m_next->setCsvProvider([this] { return TokenCharts::nextCsv(snap()); });
  m_next->plot()->installEventFilter(this);
  applyTheme(Theme::current());
}

bool TokensView::eventFilter(QObject* watched, QEvent* e) {
  if (watched == m_next->plot() && e->type() == QEvent::Resize) {
    QCustomPlot* plot = m_next->plot();
    QTimer::singleShot(0, plot, [this, plot] {
      plot->replot(QCustomPlot::rpImmediateRefresh);  // lays the axes out at the new size
      TokenCharts::drawNext(plot, snap());          // then as many bars as that leaves room for
    });
  }
  return QWidget::eventFilter(watched, e);
}

TokensView::~TokensView() {
  m_thread.quit();
  m_thread.wait();
}

QList<ChartPanel*> TokensView::charts() const {
  return {m_heatmap, m_text, m_load, m_why, m_tokenLayers, m_coact, m_next};
}

void TokensView::applyTheme(const Theme& t) {
  for (ChartPanel* c : charts()) c->applyTheme(t);
  for (ChartPage* p : m_chartPages) p->applyTheme(t);
  QPalette pal = m_whyLabel->palette();
  pal.setColor(QPalette::Window, t.background);
  pal.setColor(QPalette::WindowText, t.foreground);
  m_whyLabel->setPalette(pal);
  m_whyLabel->setFont(t.text);
  redraw();
}

void TokensView::request(int pendingDelta) { m_pending += pendingDelta; }

GenerationSettings TokensView::settings() const {
  GenerationSettings s;
  s.prompt = m_prompt->text();
  s.temperature = float(m_temperature->value());
  s.seed = quint64(m_seed->value());
  s.overrides.top_k = m_topk->value();
  if (m_renorm->currentIndex() > 0) s.overrides.renormalize = m_renorm->currentIndex() == 2;
  if (m_force->value() >= 0) s.overrides.forced = m_force->value();
  s.overrides.capacity = {m_capacity->value(), m_overflow->currentIndex() == 1};
  for (const QString& part : m_ban->text().split(',', Qt::SkipEmptyParts)) {
    bool ok = false;
    const int e = part.trimmed().toInt(&ok);
    if (ok && e >= 0) s.overrides.banned.insert(e);
  }
  return s;
}

void TokensView::startLoad(const QString& what, const std::function<void(GenerationWorker*, LoadTicketPtr)>& load) {
  if (m_loading) {  // the newest request wins: the one before is dropped, without a word
    m_loading->cancelled = true;
    m_loading.reset();
    m_pending = std::max(0, m_pending - 1);
  }
  pause();
  request(1);
  m_loading = std::make_shared<LoadTicket>();
  emit loadStarted(what);
  QMetaObject::invokeMethod(m_worker, [w = m_worker, t = m_loading, load] { load(w, t); });
}

void TokensView::openModel(const QString& path) {
  // What the status bar calls it: the folder's name (also for its config.json or weights).
  QFileInfo fi(QDir::cleanPath(path));
  if (fi.fileName() == QLatin1String("config.json") || fi.suffix() == QLatin1String("safetensors")) fi = QFileInfo(fi.path());
  startLoad(path == QLatin1String("builtin") ? tr("the built-in model") : fi.fileName(),
            [path](GenerationWorker* w, LoadTicketPtr t) { w->loadModel(path, std::move(t)); });
}

void TokensView::cancelLoad() {
  if (!m_loading) return;
  m_loading->cancelled = true;
  m_loading.reset();
  m_pending = std::max(0, m_pending - 1);  // the worker answers nothing for a cancelled load
  emit loadFinished(true);
}

int TokensView::loadsRunning() const { return m_worker->loadsRunning(); }

void TokensView::setDevice(const QString& device) {
  QMetaObject::invokeMethod(m_worker, [w = m_worker, device] { w->setDevice(device); });
}

void TokensView::setPrecision(moelab::Precision precision) {
  QMetaObject::invokeMethod(m_worker, [w = m_worker, precision] { w->setPrecision(precision); });
}

void TokensView::reloadModel() {
  startLoad(snap().modelName, [](GenerationWorker* w, LoadTicketPtr t) { w->reloadModel(std::move(t)); });
}

void TokensView::onModelLoaded(const QString& name, const moelab::ModelConfig& config) {
  m_pending = std::max(0, m_pending - 1);
  m_hasModel = true;
  if (m_loading) {
    m_loading.reset();
    emit loadFinished(false);
  }
  m_config = config;
  m_layer->blockSignals(true);
  m_layer->clear();
  m_layer->addItem(tr("All layers"));
  for (int64_t l = 0; l < config.num_layers; ++l)
    if (config.is_moe_layer(l)) m_layer->addItem(tr("Layer %1").arg(l), int(l));
  m_layer->setCurrentIndex(m_layer->count() > 1 ? 1 : 0);
  m_layer->blockSignals(false);
  m_topk->setMaximum(int(std::max<int64_t>(1, config.num_experts)));
  m_force->setMaximum(int(std::max<int64_t>(0, config.num_experts - 1)));
  m_token = -1;
  emit modelChanged(name, config);
  resetText();
}

void TokensView::onTokenizerLoaded(const QString& description) {
  if (description.isEmpty()) {
    // Token ids only: a typed text from the model before would not parse, so it goes.
    static const QRegularExpression ids(QStringLiteral("^[0-9,\\s]*$"));
    if (!ids.match(m_prompt->text()).hasMatch()) m_prompt->clear();
    m_prompt->setPlaceholderText(tr("token ids, e.g. 1,2,3"));
    m_prompt->setToolTip(tr("This model has no tokenizer.json: type token ids, e.g. 1,2,3; press Enter to start "
                            "again from them"));
    return;
  }
  // "tokenizer.json: byte-level BPE, 151.7K tokens (26 added), NFC": the kind and size suffice here.
  const QString kind = description.section(QStringLiteral(", "), 0, 1);
  m_prompt->setPlaceholderText(tr("text, read by %1").arg(TokenCharts::shortLabel(kind, 60)));
  m_prompt->setToolTip(tr("The prompt as text, read by %1; press Enter to start again from it").arg(description));
}

void TokensView::resetText() {
  pause();
  if (!m_hasModel) return;  // the first model's arrival starts the text (onModelLoaded)
  m_token = -1;
  request(1);
  const GenerationSettings s = settings();
  QMetaObject::invokeMethod(m_worker, [w = m_worker, s] { w->reset(s, 0); });
}

void TokensView::routingKnobsChanged() {
  if (!m_snap) return;
  // Recompute the same amount of text with the new routing: it may now read differently.
  const int generated = m_snap->count() - m_snap->promptLength;
  request(1);
  const GenerationSettings s = settings();
  QMetaObject::invokeMethod(m_worker, [w = m_worker, s, generated] { w->reset(s, generated); });
}

void TokensView::stepOnce() {
  if (!m_hasModel) return;  // nothing to step yet: the first model is still loading
  request(1);
  QMetaObject::invokeMethod(m_worker, [w = m_worker] { w->step(1); });
}

void TokensView::run() {
  m_running = true;
  m_runTimer->start();
}

void TokensView::pause() {
  m_running = false;
  m_runTimer->stop();
}

bool TokensView::waitForIdle(int timeoutMs) {
  QDeadlineTimer deadline(timeoutMs);
  while (m_pending > 0 && !deadline.hasExpired()) QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
  return m_pending == 0;
}

void TokensView::onSnapshot(SnapshotPtr s) {
  m_pending = std::max(0, m_pending - 1);
  m_snap = std::move(s);
  if (m_snap->count() >= std::min<int64_t>(m_snap->config.max_positions, 512) || m_snap->ended) pause();
  QString status = tr("%1: %2 tokens (%3 generated), top-%4 of %5 experts")
                       .arg(m_snap->modelName)
                       .arg(m_snap->count())
                       .arg(m_snap->count() - m_snap->promptLength)
                       .arg(m_snap->topK)
                       .arg(m_snap->experts());
  int banned = 0;
  for (int64_t e : settings().overrides.banned) banned += e < m_snap->experts();
  if (banned > 0)  // say why top-k may have shrunk: a token only goes to experts left
    status += QLatin1String("; ") + tr("%1 of %2 experts banned").arg(banned).arg(m_snap->experts());
  if (m_snap->capacity > 0) {
    int dropped = 0, rerouted = 0, choices = 0;
    for (const auto& L : m_snap->layers) dropped += L.droppedSlots(), rerouted += L.reroutedSlots(), choices += int(L.ids.size());
    status += QLatin1String("; ") + (m_snap->reroute ? tr("capacity %1 per expert (whole text as one batch): %2 of %3 "
                                                          "choices re-routed, %4 dropped in all layers")
                                                           .arg(m_snap->capacity)
                                                           .arg(rerouted)
                                                           .arg(choices)
                                                           .arg(dropped)
                                                     : tr("capacity %1 per expert (whole text as one batch): %2 of %3 "
                                                          "choices dropped in all layers")
                                                           .arg(m_snap->capacity)
                                                           .arg(dropped)
                                                           .arg(choices));
  }
  if (!m_snap->decodeProblem.isEmpty())  // the GPU could not record the decode step: slower, same result
    status += QLatin1String("; ") + tr("each token runs op by op (no CUDA graph: %1)").arg(m_snap->decodeProblem);
  m_status->setText(status);
  redraw();
  if (const auto* L = TokenCharts::layerAt(*m_snap, selectedLayer()); L && m_snap->topK > 0 && !L->ids.isEmpty()) {
    const int K = int(m_snap->topK);
    QVector<int> ran;  // the experts the last token ran on (a dropped slot has none)
    for (int id : L->ids.mid(L->ids.size() - K, K))
      if (id >= 0) ran.push_back(id);
    emit lastTokenRouting(int(L->layer), ran);
  }
}

void TokensView::setPrompt(const QString& text) {
  m_prompt->setText(text);
  resetText();
}
void TokensView::setTopKOverride(int k) { m_topk->setValue(k); }
void TokensView::setBannedExperts(const QString& list) {
  m_ban->setText(list);
  routingKnobsChanged();
}
void TokensView::setForcedExpert(int e) { m_force->setValue(e); }
void TokensView::setRenormalize(int mode) { m_renorm->setCurrentIndex(mode < 0 ? 0 : mode == 0 ? 1 : 2); }
void TokensView::setCapacityFactor(double factor) { m_capacity->setValue(factor); }
void TokensView::setOverflowReroute(bool reroute) { m_overflow->setCurrentIndex(reroute ? 1 : 0); }
void TokensView::setTextExperts(const QString& list) {
  m_textExperts->setText(list);
  redraw();
}
void TokensView::selectToken(int index) {
  m_token = snap().count() > 0 ? std::clamp(index, -1, snap().count() - 1) : -1;
  redraw();
}

void TokensView::selectLayer(int index) { m_layer->setCurrentIndex(index < 0 ? 0 : index + 1); }

int TokensView::selectedLayer() const { return m_layer->currentIndex() - 1; }

const TokensSnapshot& TokensView::snap() const {
  static const TokensSnapshot none;  // before the first snapshot: every chart empty
  return m_snap ? *m_snap : none;
}

double TokensView::heatmapValue(int token, int expert) const {
  return TokenCharts::heatmapValue(m_heatmap->plot(), token, expert);
}

int TokensView::heatmapMark(int token, int expert) const { return TokenCharts::heatmapMark(m_heatmap->plot(), token, expert); }

bool TokensView::heatmapMarked(int token, int expert) const {
  const int kind = heatmapMark(token, expert);
  return kind == 0 || kind == 2;  // a slot that ran there
}

int TokensView::markedPerToken(int token) const { return TokenCharts::markedPerToken(m_heatmap->plot(), token); }

QString TokensView::statusText() const { return m_status->text(); }

void TokensView::redraw() {
  const TokensSnapshot& s = snap();
  const int layer = selectedLayer();
  TokenCharts::drawRoutingHeatmap(m_heatmap->plot(), s, layer, m_token);
  m_heatmap->setTitle(TokenCharts::routingHeatmapTitle(s, layer));
  m_heatmap->setCaption(TokenCharts::routingHeatmapCaption(s, layer));
  m_tokenText->setSnapshot(m_snap, std::max(0, layer), m_token);
  // The text's colours: the experts typed, else the first choice (up to 8 experts) or the 4
  // busiest of the layer.
  QVector<int> group;
  QString why = tr("picked");
  for (const QString& part : m_textExperts->text().split(QRegularExpression(QStringLiteral("[,\\s]+")), Qt::SkipEmptyParts)) {
    bool ok = false;
    const int e = part.toInt(&ok);
    if (ok && e >= 0 && e < s.experts() && !group.contains(e) && group.size() < TokenText::kMaxGroup) group << e;
  }
  if (group.isEmpty() && s.experts() > 8) {
    if (const auto* L = TokenCharts::layerAt(s, layer)) {
      QVector<double> ran, refused;
      TokenCharts::expertLoad(*L, int(s.experts()), &ran, &refused);
      QVector<int> order(ran.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return ran[a] > ran[b]; });
      group = order.mid(0, 4);
      why = tr("the 4 busiest");
    }
  }
  m_tokenText->setExpertGroup(group, why);
  TokenCharts::drawLoad(m_load->plot(), s, layer);
  m_load->setCaption(TokenCharts::loadCaption(s));
  m_whyLabel->setText(TokenCharts::whyHtml(s, layer, m_token));
  TokenCharts::drawCoactivation(m_coact->plot(), s, layer);
  TokenCharts::drawNext(m_next->plot(), s);
  TokenCharts::drawTokenLayers(m_tokenLayers->plot(), s, m_token);
  m_tokenLayers->setCaption(TokenCharts::tokenLayersCaption(s));
}
