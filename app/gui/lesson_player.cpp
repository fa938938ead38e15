#include "lesson_player.hpp"

#include <QAbstractItemView>
#include <QAbstractSlider>
#include <QAbstractSpinBox>
#include <QApplication>
#include <QButtonGroup>
#include <QComboBox>
#include <QDockWidget>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QKeyEvent>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QMenu>
#include <QMenuBar>
#include <QMouseEvent>
#include <QPainter>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QRadioButton>
#include <QScrollArea>
#include <QScrollBar>
#include <QSettings>
#include <QStackedWidget>
#include <QTabBar>
#include <QTextBrowser>
#include <QTextDocument>
#include <QVBoxLayout>
#include <cmath>

#include "lesson_executor.hpp"
#include "main_window.hpp"
#include "theme.hpp"

namespace {

// One dot per step: filled up to the current one, the current one larger; click one to go there.
class StepDots : public QWidget {
 public:
  explicit StepDots(LessonPlayer* player) : m_player(player) { setMinimumHeight(22); }
  int count = 0, current = -1;

 protected:
  int pitch() const { return count > 0 ? std::min(28, std::max(8, (width() - 8) / count)) : 0; }
  void paintEvent(QPaintEvent*) override {
    QPainter p(this);
    p.setRenderHint(QPainter::Antialiasing);
    const Theme& t = Theme::current();
    const int d = pitch(), r = std::max(3, d / 3);
    for (int i = 0; i < count; ++i) {
      const QPointF c(4 + d * i + d / 2.0, height() / 2.0);
      p.setPen(QPen(t.foreground, 1.5));
      p.setBrush(i <= current ? QBrush(i == current ? QColor(0xD5, 0x5E, 0x00) : t.foreground) : Qt::NoBrush);
      const double rr = i == current ? r * 1.35 : r;
      p.drawEllipse(c, rr, rr);
    }
  }
  void mousePressEvent(QMouseEvent* e) override {
    const int d = pitch();
    if (d <= 0) return;
    const int i = int((e->position().x() - 4) / d);
    if (i >= 0 && i < count) m_player->goTo(i);
  }

 private:
  LessonPlayer* m_player;
};

QString html(const QString& s) { return s.toHtmlEscaped(); }

QString numberText(double v) { return QString::number(v, 'g', 6); }

}  // namespace

LessonPlayer* LessonPlayer::install(MainWindow* w) {
  auto* player = new LessonPlayer(w);
  auto* dock = new QDockWidget(tr("Lesson"), w);
  dock->setObjectName(QStringLiteral("lessonDock"));
  dock->setWidget(player);
  dock->setAllowedAreas(Qt::LeftDockWidgetArea | Qt::RightDockWidgetArea);
  w->addDockWidget(Qt::RightDockWidgetArea, dock);
  dock->hide();
  player->m_dock = dock;
  // File ▸ Open Lesson…, and the Lessons menu of the shipped lessons.
  for (QAction* a : w->menuBar()->actions())
    if (a->menu() && a->text() == tr("&File")) {
      QAction* open = new QAction(tr("Open &Lesson…"), a->menu());
      open->setStatusTip(tr("Open a lesson file (docs/lessons.md) and play it beside the views"));
      QObject::connect(open, &QAction::triggered, player, [player, w] {
        const QString f = QFileDialog::getOpenFileName(w, tr("Open Lesson"), QString::fromStdString(moelab::lessons_dir()),
                                                       tr("Lessons (*.json)"));
        if (!f.isEmpty()) player->openLesson(f);
      });
      const QList<QAction*> acts = a->menu()->actions();
      a->menu()->insertAction(acts.size() > 2 ? acts[2] : nullptr, open);
    }
  QMenu* menu = new QMenu(tr("&Lessons"), w);
  QAction* list = menu->addAction(tr("All Lessons…"), player, &LessonPlayer::showList);
  list->setStatusTip(tr("The list of lessons, in the lesson panel"));
  menu->addSeparator();
  for (const std::string& path : moelab::list_lessons()) {
    QString title = QFileInfo(QString::fromStdString(path)).completeBaseName();
    try {
      title = QString::fromStdString(moelab::load_lesson(path).title);
    } catch (const std::exception&) {
      title += tr(" (malformed)");
    }
    const QString p = QString::fromStdString(path);
    menu->addAction(title, player, [player, p] { player->openLesson(p); });
  }
  QAction* before = nullptr;
  for (QAction* a : w->menuBar()->actions())
    if (a->text() == tr("&Device")) before = a;
  w->menuBar()->insertMenu(before, menu);
  QObject::connect(w, &MainWindow::themeChanged, player, &LessonPlayer::applyTheme);
  qApp->installEventFilter(player);
  return player;
}

