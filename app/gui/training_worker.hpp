// Training off the GUI thread: the worker owns the model, corpus and trainer, runs one step per
// event-loop turn (so pause, stop and live balancing changes are answered between steps), writes
// the run log (append-only, flushed per step) and checkpoints, and sends the GUI a small
// immutable summary of every step (run_data.hpp).
#pragma once

#include <QObject>
#include <QString>

#include <functional>
#include <memory>

#include "run_data.hpp"
#include "trainer.hpp"
#include "training_run.hpp"

Q_DECLARE_METATYPE(StepSummaryPtr)
Q_DECLARE_METATYPE(moelab::TrainConfig)

// What to train: a preset (name or path) with its settings as edited, optionally another corpus
// ("builtin:domains" or a text file) and router ("softmax", "noisy", "sigmoid"), and the run
// folder to log into ("" = no log).
struct TrainingRequest {
  QString preset, corpus, router, runDir;
  moelab::TrainConfig config;
};

class TrainingWorker : public QObject {
  Q_OBJECT
 public:
  explicit TrainingWorker(QObject* parent = nullptr);
  ~TrainingWorker() override;

 public slots:
  void start(const TrainingRequest& request);
  // One step, then paused (the Step button).
  void stepOnce();
  // Continue a logged run from its newest checkpoint (the log is cut back to that step).
  void continueRun(const QString& runDir);
  void pause();
  void resume();
  void stop();
  // Balancing and learning knobs, taking effect at the next step (the live switch).
  void updateConfig(const moelab::TrainConfig& config);
  // Save a checkpoint of the current step into the run folder (or `fallbackDir` when the run is
  // not logged); answers with checkpointSaved.
  void saveCheckpoint(const QString& fallbackDir);
  // "cpu" or "cuda" for the runs started (or continued) from now on; a run going on keeps its own.
  void setDevice(const QString& device);
  // The precision of matrix products for the runs started (or continued) from now on; likewise.
  void setPrecision(moelab::Precision precision);

 signals:
  void started(const QString& title, const QString& runDir, int64_t experts, int64_t moeLayers, int64_t topK,
               int64_t stepsDone);
  void stepDone(StepSummaryPtr summary);
  void finished(const QString& message);
  void checkpointSaved(const QString& dir, int64_t step);
  void errorOccurred(const QString& message);
  // Before started: where the run trains ("... · bf16" when not in fp32) and, when the device set
  // failed and the CPU was used instead or the backend refused the precision set and fp32 was
  // used instead, why in one line each ("" otherwise).
  void deviceInUse(const QString& name, const QString& deviceProblem, const QString& precisionProblem);

 private:
  void runOne();
  // The run on the device set (the CPU when that fails), made by `make` (TrainingRun::start or
  // resume); says where with deviceInUse.
  void buildOnDevice(const std::function<std::unique_ptr<moelab::TrainingRun>(std::shared_ptr<moelab::Backend>)>& make);
  QString checkpointNow(const QString& fallbackDir = QString());

  std::unique_ptr<moelab::TrainingRun> m_run;
  int64_t m_topK = 0;
  std::string m_device = "cpu";
  moelab::Precision m_precision = moelab::Precision::FP32;
  bool m_running = false, m_stopAfterOne = false;
};
