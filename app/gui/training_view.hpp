// The Training view: train a preset live and watch routing collapse or stay balanced, or open a
// finished run and replay it. Four pages of charts (run_charts.hpp): the collapse view with the
// load now and the loss; unevenness over time (CV, dead experts, entropy, dropped tokens); the
// router (selection bias, saturation); specialisation and drops by position. Balancing can be
// switched while the run goes on. Every live run logs into a run folder, so it can be replayed,
// compared, continued after a crash, and opened in the Tokens view.
#pragma once

#include <QJsonObject>
#include <QThread>
#include <QWidget>

#include "run_data.hpp"
#include "training_worker.hpp"

class ChartPage;
class ChartPanel;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QPushButton;
class QScrollArea;
class QSlider;
class QSpinBox;
class QTabWidget;
class QTimer;
struct Theme;

class KnobDrawer;

class TrainingView : public QWidget {
  Q_OBJECT
 public:
  explicit TrainingView(QWidget* parent = nullptr);
  KnobDrawer* knobDrawer() const { return m_drawer; }  // the knob panel (knob_drawer.hpp)
  ~TrainingView() override;

  QList<ChartPanel*> charts() const;
  void applyTheme(const Theme& t);
  void redrawAll() { redraw(true); }  // every page, e.g. before exporting hidden ones
  // The run shown (live or replayed), as the charts draw it.
  const RunData& run() const { return m_run; }
  const RunHistory& history() const { return m_run.history; }
  int shownSteps() const;  // how many of the run's steps the charts show (replay scrubs this)
  int selectedLayer() const;
  double collapseValue(int stepIndex, int expert) const;  // the heatmap cell
  bool isRunning() const { return m_running; }
  bool isReplaying() const;
  QTabWidget* pages() const { return m_pages; }
  int framesDrawn() const { return m_frames; }
  // Where runs started from the window are logged (one folder per run).
  static QString runsFolder();

  // "cpu" or "cuda" for the runs started or continued from now on (a run going on keeps its own).
  void setDevice(const QString& device);
  // The precision of matrix products for those runs; likewise.
  void setPrecision(moelab::Precision precision);

  // Settings and the shown run, for lab sessions.
  QJsonObject state() const;
  void restoreState(const QJsonObject& s);

 public slots:
  // Start the selected preset (with the knobs' settings), logging into runDir (default: a new
  // folder under runsFolder()).
  void startTraining(const QString& runDir = QString());
  void pauseTraining();
  void resumeTraining();
  void stepTraining();
  void stopTraining();
  // Open a finished (or crashed) run from its folder and show it, ready to replay.
  bool openRun(const QString& dir);
  // Continue the shown run from its newest checkpoint.
  void continueRun();
  void selectPreset(const QString& name);
  void setBalancing(int mode, double coefficient);  // 0 none, 1 auxiliary loss, 2 bias (sigmoid router)
  void setSteps(int steps);
  // The other knobs, for lessons: router 0 the preset's, 1 softmax, 2 noisy, 3 sigmoid.
  void setBalancingMode(int mode);
  void setBalancingCoefficient(double coefficient);
  void setRouterChoice(int index);
  void setCapacityFactor(double factor);
  void setOverflowReroute(bool reroute);
  void setLearningRate(double lr);
  void setZLoss(double coefficient);
  void selectLayer(int index);
  void setShownSteps(int n);                        // replay position (n steps shown)
  void playReplay(bool on);
  void setReplaySpeed(int stepsPerSecond);
  // Save a checkpoint of the live run (or use the replayed run's nearest one) and ask for it to
  // be opened in the Tokens view.
  void openInTokens();

 signals:
  void errorOccurred(const QString& message);
  void trainingFinished(const QString& message);
  void runChanged();                            // a run started, finished, or was opened
  void openModelRequested(const QString& dir);  // open this checkpoint in the Tokens view
  // TrainingWorker::deviceInUse
  void deviceInUse(const QString& name, const QString& deviceProblem, const QString& precisionProblem);

 private:
  moelab::TrainConfig configFromKnobs() const;
  void redraw(bool all = false);
  void updateReplayBar();
  void setupCharts();
  ChartPanel* chart(const QString& id) const;

  QThread m_thread;
  TrainingWorker* m_worker = nullptr;
  RunData m_run;
  int m_shown = -1;  // -1 = follow the end of the run
  bool m_dirty = false, m_running = false, m_openWhenSaved = false;
  int m_frames = 0;
  moelab::TrainConfig m_presetConfig;
  QString m_corpusFile;
  QString m_deviceName;  // where the live run trains

  QComboBox *m_preset = nullptr, *m_balance = nullptr, *m_layer = nullptr, *m_router = nullptr,
            *m_corpus = nullptr, *m_overflow = nullptr, *m_speed = nullptr;
  QDoubleSpinBox *m_coef = nullptr, *m_capacity = nullptr, *m_lr = nullptr, *m_z = nullptr;
  QSpinBox* m_steps = nullptr;
  QPushButton *m_start = nullptr, *m_pause = nullptr, *m_resume = nullptr, *m_step = nullptr, *m_stop = nullptr,
              *m_openRun = nullptr, *m_continue = nullptr, *m_toTokens = nullptr, *m_play = nullptr;
  QSlider* m_scrub = nullptr;
  QLabel *m_status = nullptr, *m_description = nullptr, *m_position = nullptr;
  QTimer *m_frame = nullptr, *m_replay = nullptr;
  QTabWidget* m_pages = nullptr;
  QList<ChartPage*> m_chartPages;
  QScrollArea* m_scroll = nullptr;
  QVector<ChartPanel*> m_charts;  // one per RunCharts::runCharts(), in its order
  QVector<int> m_chartPage;       // the page each is on
  KnobDrawer* m_drawer = nullptr;
};
