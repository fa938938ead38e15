#include "training_worker.hpp"

#include <QTimer>

#include "presets.hpp"
#include "runlog.hpp"

using namespace moelab;

TrainingWorker::TrainingWorker(QObject* parent) : QObject(parent) {
  qRegisterMetaType<StepSummaryPtr>("StepSummaryPtr");
  qRegisterMetaType<moelab::TrainConfig>("moelab::TrainConfig");
}

TrainingWorker::~TrainingWorker() = default;

void TrainingWorker::start(const QString& preset, const TrainConfig& config, const QString& runDir) {
  try {
    m_running = false;
    const Preset p = load_preset(preset.toStdString());
    m_corpus = open_corpus(p.corpus);
    m_model = std::make_unique<Model>(Model::random(p.model, config.seed + 1000, make_eigen_backend()));
    m_trainer = std::make_unique<Trainer>(*m_model, *m_corpus, config);
    m_log.reset();
    if (!runDir.isEmpty()) {
      const nlohmann::json info = {{"version", "0.1.0"},       {"model", config_to_json(p.model)},
                                   {"train", train_config_to_json(config)}, {"seed", config.seed},
                                   {"backend", m_model->backend().name()}, {"corpus", p.corpus},
                                   {"preset", p.name}};
      m_log = std::make_unique<RunLog>(runDir.toStdString(), info);
    }
    emit started(QString::fromStdString(p.title), p.model.num_experts, p.model.num_moe_layers());
    m_running = true;
    QTimer::singleShot(0, this, &TrainingWorker::runOne);
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
  }
}

void TrainingWorker::pause() { m_running = false; }

void TrainingWorker::resume() {
  if (!m_trainer || m_running) return;
  m_running = true;
  QTimer::singleShot(0, this, &TrainingWorker::runOne);
}

void TrainingWorker::stop() {
  m_running = false;
  if (m_trainer) emit finished(tr("Stopped at step %1").arg(m_trainer->steps_done()));
}

void TrainingWorker::updateConfig(const TrainConfig& config) {
  if (m_trainer) m_trainer->set_config(config);
}

void TrainingWorker::runOne() {
  if (!m_running || !m_trainer) return;
  if (m_trainer->steps_done() >= m_trainer->config().steps) {
    m_running = false;
    emit finished(tr("Finished %1 steps").arg(m_trainer->steps_done()));
    return;
  }
  try {
    const StepRecord r = m_trainer->step();
    if (m_log) m_log->append(step_record_to_json(r));
    auto s = std::make_shared<StepSummary>();
    s->step = r.step;
    s->steps = m_trainer->config().steps;
    s->loss = r.loss;
    s->lmLoss = r.lm_loss;
    s->auxLoss = r.aux_loss;
    s->zLoss = r.z_loss;
    s->valLoss = r.val_loss;
    s->tokensPerS = r.tokens_per_s;
    for (size_t i = 0; i < r.layers.size(); ++i) {
      const LayerStats& L = r.layers[i];
      StepSummary::Layer l;
      l.layer = L.layer;
      l.load = QVector<double>(L.load.begin(), L.load.end());
      l.cv = L.cv;
      l.entropy = L.entropy;
      l.maxShare = L.max_share;
      l.collapse = L.collapse;
      l.dead = L.dead;
      l.droppedRate = L.dropped_rate;
      if (i < r.bias.size()) l.bias = QVector<float>(r.bias[i].begin(), r.bias[i].end());
      s->layers.push_back(std::move(l));
    }
    emit stepDone(std::move(s));
  } catch (const std::exception& e) {
    m_running = false;
    emit errorOccurred(QString::fromUtf8(e.what()));
    return;
  }
  QTimer::singleShot(0, this, &TrainingWorker::runOne);  // next step after pending requests
}
