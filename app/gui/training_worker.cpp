#include "training_worker.hpp"

#include <QDir>
#include <QThread>
#include <QTimer>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "devices.hpp"
#include "error.hpp"
#include "presets.hpp"

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
  try {
    m_running = false;
    m_run.reset();  // the previous run's memory first: it may be the GPU's
    shareCoresWithTheGui();
    const Preset preset = load_preset(request.preset.toStdString());
    RunSpec spec = run_spec_from_preset(request.preset.toStdString());
    spec.train = request.config;
    if (!request.corpus.isEmpty()) spec.corpus = request.corpus.toStdString();
    if (!request.router.isEmpty()) set_router_kind(spec.model, request.router.toStdString(), "router");
    const std::string dir = request.runDir.toStdString();
    buildOnDevice([&](std::shared_ptr<Backend> b) { return TrainingRun::start(spec, dir, std::move(b)); });
    const ModelConfig& mc = m_run->spec().model;
    m_topK = mc.top_k;
    emit started(QString::fromStdString(preset.title), request.runDir, mc.num_experts, mc.num_moe_layers(), m_topK, 0);
    m_running = true;
    QTimer::singleShot(0, this, &TrainingWorker::runOne);
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
  }
}

void TrainingWorker::continueRun(const QString& runDir) {
  try {
    m_running = false;
    m_run.reset();
    shareCoresWithTheGui();
    const std::string dir = runDir.toStdString();
    buildOnDevice([&](std::shared_ptr<Backend> b) { return TrainingRun::resume(dir, std::move(b)); });
    const RunSpec& spec = m_run->spec();
    m_topK = spec.model.top_k;
    const QString title = QString::fromStdString(spec.preset.empty() ? spec.model.architecture : spec.preset);
    emit started(title, runDir, spec.model.num_experts, spec.model.num_moe_layers(), m_topK, m_run->steps_done());
    m_running = true;
    QTimer::singleShot(0, this, &TrainingWorker::runOne);
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
  }
}

void TrainingWorker::buildOnDevice(const std::function<std::unique_ptr<TrainingRun>(std::shared_ptr<Backend>)>& make) {
  std::string precisionProblem;
  auto build = [&](std::shared_ptr<Backend> b) {
    // Set before the weights are made, as the command line does; a refusal keeps fp32 and is
    // reported, not taken for the device failing.
    precisionProblem = apply_precision(*b, m_precision);
    return make(std::move(b));
  };
  std::string problem;
  m_run = make_on_device(m_device, build, &problem);
  emit deviceInUse(QString::fromStdString(device_display_name(m_run->model().backend())),
                   QString::fromStdString(problem), QString::fromStdString(precisionProblem));
}

void TrainingWorker::setDevice(const QString& device) { m_device = device.toStdString(); }

void TrainingWorker::setPrecision(Precision precision) { m_precision = precision; }

void TrainingWorker::pause() { m_running = false; }

void TrainingWorker::stepOnce() {
  if (!m_run || m_running) return;
  m_running = true;
  m_stopAfterOne = true;
  runOne();
}

void TrainingWorker::resume() {
  if (!m_run || m_running) return;
  m_running = true;
  QTimer::singleShot(0, this, &TrainingWorker::runOne);
}

void TrainingWorker::stop() {
  m_running = false;
  if (!m_run) return;
  const QString ckpt = checkpointNow();
  emit finished(ckpt.isEmpty() ? tr("Stopped at step %1").arg(m_run->steps_done())
                               : tr("Stopped at step %1; checkpoint saved").arg(m_run->steps_done()));
}

void TrainingWorker::updateConfig(const TrainConfig& config) {
  if (m_run) m_run->set_config(config);
}

QString TrainingWorker::checkpointNow(const QString& fallbackDir) {
  if (!m_run) return {};
  try {
    const QString dir = QString::fromStdString(m_run->checkpoint(fallbackDir.toStdString()));
    if (!dir.isEmpty()) emit checkpointSaved(dir, m_run->steps_done());
    return dir;
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
    return {};
  }
}

void TrainingWorker::saveCheckpoint(const QString& fallbackDir) { checkpointNow(fallbackDir); }

void TrainingWorker::runOne() {
  if (!m_running || !m_run) return;
  if (m_run->done()) {
    m_running = false;
    checkpointNow();
    emit finished(tr("Finished %1 steps").arg(m_run->steps_done()));
    return;
  }
  try {
    const StepRecord r = m_run->step();  // logged, and checkpointed on schedule
    emit stepDone(summaryFromRecord(r, m_run->config().steps, m_topK));
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