LessonPlayer::LessonPlayer(MainWindow* window, QWidget* parent)
    : QWidget(parent), m_w(window), m_exec(new LessonExecutor(window, this)) {
  setObjectName(QStringLiteral("lessonPlayer"));
  auto* outer = new QVBoxLayout(this);
  outer->setContentsMargins(8, 8, 8, 8);
  m_stack = new QStackedWidget;
  outer->addWidget(m_stack);

  // Page 0: the lesson list.
  auto* listPage = new QWidget;
  auto* lv = new QVBoxLayout(listPage);
  lv->setContentsMargins(0, 0, 0, 0);
  m_listTitle = new QLabel(tr("Lessons"));
  m_listError = new QLabel;
  m_listError->setWordWrap(true);
  m_listError->setStyleSheet(QStringLiteral("color: #B00020;"));
  m_listError->hide();
  m_list = new QListWidget;
  m_list->setWordWrap(true);
  m_list->setSpacing(4);
  auto* start = new QPushButton(tr("Start lesson"));
  lv->addWidget(m_listTitle);
  lv->addWidget(m_listError);
  lv->addWidget(m_list, 1);
  lv->addWidget(start);
  auto startSelected = [this] {
    if (QListWidgetItem* it = m_list->currentItem()) openLesson(it->data(Qt::UserRole).toString());
  };
  connect(start, &QPushButton::clicked, this, startSelected);
  connect(m_list, &QListWidget::itemActivated, this, startSelected);
  m_stack->addWidget(listPage);

  // Page 1: a lesson.
  auto* page = new QWidget;
  auto* v = new QVBoxLayout(page);
  v->setContentsMargins(0, 0, 0, 0);
  auto* top = new QHBoxLayout;
  m_lessonTitle = new QLabel;
  m_lessonTitle->setWordWrap(true);
  m_toList = new QPushButton(tr("Lessons"));
  m_toList->setToolTip(tr("Back to the list of lessons"));
  connect(m_toList, &QPushButton::clicked, this, &LessonPlayer::showList);
  top->addWidget(m_lessonTitle, 1);
  top->addWidget(m_toList);
  v->addLayout(top);
  auto* dots = new StepDots(this);
  m_dots = dots;
  v->addWidget(m_dots);
  // The step's title, text and question scroll together (a long step in the presentation theme);
  // the dots above and the buttons below stay in view.
  m_scroll = new QScrollArea;
  m_scroll->setObjectName(QStringLiteral("lessonScroll"));
  m_scroll->setWidgetResizable(true);
  m_scroll->setFrameShape(QFrame::NoFrame);
  m_scroll->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  m_scroll->setFocusPolicy(Qt::NoFocus);
  auto* content = new QWidget;
  auto* cv = new QVBoxLayout(content);
  cv->setContentsMargins(0, 0, 0, 0);
  m_scroll->setWidget(content);
  m_scroll->viewport()->installEventFilter(this);
  v->addWidget(m_scroll, 1);
  m_stepTitle = new QLabel;
  m_stepTitle->setWordWrap(true);
  cv->addWidget(m_stepTitle);
  m_body = new QTextBrowser;  // as tall as its text (fitBody): the scroll area scrolls it
  m_body->setOpenExternalLinks(true);
  m_body->setFrameShape(QFrame::NoFrame);
  m_body->setFocusPolicy(Qt::NoFocus);  // the clicker's keys must reach the player
  m_body->setVerticalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  m_body->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  m_body->setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Fixed);
  cv->addWidget(m_body);
  // The question (predict, then watch).
  m_ask = new QWidget;
  auto* av = new QVBoxLayout(m_ask);
  av->setContentsMargins(0, 0, 0, 0);
  m_question = new QLabel;
  m_question->setWordWrap(true);
  av->addWidget(m_question);
  m_choicesBox = new QVBoxLayout;
  av->addLayout(m_choicesBox);
  m_choices = new QButtonGroup(this);
  m_numberRow = new QWidget;
  auto* nr = new QHBoxLayout(m_numberRow);
  nr->setContentsMargins(0, 0, 0, 0);
  m_number = new QDoubleSpinBox;
  m_number->setRange(-1e12, 1e12);
  m_number->setDecimals(2);
  m_unit = new QLabel;
  nr->addWidget(m_number, 1);
  nr->addWidget(m_unit);
  av->addWidget(m_numberRow);
  m_answerButton = new QPushButton(tr("Answer, then watch"));
  connect(m_answerButton, &QPushButton::clicked, this, [this] {
    if (m_lesson.steps[size_t(m_index)].ask->numeric()) answerNumber(m_number->value());
    else if (m_choices->checkedId() >= 0) answerChoice(m_choices->checkedId());
  });
  av->addWidget(m_answerButton);
  cv->addWidget(m_ask);
  cv->addStretch(1);
  m_progress = new QProgressBar;
  m_progress->setTextVisible(true);
  m_progress->hide();
  v->addWidget(m_progress);
  auto* buttons = new QHBoxLayout;
  m_back = new QPushButton(tr("◂ Back"));
  m_restart = new QPushButton(tr("Restart"));
  m_again = new QPushButton(tr("Run again"));
  m_again->setToolTip(tr("Run this step's actions again (a new training run, new tokens)"));
  m_next = new QPushButton(tr("Next ▸"));
  m_next->setDefault(true);
  for (QPushButton* b : {m_back, m_restart, m_again, m_next}) buttons->addWidget(b);
  v->addLayout(buttons);
  connect(m_back, &QPushButton::clicked, this, &LessonPlayer::back);
  connect(m_next, &QPushButton::clicked, this, &LessonPlayer::next);
  connect(m_restart, &QPushButton::clicked, this, &LessonPlayer::restart);
  connect(m_again, &QPushButton::clicked, this, &LessonPlayer::runAgain);
  m_stack->addWidget(page);

  connect(m_exec, &LessonExecutor::progress, this, [this](const QString& what, double f) {
    m_progress->show();
    m_progress->setRange(0, f < 0 ? 0 : 1000);
    if (f >= 0) m_progress->setValue(int(std::clamp(f, 0.0, 1.0) * 1000));
    m_progress->setFormat(what);
  });
  connect(m_exec, &LessonExecutor::done, this, &LessonPlayer::onDone);
  applyTheme();
}

