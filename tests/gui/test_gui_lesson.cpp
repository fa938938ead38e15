// The lesson player (app/gui/lesson_player.hpp) in the window, offscreen: a presenter's keys move
// the steps (and leave a text field's keys alone); Back and Next re-apply a step's settings after
// the student moved a knob; a malformed lesson file is refused in one line naming the file and
// step; a check that does not hold is reported as not held; questions, a train action with
// `until`, compare, and Next during a running action; every name of the lessons' vocabulary
// (charts, pages, knobs) exists in the views; the knob panels fold away at a projector's 1280 × 800
// while a lesson is open (and come back with one key).
#include <QDockWidget>
#include <QDoubleSpinBox>
#include <QFile>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QPushButton>
#include <QScrollArea>
#include <QScrollBar>
#include <QSettings>
#include <QStackedWidget>
#include <QStandardPaths>
#include <QTextBrowser>
#include <QTextDocument>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QtTest>
#include <qcustomplot.h>

#include "chart_panel.hpp"
#include "compare_view.hpp"
#include "gui_test_util.hpp"
#include "knob_drawer.hpp"
#include "lesson_executor.hpp"
#include "lesson_player.hpp"
#include "model_view.hpp"
#include "training_view.hpp"

namespace {

QString writeLesson(const QTemporaryDir& dir, const QString& name, const QString& steps) {
  const QString path = dir.filePath(name);
  QFile f(path);
  if (!f.open(QIODevice::WriteOnly)) return {};
  // The tests write JSON with single quotes (moc cannot read raw string literals).
  QString json = QStringLiteral("{'format': 1, 'title': 'Test lesson', 'summary': 'For the tests.', 'steps': [%1]}").arg(steps);
  f.write(json.replace(QLatin1Char('\''), QLatin1Char('"')).toUtf8());
  return path;
}

bool waitDone(LessonPlayer* p, int ms = 120000) {
  QElapsedTimer t;
  t.start();
  while (p->phase() != LessonPlayer::Phase::Done && t.elapsed() < ms) QTest::qWait(20);
  return p->phase() == LessonPlayer::Phase::Done;
}

int topKShown(TokensView* t) {
  t->waitForIdle();
  return t->snapshot() ? int(t->snapshot()->topK) : -1;
}

}  // namespace

class TestGuiLesson : public QObject {
  Q_OBJECT
  MainWindow* w = nullptr;
  LessonPlayer* player = nullptr;
  QTemporaryDir dir;

 private slots:
  void initTestCase() {
    w = guitest::labWindow();
    player = w->findChild<LessonPlayer*>();
    QVERIFY(player);
    QVERIFY(dir.isValid());
  }

  void keysMoveStepsButNotInTextFields() {
    const QString path = writeLesson(dir, QStringLiteral("keys.json"), QStringLiteral(""
"      {'title': 'One', 'text': 'a', 'do': [{'action': 'view', 'view': 'model'}]},"
"      {'title': 'Two', 'text': 'b', 'do': [{'action': 'view', 'view': 'tokens'}]},"
"      {'title': 'Three', 'text': 'c', 'do': [{'action': 'view', 'view': 'training'}]}"));
    QCOMPARE(player->openLesson(path), QString());
    QVERIFY(player->dock()->isVisible());
    QVERIFY(waitDone(player));
    QCOMPARE(player->stepIndex(), 0);
    QCOMPARE(w->tabs()->currentWidget(), static_cast<QWidget*>(w->modelView()));
    w->activateWindow();
    w->setFocus();
    QTest::keyClick(w, Qt::Key_Right);
    QVERIFY(waitDone(player));
    QCOMPARE(player->stepIndex(), 1);
    QCOMPARE(w->tabs()->currentWidget(), static_cast<QWidget*>(w->tokensView()));
    QTest::keyClick(w, Qt::Key_PageDown);
    QVERIFY(waitDone(player));
    QCOMPARE(player->stepIndex(), 2);
    QTest::keyClick(w, Qt::Key_PageDown);  // the last step: stays
    QCOMPARE(player->stepIndex(), 2);
    QTest::keyClick(w, Qt::Key_Left);
    QVERIFY(waitDone(player));
    QCOMPARE(player->stepIndex(), 1);
    QTest::keyClick(w, Qt::Key_PageUp);
    QVERIFY(waitDone(player));
    QCOMPARE(player->stepIndex(), 0);
    // In the prompt field the arrows move the cursor, not the lesson.
    QLineEdit* prompt = w->tokensView()->promptEdit();
    w->tabs()->setCurrentWidget(w->tokensView());
    prompt->setFocus();
    QTRY_VERIFY(prompt->hasFocus());
    prompt->setCursorPosition(0);
    QTest::keyClick(prompt, Qt::Key_Right);
    QCOMPARE(prompt->cursorPosition(), 1);
    QTest::keyClick(prompt, Qt::Key_Space);
    QCOMPARE(player->stepIndex(), 0);
    w->setFocus();
  }

