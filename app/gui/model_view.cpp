#include "model_view.hpp"

#include <QComboBox>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QRegularExpression>
#include <QRegularExpressionValidator>
#include <QScrollArea>
#include <QScrollBar>
#include <QSpinBox>
#include <QSplitter>
#include <QTimer>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <qcustomplot.h>

#include "files.hpp"
#include "block_diagram.hpp"
#include "chart_kit.hpp"
#include "chart_panel.hpp"
#include "error.hpp"
#include "knob_drawer.hpp"
#include "model_charts.hpp"
#include "presets.hpp"
#include "registry.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using ModelCharts::kContext;

namespace {

constexpr int64_t kMaxExpertBlocks = 32768;  // layers × experts the knobs may ask to count (~0.15 s)

QString stripSource(QString message) {
  if (message.startsWith(QLatin1String("knobs: "))) message.remove(0, 7);
  return message;
}

}  // namespace

ModelView::ModelView(QWidget* parent)
    : QWidget(parent), m_theme(Theme::current()), m_extraSpec(std::make_unique<json>(json::object())) {
  m_splitter = new QSplitter(Qt::Horizontal, this);
  auto* layout = new QHBoxLayout(this);
  layout->setContentsMargins(0, 0, 0, 0);
  layout->addWidget(m_splitter);

  m_knobScroll = new QScrollArea;
  m_knobScroll->setWidgetResizable(true);
  m_knobScroll->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  m_knobScroll->setWidget(buildKnobs());
  buildCharts();
  m_drawer = new KnobDrawer(m_knobScroll);
  m_splitter->addWidget(m_drawer);
  m_splitter->addWidget(m_chartScroll);
  m_splitter->setStretchFactor(0, 0);
  m_splitter->setStretchFactor(1, 1);
  m_splitter->setCollapsible(1, false);

  loadRealModels();
  const std::vector<std::string> presets = moelab::list_presets();
  for (const std::string& name : presets) m_preset->addItem(QString::fromStdString(name));
  const int builtin = m_preset->findText(QStringLiteral("builtin-model"));
  m_preset->setCurrentIndex(builtin >= 0 ? builtin : (m_preset->count() > 1 ? 1 : 0));
  // activated, not currentIndexChanged: only a person's choice fills the knobs (choosing the
  // same preset again resets them); showConfig moves the combo without refilling.
  connect(m_preset, &QComboBox::activated, this, &ModelView::choosePreset);
  choosePreset(m_preset->currentIndex());
  applyTheme(m_theme);
}

ModelView::~ModelView() = default;

namespace {
constexpr int kPanelWidth = 320;  // the least width of a chart in the 2×2 grid
}  // namespace

bool ModelView::narrow() const {
  const int charts = width() - m_knobScroll->minimumWidth() - m_splitter->handleWidth();
  return charts < 2 * kPanelWidth + m_chartScroll->verticalScrollBar()->sizeHint().width() + 16;
}

int ModelView::stackedHeight() const {
  const int view = m_chartScroll->viewport()->height() - 12;
  return m_theme.presentation ? std::max(480, view) : std::max(300, view / 2);
}

void ModelView::resizeEvent(QResizeEvent* e) {
  QWidget::resizeEvent(e);
  if (m_stacked != (m_theme.presentation || narrow()) || m_narrow != narrow()) {
    applyMinimumSizes();
    return;
  }
  if (m_stacked)
    for (ChartPanel* c : charts()) c->setMinimumHeight(stackedHeight());
}

