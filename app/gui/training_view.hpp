// The Training view: train a preset live and watch routing collapse or stay balanced — loss
// curves, the collapse heatmap (step × expert load), the current load against the even split,
// and the load's coefficient of variation and dead experts over steps. Balancing can be switched
// while the run goes on.
#pragma once

#include <QThread>
#include <QWidget>

#include "training_worker.hpp"

class ChartPanel;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QPushButton;
class QSpinBox;
class QTabWidget;
class QTimer;
struct Theme;

class TrainingView : public QWidget {
  Q_OBJECT
 public:
  explicit TrainingView(QWidget* parent = nullptr);
  ~TrainingView() override;

  QList<ChartPanel*> charts() const;
  void applyTheme(const Theme& t);
  // The run so far, as the charts draw it.
  const QVector<StepSummaryPtr>& history() const { return m_history; }
  int selectedLayer() const;
  double collapseValue(int stepIndex, int expert) const;  // the heatmap cell
  bool isRunning() const { return m_running; }
  QTabWidget* pages() const { return m_pages; }

 public slots:
  // Start the selected preset (with the knobs' settings), logging into runDir when given.
  void startTraining(const QString& runDir = QString());
  void pauseTraining();
  void resumeTraining();
  void stopTraining();
  void selectPreset(const QString& name);
  void setBalancing(int mode, double coefficient);  // 0 none, 1 auxiliary loss, 2 bias (sigmoid router)

 signals:
  void errorOccurred(const QString& message);
  void trainingFinished(const QString& message);

 private:
  moelab::TrainConfig configFromKnobs() const;
  void redraw();
  void drawLoss();
  void drawCollapse();
  void drawLoadNow();
  void drawBalance();

  QThread m_thread;
  TrainingWorker* m_worker = nullptr;
  QVector<StepSummaryPtr> m_history;
  bool m_dirty = false, m_running = false;
  int64_t m_experts = 0;
  moelab::TrainConfig m_presetConfig;

  QComboBox *m_preset = nullptr, *m_balance = nullptr, *m_layer = nullptr;
  QDoubleSpinBox *m_coef = nullptr, *m_capacity = nullptr, *m_lr = nullptr;
  QSpinBox* m_steps = nullptr;
  QPushButton *m_start = nullptr, *m_pause = nullptr, *m_resume = nullptr, *m_stop = nullptr;
  QLabel *m_status = nullptr, *m_description = nullptr;
  QTimer* m_frame = nullptr;
  QTabWidget* m_pages = nullptr;
  ChartPanel *m_loss = nullptr, *m_collapse = nullptr, *m_loadNow = nullptr, *m_balanceChart = nullptr;
};