  void backAndNextReapplySettings() {
    const QString path = writeLesson(dir, QStringLiteral("knobs.json"), QStringLiteral(""
"      {'title': 'Top-1', 'text': 'a', 'do': [{'action': 'knob', 'name': 'tokens.top_k', 'value': 1}]},"
"      {'title': 'Top-3', 'text': 'b', 'do': [{'action': 'knob', 'name': 'tokens.top_k', 'value': 3}]}"));
    QCOMPARE(player->openLesson(path), QString());
    QVERIFY(waitDone(player));
    QCOMPARE(topKShown(w->tokensView()), 1);
    player->next();
    QVERIFY(waitDone(player));
    QCOMPARE(topKShown(w->tokensView()), 3);
    w->tokensView()->setTopKOverride(5);  // the student turns the knob
    QCOMPARE(topKShown(w->tokensView()), 5);
    player->back();
    QVERIFY(waitDone(player));
    QCOMPARE(topKShown(w->tokensView()), 1);
    w->tokensView()->setTopKOverride(6);
    player->next();
    QVERIFY(waitDone(player));
    QCOMPARE(topKShown(w->tokensView()), 3);
    w->tokensView()->setTopKOverride(0);
    w->tokensView()->waitForIdle();
  }

  void malformedLessonIsRefusedInOneLine() {
    const QString path = writeLesson(dir, QStringLiteral("broken.json"), QStringLiteral(""
"      {'title': 'Fine', 'text': 'a'},"
"      {'title': 'Broken', 'text': 'b', 'do': [{'action': 'knob', 'name': 'tokens.topk', 'value': 2}]}"));
    const QString err = player->openLesson(path);
    QVERIFY2(err.startsWith(path + QStringLiteral(": step 2 \"Broken\": action 1 (knob): unknown knob \"tokens.topk\"")),
             qPrintable(err));
    QVERIFY(!err.contains(QLatin1Char('\n')));
    QCOMPARE(w->lastError(), err);  // shown in the window's error banner too
    QVERIFY(!player->hasLesson() || player->lesson().file != path.toStdString());
  }

  void failingCheckIsReportedAsNotHeld() {
    const QString path = writeLesson(dir, QStringLiteral("checks.json"), QStringLiteral(""
"      {'title': 'Checks', 'text': 'a', 'do': [{'action': 'view', 'view': 'tokens'}],"
"       'then': 'There are {tokens} tokens.',"
"       'check': [{'metric': 'tokens', 'op': '>', 'value': 0},"
"                 {'metric': 'tokens', 'op': '==', 'value': 99999, 'fails': 'Not 99999 but {tokens}.'}]}"));
    QCOMPARE(player->openLesson(path), QString());
    QVERIFY(waitDone(player));
    const LessonPlayer::StepResult r = player->result(0);
    QCOMPARE(r.held.size(), 2);
    QVERIFY(r.held[0]);
    QVERIFY(!r.held[1]);
    const int tokens = w->tokensView()->snapshot()->count();
    QCOMPARE(r.checks[1], QStringLiteral("Not 99999 but %1.").arg(tokens));
    QCOMPARE(r.then, QStringLiteral("There are %1 tokens.").arg(tokens));
    const QString shown = player->bodyText();
    QVERIFY2(shown.contains(QStringLiteral("Did not hold this time: Not 99999 but %1.").arg(tokens)), qPrintable(shown));
    // A check without holds/fails texts: the verdict once, then the check and the value measured.
    QCOMPARE(r.checks[0], QStringLiteral("tokens > 0 (measured %1)").arg(tokens));
    QVERIFY2(shown.contains(QStringLiteral("✔ Held: tokens > 0 (measured %1)").arg(tokens)), qPrintable(shown));
    QVERIFY2(!shown.contains(QStringLiteral("Held: Held")), qPrintable(shown));
    QVERIFY(!shown.contains(QStringLiteral("hold this time: Did not hold")));
  }