QWidget* ModelView::buildKnobs() {
  m_knobs = new QWidget;
  auto* form = new QFormLayout(m_knobs);
  form->setFieldGrowthPolicy(QFormLayout::FieldsStayAtSizeHint);
  auto spin = [&](const QString& label, int lo, int hi, int step, const QString& tip) {
    auto* s = new QSpinBox(m_knobs);
    s->setRange(lo, hi);
    s->setSingleStep(step);
    s->setToolTip(tip);
    s->setStatusTip(tip);
    connect(s, &QSpinBox::valueChanged, this, &ModelView::onKnobChanged);
    form->addRow(label, s);
    return s;
  };
  auto section = [&](const QString& text) {
    auto* l = new QLabel(text, m_knobs);
    l->setProperty("section", true);  // bold, set with the theme's font
    form->addRow(l);
  };
  // A name box: room for 16 characters in either theme (applyTheme keeps it from being squeezed
  // below that); a longer name is elided in the box, so the tooltip always has it whole.
  auto nameBox = [&](const QString& tip) {
    auto* box = new QComboBox(m_knobs);
    box->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
    box->setMinimumContentsLength(16);
    box->setToolTip(tip);
    box->setStatusTip(tip);
    connect(box, &QComboBox::currentTextChanged, box, [box, tip](const QString& name) {
      box->setToolTip(name.isEmpty() ? tip : QStringLiteral("<b>%1</b><br>%2").arg(name.toHtmlEscaped(), tip.toHtmlEscaped()));
    });
    return box;
  };
  m_preset = nameBox(tr("Fill the knobs from one of the lab's presets"));
  m_preset->addItem(tr("(from the knobs)"));
  form->addRow(tr("Preset"), m_preset);

  section(tr("Shape"));
  m_layers = spin(tr("Layers"), 1, 256, 1, tr("Number of transformer blocks (L)"));
  m_hidden = spin(tr("Hidden width"), 8, 16384, 16, tr("Width of the token vectors (H); a multiple of the heads"));
  m_heads = spin(tr("Heads"), 1, 256, 1, tr("Attention heads (NH); the hidden width is split among them"));
  m_kvHeads = spin(tr("KV heads"), 1, 256, 1, tr("Key/value heads (NKV); fewer than the heads = grouped-query attention"));

  section(tr("Experts"));
  m_experts = spin(tr("Experts"), 0, 512, 1, tr("Routed experts per MoE layer (E); 0 makes a dense model"));
  m_topK = spin(tr("Top-k"), 1, 64, 1, tr("Experts each token is sent to (K)"));
  m_expertHidden = spin(tr("Expert hidden"), 1, 65536, 16, tr("Hidden size inside one expert (F)"));
  m_fineGrained = spin(tr("Fine-grained m"), 1, 64, 1,
                       tr("Fine-grained factor m (DeepSeekMoE): m times more experts, each 1/m as wide, top-k times m: "
                          "same parameters and compute, many more combinations"));
  m_shared = spin(tr("Shared experts"), 0, 16, 1, tr("Always-on shared experts, each as wide as one routed expert"));
  m_denseLayers = new QLineEdit(m_knobs);
  m_denseLayers->setPlaceholderText(tr("none, e.g. 0,2"));
  m_denseLayers->setValidator(new QRegularExpressionValidator(QRegularExpression(QStringLiteral("[0-9, ]*")), m_denseLayers));
  m_denseLayers->setToolTip(tr("Layers (numbered from 0) that keep one dense FFN instead of experts"));
  connect(m_denseLayers, &QLineEdit::textChanged, this, &ModelView::onKnobChanged);
  m_router = new QComboBox(m_knobs);
  m_router->addItem(tr("softmax"), QStringLiteral("softmax"));
  m_router->addItem(tr("noisy top-k"), QStringLiteral("noisy"));
  m_router->addItem(tr("sigmoid + bias"), QStringLiteral("sigmoid"));
  m_router->setToolTip(tr("How the router scores experts: softmax (Mixtral), noisy top-k (Shazeer 2017), "
                          "sigmoid with a balancing bias (DeepSeek-V3)"));
  connect(m_router, &QComboBox::currentIndexChanged, this, &ModelView::onKnobChanged);
  form->addRow(tr("Dense layers"), m_denseLayers);
  form->addRow(tr("Router"), m_router);

  section(tr("Charts"));
  m_compare = nameBox(tr("A published model to mark in the comparison charts"));
  connect(m_compare, &QComboBox::currentIndexChanged, this, [this] {
    ModelCharts::drawRealModels(m_realChart->plot(), snapshot(), m_theme);
    ModelCharts::drawMemory(m_memoryChart->plot(), snapshot(), m_theme);
  });
  form->addRow(tr("Compare with"), m_compare);
  m_blockLayer = new QSpinBox(m_knobs);
  m_blockLayer->setToolTip(tr("Which layer the block drawing shows (numbered from 0)"));
  connect(m_blockLayer, &QSpinBox::valueChanged, this, &ModelView::updateBlock);
  form->addRow(tr("Layer drawn"), m_blockLayer);

  m_summary = new QLabel(m_knobs);
  m_summary->setWordWrap(true);
  form->addRow(m_summary);
  m_source = new QLabel(m_knobs);
  m_source->setWordWrap(true);
  form->addRow(m_source);
  m_error = new QLabel(m_knobs);
  m_error->setWordWrap(true);
  m_error->setTextInteractionFlags(Qt::TextSelectableByMouse);
  m_error->hide();
  form->addRow(m_error);
  return m_knobs;
}

