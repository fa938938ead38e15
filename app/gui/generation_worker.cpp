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
#include "weights_check.hpp"
#include "chart_kit.hpp"

using namespace moelab;

GenerationWorker::GenerationWorker(QObject* parent) : QObject(parent) {
  qRegisterMetaType<SnapshotPtr>("SnapshotPtr");
  qRegisterMetaType<GenerationSettings>("GenerationSettings");
  qRegisterMetaType<moelab::ModelConfig>("moelab::ModelConfig");
  qRegisterMetaType<CheckpointSummary>("CheckpointSummary");
  qRegisterMetaType<LoadTicketPtr>("LoadTicketPtr");
}

// The loads still running are cancelled (Model::load stops within a few MB of reading) and their
// threads joined here (the window has gone by then).
GenerationWorker::~GenerationWorker() {
  std::vector<std::thread> loaders;
  {
    std::lock_guard<std::mutex> lock(m_loadersMutex);
    loaders.swap(m_loaders);
    for (const auto& ticket : m_tickets) ticket->cancelled = true;
  }
  for (std::thread& t : loaders) t.join();
}

struct GenerationWorker::Loaded {
  LoadTicketPtr ticket;
  std::thread::id thread;
  QString path, name, error;
  std::unique_ptr<Model> model;
  std::shared_ptr<const TextTokenizer> tok;
  std::string problem, precisionProblem;
  CheckpointSummary summary;
};

namespace {
// "builtin" or a model directory / config.json on `backend`; *name is what the view calls it.
// *dir: the model's folder, where its tokenizer.json would be.
// `progress` reports the stages of Model::load and cancels it (LoadCancelled).
std::unique_ptr<Model> openModel(const QString& path, std::shared_ptr<Backend> backend, QString* name, std::string* dir,
                                 const LoadCallback& progress) {
  if (path.isEmpty() || path == QLatin1String("builtin")) {
    *name = GenerationWorker::tr("built-in model");
    *dir = resources_dir() + "/models/builtin";
    return std::make_unique<Model>(Model::load(resources_dir() + "/models/builtin", std::move(backend), false, progress));
  }
  const std::string cfg = config_path_of(path.toStdString());
  const QFileInfo cfgInfo(QString::fromStdString(cfg));
  const bool hasWeights = has_weights(cfgInfo.dir().path().toStdString());
  *dir = cfgInfo.dir().path().toStdString();
  *name = cfgInfo.dir().dirName() + (hasWeights ? QString() : GenerationWorker::tr(" (random weights)"));
  if (hasWeights)
    return std::make_unique<Model>(Model::load(cfgInfo.dir().path().toStdString(), std::move(backend), false, progress));
  // A bare config.json: the architecture with random weights, so its routing can be explored.
  return std::make_unique<Model>(Model::random(load_config(cfg), 1, std::move(backend), 0.05f));
}

// The checkpoint's headers (no tensor data read): its dtype, size and files.
CheckpointSummary readCheckpoint(const QString& path) {
  CheckpointSummary out;
  const bool builtin = path.isEmpty() || path == QLatin1String("builtin");
  const std::string cfg = builtin ? resources_dir() + "/models/builtin/config.json" : config_path_of(path.toStdString());
  const std::string dir = QFileInfo(QString::fromStdString(cfg)).dir().path().toStdString();
  if (!has_weights(dir)) return out;
  const WeightsCheck wc = check_weights(load_config(cfg), dir);
  out.present = wc.present;
  out.bytes = wc.bytes;
  out.tensors = wc.tensors;
  out.files = int(wc.files.size());
  int64_t most = 0;
  for (const auto& [dtype, n] : wc.dtypes)
    if (n > most) most = n, out.dtype = QString::fromStdString(dtype);
  return out;
}
}  // namespace

void GenerationWorker::setDevice(const QString& device) { m_device = device.toStdString(); }

void GenerationWorker::setPrecision(Precision precision) { m_precision = precision; }

