#include "training_worker.hpp"

#include <QDir>
#include <QThread>
#include <QTimer>
#include <tuple>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <nlohmann/json.hpp>

#include "devices.hpp"
#include "error.hpp"
#include "presets.hpp"
#include "runlog.hpp"

using namespace moelab;

TrainingWorker::TrainingWorker(QObject* parent) : QObject(parent) {
  qRegisterMetaType<StepSummaryPtr>("StepSummaryPtr");
  qRegisterMetaType<moelab::TrainConfig>("moelab::TrainConfig");
}

TrainingWorker::~TrainingWorker() = default;

namespace {
// Leave one core to the GUI thread: OpenMP threads that spin at their barriers while the window
// draws on the same core slow training down many times over (measured: 0.8 instead of ~30
// steps/s on 2 cores). The setting is per thread, so it applies to this worker's steps only.
void shareCoresWithTheGui() {
#ifdef _OPENMP
  omp_set_num_threads(std::max(1, QThread::idealThreadCount() - 1));
#endif
}
}  // namespace

void TrainingWorker::start(const TrainingRequest& request) {
  const TrainConfig& config = request.config;
  const QString& runDir = request.runDir;
  try {
    m_running = false;
    m_log.reset();
    m_trainer.reset();
    shareCoresWithTheGui();
    Preset p = load_preset(request.preset.toStdString());
    if (!request.corpus.isEmpty()) p.corpus = request.corpus.toStdString();
    if (!request.router.isEmpty()) set_router_kind(p.model, request.router.toStdString(), "router");
    m_corpus = open_corpus(p.corpus);
    buildOnDevice(p.model, config, "");
    m_topK = p.model.top_k;
    if (!runDir.isEmpty()) {
      const nlohmann::json info = {{"version", "0.1.0"},       {"model", config_to_json(p.model)},
                                   {"train", train_config_to_json(config)}, {"seed", config.seed},
                                   {"backend", m_model->backend().name()},
                                   {"precision", precision_name(m_model->backend().precision())},
                                   {"corpus", p.corpus},       {"preset", p.name}};
      m_log = std::make_unique<RunLog>(runDir.toStdString(), info);
    }
    emit started(QString::fromStdString(p.title), runDir, p.model.num_experts, p.model.num_moe_layers(), m_topK, 0);
    m_running = true;
    QTimer::singleShot(0, this, &TrainingWorker::runOne);
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
  }
}

void TrainingWorker::continueRun(const QString& runDir) {
  try {
    m_running = false;
    m_log.reset();
    m_trainer.reset();
    shareCoresWithTheGui();
    const std::string dir = runDir.toStdString();
    const nlohmann::json info = RunLog::read_run_info(dir);
    const std::string src = dir + "/run.json";
    const ModelConfig mc = parse_config(info.at("model"), src);
    const TrainConfig tc = train_config_from_json(info.at("train"), TrainConfig{}, src);
    const std::string ckpt = RunLog::latest_checkpoint(dir);
    if (ckpt.empty()) fail(dir, "the run has no checkpoint to continue from");
    m_corpus = open_corpus(info.value("corpus", std::string("builtin:domains")));
    buildOnDevice(mc, tc, ckpt);
    m_topK = mc.top_k;
    m_log = std::make_unique<RunLog>(dir, info, m_trainer->steps_done());
    QString title = QString::fromStdString(info.value("preset", mc.architecture));
    emit started(title, runDir, mc.num_experts, mc.num_moe_layers(), m_topK, m_trainer->steps_done());
    m_running = true;
    QTimer::singleShot(0, this, &TrainingWorker::runOne);
  } catch (const nlohmann::json::exception& e) {
    emit errorOccurred(tr("%1/run.json: malformed run description (%2)").arg(runDir, QString::fromUtf8(e.what())));
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
  }
}