void ModelView::buildCharts() {
  // The 2×2 grid is made of splitters: a teacher can drag one chart larger, and the rows share
  // the height equally (a grid layout would follow the panels' word-wrapped preferred heights).
  m_chartRows = new QSplitter(Qt::Vertical);
  m_chartRows->setChildrenCollapsible(false);
  m_paramsChart = new ChartPanel(
      QStringLiteral("params"), tr("Parameters: total vs used per token"),
      tr("Top bar: every weight the model stores. Bottom bar: the weights one token passes through. A token uses all of "
         "attention but only K of the E experts in each MoE layer, so the experts make the gap."),
      nullptr, nullptr);
  m_realChart = new ChartPanel(
      QStringLiteral("real-models"), tr("Your model beside real MoE models"),
      tr("Log scale: each grid line is 10×. Totals checked against the checkpoints' safetensors headers/index; see "
         "tests/data/params/SOURCES.md."),
      nullptr, nullptr);
  m_memoryChart = new ChartPanel(
      QStringLiteral("memory-compute"), tr("Memory vs. compute per token"),
      tr("Left: memory to hold the weights at 4, 2, 1 and ½ bytes each, which grows with the total (dashed: one 80 GB "
         "GPU). Right: the work for one token (context 1024), which grows only with the active parameters."),
      nullptr, nullptr);
  m_block = new BlockDiagram;
  m_blockChart = new ChartPanel(
      QStringLiteral("block"), tr("One transformer block"),
      tr("Attention stays dense: every token uses all of it. In an MoE layer the router sends each token to its top-k "
         "experts (outlined: the last token's choice); shared experts are always on."),
      m_block, nullptr);
  for (int i = 0; i < 2; ++i) {
    auto* row = new QSplitter(Qt::Horizontal);
    row->setObjectName(QStringLiteral("chartRow%1").arg(i));
    row->setChildrenCollapsible(false);
    m_chartRows->addWidget(row);
    row->setStretchFactor(0, 1);
    row->setStretchFactor(1, 1);
  }
  for (ChartPanel* c : charts()) connect(c, &ChartPanel::errorOccurred, this, &ModelView::errorOccurred);
  m_paramsChart->setCsvProvider([this] { return ModelCharts::paramsCsv(snapshot()); });
  m_realChart->setCsvProvider([this] { return ModelCharts::realModelsCsv(snapshot()); });
  m_memoryChart->setCsvProvider([this] { return ModelCharts::memoryCsv(snapshot()); });
  m_blockChart->setCsvProvider([this] { return ModelCharts::blockCsv(snapshot()); });

  ModelCharts::setupParams(m_paramsChart->plot());
  ModelCharts::setupRealModels(m_realChart->plot());
  ModelCharts::setupMemory(m_memoryChart->plot());

  m_chartScroll = new QScrollArea;
  m_chartScroll->setWidgetResizable(true);
  m_chartScroll->setFrameShape(QFrame::NoFrame);
  m_chartScroll->setWidget(m_chartRows);
}

QList<ChartPanel*> ModelView::charts() const { return {m_paramsChart, m_realChart, m_memoryChart, m_blockChart}; }

const moelab::ModelConfig& ModelView::labConfig() const { return m_model.config; }

