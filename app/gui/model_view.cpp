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

#include "block_diagram.hpp"
#include "chart_panel.hpp"
#include "error.hpp"
#include "presets.hpp"
#include "registry.hpp"

namespace {
namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kContext = 1024;           // context length for "compute per token"
constexpr int64_t kMaxExpertBlocks = 32768;  // layers × experts the knobs may ask to count (~0.15 s)

// 46.7B, 1.25M, 900: three significant digits with the largest unit under 1000.
QString scaled(double v, const QStringList& units) {
  int u = 0;
  while (std::abs(v) >= 999.5 && u + 1 < units.size()) {
    v /= 1000.0;
    ++u;
  }
  return QString::number(v, 'g', 3) + units[u];
}
QString countText(double n) { return scaled(n, {"", "K", "M", "B", "T"}); }
QString bytesText(double b) { return scaled(b, {" B", " kB", " MB", " GB", " TB", " PB"}); }

// Tick labels in the units above instead of QCustomPlot's "1.2·10^6".
class FormattedTicker : public QCPAxisTicker {
 public:
  explicit FormattedTicker(std::function<QString(double)> f) : m_format(std::move(f)) {}

 protected:
  QString getTickLabel(double tick, const QLocale&, QChar, int) override { return m_format(tick); }

 private:
  std::function<QString(double)> m_format;
};
// A log axis with a tick and grid line at every power of ten ("each step is 10×"). Over more
// than three decades only 1K, 1M, 1B, 1T… carry a label, so narrow charts and projector fonts
// never crowd the axis with overlapping numbers.
class DecadeTicker : public QCPAxisTicker {
 public:
  explicit DecadeTicker(std::function<QString(double)> f) : m_format(std::move(f)) {}

 protected:
  int getSubTickCount(double) override { return 0; }
  QVector<double> createTickVector(double, const QCPRange& range) override {
    QVector<double> ticks;
    if (range.lower <= 0) return ticks;
    const int lo = int(std::ceil(std::log10(range.lower) - 1e-9)), hi = int(std::floor(std::log10(range.upper) + 1e-9));
    m_labelEvery = hi - lo > 3 ? 3 : 1;
    for (int e = lo; e <= hi; ++e) ticks << std::pow(10.0, e);
    return ticks;
  }
  QString getTickLabel(double tick, const QLocale&, QChar, int) override {
    const int e = int(std::lround(std::log10(tick)));
    return ((e % m_labelEvery) + m_labelEvery) % m_labelEvery == 0 ? m_format(tick) : QString();
  }