void GenerationWorker::loadModel(const QString& path, LoadTicketPtr ticket) {
  auto loaded = std::make_shared<Loaded>();
  loaded->ticket = ticket ? std::move(ticket) : std::make_shared<LoadTicket>();
  loaded->path = path;
  const std::string device = m_device;
  const Precision precision = m_precision;
  ++m_loadsRunning;
  // The weights are read on a thread of their own, so that this worker keeps serving the model
  // shown (Step, Run) while a multi-gigabyte checkpoint loads; install() takes the result here.
  std::lock_guard<std::mutex> lock(m_loadersMutex);
  m_tickets.insert(loaded->ticket);
  m_loaders.emplace_back([this, loaded, device, precision] {
    loaded->thread = std::this_thread::get_id();
    const auto cancelled = [&] { return loaded->ticket->cancelled.load(); };
    const auto stage = [&](const QString& text, double fraction = -1) {
      if (!cancelled()) emit loadProgress(text, fraction);
    };
    // Model::load's stages, each with its fraction (emitted when it moves by a percent or more);
    // returns false, which stops the load, once the ticket is cancelled.
    QString lastStage;
    int lastPercent = -1;
    const LoadCallback progress = [&](const LoadProgress& p) {
      if (cancelled()) return false;
      const QString text = QString::fromStdString(p.stage);
      const int percent = p.total > 0 ? int(100 * p.fraction()) : -1;
      if (text != lastStage || percent != lastPercent) {
        lastStage = text;
        lastPercent = percent;
        const QString what = p.total > 0 ? tr("%1 (%2 of %3)")
                                               .arg(text, ChartKit::bytesText(double(p.done)), ChartKit::bytesText(double(p.total)))
                                         : text;
        stage(what, p.total > 0 ? p.fraction() : -1);
      }
      return true;
    };
    try {
      stage(tr("checking the safetensors headers"));
      loaded->summary = readCheckpoint(loaded->path);
      const CheckpointSummary& c = loaded->summary;
      if (!c.present) stage(tr("making random weights (the folder has a config.json only)"));
      if (!cancelled()) {
        std::string dir;
        // The precision is set before the weights load, as the command line does; a refusal (tf32
        // on the CPU a GPU fell back to) keeps fp32 and is reported, not taken for the device failing.
        auto make = [&](std::shared_ptr<Backend> b) {
          loaded->precisionProblem = apply_precision(*b, precision);
          return openModel(loaded->path, std::move(b), &loaded->name, &dir, progress);
        };
        loaded->model = make_on_device(device, make, &loaded->problem);
        stage(tr("reading the tokenizer"));
        // Its tokenizer, before anything is replaced: a broken tokenizer.json fails the open as a
        // broken model file would (one line naming the file) and the model shown stays.
        if (!cancelled()) loaded->tok = TextTokenizer::for_model(dir, loaded->model->config());
      }
    } catch (const LoadCancelled&) {
      // Stopped by cancelLoad: the ticket says so, install() drops it without a word.
    } catch (const std::exception& e) {
      loaded->error = QString::fromUtf8(e.what());
    }
    if (cancelled() || !loaded->error.isEmpty()) {  // its memory and mappings go back here, not later
      loaded->model.reset();
      loaded->tok.reset();
    }
    QMetaObject::invokeMethod(this, [this, loaded] { install(loaded); }, Qt::QueuedConnection);
    --m_loadsRunning;
  });
}

void GenerationWorker::install(std::shared_ptr<Loaded> loaded) {
  {
    std::lock_guard<std::mutex> lock(m_loadersMutex);
    auto it = std::find_if(m_loaders.begin(), m_loaders.end(),
                           [&](const std::thread& t) { return t.get_id() == loaded->thread; });
    if (it != m_loaders.end()) {
      it->join();  // it has posted this and is returning
      m_loaders.erase(it);
    }
    m_tickets.erase(loaded->ticket);
  }
  if (loaded->ticket->cancelled) return;  // abandoned: the model shown stays, nothing is said
  if (!loaded->error.isEmpty()) {
    emit loadFailed(loaded->error);
    return;
  }
  if (!loaded->problem.empty()) m_device = "cpu";                        // until the GUI chooses again
  if (!loaded->precisionProblem.empty()) m_precision = Precision::FP32;  // likewise
  m_decoder.reset();  // it refers to the model it replaces
  m_model = std::move(loaded->model);
  m_tok = std::move(loaded->tok);
  m_name = loaded->name;
  m_path = loaded->path;
  m_tokens.clear();
  emit deviceInUse(QString::fromStdString(device_display_name(m_model->backend())), QString::fromStdString(loaded->problem),
                   QString::fromStdString(loaded->precisionProblem));
  emit tokenizerLoaded(m_tok ? QString::fromStdString(m_tok->describe()) : QString());
  emit checkpointRead(loaded->summary);
  emit modelLoaded(m_name, m_model->config());
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