ModelCharts::ModelSnapshot ModelView::snapshot() const {
  ModelCharts::ModelSnapshot s = m_model;
  s.compared = m_compare->currentData().toString();
  return s;
}

void ModelView::loadRealModels() {
  const fs::path dir = fs::path(moelab::resources_dir()) / "real-models";
  QStringList errors;
  try {
    const json index = json::parse(moelab::read_text_file((dir / "index.json").string(), 1 << 20));
    if (!index.is_array()) moelab::fail((dir / "index.json").string(), "expected a list of models");
    for (const json& e : index) {
      const std::string id = e.value("id", std::string());
      try {
        ModelCharts::RealModel m;
        m.id = QString::fromStdString(id);
        m.name = QString::fromStdString(e.value("name", id));
        m.headline = QString::fromStdString(e.value("headline", std::string()));
        m.config = moelab::load_config((dir / id / "config.json").string());
        m.params = moelab::count_params(m.config);
        m.flops = moelab::forward_flops_per_token(m.config, kContext);
        m_model.real << m;
      } catch (const std::exception& ex) {
        errors << QString::fromStdString(ex.what());
      }
    }
  } catch (const std::exception& ex) {
    errors << QString::fromStdString(ex.what());
  }
  m_compare->addItem(tr("(none)"));
  for (const ModelCharts::RealModel& m : m_model.real) {
    m_compare->addItem(m.name, m.id);
    m_compare->setItemData(m_compare->count() - 1, m.headline, Qt::ToolTipRole);
  }
  m_compare->setCurrentIndex(std::max(0, m_compare->findData(QStringLiteral("mixtral-8x7b"))));
  if (!errors.isEmpty()) {
    // Nobody is connected yet while the constructor runs: report once the event loop turns.
    const QString msg = tr("Real models: %1").arg(errors.join(QStringLiteral("; ")));
    QTimer::singleShot(0, this, [this, msg] { emit errorOccurred(msg); });
  }
}

QString ModelView::selectPreset(const QString& name) {
  const int i = m_preset->findText(name);
  if (i <= 0) return tr("Model view: no preset %1").arg(name);
  m_preset->setCurrentIndex(i);
  choosePreset(i);
  return {};
}

QString ModelView::setKnob(const QString& key, double number, const QString& text) {
  if (key == QLatin1String("dense_layers")) {
    m_denseLayers->setText(text);
    onKnobChanged();
    return {};
  }
  if (key == QLatin1String("router")) {
    const int i = m_router->findData(text);
    if (i < 0) return tr("Model view: no router %1").arg(text);
    m_router->setCurrentIndex(i);
    return {};
  }
  for (auto [k, box, fallback] : knobTable(0))
    if (key == QLatin1String(k)) {
      box->setValue(int(number));  // valueChanged rebuilds the model
      return {};
    }
  return tr("Model view: no knob %1").arg(key);
}

QString ModelView::setCompared(const QString& id) {
  const int i = id.isEmpty() ? 0 : m_compare->findData(id);
  if (i < 0) return tr("Model view: no published model %1").arg(id);
  m_compare->setCurrentIndex(i);
  return {};
}

