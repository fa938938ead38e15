#include "generation_worker.hpp"

#include <QDir>
#include <QFileInfo>
#include <algorithm>
#include <cmath>
#include <optional>

#include "files.hpp"
#include "decoder.hpp"
#include "devices.hpp"
#include "error.hpp"
#include "generate.hpp"
#include "presets.hpp"
#include "random.hpp"
#include "tokenizer.hpp"

using namespace moelab;

GenerationWorker::GenerationWorker(QObject* parent) : QObject(parent) {
  qRegisterMetaType<SnapshotPtr>("SnapshotPtr");
  qRegisterMetaType<GenerationSettings>("GenerationSettings");
  qRegisterMetaType<moelab::ModelConfig>("moelab::ModelConfig");
}

GenerationWorker::~GenerationWorker() = default;

namespace {
// "builtin" or a model directory / config.json on `backend`; *name is what the view calls it.
// *dir: the model's folder, where its tokenizer.json would be.
std::unique_ptr<Model> openModel(const QString& path, std::shared_ptr<Backend> backend, QString* name, std::string* dir) {
  if (path.isEmpty() || path == QLatin1String("builtin")) {
    *name = GenerationWorker::tr("built-in model");
    *dir = resources_dir() + "/models/builtin";
    return std::make_unique<Model>(Model::load(resources_dir() + "/models/builtin", std::move(backend)));
  }
  const std::string cfg = config_path_of(path.toStdString());
  const QFileInfo cfgInfo(QString::fromStdString(cfg));
  const bool hasWeights = has_weights(cfgInfo.dir().path().toStdString());
  *dir = cfgInfo.dir().path().toStdString();
  *name = cfgInfo.dir().dirName() + (hasWeights ? QString() : GenerationWorker::tr(" (random weights)"));
  if (hasWeights) return std::make_unique<Model>(Model::load(cfgInfo.dir().path().toStdString(), std::move(backend)));
  // A bare config.json: the architecture with random weights, so its routing can be explored.
  return std::make_unique<Model>(Model::random(load_config(cfg), 1, std::move(backend), 0.05f));
}
}  // namespace

void GenerationWorker::setDevice(const QString& device) { m_device = device.toStdString(); }

void GenerationWorker::setPrecision(Precision precision) { m_precision = precision; }

void GenerationWorker::loadModel(const QString& path) {
  try {
    QString name;
    std::string problem, precisionProblem, dir;
    // The precision is set before the weights load, as the command line does; a refusal (tf32 on
    // the CPU a GPU fell back to) keeps fp32 and is reported, not taken for the device failing.
    auto make = [&](std::shared_ptr<Backend> b) {
      precisionProblem = apply_precision(*b, m_precision);
      return openModel(path, std::move(b), &name, &dir);
    };
    auto m = make_on_device(m_device, make, &problem);
    // Its tokenizer, before anything is replaced: a broken tokenizer.json fails the open as a
    // broken model file would (one line naming the file) and the model shown stays.
    auto tok = TextTokenizer::for_model(dir, m->config());
    if (!problem.empty()) m_device = "cpu";                        // until the GUI chooses again
    if (!precisionProblem.empty()) m_precision = Precision::FP32;  // likewise
    m_decoder.reset();  // it refers to the model it replaces
    m_model = std::move(m);
    m_tok = std::move(tok);
    m_name = name;
    m_path = path;
    m_tokens.clear();
    emit deviceInUse(QString::fromStdString(device_display_name(m_model->backend())), QString::fromStdString(problem),
                     QString::fromStdString(precisionProblem));
    emit tokenizerLoaded(m_tok ? QString::fromStdString(m_tok->describe()) : QString());
    emit modelLoaded(m_name, m_model->config());
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
  }
}

void GenerationWorker::runTokens(const std::vector<int32_t>& ids, bool prompt) {
  const RoutingOverrides& ov = m_settings.overrides;
  if (ov.needs_whole_text()) {  // a capacity limit: the whole text again, as one batch
    std::vector<int32_t> text = m_tokens;
    text.insert(text.end(), ids.begin(), ids.end());
    auto fresh = std::make_unique<Decoder>(*m_model, m_decoder->capacity());
    RoutingTrace trace;
    m_lastLogits = fresh->prefill(text, &trace, &ov);
    m_decoder = std::move(fresh);
    m_trace = std::move(trace);
    m_tokens = std::move(text);
    return;
  }
  if (prompt) {
    m_lastLogits = m_decoder->prefill(ids, &m_trace, &ov);
  } else {  // the decoder runs the plain forward when the overrides are active
    for (int32_t id : ids) m_lastLogits = m_decoder->step(id, &m_trace, &ov);
  }
  m_tokens.insert(m_tokens.end(), ids.begin(), ids.end());
}

