#include "lesson_headless.hpp"

#include <QAbstractTextDocumentLayout>
#include <QApplication>
#include <QCommandLineParser>
#include <QDir>
#include <QElapsedTimer>
#include <QFileInfo>
#include <QEventLoop>
#include <QImage>
#include <QPageSize>
#include <QPainter>
#include <QPdfWriter>
#include <QSaveFile>
#include <QTextDocument>
#include <QTimer>
#include <cmath>
#include <cstdio>
#include <qcustomplot.h>

#include "chart_panel.hpp"
#include "compare_view.hpp"
#include "lesson_player.hpp"
#include "main_window.hpp"
#include "model_view.hpp"
#include "tokens_view.hpp"
#include "training_view.hpp"

namespace {

void waitMs(int ms) {
  QEventLoop loop;  // wait in the event loop, not in a spin: the workers need the cores
  QTimer::singleShot(ms, &loop, &QEventLoop::quit);
  loop.exec();
}

// Draws every chart of the window once more (a page shown for the first time draws lazily).
void settle(MainWindow& w) {
  for (int i = 0; i < 3; ++i) {
    QApplication::processEvents();
    waitMs(30);
  }
  QList<ChartPanel*> all = w.modelView()->charts();
  all += w.tokensView()->charts();
  all += w.trainingView()->charts();
  all += w.compareView()->charts();
  for (ChartPanel* c : all)
    if (c->isVisible() && c->plot()) c->plot()->replot(QCustomPlot::rpImmediateRefresh);
  QApplication::processEvents();
}

}  // namespace

namespace {

// One handout page: the text on top, the picture below in the rest of the page (at least 40% of
// it: a long text is set smaller). `page` is the printable rectangle in the device's pixels.
void paintHandoutPage(QPainter& p, QPaintDevice* device, const QRect& page, const QString& md, const QString& picture) {
  QTextDocument doc;
  doc.documentLayout()->setPaintDevice(device);
  QFont f(QStringLiteral("DejaVu Sans"));
  f.setPointSizeF(10.5);
  doc.setDefaultFont(f);
  doc.setTextWidth(page.width());
  doc.setMarkdown(md);
  const int minPicture = page.height() * 40 / 100;
  for (double pt = 10.5; doc.size().height() > page.height() - minPicture && pt > 6.5; pt -= 0.5) {
    f.setPointSizeF(pt);
    doc.setDefaultFont(f);
    doc.setMarkdown(md);
  }
  const int textH = int(std::ceil(doc.size().height()));
  p.save();
  p.translate(page.topLeft());
  doc.drawContents(&p, QRectF(0, 0, page.width(), textH));
  p.restore();
  QImage img(picture);
  if (img.isNull()) return;
  const QRect room(page.left(), page.top() + textH + 20, page.width(), page.height() - textH - 20);
  const QSize fit = img.size().scaled(room.size(), Qt::KeepAspectRatio);
  const QRect target(room.left() + (room.width() - fit.width()) / 2, room.top(), fit.width(), fit.height());
  p.setRenderHint(QPainter::SmoothPixmapTransform);
  p.drawImage(target, img);
  p.setPen(QPen(Qt::gray, 2));
  p.drawRect(target);
}

QString pageMarkdown(int i, const QString& lessonTitle, const QString& summary, const HandoutStep& s) {
  QString md;
  if (i == 0) md += QStringLiteral("# %1\n\n*%2*\n\n").arg(lessonTitle, summary);
  return md + QStringLiteral("## %1\n\n%2").arg(s.title, s.markdown);
}

}  // namespace

