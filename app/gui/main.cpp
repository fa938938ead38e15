// moelab: the lab window. `moelab [MODEL]` opens a model folder or config.json (default: the
// built-in model); `moelab --screenshot DIR` renders every view to PNG, headless, and exits;
// `moelab export --run DIR --out DIR` writes a run's charts without a window (export_run.hpp);
// `moelab lesson NAME --out DIR` plays a lesson headless (lesson_headless.hpp); `--lesson NAME`
// opens the window on a lesson (without it, the very first start opens on the list of lessons);
// `moelab --bench-frames` measures the Training view's frame rate and event-loop latency while
// training a 4-layer, 16-expert model at full speed.
#include <QApplication>
#include <QCommandLineParser>
#include <QSettings>
#include <QStyleFactory>
#include <QTimer>
#include <cstdio>
#include <cstring>
#include <qcustomplot.h>

#include "chart_panel.hpp"
#include "demo_models.hpp"
#include <QDir>
#include <QTemporaryDir>

#include "export_run.hpp"
#include "lesson_headless.hpp"
#include "lesson_player.hpp"
#include "compare_view.hpp"
#include "main_window.hpp"
#include "tokens_view.hpp"
#include "training_view.hpp"
#include "version.hpp"

#include <QElapsedTimer>

namespace {

// Frames drawn per second and the worst event-loop gap while training at full speed, against the
// targets (20 frames/s, 50 ms); then the cost of one full redraw, i.e. the frame rate the drawing
// alone would allow.
int benchFrames(MainWindow& w, int seconds) {
  w.resize(1280, 800);
  w.show();
  w.tabs()->setCurrentWidget(w.trainingView());
  TrainingView* tv = w.trainingView();
  tv->selectPreset(QStringLiteral("moe-16x-top2"));
  tv->startTraining();
  QElapsedTimer clock;
  clock.start();
  // Wait in the event loop (blocking when idle, as the real window does), not in a spin.
  auto runFor = [](int ms) {
    QEventLoop loop;
    QTimer::singleShot(ms, &loop, &QEventLoop::quit);
    loop.exec();
  };
  while (tv->history().size() < 5 && clock.elapsed() < 30000) runFor(50);
  const int frames0 = tv->framesDrawn();
  const qsizetype steps0 = tv->history().size();
  qint64 worst = 0, last = 0;
  QElapsedTimer window;
  window.start();
  QTimer tick;
  tick.setInterval(5);
  QObject::connect(&tick, &QTimer::timeout, [&] {
    const qint64 now = window.elapsed();
    worst = std::max(worst, now - last);
    last = now;
  });
  tick.start();
  runFor(seconds * 1000);
  tick.stop();
  const double secs = window.elapsed() / 1000.0;
  const double fps = (tv->framesDrawn() - frames0) / secs;
  const double stepsPerS = double(tv->history().size() - steps0) / secs;
  tv->pauseTraining();
  QElapsedTimer redraw;
  redraw.start();
  const int n = 10;
  for (int i = 0; i < n; ++i) {
    tv->redrawAll();
    for (ChartPanel* c : tv->charts())
      if (c->plot()) c->plot()->replot(QCustomPlot::rpImmediateRefresh);
  }
  const double ms = redraw.elapsed() / double(n);
  std::printf("training view, 4 MoE layers x 16 experts, %lld steps shown, %.1f s at full speed (%.1f steps/s)\n",
              static_cast<long long>(tv->history().size()), secs, stepsPerS);
  std::printf("frames drawn          %6.1f /s   target >= 20   ratio %.2f\n", fps, fps / 20.0);
  std::printf("worst event-loop gap  %6lld ms   target <= 50   ratio %.2f\n", static_cast<long long>(worst), 50.0 / std::max<qint64>(1, worst));
  std::printf("full redraw (10 charts) %5.1f ms  -> at most %.0f frames/s from drawing alone\n", ms, 1000.0 / std::max(0.1, ms));
  return 0;
}

// The routing views on real routing shapes (demo_models.hpp): per shape the Model view and both
// Tokens pages (one layer; the why panel) and the layers × experts overview, in both themes.
int shapeScreenshots(MainWindow& w, const QString& dir) {
  w.resize(1280, 800);
  w.show();
  TokensView* t = w.tokensView();
  t->waitForIdle();
  QTemporaryDir models;
  for (const DemoModels::Shape& shape : DemoModels::shapes()) {
    const QString folder = models.filePath(shape.id);
    if (const QString err = DemoModels::write(shape, folder); !err.isEmpty()) {
      std::fprintf(stderr, "moelab: %s\n", qPrintable(err));
      return 1;
    }
    w.openModel(folder);
    t->waitForIdle(120000);
    t->setPrompt(QStringLiteral("the quiet river "));
    t->waitForIdle(120000);
    for (int i = 0; i < 16; ++i) t->stepOnce();
    t->waitForIdle(120000);
    t->selectLayer(int(t->snapshot()->layers.size()) / 2);  // a layer in the middle
    QString err = w.saveScreenshots(dir, QSize(1280, 800), shape.id);
    // The overview: every layer's expert load, layers × experts.
    t->selectLayer(-1);
    w.tabs()->setCurrentWidget(t);
    t->pages()->setCurrentIndex(0);
    for (bool pres : {false, true}) {
      if (!err.isEmpty()) break;
      w.setPresentation(pres);
      QApplication::processEvents();
      for (ChartPanel* c : t->charts())
        if (c->plot()) c->plot()->replot(QCustomPlot::rpImmediateRefresh);
      QApplication::processEvents();
      const QString file = QDir(dir).filePath(QStringLiteral("tokens-%1-overview-%2.png").arg(shape.id, pres ? "presentation" : "normal"));
      if (!w.grab().save(file)) err = QStringLiteral("%1: cannot write").arg(file);
    }
    w.setPresentation(false);
    if (!err.isEmpty() || !w.lastError().isEmpty()) {
      std::fprintf(stderr, "moelab: %s\n", qPrintable(err.isEmpty() ? w.lastError() : err));
      return 1;
    }
  }
  std::fprintf(stderr, "screenshots written to %s\n", qPrintable(dir));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // `moelab export` needs no display: draw offscreen unless told otherwise.
  const bool exporting = argc > 1 && (std::strcmp(argv[1], "export") == 0 || std::strcmp(argv[1], "lesson") == 0);
  if (exporting && qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  QApplication::setApplicationName(QStringLiteral("MoE Lab"));
  QApplication::setOrganizationName(QStringLiteral("MoE Lab"));
  QApplication::setApplicationVersion(QString::fromLatin1(moelab::moelab_version()));
  QApplication::setStyle(QStyleFactory::create(QStringLiteral("Fusion")));
  if (exporting) {
    QStringList args = app.arguments();
    const bool lesson = args.value(1) == QLatin1String("lesson");
    args.removeAt(1);  // "export": the parser sees the program name, then the options
    return lesson ? lessonMain(args) : exportMain(args);
  }
  QCommandLineParser parser;
  parser.setApplicationDescription(QStringLiteral("See how a Mixture-of-Experts model routes its tokens."));
  parser.addHelpOption();
  parser.addVersionOption();
  parser.addPositionalArgument(QStringLiteral("model"), QStringLiteral("A model folder or config.json (default: built-in)"));
  QCommandLineOption shot(QStringLiteral("screenshot"), QStringLiteral("Render every view to PNG files in DIR and exit."),
                          QStringLiteral("DIR"));
  QCommandLineOption pres(QStringLiteral("presentation"), QStringLiteral("Start in presentation mode."));
  QCommandLineOption bench(QStringLiteral("bench-frames"),
                           QStringLiteral("Measure the Training view's frame rate and latency for N seconds."),
                           QStringLiteral("SECONDS"), QStringLiteral("10"));
  QCommandLineOption shapes(QStringLiteral("screenshot-shapes"),
                            QStringLiteral("Render the Model and Tokens views on models of real routing shapes "
                                           "(64 experts x 16 layers, 128 x 48, 256 x 61) to PNG files in DIR and exit."),
                            QStringLiteral("DIR"));
  QCommandLineOption lessonOpt(QStringLiteral("lesson"),
                               QStringLiteral("Open on a lesson (a name in resources/lessons or a file), or on the "
                                              "list of lessons with \"list\"."),
                               QStringLiteral("NAME"));
  parser.addOptions({shot, pres, bench, shapes, lessonOpt});
  parser.process(app);

  MainWindow w;
  if (parser.isSet(pres)) w.setPresentation(true);
  if (!parser.positionalArguments().isEmpty()) w.openModel(parser.positionalArguments().first());
  if (parser.isSet(bench)) return benchFrames(w, std::clamp(parser.value(bench).toInt(), 2, 600));
  if (parser.isSet(shapes)) return shapeScreenshots(w, parser.value(shapes));
  if (parser.isSet(shot)) {
    // Headless: a fixed size, a prompt with some generated tokens, then every view to PNG.
    w.resize(1280, 800);
    w.show();
    TokensView* t = w.tokensView();
    t->waitForIdle();
    t->setPrompt(QStringLiteral("12+7=19; the quiet river "));
    t->waitForIdle();
    for (int i = 0; i < 16; ++i) t->stepOnce();
    t->waitForIdle();
    // A balanced run, then the collapse lesson, long enough to see it happen; both go into the
    // Compare view, and the Training view keeps the collapsed one.
    TrainingView* tr = w.trainingView();
    auto train = [&](const char* preset) {
      tr->selectPreset(QString::fromLatin1(preset));
      tr->setSteps(300);
      tr->startTraining();
      QElapsedTimer clock;
      clock.start();
      while ((tr->isRunning() || tr->history().size() < 300) && clock.elapsed() < 120000) {
        QEventLoop loop;  // wait without spinning: the worker needs the cores
        QTimer::singleShot(20, &loop, &QEventLoop::quit);
        loop.exec();
      }
      w.compareView()->addRunData(tr->run());
    };
    train("lesson-collapse-aux");
    train("lesson-collapse");
    QCoreApplication::processEvents();
    const QString err = w.saveScreenshots(parser.value(shot), QSize(1280, 800));
    if (!err.isEmpty() || !w.lastError().isEmpty()) {
      std::fprintf(stderr, "moelab: %s\n", qPrintable(err.isEmpty() ? w.lastError() : err));
      return 1;
    }
    std::fprintf(stderr, "screenshots written to %s\n", qPrintable(parser.value(shot)));
    return 0;
  }
  auto* player = w.findChild<LessonPlayer*>();
  if (parser.isSet(lessonOpt)) {
    QSettings().setValue(QLatin1String(LessonPlayer::kFirstStartKey), true);
    if (parser.value(lessonOpt) == QLatin1String("list")) player->showList();
    else player->openLesson(parser.value(lessonOpt));  // a malformed one: the list, with the error
  } else {
    player->showListOnFirstStart();  // the very first start: the list of lessons in the panel
  }
  w.show();
  return app.exec();
}