LessonPlayer::~LessonPlayer() { qApp->removeEventFilter(this); }

void LessonPlayer::showList() {
  m_exec->cancel();
  m_exec->clearHighlight();
  m_list->clear();
  for (const std::string& path : moelab::list_lessons()) {
    auto* it = new QListWidgetItem;
    try {
      const moelab::Lesson l = moelab::load_lesson(path);
      it->setText(tr("%1 (%2 min)\n%3").arg(QString::fromStdString(l.title)).arg(l.minutes).arg(QString::fromStdString(l.summary)));
    } catch (const std::exception& e) {
      it->setText(QString::fromUtf8(e.what()));
    }
    it->setData(Qt::UserRole, QString::fromStdString(path));
    m_list->addItem(it);
  }
  if (m_list->count()) m_list->setCurrentRow(0);
  m_stack->setCurrentIndex(0);
  if (m_dock) {
    m_dock->show();
    m_dock->raise();
  }
}

bool LessonPlayer::showListOnFirstStart() {
  QSettings settings;
  if (settings.value(QLatin1String(kFirstStartKey)).toBool()) return false;
  settings.setValue(QLatin1String(kFirstStartKey), true);
  showList();
  return true;
}

void LessonPlayer::showError(const QString& error) {
  m_error = error;
  m_listError->setText(error);
  m_listError->setVisible(!error.isEmpty());
  if (!error.isEmpty()) m_w->showError(error);
}

QString LessonPlayer::openLesson(const QString& nameOrPath) {
  try {
    openLesson(moelab::load_lesson(nameOrPath.toStdString()));
    return {};
  } catch (const std::exception& e) {
    showList();
    showError(QString::fromUtf8(e.what()));
    return m_error;
  }
}