  void questionTrainUntilAndCompare() {
    const QString path = writeLesson(dir, QStringLiteral("train.json"), QStringLiteral(""
"      {'title': 'Predict', 'text': 'a',"
"       'ask': {'question': 'Q?', 'choices': ['x', 'y'], 'answer': 1, 'explain': 'Because.'},"
"       'do': [{'action': 'preset', 'name': 'lesson-collapse', 'into': 'training'},"
"              {'action': 'train', 'steps': 400, 'name': 'short', 'until': {'metric': 'step', 'op': '>=', 'value': 8}},"
"              {'action': 'compare', 'runs': ['short']},"
"              {'action': 'highlight', 'chart': 'compare-loss', 'text': '{run.short.step} steps'}],"
"       'then': 'Stopped at {run.short.step}.',"
"       'check': {'metric': 'run.short.step', 'op': '<', 'value': 400}}"));
    QCOMPARE(player->openLesson(path), QString());
    QCOMPARE(player->phase(), LessonPlayer::Phase::Asking);  // nothing runs before the answer
    QVERIFY(!w->trainingView()->isRunning());
    player->answerChoice(0);  // wrong
    QVERIFY(waitDone(player));
    const LessonPlayer::StepResult r = player->result(0);
    QVERIFY2(r.actionError.isEmpty(), qPrintable(r.actionError));
    QVERIFY(r.answer.contains(QStringLiteral("The answer:** y")));
    QVERIFY(r.held.value(0));
    const qsizetype steps = w->trainingView()->history().size();
    QVERIFY2(steps >= 8 && steps < 400, qPrintable(QString::number(steps)));
    QCOMPARE(w->compareView()->runs().size(), 1);
    QCOMPARE(w->tabs()->currentWidget(), static_cast<QWidget*>(w->compareView()));
    ChartPanel* lit = player->executor()->chart(QStringLiteral("compare-loss"));
    QVERIFY(player->executor()->highlighted() == lit);
    QCOMPARE(r.then, QStringLiteral("Stopped at %1.").arg(steps));
    // The call-out is a row of its own between the title and the chart: it covers no text.
    auto* callout = lit->findChild<QLabel*>(QStringLiteral("lessonHighlightCallout"));
    QVERIFY(callout);
    QCOMPARE(callout->text(), QStringLiteral("%1 steps").arg(steps));
    QTRY_VERIFY(callout->isVisible() && callout->height() > 0);
    for (QWidget* other : lit->findChildren<QWidget*>(Qt::FindDirectChildrenOnly)) {
      if (other == callout || !other->isVisible() || other->testAttribute(Qt::WA_TransparentForMouseEvents)) continue;
      QVERIFY2(!other->geometry().intersects(callout->geometry()), qPrintable(other->metaObject()->className()));
    }
    QVERIFY(lit->plot()->geometry().top() >= callout->geometry().bottom());
    player->executor()->clearHighlight();
    QVERIFY(!lit->findChild<QLabel*>(QStringLiteral("lessonHighlightCallout")));
  }

  void nextDuringATrainingRunStopsItAndMovesOn() {
    const QString path = writeLesson(dir, QStringLiteral("long.json"), QStringLiteral(""
"      {'title': 'Long', 'text': 'a', 'do': [{'action': 'preset', 'name': 'lesson-collapse', 'into': 'training'},"
"                                            {'action': 'train', 'steps': 5000}]},"
"      {'title': 'After', 'text': 'b', 'do': [{'action': 'view', 'view': 'model'}]}"));
    QCOMPARE(player->openLesson(path), QString());
    QTRY_VERIFY_WITH_TIMEOUT(w->trainingView()->isRunning(), 10000);
    QCOMPARE(player->phase(), LessonPlayer::Phase::Running);
    player->next();
    QVERIFY(waitDone(player));
    QCOMPARE(player->stepIndex(), 1);
    QTRY_VERIFY_WITH_TIMEOUT(!w->trainingView()->isRunning(), 10000);
    QVERIFY(w->trainingView()->history().size() < 5000);
  }