void ModelView::choosePreset(int index) {
  if (index <= 0) return;  // "(from the knobs)"
  const QString name = m_preset->itemText(index);
  const std::string path = (fs::path(moelab::resources_dir()) / "presets" / (name.toStdString() + ".json")).string();
  try {
    const json j = json::parse(moelab::read_text_file(path, 1 << 20));
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) moelab::fail(path, "a preset needs a \"model\" object");
    const json& s = j["model"];
    m_preset->setItemData(index, QString::fromStdString(j.value("description", std::string())), Qt::ToolTipRole);
    m_settingKnobs = true;
    // The defaults are lab_model_from_json's, so an absent key means the same here and there.
    const int heads = s.value("heads", 4);
    for (auto [key, box, fallback] : knobTable(heads)) box->setValue(s.contains(key) ? s[key].get<int>() : fallback);
    QStringList dense;
    if (s.contains("dense_layers") && s["dense_layers"].is_array())
      for (const json& v : s["dense_layers"]) dense << QString::number(v.get<int>());
    m_denseLayers->setText(dense.join(QStringLiteral(",")));
    m_router->setCurrentIndex(std::max(0, m_router->findData(QString::fromStdString(s.value("router", std::string("softmax"))))));
    // Keys without a knob stay as the preset sets them.
    json extra = json::object();
    for (const char* k : {"dense_hidden", "renormalize", "vocab", "max_positions", "rope_theta"})
      if (s.contains(k)) extra[k] = s[k];
    *m_extraSpec = extra;
    m_settingKnobs = false;
    m_source->setText(QString::fromStdString(j.value("title", name.toStdString())));
    m_showingOpened = false;
    onKnobChanged();
  } catch (const std::exception& ex) {
    m_settingKnobs = false;
    m_error->setText(QString::fromStdString(ex.what()));
    m_error->show();
    emit errorOccurred(QString::fromStdString(ex.what()));
  }
}

QVector<ModelView::Knob> ModelView::knobTable(int heads) const {
  return {{"layers", m_layers, 4},           {"hidden", m_hidden, 128},         {"heads", m_heads, 4},
          {"kv_heads", m_kvHeads, heads},    {"experts", m_experts, 8},         {"top_k", m_topK, 2},
          {"expert_hidden", m_expertHidden, 256}, {"fine_grained", m_fineGrained, 1}, {"shared_experts", m_shared, 0}};
}

void ModelView::updateKnobStates() {
  const bool moe = m_experts->value() > 0;
  for (QWidget* w : std::initializer_list<QWidget*>{m_fineGrained, m_shared, m_denseLayers, m_router}) w->setEnabled(moe);
}

void ModelView::onKnobChanged() {
  if (m_settingKnobs) return;
  updateKnobStates();
  json spec = *m_extraSpec;
  for (auto [key, box, fallback] : knobTable(0))
    if (m_experts->value() > 0 || (box != m_fineGrained && box != m_shared)) spec[key] = box->value();
  QString error;
  if (m_experts->value() > 0) {
    spec["router"] = m_router->currentData().toString().toStdString();
    json dense = json::array();
    for (const QString& part : m_denseLayers->text().split(QRegularExpression(QStringLiteral("[,\\s]+")), Qt::SkipEmptyParts)) {
      bool ok = false;
      const int l = part.toInt(&ok);
      if (!ok || l < 0 || l >= m_layers->value())
        error = tr("Dense layers: there is no layer %1 (the layers are 0 to %2)").arg(part).arg(m_layers->value() - 1);
      else
        dense.push_back(l);
    }
    if (!dense.empty()) spec["dense_layers"] = dense;
  }
  // Counting walks every expert tensor: keep it instant (DeepSeek-V3 has 61 × 256 = 15,616).
  const int64_t blocks = int64_t(m_layers->value()) * m_experts->value() * m_fineGrained->value();
  if (error.isEmpty() && blocks > kMaxExpertBlocks)
    error = tr("layers × experts × m is %1; the view counts live up to %2").arg(blocks).arg(kMaxExpertBlocks);
  if (error.isEmpty()) {
    try {
      moelab::ModelConfig c = moelab::lab_model_from_json(spec, "knobs");
      const QString name = m_preset->currentIndex() > 0 ? m_preset->currentText() : tr("lab model");
      c.preset = name.toStdString();
      m_error->hide();
      if (m_showingOpened) {  // the knobs no longer describe the model that was opened
        m_showingOpened = false;
        m_source->setText(tr("A lab model built from the knobs."));
      }
      setConfig(c, name);
      return;
    } catch (const std::exception& ex) {
      error = stripSource(QString::fromStdString(ex.what()));
    }
  }
  m_error->setText(tr("Impossible model: %1. The charts still show the last valid model.").arg(error));
  m_error->show();
}

