// Runs a lesson step's actions (core/lesson_script.hpp) on the lab's views through their public
// methods, and reads back the metrics its texts and checks quote. Quick actions (view, preset,
// knob, prompt, token, real_model, highlight, compare) take effect at once; long ones (train,
// generate, model) run on the views' workers and are watched by a timer, so the window never
// freezes. One list of actions at a time: run() starts it, progress() reports, done() ends it.
#pragma once

#include <QMap>
#include <QObject>
#include <QPointer>
#include <QString>
#include <vector>

#include "chart_panel.hpp"
#include "lesson_script.hpp"
#include "run_data.hpp"

class ChartPanel;
class MainWindow;
class QTimer;
class QWidget;

class LessonExecutor : public QObject {
  Q_OBJECT
 public:
  explicit LessonExecutor(MainWindow* window, QObject* parent = nullptr);
  ~LessonExecutor() override;

  // Runs the actions in order. replay: the step is entered again (Back, or Next onto a step seen
  // before): a named train action reopens the run it made last time instead of training again.
  void run(const std::vector<moelab::LessonAction>& actions, bool replay);
  void cancel();  // stops a long action in flight (a training run keeps the steps so far)
  bool busy() const { return m_index >= 0; }

  // What the lab shows now (training, tokens, model, the compared published model) and the runs
  // the lesson named.
  moelab::LessonMetrics metrics() const;
  // The checkpoint opened from disk (File ▸ Open Model) before or during the lesson, "" if none.
  QString realModelPath() const;
  void forgetRuns() { m_runs.clear(); }

  void clearHighlight();
  ChartPanel* highlighted() const { return m_highlightPanel; }
  // The chart panel of a chart id, in any view (null if none).
  ChartPanel* chart(const QString& id) const;

 signals:
  void progress(const QString& what, double fraction);  // fraction < 0: busy, amount unknown
  void done(const QString& error);                      // "" when every action ran

 private:
  void next();
  QString quick(const moelab::LessonAction& a);  // "" or the error
  void startLong(const moelab::LessonAction& a);
  void poll();
  void finish(const QString& error);
  void showChart(ChartPanel* panel);

  MainWindow* m_w;
  std::vector<moelab::LessonAction> m_actions;
  int m_index = -1;  // the action running, -1 when idle
  bool m_replay = false;
  QTimer* m_poll = nullptr;
  // The long action in flight.
  enum class Wait { None, Generate, Train, Model } m_wait = Wait::None;
  int m_target = 0;  // tokens to reach, steps to train
  qint64 m_started = 0;
  bool m_trainSeen = false;  // the run has started (isRunning was seen)
  QString m_realModel;
  QMap<QString, RunData> m_runs;  // the lesson's named runs
  QPointer<ChartPanel> m_highlightPanel;
  QPointer<QWidget> m_highlight;
};

// The metrics of a training run (core/lesson_script metric names of source "training"),
// measured over the last kLessonWindow steps as core/lessons.hpp measures them.
moelab::LessonMetrics trainingMetrics(const RunData& run);