  // Every chart, page and knob the format names exists in the views and can be set.
  void theVocabularyExistsInTheViews() {
    LessonExecutor* ex = player->executor();
    for (const moelab::ChartSpec& c : moelab::lesson_charts()) {
      ChartPanel* panel = ex->chart(QString::fromStdString(c.id));
      QVERIFY2(panel, c.id.c_str());
    }
    std::string steps;
    for (const moelab::ViewSpec& v : moelab::lesson_views())
      for (const std::string& page : v.pages)
        steps += std::string(steps.empty() ? "" : ",") + "{'action': 'view', 'view': '" + v.name + "', 'page': '" + page + "\"}";
    for (const moelab::KnobSpec& k : moelab::lesson_knobs()) {
      const double x = std::max(k.lo, std::min(k.hi, 1.0));
      std::string value = k.type == moelab::KnobType::Choice ? "\"" + k.choices.back() + "\""
                          : k.type == moelab::KnobType::Text ? "\"\""
                          : k.type == moelab::KnobType::Int  ? std::to_string(int(x))
                                                             : std::to_string(x);
      if (k.name == "model.dense_layers") value = "\"\"";
      steps += ",{'action': 'knob', 'name': '" + k.name + "', 'value': " + value + "}";
    }
    const QString path = writeLesson(dir, QStringLiteral("vocab.json"),
                                     QStringLiteral("{'title': 'All', 'text': 'a', 'do': [%1]}").arg(QString::fromStdString(steps)));
    QCOMPARE(player->openLesson(path), QString());
    QVERIFY(waitDone(player));
    QVERIFY2(player->result(0).actionError.isEmpty(), qPrintable(player->result(0).actionError));
  }

  void aLongStepScrollsWithTheButtonsInView() {
    QString longText;
    for (int i = 0; i < 60; ++i) longText += QStringLiteral("A long paragraph of the lesson, line %1. ").arg(i);
    const QString path = writeLesson(dir, QStringLiteral("long-text.json"),
                                     QStringLiteral("{'title': 'Long', 'text': '%1', 'do': [{'action': 'view', 'view': 'model'}]},"
                                                    "{'title': 'Two', 'text': 'b', 'do': []}").arg(longText));
    w->setPresentation(true);
    w->resize(1280, 800);
    QCOMPARE(player->openLesson(path), QString());
    QVERIFY(waitDone(player));
    QApplication::processEvents();
    auto* scroll = player->findChild<QScrollArea*>(QStringLiteral("lessonScroll"));
    QVERIFY(scroll);
    QVERIFY2(scroll->verticalScrollBar()->maximum() > 0, "the long text scrolls");
    QCOMPARE(scroll->verticalScrollBar()->value(), 0);  // from its top
    // The whole text is laid out (nothing cut at the body's own edge), and Next stays in view.
    auto* body = player->findChild<QTextBrowser*>();
    QVERIFY(body->height() >= int(body->document()->size().height()));
    QPushButton* next = nullptr;
    for (QPushButton* b : player->findChildren<QPushButton*>())
      if (b->text().contains(QStringLiteral("Next"))) next = b;
    QVERIFY(next && next->isVisible());
    const QRect nextInPlayer(next->mapTo(player, QPoint(0, 0)), next->size());
    QVERIFY2(player->rect().contains(nextInPlayer), "Next is inside the panel");
    QVERIFY(!scroll->geometry().intersects(QRect(next->mapTo(scroll->parentWidget(), QPoint(0, 0)), next->size())));
    w->setPresentation(false);
  }