void LessonPlayer::openLesson(const moelab::Lesson& lesson) {
  m_exec->cancel();
  m_exec->forgetRuns();
  m_lesson = lesson;
  m_ran = QVector<bool>(int(lesson.steps.size()), false);
  m_results = QVector<StepResult>(int(lesson.steps.size()));
  showError({});
  m_lessonTitle->setText(QString::fromStdString(lesson.title));
  static_cast<StepDots*>(m_dots)->count = int(lesson.steps.size());
  m_stack->setCurrentIndex(1);
  if (m_dock) {
    m_dock->show();
    m_dock->raise();
    // About a third of the window, so that the views keep the rest.
    m_w->resizeDocks({m_dock}, {std::max(300, m_w->width() * 27 / 100)}, Qt::Horizontal);
  }
  enter(0, true);
}

void LessonPlayer::next() {
  if (!hasLesson()) return;
  if (m_index + 1 < int(m_lesson.steps.size())) enter(m_index + 1, true);
}

void LessonPlayer::back() {
  if (hasLesson() && m_index > 0) enter(m_index - 1, false);
}

void LessonPlayer::restart() {
  if (!hasLesson()) return;
  m_ran.fill(false);
  m_results = QVector<StepResult>(int(m_lesson.steps.size()));
  m_exec->forgetRuns();
  enter(0, true);
}

void LessonPlayer::goTo(int step) {
  if (hasLesson() && step >= 0 && step < int(m_lesson.steps.size()) && step != m_index) enter(step, step > m_index);
}

void LessonPlayer::runAgain() {
  if (!hasLesson() || m_index < 0) return;
  if (m_results.value(m_index).skipped) {  // waiting for a real model: open now? then run it
    enter(m_index, true);
    return;
  }
  m_exec->cancel();
  m_results[m_index] = StepResult();
  m_answer.clear();
  runActions(false);
}

void LessonPlayer::enter(int step, bool forward) {
  m_exec->cancel();  // Next while an action runs: stop it (a run keeps its steps so far)
  m_exec->clearHighlight();
  m_index = step;
  m_answer.clear();
  const moelab::LessonStep& s = m_lesson.steps[size_t(step)];
  static_cast<StepDots*>(m_dots)->current = step;
  m_dots->update();
  m_stepTitle->setText(tr("%1. %2").arg(step + 1).arg(QString::fromStdString(s.title)));
  if (s.needs_real_model && m_exec->realModelPath().isEmpty()) {
    m_results[step] = StepResult();
    m_results[step].skipped = true;
    m_phase = Phase::Done;
    render();
    emit stepShown(step);
    emit stepFinished(step);
    return;
  }
  if (s.ask && forward && !m_ran[step]) {
    m_phase = Phase::Asking;
    render();
    emit stepShown(step);
    return;
  }
  emit stepShown(step);
  runActions(m_ran[step]);
}

void LessonPlayer::answerChoice(int index) {
  if (m_phase != Phase::Asking) return;
  const moelab::LessonQuestion& q = *m_lesson.steps[size_t(m_index)].ask;
  if (q.numeric() || index < 0 || index >= int(q.choices.size())) return;
  const QString right = QString::fromStdString(q.choices[size_t(q.answer)]);
  m_answer = index == q.answer
                 ? tr("**You said:** %1 — right.").arg(QString::fromStdString(q.choices[size_t(index)]))
                 : tr("**You said:** %1. **The answer:** %2.").arg(QString::fromStdString(q.choices[size_t(index)]), right);
  runActions(false);
}

void LessonPlayer::answerNumber(double value) {
  if (m_phase != Phase::Asking) return;
  const moelab::LessonQuestion& q = *m_lesson.steps[size_t(m_index)].ask;
  if (!q.numeric()) return;
  const QString unit = QString::fromStdString(q.unit);
  const bool right = std::fabs(value - q.number) <= q.tolerance;
  m_answer = right ? tr("**You said:** %1 %2 — right (the answer: %3 %2).").arg(numberText(value), unit, numberText(q.number))
                   : tr("**You said:** %1 %2. **The answer:** %3 %2.").arg(numberText(value), unit, numberText(q.number));
  runActions(false);
}

void LessonPlayer::answerStated() {
  if (m_phase != Phase::Asking) return;
  const moelab::LessonQuestion& q = *m_lesson.steps[size_t(m_index)].ask;
  if (q.numeric()) answerNumber(q.number);
  else answerChoice(q.answer);
}