 private:
  std::function<QString(double)> m_format;
  int m_labelEvery = 1;
};

void setLogAxis(QCPAxis* axis, std::function<QString(double)> format) {
  axis->setScaleType(QCPAxis::stLogarithmic);
  axis->setTicker(QSharedPointer<DecadeTicker>::create(std::move(format)));
}

// Whole decades around [lo, hi], so the log axis starts and ends on a labelled tick.
QCPRange decades(double lo, double hi) {
  lo = std::max(lo, 1.0);
  hi = std::max(hi, lo * 10);
  return QCPRange(std::pow(10.0, std::floor(std::log10(lo))), std::pow(10.0, std::ceil(std::log10(hi))));
}

QString componentLabel(int i) {
  QString s = QString::fromLatin1(moelab::component_name(moelab::Component(i))).replace('_', ' ');
  return s.replace(QStringLiteral("ffn"), QStringLiteral("FFN")).replace(QStringLiteral("lm head"), QStringLiteral("LM head"));
}

// The legend as a row of the plot layout (above or below the axes), outside the data.
void legendRow(QCustomPlot* plot, int row) {
  plot->legend->setVisible(true);
  if (plot->legend->layout() != plot->plotLayout()) {
    if (auto* inset = qobject_cast<QCPLayoutInset*>(plot->legend->layout())) inset->take(plot->legend);
    plot->plotLayout()->addElement(row, 0, plot->legend);
    plot->plotLayout()->setRowStretchFactor(row, 0.001);
  }
  plot->legend->setFillOrder(QCPLayoutGrid::foColumnsFirst);
  plot->legend->setMargins(QMargins(6, 2, 6, 2));
}

// Horizontal bars along a vertical key axis, outlined so neighbours stay apart in greyscale.
QCPBars* horizontalBars(QCPAxis* keys, QCPAxis* values, const QColor& fill, double width, const Theme& t) {
  auto* bars = new QCPBars(keys, values);
  bars->setWidth(width);
  bars->setBrush(fill);
  bars->setPen(QPen(t.foreground, t.presentation ? 1.5 : 1));
  bars->setBaseValue(values->scaleType() == QCPAxis::stLogarithmic ? 1 : 0);  // a log axis has no zero
  return bars;
}

QCPItemText* textItem(QCustomPlot* plot, const QString& text, const QFont& font, const QColor& color, Qt::Alignment align) {
  auto* label = new QCPItemText(plot);
  label->setText(text);
  label->setFont(font);
  label->setColor(color);
  label->setPositionAlignment(align);
  return label;
}

// A point whose x is a fraction of the axis rect (0 = left edge, 1 = right edge) and y a row.
void placeInRow(QCPItemPosition* pos, QCPAxisRect* rect, double x, double key) {
  pos->setAxisRect(rect);
  pos->setAxes(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  pos->setTypeX(QCPItemPosition::ptAxisRectRatio);
  pos->setTypeY(QCPItemPosition::ptPlotCoords);
  pos->setCoords(x, key);
}

// The number column right of the bars, outside the plotting area.
QCPItemText* rowLabel(QCustomPlot* plot, QCPAxisRect* rect, double key, const QString& text, const QFont& font,
                      const QColor& color) {
  auto* label = textItem(plot, text, font, color, Qt::AlignLeft | Qt::AlignVCenter);
  label->setClipToAxisRect(false);
  placeInRow(label->position, rect, 1.0, key);
  label->setPadding(QMargins(6, 0, 0, 0));
  return label;
}

// A thick outline around one row of a horizontal bar chart (the compared model).
void outlineRow(QCustomPlot* plot, QCPAxisRect* rect, double key, const QPen& pen) {
  auto* box = new QCPItemRect(plot);
  box->setClipToAxisRect(false);
  placeInRow(box->topLeft, rect, 0.0, key + 0.48);
  placeInRow(box->bottomRight, rect, 1.0, key - 0.48);
  box->setPen(pen);
  box->setBrush(Qt::NoBrush);
}

// The right margin an axis rect needs for a column of labels.
void reserveRightMargin(QCPAxisRect* rect, const QFont& font, const QStringList& labels) {
  const QFontMetrics fm(font);
  int w = 0;
  for (const QString& s : labels) w = std::max(w, fm.horizontalAdvance(s));
  rect->setAutoMargins(QCP::msLeft | QCP::msTop | QCP::msBottom);
  QMargins m = rect->margins();
  m.setRight(w + 14);
  rect->setMargins(m);
}

// CSV cells: whole numbers, and text in quotes.
QString num(double v) { return QString::number(v, 'f', 0); }
QString quoted(QString text) { return '"' + text.replace('"', '\'') + '"'; }

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

  m_knobScroll = new QScrollArea(m_splitter);
  m_knobScroll->setWidgetResizable(true);
  m_knobScroll->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  m_knobScroll->setWidget(buildKnobs());
  buildCharts();
  m_splitter->addWidget(m_knobScroll);
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

void ModelView::resizeEvent(QResizeEvent* e) {
  QWidget::resizeEvent(e);
  if (m_theme.presentation) {
    const int high = std::max(480, m_chartScroll->viewport()->height() - 12);
    for (ChartPanel* c : charts()) c->setMinimumHeight(high);
  }
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
  m_preset = new QComboBox(m_knobs);
  m_preset->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
  m_preset->setMinimumContentsLength(12);
  m_preset->addItem(tr("(from the knobs)"));
  m_preset->setToolTip(tr("Fill the knobs from one of the lab's presets"));
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
  m_compare = new QComboBox(m_knobs);
  m_compare->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
  m_compare->setMinimumContentsLength(12);
  m_compare->setToolTip(tr("A published model to mark in the comparison charts"));
  connect(m_compare, &QComboBox::currentIndexChanged, this, [this] {
    updateRealModelsChart();
    updateMemoryChart();
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
  m_paramsChart->setCsvProvider([this] { return paramsCsv(); });
  m_realChart->setCsvProvider([this] { return realModelsCsv(); });
  m_memoryChart->setCsvProvider([this] { return memoryCsv(); });
  m_blockChart->setCsvProvider([this] { return blockCsv(); });

  // params: a headline row above the bars and the legend below.
  QCustomPlot* plot = m_paramsChart->plot();
  plot->plotLayout()->insertRow(0);
  plot->plotLayout()->addElement(0, 0, new QCPTextElement(plot, QString()));
  legendRow(plot, 2);
  m_realChart->plot()->plotLayout()->insertRow(0);
  legendRow(m_realChart->plot(), 0);

  // memory-compute: two axis rects side by side sharing the model rows.
  plot = m_memoryChart->plot();
  QCPAxisRect* mem = plot->axisRect();
  plot->plotLayout()->take(mem);
  auto* pair = new QCPLayoutGrid;
  plot->plotLayout()->addElement(0, 0, pair);
  pair->addElement(0, 0, mem);
  pair->addElement(0, 1, new QCPAxisRect(plot));
  pair->setColumnStretchFactor(0, 1.6);
  pair->setColumnSpacing(4);
  auto* rows = new QCPMarginGroup(plot);
  for (QCPAxisRect* r : plot->axisRects()) r->setMarginGroup(QCP::msTop | QCP::msBottom, rows);
  plot->plotLayout()->insertRow(0);
  legendRow(plot, 0);

  m_chartScroll = new QScrollArea;
  m_chartScroll->setWidgetResizable(true);
  m_chartScroll->setFrameShape(QFrame::NoFrame);
  m_chartScroll->setWidget(m_chartRows);
}

QList<ChartPanel*> ModelView::charts() const { return {m_paramsChart, m_realChart, m_memoryChart, m_blockChart}; }

const moelab::ModelConfig& ModelView::labConfig() const { return m_config; }

void ModelView::loadRealModels() {
  const fs::path dir = fs::path(moelab::resources_dir()) / "real-models";
  QStringList errors;
  try {
    const json index = json::parse(moelab::read_text_file((dir / "index.json").string(), 1 << 20));
    if (!index.is_array()) moelab::fail((dir / "index.json").string(), "expected a list of models");
    for (const json& e : index) {
      const std::string id = e.value("id", std::string());
      try {
        RealModel m;
        m.id = QString::fromStdString(id);
        m.name = QString::fromStdString(e.value("name", id));
        m.headline = QString::fromStdString(e.value("headline", std::string()));
        m.config = moelab::load_config((dir / id / "config.json").string());
        m.params = moelab::count_params(m.config);
        m.flops = moelab::forward_flops_per_token(m.config, kContext);
        m_real << m;
      } catch (const std::exception& ex) {
        errors << QString::fromStdString(ex.what());
      }
    }
  } catch (const std::exception& ex) {
    errors << QString::fromStdString(ex.what());
  }
  m_compare->addItem(tr("(none)"));
  for (const RealModel& m : m_real) {
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
  if (c.num_experts != m_config.num_experts || c.num_layers != m_config.num_layers) m_highlights.clear();
  m_config = c;
  m_name = name;
  m_params = params;
  m_flops = flops;
  const QString family = QString::fromLatin1(moelab::family_name(c.family));
  const QString total = countText(double(params.total)), active = countText(double(params.active));
  m_summary->setText(c.num_experts > 0 ? tr("%1: %2 of %3 layers are MoE, %4 experts of width %5, top-%6. %7 parameters, "
                                            "%8 per token.")
                                             .arg(family, num(c.num_moe_layers()), num(c.num_layers), num(c.num_experts),
                                                  num(c.expert_ffn_size), num(c.top_k), total, active)
                                       : tr("%1: a dense model, FFN width %2. %3 parameters, all used by every token.")
                                             .arg(family, num(c.dense_ffn_size), total));
  {
    const QSignalBlocker block(m_blockLayer);
    m_blockLayer->setRange(0, int(std::max<int64_t>(1, c.num_layers)) - 1);
  }
  m_block->setConfig(c);
  updateCharts();
  emit configChanged();
}

void ModelView::setHighlightedExperts(int layer, QVector<int> experts) {
  m_highlights[layer] = experts;
  if (layer < 0 || layer >= m_config.num_layers) return;
  if (m_blockLayer->value() != layer)
    m_blockLayer->setValue(layer);  // updateBlock runs from valueChanged
  else
    updateBlock();
}

void ModelView::updateCharts() {
  updateParamsChart();
  updateRealModelsChart();
  updateMemoryChart();
  updateBlock();
}

void ModelView::updateBlock() {
  m_block->setLayer(m_blockLayer->value());
  m_block->setHighlighted(m_highlights.value(m_blockLayer->value()));
  m_blockChart->replot();
}

QVector<ModelView::Row> ModelView::rows() const {
  QVector<Row> rows;
  const QString compared = m_compare->currentData().toString();
  for (const RealModel& m : m_real)
    rows << Row{m.name, double(m.params.total), double(m.params.active), m.flops, false, m.id == compared};
  rows << Row{m_name.isEmpty() ? tr("lab model") : m_name, double(m_params.total), double(m_params.active), m_flops,
              true, false};
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.total < b.total; });
  return rows;
}

void ModelView::updateParamsChart() {
  const Theme& t = m_theme;
  QCustomPlot* plot = m_paramsChart->plot();
  plot->clearPlottables();
  plot->clearItems();
  QCPAxis* keys = plot->yAxis;
  QCPAxis* values = plot->xAxis;
  const double total = double(m_params.total), active = double(m_params.active);
  QCPBars* below = nullptr;
  for (int i = 0; i < moelab::kNumComponents; ++i) {
    if (m_params.total_by[i] == 0) continue;
    auto* bars = horizontalBars(keys, values, Theme::component(i), 0.6, t);
    const double share = total > 0 ? 100.0 * double(m_params.total_by[i]) / total : 0;
    bars->setName(QStringLiteral("%1 (%2)").arg(componentLabel(i),
                                                share < 1 ? QStringLiteral("<1%") : QString::number(share, 'f', 0) + '%'));
    bars->setData({1, 2}, {double(m_params.active_by[i]), double(m_params.total_by[i])}, true);
    if (below) bars->moveAbove(below);
    below = bars;
  }
  auto ticker = QSharedPointer<QCPAxisTickerText>::create();
  ticker->addTick(2, tr("Total"));
  ticker->addTick(1, tr("Active\nper token"));
  keys->setTicker(ticker);
  keys->setRange(0.4, 2.6);
  keys->grid()->setVisible(false);
  auto countTicker = QSharedPointer<FormattedTicker>::create(countText);
  countTicker->setTickCount(t.presentation ? 3 : 4);
  values->setTicker(countTicker);
  values->setLabel(tr("parameters"));
  values->setRange(0, std::max(1.0, total) * 1.22);
  for (const auto& [key, v] : {std::pair{2.0, total}, std::pair{1.0, active}}) {
    auto* label = textItem(plot, countText(v), t.axisLabel, t.foreground, Qt::AlignLeft | Qt::AlignVCenter);
    label->position->setCoords(v, key);
    label->setPadding(QMargins(6, 0, 0, 0));
  }
  if (auto* head = qobject_cast<QCPTextElement*>(plot->plotLayout()->element(0, 0))) {
    head->setText(tr("%1 total / %2 active per token (%3%)")
                      .arg(countText(total), countText(active))
                      .arg(total > 0 ? QString::number(100.0 * active / total, 'f', 0) : QStringLiteral("0")));
    head->setFont(t.axisLabel);
    head->setTextColor(t.foreground);
  }
  plot->legend->setWrap(2);
  m_paramsChart->replot();
}

void ModelView::updateRealModelsChart() {
  const Theme& t = m_theme;
  QCustomPlot* plot = m_realChart->plot();
  plot->clearPlottables();
  plot->clearItems();
  const QVector<Row> rows = this->rows();
  setLogAxis(plot->xAxis, countText);
  auto* totalBars = horizontalBars(plot->yAxis, plot->xAxis, Theme::series(0), 0.4, t);
  auto* activeBars = horizontalBars(plot->yAxis, plot->xAxis, Theme::series(1), 0.4, t);
  totalBars->setName(tr("total parameters"));
  activeBars->setName(tr("active per token"));
  auto names = QSharedPointer<QCPAxisTickerText>::create();
  QStringList numbers;
  double lo = 1e300, hi = 0;
  for (int i = 0; i < int(rows.size()); ++i) {
    // Two bars per model, total above active, around the model's row.
    totalBars->addData(i + 0.2, rows[i].total);
    activeBars->addData(i - 0.2, rows[i].active);
    names->addTick(i, rows[i].label());
    numbers << countText(rows[i].total) + QStringLiteral(" / ") + countText(rows[i].active);
    lo = std::min(lo, rows[i].active);
    hi = std::max(hi, rows[i].total);
  }
  plot->yAxis->setTicker(names);
  plot->yAxis->setRange(-0.6, rows.size() - 0.4);
  plot->yAxis->grid()->setVisible(false);
  plot->xAxis->setRange(decades(lo, hi));
  plot->xAxis->setLabel(tr("parameters (log scale)"));
  for (int i = 0; i < int(rows.size()); ++i) {
    rowLabel(plot, plot->axisRect(), i, numbers[i], t.tickLabel, t.foreground);
    if (rows[i].compared) outlineRow(plot, plot->axisRect(), i, QPen(t.foreground, t.presentation ? 4 : 2.5));
  }
  numbers << tr("total / active");
  auto* header = rowLabel(plot, plot->axisRect(), rows.size() - 0.4, tr("total / active"), t.tickLabel, t.subtle);
  header->setPositionAlignment(Qt::AlignLeft | Qt::AlignBottom);
  reserveRightMargin(plot->axisRect(), t.tickLabel, numbers);
  plot->legend->setWrap(2);
  m_realChart->replot();
}

void ModelView::updateMemoryChart() {
  const Theme& t = m_theme;
  QCustomPlot* plot = m_memoryChart->plot();
  plot->clearPlottables();
  plot->clearItems();
  const QList<QCPAxisRect*> rects = plot->axisRects();
  if (rects.size() < 2) return;
  QCPAxisRect* mem = rects[0];
  QCPAxisRect* flop = rects[1];
  const QVector<Row> rows = this->rows();
  auto names = QSharedPointer<QCPAxisTickerText>::create();
  for (int i = 0; i < int(rows.size()); ++i) names->addTick(i, rows[i].label());
  for (QCPAxisRect* r : {mem, flop}) {
    QCPAxis* y = r->axis(QCPAxis::atLeft);
    y->setTicker(names);
    y->setRange(-0.6, rows.size() - 0.4);
    y->grid()->setVisible(false);
  }
  flop->axis(QCPAxis::atLeft)->setTickLabels(false);

  // Left: one dumbbell per model from int4 to fp32, a marker per precision.
  struct Precision {
    QString name;
    double bytes;
    QCPScatterStyle::ScatterShape shape;
  };
  const Precision precisions[] = {{tr("fp32"), 4, QCPScatterStyle::ssSquare},
                                  {tr("bf16"), 2, QCPScatterStyle::ssDisc},
                                  {tr("int8"), 1, QCPScatterStyle::ssTriangle},
                                  {tr("int4"), 0.5, QCPScatterStyle::ssDiamond}};
  QCPAxis* memX = mem->axis(QCPAxis::atBottom);
  QCPAxis* memY = mem->axis(QCPAxis::atLeft);
  for (int i = 0; i < int(rows.size()); ++i) {
    auto* bar = new QCPItemLine(plot);
    bar->setClipAxisRect(mem);
    bar->start->setAxes(memX, memY);
    bar->end->setAxes(memX, memY);
    bar->start->setCoords(rows[i].total * 0.5, i);
    bar->end->setCoords(rows[i].total * 4, i);
    bar->setPen(QPen(t.subtle, t.presentation ? 3 : 2));
  }
  const double size = t.markerSize + (t.presentation ? 4 : 3);
  for (int p = 0; p < 4; ++p) {
    QCPGraph* g = plot->addGraph(memY, memX);
    g->setName(precisions[p].name);
    g->setLineStyle(QCPGraph::lsNone);
    g->setScatterStyle(QCPScatterStyle(precisions[p].shape, QPen(t.foreground, 1), Theme::series(p), size));
    for (int i = 0; i < int(rows.size()); ++i) g->addData(i, rows[i].total * precisions[p].bytes);
  }
  double lo = 1e300, hi = 0, flo = 1e300, fhi = 0;
  for (const Row& r : rows) {
    lo = std::min(lo, r.total * 0.5);
    hi = std::max(hi, r.total * 4);
    flo = std::min(flo, r.flops);
    fhi = std::max(fhi, r.flops);
  }
  setLogAxis(memX, bytesText);
  memX->setRange(decades(lo, hi));
  memX->setLabel(tr("weights in memory"));
  auto* gpu = new QCPItemStraightLine(plot);
  gpu->setClipAxisRect(mem);
  gpu->point1->setAxes(memX, memY);
  gpu->point2->setAxes(memX, memY);
  gpu->point1->setCoords(80e9, 0);
  gpu->point2->setCoords(80e9, 1);
  gpu->setPen(QPen(t.foreground, t.presentation ? 3 : 2, Qt::DashLine));
  // The largest models sit at the top, right of the line, so its label goes top left of it.
  auto* gpuLabel = textItem(plot, tr("80 GB GPU"), t.tickLabel, t.foreground, Qt::AlignRight | Qt::AlignTop);
  gpuLabel->setClipAxisRect(mem);
  gpuLabel->position->setAxisRect(mem);
  gpuLabel->position->setAxes(memX, memY);
  gpuLabel->position->setTypeY(QCPItemPosition::ptAxisRectRatio);
  gpuLabel->position->setCoords(80e9, 0.0);
  gpuLabel->setPadding(QMargins(0, 2, 6, 0));
  gpuLabel->setBrush(QColor(255, 255, 255, 210));

  // Right: compute per token, one bar per model.
  QCPAxis* flopX = flop->axis(QCPAxis::atBottom);
  setLogAxis(flopX, countText);
  auto* bars = horizontalBars(flop->axis(QCPAxis::atLeft), flopX, Theme::series(2), 0.6, t);
  bars->removeFromLegend();
  for (int i = 0; i < int(rows.size()); ++i) bars->addData(i, rows[i].flops);
  flopX->setRange(decades(flo, fhi));
  flopX->setLabel(tr("FLOP per token"));
  for (int i = 0; i < int(rows.size()); ++i)
    if (rows[i].compared)
      for (QCPAxisRect* r : {mem, flop}) outlineRow(plot, r, i, QPen(t.foreground, t.presentation ? 4 : 2.5));
  plot->legend->setWrap(4);
  m_memoryChart->replot();
}

void ModelView::applyMinimumSizes() {
  // Normal: a 2×2 grid. Presentation: projector fonts need about a screen per chart, so the
  // charts stack in one column, each as high as the visible area, and the column scrolls.
  const QList<QSplitter*> rows{m_chartRows->findChild<QSplitter*>(QStringLiteral("chartRow0")),
                               m_chartRows->findChild<QSplitter*>(QStringLiteral("chartRow1"))};
  const QList<ChartPanel*> panels = charts();
  for (int i = 0; i < int(panels.size()); ++i) {
    if (m_theme.presentation)
      m_chartRows->insertWidget(i, panels[i]);
    else
      rows[i / 2]->insertWidget(i % 2, panels[i]);
  }
  for (QSplitter* r : rows) {
    r->setVisible(!m_theme.presentation);
    r->setSizes({1000, 1000});
  }
  m_chartRows->setSizes(QList<int>(m_chartRows->count(), 1000));
  const int high = std::max(480, m_chartScroll->viewport()->height() - 12);
  for (ChartPanel* c : panels) c->setMinimumSize(m_theme.presentation ? QSize(520, high) : QSize(320, 270));
  m_knobs->adjustSize();
  const int w = m_knobs->minimumSizeHint().width() + m_knobScroll->verticalScrollBar()->sizeHint().width() + 4;
  m_knobScroll->setMinimumWidth(w);
  m_splitter->setSizes({w, std::max(400, width() - w)});
}

void ModelView::applyTheme(const Theme& t) {
  m_theme = t;
  m_knobs->setFont(t.text);
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

QString ModelView::paramsCsv() const {
  QStringList lines{QStringLiteral("component,total_params,active_params_per_token")};
  for (int i = 0; i < moelab::kNumComponents; ++i)
    lines << QStringList{QString::fromLatin1(moelab::component_name(moelab::Component(i))), num(m_params.total_by[i]),
                         num(m_params.active_by[i])}
                 .join(',');
  lines << QStringList{QStringLiteral("all"), num(m_params.total), num(m_params.active)}.join(',');
  return lines.join('\n') + '\n';
}

QString ModelView::realModelsCsv() const {
  QStringList lines{QStringLiteral("model,total_params,active_params,headline,compared")};
  for (const RealModel& m : m_real)
    lines << QStringList{quoted(m.name), num(m.params.total), num(m.params.active), quoted(m.headline),
                         m.id == m_compare->currentData().toString() ? QStringLiteral("1") : QStringLiteral("0")}
                 .join(',');
  lines << QStringList{quoted(m_name + tr(" (lab)")), num(m_params.total), num(m_params.active), QString(), QStringLiteral("0")}
               .join(',');
  return lines.join('\n') + '\n';
}

QString ModelView::memoryCsv() const {
  QStringList lines{QStringLiteral("model,total_params,active_params,bytes_fp32,bytes_bf16,bytes_int8,bytes_int4,"
                                   "flops_per_token_ctx%1").arg(kContext)};
  for (const Row& r : rows())
    lines << QStringList{quoted(r.name), num(r.total), num(r.active), num(r.total * 4), num(r.total * 2), num(r.total),
                         num(r.total / 2), num(r.flops)}
                 .join(',');
  return lines.join('\n') + '\n';
}

QString ModelView::blockCsv() const {
  QStringList lines{QStringLiteral("layer,kind,routed_experts,top_k,shared_ffn_size,dense_ffn_size,highlighted_experts")};
  for (int64_t l = 0; l < m_config.num_layers; ++l) {
    const bool moe = m_config.is_moe_layer(l);
    QStringList hi;
    for (int e : m_highlights.value(int(l))) hi << QString::number(e);
    lines << QStringList{num(l), moe ? QStringLiteral("moe") : QStringLiteral("dense"), num(moe ? m_config.num_experts : 0),
                         num(moe ? m_config.top_k : 0), num(moe ? m_config.shared_ffn_size : 0),
                         num(moe ? 0 : m_config.dense_ffn_size), quoted(hi.join(' '))}
                 .join(',');
  }
  return lines.join('\n') + '\n';
}