void ModelView::setKnobsFromConfig(const moelab::ModelConfig& c) {
  m_settingKnobs = true;
  const int64_t m = std::max<int64_t>(1, c.fine_grained);
  m_preset->setCurrentIndex(std::max(0, m_preset->findText(QString::fromStdString(c.preset))));
  m_layers->setValue(int(c.num_layers));
  m_hidden->setValue(int(c.hidden_size));
  m_heads->setValue(int(c.num_heads));
  m_kvHeads->setValue(int(c.num_kv_heads));
  m_experts->setValue(int(c.num_experts / m));
  m_topK->setValue(int(std::max<int64_t>(1, c.top_k / m)));
  m_fineGrained->setValue(int(m));
  if (c.expert_ffn_size > 0) m_expertHidden->setValue(int(c.expert_ffn_size * m));
  m_shared->setValue(c.expert_ffn_size > 0 ? int(std::lround(double(c.shared_ffn_size) / double(c.expert_ffn_size))) : 0);
  QStringList dense;
  if (c.num_experts > 0)
    for (int64_t l = 0; l < c.num_layers; ++l)
      if (!c.is_moe_layer(l)) dense << QString::number(l);
  m_denseLayers->setText(dense.join(QStringLiteral(",")));
  m_router->setCurrentIndex(c.router_noise ? 1 : c.scoring == moelab::RouterScoring::Sigmoid ? 2 : 0);
  json extra = {{"vocab", c.vocab_size}, {"renormalize", c.norm_topk_prob}, {"max_positions", c.max_positions},
                {"rope_theta", c.rope_theta}};
  if (c.dense_ffn_size > 0) extra["dense_hidden"] = c.dense_ffn_size;
  *m_extraSpec = extra;
  m_settingKnobs = false;
  updateKnobStates();
}

void ModelView::setStorage(const QString& dtype, double bytes) {
  m_storageDtype = dtype;
  m_storageBytes = bytes;
}

QString ModelView::storageText() const { return ModelCharts::storageLine(m_model); }

void ModelView::showConfig(const moelab::ModelConfig& c, const QString& name) {
  setKnobsFromConfig(c);
  m_error->hide();
  m_source->setText(tr("Showing %1 as opened. Moving a knob builds a lab model from the knobs instead.").arg(name));
  m_showingOpened = true;
  setConfig(c, name);
}

void ModelView::setConfig(const moelab::ModelConfig& c, const QString& name) {
  moelab::ParamCount params;
  double flops = 0;
  try {
    params = moelab::count_params(c);
    flops = moelab::forward_flops_per_token(c, kContext);
  } catch (const std::exception& ex) {
    m_error->setText(tr("Cannot count this model: %1").arg(QString::fromStdString(ex.what())));
    m_error->show();
    return;
  }
  if (c.num_experts != m_model.config.num_experts || c.num_layers != m_model.config.num_layers) m_model.highlights.clear();
  m_model.config = c;
  m_model.name = name;
  m_model.params = params;
  m_model.flops = flops;
  // Stored as the opened checkpoint is (setStorage), else as config.json says (fp32 for the knobs).
  m_model.fromCheckpoint = m_showingOpened && !m_storageDtype.isEmpty();
  m_model.storedDtype = m_model.fromCheckpoint ? m_storageDtype : QString::fromStdString(c.dtype);
  m_model.storedBytes = m_model.fromCheckpoint ? m_storageBytes : 0;
  if (!m_showingOpened) m_storageDtype.clear();
  const QString family = QString::fromLatin1(moelab::family_name(c.family));
  const QString total = ChartKit::countText(double(params.total)), active = ChartKit::countText(double(params.active));
  m_summary->setText(c.num_experts > 0 ? tr("%1: %2 of %3 layers are MoE, %4 experts of width %5, top-%6. %7 parameters, "
                                            "%8 per token.")
                                             .arg(family, QString::number(c.num_moe_layers()), QString::number(c.num_layers),
                                                  QString::number(c.num_experts), QString::number(c.expert_ffn_size),
                                                  QString::number(c.top_k), total, active)
                                       : tr("%1: a dense model, FFN width %2. %3 parameters, all used by every token.")
                                             .arg(family, QString::number(c.dense_ffn_size), total));
  m_summary->setText(m_summary->text() + QLatin1Char(' ') +
                     (m_model.fromCheckpoint ? tr("Checkpoint: %1.") : tr("Weights: %1.")).arg(ModelCharts::storageLine(m_model)));
  {
    const QSignalBlocker block(m_blockLayer);
    m_blockLayer->setRange(0, int(std::max<int64_t>(1, c.num_layers)) - 1);
  }
  m_block->setConfig(c);
  updateCharts();
  emit configChanged();
}