QString writeHandout(const QString& path, const QString& lessonTitle, const QString& summary,
                     const QList<HandoutStep>& steps, const QString& previewDir) {
  QSaveFile file(path);
  if (!file.open(QIODevice::WriteOnly)) return QStringLiteral("%1: cannot write (%2)").arg(path, file.errorString());
  {
    QPdfWriter pdf(&file);
    pdf.setPageSize(QPageSize(QPageSize::A4));
    pdf.setResolution(150);
    pdf.setPageMargins(QMarginsF(15, 15, 15, 15), QPageLayout::Millimeter);
    pdf.setTitle(lessonTitle);
    pdf.setCreator(QStringLiteral("MoE Lab"));
    QPainter p(&pdf);
    const QRect page = p.viewport();  // device pixels inside the margins
    for (int i = 0; i < steps.size(); ++i) {
      if (i > 0) pdf.newPage();
      paintHandoutPage(p, &pdf, page, pageMarkdown(i, lessonTitle, summary, steps[i]), steps[i].picture);
    }
  }
  if (!file.commit()) return QStringLiteral("%1: cannot write (%2)").arg(path, file.errorString());
  // The same pages as pictures (A4 at 100 dpi), to look at without a PDF viewer.
  if (!previewDir.isEmpty())
    for (int i = 0; i < steps.size(); ++i) {
      QImage img(827, 1170, QImage::Format_RGB32);
      img.setDotsPerMeterX(3937);
      img.setDotsPerMeterY(3937);
      img.fill(Qt::white);
      QPainter p(&img);
      paintHandoutPage(p, &img, QRect(59, 59, 827 - 118, 1170 - 118), pageMarkdown(i, lessonTitle, summary, steps[i]),
                       steps[i].picture);
      p.end();
      img.save(QDir(previewDir).filePath(QStringLiteral("handout-%1.png").arg(i + 1, 2, 10, QLatin1Char('0'))));
    }
  return {};
}