void GenerationWorker::reset(const GenerationSettings& settings, int regenerate) {
  if (!m_model) return;
  try {
    m_settings = settings;
    const ModelConfig& c = m_model->config();
    std::vector<int32_t> prompt;
    if (m_tok) {
      prompt = m_tok->encode_prompt(settings.prompt.toStdString());
      if (prompt.empty()) throw Error("the prompt is empty: type some text");
    } else {
      // Models without a tokenizer: the prompt is a list of token ids.
      prompt = parse_token_ids(settings.prompt.trimmed().isEmpty() ? "1" : settings.prompt.toStdString(), "prompt");
    }
    for (int32_t id : prompt)
      if (id < 0 || id >= c.vocab_size)
        throw Error("prompt token " + std::to_string(id) + " is outside the model's vocabulary (0.." +
                    std::to_string(c.vocab_size - 1) + ")");
    const int64_t capacity = std::min<int64_t>(c.max_positions, 512);
    if (int64_t(prompt.size()) >= capacity) throw Error("the prompt is longer than the " + std::to_string(capacity) + " tokens shown");
    m_decoder.reset();  // its recorded graph and cache go before the new ones are allocated
    m_decoder = std::make_unique<Decoder>(*m_model, capacity);
    m_trace.clear();
    m_tokens.clear();
    m_rng = std::make_unique<Rng>(settings.seed);
    runTokens(prompt, true);
    m_promptLength = int(prompt.size());
    if (regenerate > 0) {
      step(regenerate);
      return;
    }
    emitSnapshot();
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
  }
}

void GenerationWorker::step(int n) {
  if (!m_model || !m_decoder) return;
  try {
    const int64_t V = m_model->config().vocab_size;
    const std::optional<int32_t> eos = m_tok ? m_tok->eos() : std::nullopt;
    SamplingOptions opt;
    opt.temperature = m_settings.temperature;
    for (int i = 0; i < n && m_decoder->length() < m_decoder->capacity(); ++i) {
      if (eos && int64_t(m_tokens.size()) > m_promptLength && m_tokens.back() == *eos) break;  // the text has ended
      const float* last = m_lastLogits.data() + (int64_t(m_lastLogits.size()) / V - 1) * V;
      const int32_t next = sample_token(last, V, opt, *m_rng);
      runTokens({next}, false);
    }
    emitSnapshot();
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
  }
}

void GenerationWorker::emitSnapshot() {
  auto s = std::make_shared<TokensSnapshot>();
  const ModelConfig& c = m_model->config();
  s->modelName = m_name;
  s->config = c;
  s->promptLength = m_promptLength;
  s->capacityFactor = m_settings.overrides.capacity.factor;
  s->reroute = m_settings.overrides.capacity.reroute;
  s->decoderSteps = !m_settings.overrides.active();
  if (m_decoder) s->decodeProblem = QString::fromStdString(m_decoder->graph_problem());
  s->precision = m_model->backend().precision();
  // Labels and pieces of the tokens shown only, here on the worker: never the whole vocabulary.
  if (m_tok) s->tokenizer = QString::fromStdString(m_tok->describe());
  const std::optional<int32_t> eos = m_tok ? m_tok->eos() : std::nullopt;
  s->ended = eos && int64_t(m_tokens.size()) > m_promptLength && m_tokens.back() == *eos;
  for (int32_t id : m_tokens) {
    s->tokens.push_back(id);
    s->labels.push_back(labelOf(id));
    if (m_tok) s->pieces.push_back(QString::fromStdString(m_tok->piece(id)));
  }
  for (const auto& L : m_trace.layers()) {
    TokensSnapshot::Layer l;
    l.layer = L.layer;
    l.inputNorm = QVector<float>(L.input_norm.begin(), L.input_norm.end());
    l.logits = QVector<float>(L.logits.begin(), L.logits.end());
    l.probs = QVector<float>(L.probs.begin(), L.probs.end());
    l.ids = QVector<int>(L.ids.begin(), L.ids.end());
    l.weights = QVector<float>(L.weights.begin(), L.weights.end());
    l.wanted = QVector<int>(L.wanted.begin(), L.wanted.end());
    l.dropped = QVector<quint8>(L.dropped.begin(), L.dropped.end());
    s->topK = L.top_k;
    s->layers.push_back(std::move(l));
  }
  if (s->topK > 0) s->capacity = expert_capacity(s->capacityFactor, int64_t(m_tokens.size()), s->topK, c.num_experts);
  // Next-token distribution after the last token (softmax of the last logits row).
  const int64_t V = c.vocab_size;
  if (int64_t(m_lastLogits.size()) >= V) {
    const float* last = m_lastLogits.data() + (int64_t(m_lastLogits.size()) / V - 1) * V;
    const float mx = *std::max_element(last, last + V);
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(last[v] - mx));
    std::vector<int> order(static_cast<size_t>(V));
    for (int64_t v = 0; v < V; ++v) order[size_t(v)] = int(v);
    std::partial_sort(order.begin(), order.begin() + std::min<int64_t>(10, V), order.end(),
                      [last](int a, int b) { return last[a] > last[b]; });
    for (int64_t i = 0; i < std::min<int64_t>(10, V); ++i)
    {
      s->next.push_back(qMakePair(order[size_t(i)], float(std::exp(double(last[order[size_t(i)]] - mx)) / sum)));
      s->nextLabels.push_back(labelOf(order[size_t(i)]));
    }
  }
  emit snapshotReady(std::move(s));
}

QString GenerationWorker::labelOf(int32_t id) const {
  return m_tok ? QString::fromStdString(m_tok->label(id)) : QString::number(id);
}