void ModelView::setHighlightedExperts(int layer, QVector<int> experts) {
  m_model.highlights[layer] = experts;
  if (layer < 0 || layer >= m_model.config.num_layers) return;
  if (m_blockLayer->value() != layer)
    m_blockLayer->setValue(layer);  // updateBlock runs from valueChanged
  else
    updateBlock();
}

void ModelView::updateCharts() {
  const ModelCharts::ModelSnapshot s = snapshot();
  ModelCharts::drawParams(m_paramsChart->plot(), s, m_theme);
  ModelCharts::drawRealModels(m_realChart->plot(), s, m_theme);
  ModelCharts::drawMemory(m_memoryChart->plot(), s, m_theme);
  updateBlock();
}

void ModelView::updateBlock() {
  m_block->setLayer(m_blockLayer->value());
  m_block->setHighlighted(m_model.highlights.value(m_blockLayer->value()));
  m_blockChart->replot();
}

void ModelView::applyMinimumSizes() {
  // Normal: a 2×2 grid. Presentation: projector fonts need about a screen per chart, so the
  // charts stack in one column, each as high as the visible area, and the column scrolls. Too
  // narrow for two side by side (the lesson dock beside the view): one column, two to a screen.
  m_narrow = narrow();
  m_stacked = m_theme.presentation || m_narrow;
  const QList<QSplitter*> rows{m_chartRows->findChild<QSplitter*>(QStringLiteral("chartRow0")),
                               m_chartRows->findChild<QSplitter*>(QStringLiteral("chartRow1"))};
  const QList<ChartPanel*> panels = charts();
  for (int i = 0; i < int(panels.size()); ++i) {
    if (m_stacked)
      m_chartRows->insertWidget(i, panels[i]);
    else
      rows[i / 2]->insertWidget(i % 2, panels[i]);
  }
  for (QSplitter* r : rows) {
    r->setVisible(!m_stacked);
    r->setSizes({1000, 1000});
  }
  m_chartRows->setSizes(QList<int>(m_chartRows->count(), 1000));
  for (ChartPanel* c : panels)
    c->setMinimumSize(m_stacked ? QSize(m_theme.presentation && !m_narrow ? 520 : 280, stackedHeight()) : QSize(kPanelWidth, 270));
  m_knobs->adjustSize();
  const int w = m_knobs->minimumSizeHint().width() + m_knobScroll->verticalScrollBar()->sizeHint().width() + 4;
  m_knobScroll->setMinimumWidth(w);
  const int drawn = m_drawer->isOpen() ? w + m_drawer->tab()->sizeHint().width() : m_drawer->tab()->sizeHint().width();
  m_splitter->setSizes({drawn, std::max(400, width() - drawn)});
}

void ModelView::applyTheme(const Theme& t) {
  m_theme = t;
  m_knobs->setFont(t.text);
  for (QComboBox* box : {m_preset, m_compare}) box->setMinimumWidth(box->sizeHint().width());  // in the new font
  for (QLabel* l : m_knobs->findChildren<QLabel*>())
    if (l->property("section").toBool()) {
      QFont f = t.text;
      f.setBold(true);
      l->setFont(f);
    }
  QPalette pal = m_source->palette();
  pal.setColor(QPalette::WindowText, t.subtle);
  m_source->setPalette(pal);
  m_summary->setPalette(pal);
  QFont bold = t.text;
  bold.setBold(true);
  m_error->setFont(bold);
  pal.setColor(QPalette::WindowText, QColor(0xc0, 0x00, 0x00));
  m_error->setPalette(pal);
  for (ChartPanel* c : charts()) c->applyTheme(t);
  updateCharts();
  applyMinimumSizes();
}