int lessonMain(const QStringList& args) {
  QCommandLineParser parser;
  parser.setApplicationDescription(QStringLiteral("Play a lesson without a display: PNG per step, a PDF handout, the checks."));
  parser.addHelpOption();
  parser.addPositionalArgument(QStringLiteral("lesson"), QStringLiteral("A lesson name (resources/lessons) or file"));
  QCommandLineOption out(QStringLiteral("out"), QStringLiteral("Folder for step-NN.png and handout.pdf"), QStringLiteral("DIR"));
  QCommandLineOption theme(QStringLiteral("theme"), QStringLiteral("normal or presentation"), QStringLiteral("THEME"),
                           QStringLiteral("normal"));
  QCommandLineOption size(QStringLiteral("size"), QStringLiteral("Window size WxH (default 1280x800)"), QStringLiteral("WxH"),
                          QStringLiteral("1280x800"));
  QCommandLineOption model(QStringLiteral("model"),
                           QStringLiteral("A checkpoint folder to open first, as File > Open Model does (for the real-model steps)"),
                           QStringLiteral("DIR"));
  parser.addOptions({out, theme, size, model});
  if (!parser.parse(args)) {
    std::fprintf(stderr, "moelab lesson: %s\n", qPrintable(parser.errorText()));
    return 2;
  }
  if (parser.isSet(QStringLiteral("help"))) {
    std::printf("%s", qPrintable(parser.helpText()));
    return 0;
  }
  if (parser.positionalArguments().size() != 1 || !parser.isSet(out)) {
    std::fprintf(stderr, "moelab lesson: usage: moelab lesson NAME|FILE --out DIR [--model DIR] [--theme normal|presentation] [--size WxH]\n");
    return 2;
  }
  const QString themeName = parser.value(theme);
  if (themeName != QLatin1String("normal") && themeName != QLatin1String("presentation")) {
    std::fprintf(stderr, "moelab lesson: --theme is normal or presentation, not %s\n", qPrintable(themeName));
    return 2;
  }
  const QStringList wh = parser.value(size).split(QLatin1Char('x'));
  const int width = wh.size() == 2 ? wh[0].toInt() : 0, height = wh.size() == 2 ? wh[1].toInt() : 0;
  if (width < 640 || height < 480 || width > 7680 || height > 4320) {
    std::fprintf(stderr, "moelab lesson: --size is WxH between 640x480 and 7680x4320, not %s\n", qPrintable(parser.value(size)));
    return 2;
  }
  moelab::Lesson lesson;
  try {
    lesson = moelab::load_lesson(parser.positionalArguments().first().toStdString());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moelab lesson: %s\n", e.what());
    return 2;
  }
  const QString dir = parser.value(out);
  if (!QDir().mkpath(dir)) {
    std::fprintf(stderr, "moelab lesson: %s: cannot create the folder\n", qPrintable(dir));
    return 2;
  }

  MainWindow w;
  w.setPresentation(themeName == QLatin1String("presentation"));
  w.resize(width, height);
  w.show();
  w.tokensView()->waitForIdle(120000);
  if (parser.isSet(model)) {
    // As File ▸ Open Model: the load runs in the background; the lesson starts once it is in place.
    const QString modelDir = parser.value(model);
    if (!QFileInfo(modelDir).exists()) {
      std::fprintf(stderr, "moelab lesson: %s: no such model folder\n", qPrintable(modelDir));
      return 2;
    }
    w.openModel(QFileInfo(modelDir).absoluteFilePath());
    QElapsedTimer loadClock;
    loadClock.start();
    while ((w.tokensView()->loading() || w.tokensView()->loadsRunning() > 0) && loadClock.elapsed() < 600000) waitMs(20);
    w.tokensView()->waitForIdle(120000);
    if (w.tokensView()->loading()) {
      std::fprintf(stderr, "moelab lesson: %s: the model did not load within 10 minutes\n", qPrintable(modelDir));
      return 2;
    }
    if (!w.lastError().isEmpty()) {
      std::fprintf(stderr, "moelab lesson: %s\n", qPrintable(w.lastError()));
      return 2;
    }
    std::printf("model: %s\n", qPrintable(w.modelPath()));
  }
  auto* player = w.findChild<LessonPlayer*>();
  player->openLesson(lesson);
  std::printf("%s (%zu steps)\n", lesson.title.c_str(), lesson.steps.size());
  QList<HandoutStep> handout;
  bool ok = true;
  QElapsedTimer total;
  total.start();
  for (int i = 0; i < int(lesson.steps.size()); ++i) {
    if (i > 0) player->next();
    QElapsedTimer clock;
    clock.start();
    while (player->phase() != LessonPlayer::Phase::Done && clock.elapsed() < 300000) {
      if (player->phase() == LessonPlayer::Phase::Asking) player->answerStated();
      waitMs(20);
    }
    if (player->phase() != LessonPlayer::Phase::Done) {
      std::printf("  step %d: did not finish within 5 minutes\n", i + 1);
      ok = false;
      break;
    }
    settle(w);
    const QString png = QDir(dir).filePath(QStringLiteral("step-%1.png").arg(i + 1, 2, 10, QLatin1Char('0')));
    if (!w.grab().save(png)) {
      std::fprintf(stderr, "moelab lesson: %s: cannot write\n", qPrintable(png));
      return 1;
    }
    const LessonPlayer::StepResult r = player->result(i);
    const std::string& title = lesson.steps[size_t(i)].title;
    std::printf("step %d \"%s\" (%.1f s)%s\n", i + 1, title.c_str(), clock.elapsed() / 1000.0,
                r.skipped ? ": skipped, no model opened from disk" : "");
    if (!r.actionError.isEmpty()) {
      std::printf("  FAILED action: %s\n", qPrintable(r.actionError));
      ok = false;
    }
    for (int c = 0; c < r.checks.size(); ++c) {
      std::printf("  %s %s\n", r.held[c] ? "held:" : "DID NOT HOLD:", qPrintable(r.checks[c]));
      ok = ok && r.held[c];
    }
    handout << HandoutStep{QStringLiteral("%1. %2").arg(i + 1).arg(QString::fromStdString(title)), player->markdown(), png};
  }
  if (!w.lastError().isEmpty()) std::printf("  the window reported: %s\n", qPrintable(w.lastError()));
  const QString pdf = QDir(dir).filePath(QStringLiteral("handout.pdf"));
  const QString preview = qEnvironmentVariableIsSet("MOELAB_HANDOUT_PNG") ? dir : QString();
  if (const QString err = writeHandout(pdf, QString::fromStdString(lesson.title), QString::fromStdString(lesson.summary), handout, preview);
      !err.isEmpty()) {
    std::fprintf(stderr, "moelab lesson: %s\n", qPrintable(err));
    return 1;
  }
  std::printf("%s in %.1f s: %s, step-NN.png and handout.pdf in %s\n", ok ? "played" : "FAILED", total.elapsed() / 1000.0,
              ok ? "every action ran and every check held" : "see above", qPrintable(dir));
  std::fflush(stdout);
  return ok ? 0 : 1;
}