void LessonPlayer::runActions(bool replay) {
  m_phase = Phase::Running;
  render();
  m_exec->run(m_lesson.steps[size_t(m_index)].actions, replay);
}

void LessonPlayer::onDone(const QString& error) {
  if (m_index < 0 || m_phase != Phase::Running) return;
  const moelab::LessonStep& s = m_lesson.steps[size_t(m_index)];
  StepResult r;
  r.answer = m_answer;
  r.actionError = error;
  const moelab::LessonMetrics metrics = m_exec->metrics();
  try {
    r.then = QString::fromStdString(moelab::format_lesson_text(s.then, metrics));
  } catch (const std::exception& e) {
    r.then = QString::fromUtf8(e.what());
  }
  for (const moelab::LessonCheck& c : s.checks) {
    if (!error.isEmpty()) {
      r.checks << tr("Not checked: an action failed (%1)").arg(QString::fromStdString(moelab::describe_check(c)));
      r.held << false;
      r.judged << false;
      continue;
    }
    try {
      const moelab::CheckResult cr = moelab::evaluate_check(c, metrics);
      r.checks << QString::fromStdString(cr.message);
      r.held << cr.held;
      r.judged << cr.measured;
    } catch (const std::exception& e) {
      r.checks << QString::fromUtf8(e.what());
      r.held << false;
      r.judged << false;
    }
  }
  m_results[m_index] = r;
  m_ran[m_index] = true;
  m_phase = Phase::Done;
  m_progress->hide();
  render();
  emit stepFinished(m_index);
}

QString LessonPlayer::markdown() const {
  if (m_index < 0 || !hasLesson()) return {};
  const moelab::LessonStep& s = m_lesson.steps[size_t(m_index)];
  const moelab::LessonMetrics metrics = m_exec->metrics();
  auto fmt = [&](const std::string& t) {
    try {
      return QString::fromStdString(moelab::format_lesson_text(t, metrics));
    } catch (const std::exception& e) {
      return QString::fromUtf8(e.what());
    }
  };
  QString md = fmt(s.text);
  const StepResult& r = m_results[m_index];
  if (r.skipped) {
    md += QStringLiteral("\n\n---\n\n") + tr("**No model opened from disk.** ") + fmt(s.without_real_model);
    return md;
  }
  if (m_phase == Phase::Running) return md;
  if (m_phase == Phase::Asking) return md;
  QString after;
  if (!r.answer.isEmpty()) {
    after += r.answer;
    if (s.ask && !s.ask->explain.empty()) after += QLatin1Char(' ') + fmt(s.ask->explain);
    after += QStringLiteral("\n\n");
  }
  if (!r.actionError.isEmpty()) after += tr("**The lab could not do this step:** %1\n\n").arg(r.actionError);
  if (!r.then.isEmpty()) after += r.then + QStringLiteral("\n\n");
  for (int i = 0; i < r.checks.size(); ++i)
    after += (r.held[i]                ? tr("✔ **Held:** ")
              : r.judged.value(i, true) ? tr("✘ **Did not hold this time:** ")
                                        : QStringLiteral("✘ ")) +
             r.checks[i] + QStringLiteral("\n\n");
  if (!after.isEmpty()) md += QStringLiteral("\n\n---\n\n") + after;
  return md;
}

QString LessonPlayer::bodyText() const { return m_body->toPlainText(); }

void LessonPlayer::render() {
  if (m_index < 0) return;
  const moelab::LessonStep& s = m_lesson.steps[size_t(m_index)];
  m_body->setMarkdown(markdown());
  fitBody();
  m_scroll->verticalScrollBar()->setValue(0);
  // The question, while it waits for an answer.
  const bool asking = m_phase == Phase::Asking && s.ask;
  m_ask->setVisible(asking);
  if (asking) {
    m_question->setText(QStringLiteral("<b>%1</b>").arg(html(QString::fromStdString(s.ask->question))));
    for (QAbstractButton* b : m_choices->buttons()) {
      m_choices->removeButton(b);
      delete b;
    }
    m_numberRow->setVisible(s.ask->numeric());
    for (size_t i = 0; i < s.ask->choices.size(); ++i) {
      auto* rb = new QRadioButton(QString::fromStdString(s.ask->choices[i]));
      m_choices->addButton(rb, int(i));
      m_choicesBox->addWidget(rb);
    }
    m_unit->setText(QString::fromStdString(s.ask->unit));
    m_number->setValue(0);
  }
  if (m_phase != Phase::Running) m_progress->hide();
  updateButtons();
}

