// moelab: the lab window. `moelab [MODEL]` opens a model folder or config.json (default: the
// built-in model); `moelab --screenshot DIR` renders every view to PNG, headless, and exits.
#include <QApplication>
#include <QCommandLineParser>
#include <QStyleFactory>
#include <QTimer>
#include <cstdio>

#include "main_window.hpp"
#include "tokens_view.hpp"
#include "training_view.hpp"

#include <QElapsedTimer>

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName(QStringLiteral("MoE Lab"));
  QApplication::setOrganizationName(QStringLiteral("MoE Lab"));
  QApplication::setApplicationVersion(QStringLiteral("0.1.0"));
  QApplication::setStyle(QStyleFactory::create(QStringLiteral("Fusion")));
  QCommandLineParser parser;
  parser.setApplicationDescription(QStringLiteral("See how a Mixture-of-Experts model routes its tokens."));
  parser.addHelpOption();
  parser.addVersionOption();
  parser.addPositionalArgument(QStringLiteral("model"), QStringLiteral("A model folder or config.json (default: built-in)"));
  QCommandLineOption shot(QStringLiteral("screenshot"), QStringLiteral("Render every view to PNG files in DIR and exit."),
                          QStringLiteral("DIR"));
  QCommandLineOption pres(QStringLiteral("presentation"), QStringLiteral("Start in presentation mode."));
  parser.addOptions({shot, pres});
  parser.process(app);

  MainWindow w;
  if (parser.isSet(pres)) w.setPresentation(true);
  if (!parser.positionalArguments().isEmpty()) w.openModel(parser.positionalArguments().first());
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
    // The collapse lesson, long enough to see it happen.
    TrainingView* tr = w.trainingView();
    tr->selectPreset(QStringLiteral("lesson-collapse"));
    tr->startTraining();
    QElapsedTimer clock;
    clock.start();
    while ((tr->history().isEmpty() || tr->history().back()->step < 150) && clock.elapsed() < 60000)
      QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
    tr->pauseTraining();
    QCoreApplication::processEvents();
    const QString err = w.saveScreenshots(parser.value(shot), QSize(1280, 800));
    if (!err.isEmpty() || !w.lastError().isEmpty()) {
      std::fprintf(stderr, "moelab: %s\n", qPrintable(err.isEmpty() ? w.lastError() : err));
      return 1;
    }
    std::fprintf(stderr, "screenshots written to %s\n", qPrintable(parser.value(shot)));
    return 0;
  }
  w.show();
  return app.exec();
}
