// The lesson player: a panel docked beside the views that walks a class through a lesson file
// (docs/lessons.md). Each step shows its text, may ask a question first (predict, then watch),
// runs its actions on the lab (LessonExecutor), then shows the closing text with live numbers,
// the answer next to what happened, and each check's result — saying plainly when one did not
// hold this time. Next / Back / Restart, step dots, and a presenter's clicker keys (Right,
// PageDown, Space / Left, PageUp; not while a text field has the focus). Without a lesson it shows
// the list of shipped lessons.
#pragma once

#include <QStringList>
#include <QVector>
#include <QWidget>

#include "lesson_script.hpp"

class LessonExecutor;
class MainWindow;
class QButtonGroup;
class QDockWidget;
class QDoubleSpinBox;
class QLabel;
class QListWidget;
class QProgressBar;
class QPushButton;
class QScrollArea;
class QStackedWidget;
class QTextBrowser;
class QVBoxLayout;

class LessonPlayer : public QWidget {
  Q_OBJECT
 public:
  // Adds the Lessons menu, File ▸ Open Lesson… and the (hidden) dock to the window.
  static LessonPlayer* install(MainWindow* window);
  explicit LessonPlayer(MainWindow* window, QWidget* parent = nullptr);
  ~LessonPlayer() override;

  QDockWidget* dock() const { return m_dock; }
  LessonExecutor* executor() const { return m_exec; }
  // "" when it opened, else the one-line error (also shown in the panel).
  QString openLesson(const QString& nameOrPath);
  void openLesson(const moelab::Lesson& lesson);
  void showList();  // the lesson list, in the dock
  bool hasLesson() const { return !m_lesson.steps.empty(); }
  const moelab::Lesson& lesson() const { return m_lesson; }
  int stepIndex() const { return m_index; }
  enum class Phase { Asking, Running, Done };
  Phase phase() const { return m_phase; }
  bool busy() const { return m_phase == Phase::Running; }
  QString errorText() const { return m_error; }

  // What a step showed once it ran (for the headless handout and tests).
  struct StepResult {
    QString answer;         // "You said …; the answer is …", "" without a question
    QString then;           // the closing text, formatted
    QStringList checks;     // one line per check
    QVector<bool> held;     // per check
    QVector<bool> judged;   // per check: false when it could not be judged (not measured, an action
                            // failed): its line says why, without "Did not hold this time:"
    QString actionError;    // the first action that failed, "" if none
    bool skipped = false;   // needs a real model and none is open
  };
  StepResult result(int step) const { return m_results.value(step); }
  QString bodyText() const;  // the panel's text as shown (plain)
  QString markdown() const;  // the same, as the markdown it is made from

  // The lab's very first start (QSettings "lessons/firstStartDone" not set): shows the list of
  // lessons in the panel and sets the flag; true when it did. main() calls it when no --lesson is
  // given, so a teacher's `moelab --lesson NAME` opens on that lesson instead.
  static constexpr const char* kFirstStartKey = "lessons/firstStartDone";
  bool showListOnFirstStart();

 public slots:
  void next();
  void back();
  void restart();
  void goTo(int step);
  void runAgain();
  // Answers the question shown: a choice index, or a number; then the actions run.
  void answerChoice(int index);
  void answerNumber(double value);
  void answerStated();  // with the lesson's own answer (headless play)
  void applyTheme();

 signals:
  void stepShown(int step);
  void stepFinished(int step);

 protected:
  bool eventFilter(QObject* watched, QEvent* e) override;
  void fitBody();  // the text's height for the scroll area's width

 private:
  void enter(int step, bool forward);
  void runActions(bool replay);
  void onDone(const QString& error);
  void render();
  void updateButtons();
  void showError(const QString& error);

  MainWindow* m_w;
  LessonExecutor* m_exec;
  QDockWidget* m_dock = nullptr;
  moelab::Lesson m_lesson;
  int m_index = -1;
  Phase m_phase = Phase::Done;
  QVector<bool> m_ran;  // per step: its actions have run once
  QVector<StepResult> m_results;
  QString m_answer;     // this visit's answer text
  QString m_error;

  QStackedWidget* m_stack = nullptr;
  QListWidget* m_list = nullptr;
  QLabel* m_listTitle = nullptr;
  QLabel* m_listError = nullptr;
  QLabel* m_lessonTitle = nullptr;
  QWidget* m_dots = nullptr;
  QLabel* m_stepTitle = nullptr;
  QTextBrowser* m_body = nullptr;
  QScrollArea* m_scroll = nullptr;  // the step's title, text and question
  QWidget* m_ask = nullptr;
  QLabel* m_question = nullptr;
  QVBoxLayout* m_choicesBox = nullptr;
  QButtonGroup* m_choices = nullptr;
  QWidget* m_numberRow = nullptr;
  QDoubleSpinBox* m_number = nullptr;
  QLabel* m_unit = nullptr;
  QPushButton* m_answerButton = nullptr;
  QProgressBar* m_progress = nullptr;
  QPushButton *m_back = nullptr, *m_next = nullptr, *m_restart = nullptr, *m_again = nullptr, *m_toList = nullptr;
};