void TrainingWorker::buildOnDevice(const ModelConfig& model, const TrainConfig& train, const std::string& checkpoint) {
  m_trainer.reset();
  m_model.reset();  // the previous run's memory first: it may be the GPU's
  std::string precisionProblem;
  auto build = [&](std::shared_ptr<Backend> b) {
    // Set before the weights are made, as the command line does; a refusal keeps fp32 and is
    // reported, not taken for the device failing.
    precisionProblem = apply_precision(*b, m_precision);
    auto m = std::make_unique<Model>(Model::random(model, train.seed + 1000, std::move(b)));
    auto t = std::make_unique<Trainer>(*m, *m_corpus, train);
    if (!checkpoint.empty()) t->load_checkpoint(checkpoint);
    return std::make_pair(std::move(m), std::move(t));
  };
  std::string problem;
  std::tie(m_model, m_trainer) = make_on_device(m_device, build, &problem);
  emit deviceInUse(QString::fromStdString(device_display_name(m_model->backend())), QString::fromStdString(problem),
                   QString::fromStdString(precisionProblem));
}

void TrainingWorker::setDevice(const QString& device) { m_device = device.toStdString(); }

void TrainingWorker::setPrecision(Precision precision) { m_precision = precision; }

void TrainingWorker::pause() { m_running = false; }

void TrainingWorker::stepOnce() {
  if (!m_trainer || m_running) return;
  m_running = true;
  m_stopAfterOne = true;
  runOne();
}

void TrainingWorker::resume() {
  if (!m_trainer || m_running) return;
  m_running = true;
  QTimer::singleShot(0, this, &TrainingWorker::runOne);
}

void TrainingWorker::stop() {
  m_running = false;
  if (!m_trainer) return;
  const QString ckpt = checkpointNow();
  emit finished(ckpt.isEmpty() ? tr("Stopped at step %1").arg(m_trainer->steps_done())
                               : tr("Stopped at step %1; checkpoint saved").arg(m_trainer->steps_done()));
}

void TrainingWorker::updateConfig(const TrainConfig& config) {
  if (m_trainer) m_trainer->set_config(config);
}

QString TrainingWorker::checkpointNow(const QString& fallbackDir) {
  if (!m_trainer) return {};
  try {
    std::string dir;
    if (m_log)
      dir = m_log->checkpoint_dir(m_trainer->steps_done());
    else if (!fallbackDir.isEmpty())
      dir = fallbackDir.toStdString();
    else
      return {};
    if (!QDir(QString::fromStdString(dir) + "/..").exists()) QDir().mkpath(QString::fromStdString(dir) + "/..");
    m_trainer->save_checkpoint(dir);
    const QString d = QString::fromStdString(dir);
    emit checkpointSaved(d, m_trainer->steps_done());
    return d;
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
    return {};
  }
}

void TrainingWorker::saveCheckpoint(const QString& fallbackDir) { checkpointNow(fallbackDir); }

void TrainingWorker::runOne() {
  if (!m_running || !m_trainer) return;
  if (m_trainer->steps_done() >= m_trainer->config().steps) {
    m_running = false;
    checkpointNow();
    emit finished(tr("Finished %1 steps").arg(m_trainer->steps_done()));
    return;
  }
  try {
    const StepRecord r = m_trainer->step();
    if (m_log) m_log->append(step_record_to_json(r));
    emit stepDone(summaryFromRecord(r, m_trainer->config().steps, m_topK));
    const int64_t every = m_trainer->config().checkpoint_every;
    if (m_log && every > 0 && r.step % every == 0 && r.step < m_trainer->config().steps) checkpointNow();
    if (m_stopAfterOne) {
      m_stopAfterOne = m_running = false;
      return;
    }
  } catch (const std::exception& e) {
    m_running = false;
    emit errorOccurred(QString::fromUtf8(e.what()));
    return;
  }
  QTimer::singleShot(0, this, &TrainingWorker::runOne);  // next step after pending requests
}