  void knobsFoldWhenTheLessonCrampsTheCharts() {
    auto* drawers = w->findChild<KnobDrawers*>();
    QVERIFY(drawers);
    auto allOpen = [&](bool open) {
      for (KnobDrawer* k : drawers->drawers())
        if (k->isOpen() != open || k->content()->isVisibleTo(k) != open) return false;
      return true;
    };
    // The Tokens view's visible chart page does not scroll sideways (its heading and legend fit).
    auto noSidewaysScroll = [&] {
      for (ChartPage* p : w->tokensView()->findChildren<ChartPage*>())
        if (p->isVisible() && p->horizontalScrollBar()->maximum() > 0) return false;
      return true;
    };
    const QString path = writeLesson(dir, QStringLiteral("room.json"), QStringLiteral(""
"      {'title': 'Heatmap', 'text': 'a', 'do': [{'action': 'view', 'view': 'tokens'}]}"));
    player->dock()->close();
    w->setPresentation(true);
    w->resize(1280, 800);
    QTRY_VERIFY(allOpen(true));  // no lesson: the knobs stay
    QCOMPARE(player->openLesson(path), QString());
    QVERIFY(waitDone(player));
    QTRY_VERIFY(allOpen(false));
    QVERIFY(drawers->drawers()[1]->width() <= drawers->drawers()[1]->tab()->sizeHint().width());
    QTRY_VERIFY(noSidewaysScroll());
    // A lesson's settings reach the folded knobs.
    w->tokensView()->setCapacityFactor(1.25);
    auto* capacity = w->tokensView()->findChild<QDoubleSpinBox*>(QStringLiteral("capacity"));
    QVERIFY(capacity && !capacity->isVisible());
    QCOMPARE(capacity->value(), 1.25);
    w->tokensView()->setCapacityFactor(0);
    // One key brings them back, and the person's choice stands while the situation is the same.
    drawers->action()->trigger();
    QTRY_VERIFY(allOpen(true));
    w->resize(1290, 800);
    QTest::qWait(50);
    QVERIFY(allOpen(true));
    drawers->action()->trigger();
    QTRY_VERIFY(allOpen(false));
    // The tab itself unfolds them.
    QTest::mouseClick(drawers->drawers()[1]->tab(), Qt::LeftButton);
    QTRY_VERIFY(allOpen(true));
    drawers->action()->trigger();
    QTRY_VERIFY(allOpen(false));
    // Room again (a wide screen): folded by the person, so they stay folded …
    w->resize(1920, 1080);
    QTest::qWait(50);
    QVERIFY(allOpen(false));
    drawers->action()->trigger();
    // … and at 1920 × 1080 nothing folds them.
    w->resize(1280, 800);
    QTRY_VERIFY(allOpen(false));  // cramped again: folded automatically
    w->resize(1920, 1080);
    QTRY_VERIFY(allOpen(true));   // folded by the lab, so unfolded by it
    // Closing the lesson gives the room back.
    w->resize(1280, 800);
    QTRY_VERIFY(allOpen(false));
    player->dock()->close();
    QTRY_VERIFY(allOpen(true));
    // The normal theme: at 1920 × 1080 the charts have room beside the lesson, at 1280 × 800 not
    // (the Why table's numbers would wrap).
    w->setPresentation(false);
    w->resize(1920, 1080);
    QCOMPARE(player->openLesson(path), QString());
    QVERIFY(waitDone(player));
    QTest::qWait(50);
    QVERIFY(allOpen(true));
    w->resize(1280, 800);
    QTRY_VERIFY(allOpen(false));
    player->dock()->close();
    QTRY_VERIFY(allOpen(true));
  }

  void theVeryFirstStartShowsTheLessonList() {
    QStandardPaths::setTestModeEnabled(true);  // QSettings under ~/.qttest, not the user's
    QSettings().remove(QLatin1String(LessonPlayer::kFirstStartKey));
    QCOMPARE(player->openLesson(dir.filePath(QStringLiteral("long-text.json"))), QString());
    QVERIFY(player->showListOnFirstStart());
    auto* stack = player->findChild<QStackedWidget*>();
    QCOMPARE(stack->currentIndex(), 0);  // the list
    QVERIFY(player->dock()->isVisible());
    QVERIFY(player->findChild<QListWidget*>()->count() >= 12);
    QVERIFY(QSettings().value(QLatin1String(LessonPlayer::kFirstStartKey)).toBool());
    // The next start does not.
    QCOMPARE(player->openLesson(dir.filePath(QStringLiteral("long-text.json"))), QString());
    QVERIFY(!player->showListOnFirstStart());
    QCOMPARE(stack->currentIndex(), 1);
    QSettings().remove(QLatin1String(LessonPlayer::kFirstStartKey));
  }

  void cleanupTestCase() { delete w; }
};

QTEST_MAIN(TestGuiLesson)
#include "test_gui_lesson.moc"