void LessonPlayer::updateButtons() {
  m_back->setEnabled(m_index > 0);
  m_next->setEnabled(m_index + 1 < int(m_lesson.steps.size()));
  m_next->setText(m_phase == Phase::Asking ? tr("Skip ▸") : m_phase == Phase::Running ? tr("Stop, next ▸") : tr("Next ▸"));
  // A step waiting for a real model runs again too: the text says to press it once one is open.
  m_again->setEnabled(m_phase == Phase::Done);
}

void LessonPlayer::applyTheme() {
  const Theme& t = Theme::current();
  const QFont base = QApplication::font();
  QFont body = base;
  body.setPointSizeF(base.pointSizeF() * (t.presentation ? 1.1 : 1.15));
  QFont title = base;
  title.setPointSizeF(base.pointSizeF() * (t.presentation ? 1.35 : 1.45));
  title.setBold(true);
  QFont small = base;
  small.setPointSizeF(base.pointSizeF() * (t.presentation ? 0.95 : 1.0));
  m_body->setFont(body);
  m_body->document()->setDefaultFont(body);
  fitBody();
  m_question->setFont(body);
  m_stepTitle->setFont(title);
  m_listTitle->setFont(title);
  m_lessonTitle->setFont(small);
  m_list->setFont(body);
  m_dots->setMinimumHeight(t.presentation ? 30 : 22);
  if (m_dock) m_dock->setMinimumWidth(t.presentation ? 360 : 280);
  if (m_index >= 0 && hasLesson()) render();
}

void LessonPlayer::fitBody() {
  const int w = m_scroll->viewport()->width();
  if (w <= 0) return;
  QTextDocument* doc = m_body->document();
  doc->setTextWidth(w - 2 * m_body->frameWidth());
  m_body->setFixedHeight(int(std::ceil(doc->size().height())) + 2 * m_body->frameWidth() + 2);
}

bool LessonPlayer::eventFilter(QObject* watched, QEvent* e) {
  if (e->type() == QEvent::Resize && m_scroll && watched == m_scroll->viewport()) {
    fitBody();
    return false;
  }
  if (e->type() != QEvent::KeyPress || !hasLesson() || !m_dock || !m_dock->isVisible() || m_stack->currentIndex() != 1)
    return QWidget::eventFilter(watched, e);
  auto* k = static_cast<QKeyEvent*>(e);
  if (k->modifiers() & (Qt::ControlModifier | Qt::AltModifier | Qt::MetaModifier)) return false;
  const int key = k->key();
  const bool forward = key == Qt::Key_Right || key == Qt::Key_PageDown || key == Qt::Key_Space;
  const bool backward = key == Qt::Key_Left || key == Qt::Key_PageUp;
  if (!forward && !backward) return false;
  // Keys belong to a widget that edits or moves with them: text fields, spin boxes, editable
  // combo boxes, sliders, lists, tab bars; Space to a focused button (it presses it).
  QWidget* f = QApplication::focusWidget();
  if (f && f->window() != m_w->window()) return false;  // a dialog
  if (f && (qobject_cast<QLineEdit*>(f) || qobject_cast<QAbstractSpinBox*>(f) || qobject_cast<QPlainTextEdit*>(f) ||
            (qobject_cast<QTextEdit*>(f) && !static_cast<QTextEdit*>(f)->isReadOnly()) ||
            (qobject_cast<QComboBox*>(f) && static_cast<QComboBox*>(f)->isEditable())))
    return false;
  if (f && (key == Qt::Key_Left || key == Qt::Key_Right) &&
      (qobject_cast<QAbstractSlider*>(f) || qobject_cast<QTabBar*>(f) || qobject_cast<QAbstractItemView*>(f) ||
       qobject_cast<QRadioButton*>(f) || qobject_cast<QComboBox*>(f)))
    return false;
  if (f && key == Qt::Key_Space && qobject_cast<QAbstractButton*>(f)) return false;
  // One press, one step: the event passes the filter once per receiver (the window handle, then
  // the focus widget and its parents); act on its first widget receiver, and keep it.
  if (!watched->isWidgetType()) return false;
  if (forward) next();
  else back();
  return true;
}
