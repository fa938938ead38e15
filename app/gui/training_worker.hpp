// Training off the GUI thread: the worker owns the model, corpus and trainer, runs one step per
// event-loop turn (so pause, stop and live balancing changes are answered between steps), writes
// the run log, and sends the GUI a small immutable summary of every step.
#pragma once

#include <QObject>
#include <QString>
#include <QVector>
#include <memory>

#include "runlog.hpp"
#include "trainer.hpp"

struct StepSummary {
  int64_t step = 0, steps = 0;
  double loss = 0, lmLoss = 0, auxLoss = 0, zLoss = 0, valLoss = NAN, tokensPerS = 0;
  struct Layer {
    int64_t layer = 0;
    QVector<double> load;  // share of choices per expert
    double cv = 0, entropy = 0, maxShare = 0, collapse = 0, droppedRate = 0;
    int64_t dead = 0;
    QVector<float> bias;
  };
  QVector<Layer> layers;
};
using StepSummaryPtr = std::shared_ptr<const StepSummary>;
Q_DECLARE_METATYPE(StepSummaryPtr)
Q_DECLARE_METATYPE(moelab::TrainConfig)

class TrainingWorker : public QObject {
  Q_OBJECT
 public:
  explicit TrainingWorker(QObject* parent = nullptr);
  ~TrainingWorker() override;

 public slots:
  // A preset (name or path), its training settings as edited, and the run folder ("" = none).
  void start(const QString& preset, const moelab::TrainConfig& config, const QString& runDir);
  void pause();
  void resume();
  void stop();
  // Balancing and learning knobs, taking effect at the next step (the live switch).
  void updateConfig(const moelab::TrainConfig& config);

 signals:
  void started(const QString& title, int64_t experts, int64_t moeLayers);
  void stepDone(StepSummaryPtr summary);
  void finished(const QString& message);
  void errorOccurred(const QString& message);

 private:
  void runOne();

  std::unique_ptr<moelab::Model> m_model;
  std::unique_ptr<moelab::Corpus> m_corpus;
  std::unique_ptr<moelab::Trainer> m_trainer;
  std::unique_ptr<moelab::RunLog> m_log;
  bool m_running = false;
};
