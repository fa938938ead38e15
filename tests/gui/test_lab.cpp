// The lab window's training side, driven offscreen: the Compare view draws exactly the runs'
// logs, `moelab export --run` on a `moelab-cli train` run writes valid files holding the log's
// numbers, replay scrubs through a run and opens its checkpoints in the Tokens view, the collapse
// lesson collapses in the window's own data (and the balanced variant does not), lab sessions
// save and reopen, unsaved work asks before closing, and a run torn by a crash reopens and goes on.
#include <sys/stat.h>

#include <QFile>
#include <QImage>
#include <QJsonDocument>
#include <QMessageBox>
#include <QProcess>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QXmlStreamReader>
#include <QtTest>
#include <qcustomplot.h>
#include <set>

#include <nlohmann/json.hpp>

#include "chart_panel.hpp"
#include "compare_view.hpp"
#include "lessons.hpp"
#include "main_window.hpp"
#include "presets.hpp"
#include "table_chart.hpp"
#include "runlog.hpp"
#include "training_run.hpp"
#include "tokens_view.hpp"
#include "training_view.hpp"

using namespace moelab;
using nlohmann::json;

namespace {

// A run made by the core alone (no GUI code): the independent source the views must match.
void makeRun(const QString& dir, const std::string& preset, int steps, int checkpointEvery) {
  RunSpec spec = run_spec_from_preset(preset);
  TrainConfig& c = spec.train;
  c.steps = steps;
  c.batch = 8;
  c.eval_every = 5;
  c.probe_every = 5;
  c.checkpoint_every = checkpointEvery;
  auto run = TrainingRun::start(spec, dir.toStdString(), make_eigen_backend());
  while (!run->done()) run->step();  // checkpoints every checkpointEvery steps before the last
  if (checkpointEvery > 0 && steps % checkpointEvery == 0) run->checkpoint();
}

std::vector<json> records(const QString& dir) { return read_metrics(dir.toStdString()); }

// The graph of `plot` named `name` (legend name), or nullptr.
QCPGraph* graphNamed(QCustomPlot* plot, const QString& name) {
  for (int i = 0; i < plot->graphCount(); ++i)
    if (plot->graph(i)->name() == name) return plot->graph(i);
  return nullptr;
}

// Answer the next modal dialog with `button` once it shows.
void answerNextDialog(QMessageBox::StandardButton button) {
  QTimer::singleShot(50, [button] {
    auto* box = qobject_cast<QMessageBox*>(QApplication::activeModalWidget());
    if (box) box->button(button)->click();
  });
}

// Runs the event loop (sleeping between checks, not spinning) until done() or ms pass.
void waitUntil(const std::function<bool()>& done, int ms) { (void)QTest::qWaitFor(done, ms); }

struct WorstLayer {
  double cv = 0, maxShare = 0;
  int dead = 0;
};

// From the collapse view's cells of the last `window` steps, for every layer: the loads over the
// window, then CV, busiest share and dead experts of the worst layer (highest CV) — the lessons'
// measure (core/lessons.hpp) computed here from what the window drew.
WorstLayer worstLayerFromView(TrainingView* tv, int window) {
  WorstLayer worst;
  const int E = int(tv->run().experts), n = int(tv->history().size());
  for (int l = 0; l < tv->run().moeLayers; ++l) {
    tv->selectLayer(l);
    std::vector<double> load(size_t(E), 0.0);
    for (int i = n - window; i < n; ++i)
      for (int e = 0; e < E; ++e) load[size_t(e)] += tv->collapseValue(i, e) / window;
    double mean = 0, var = 0, top = 0;
    int dead = 0;
    for (double v : load) mean += v / E;
    for (double v : load) var += (v - mean) * (v - mean) / E, top = std::max(top, v), dead += v < 1.0 / (10 * E);
    const double cv = std::sqrt(var) / mean;
    if (cv >= worst.cv) worst = {cv, top, dead};
  }
  return worst;
}

}  // namespace

class TestLab : public QObject {
  Q_OBJECT
 private slots:
  void initTestCase() { QStandardPaths::setTestModeEnabled(true); }

  void compareViewEqualsTheRunsLogs() {
    QTemporaryDir tmp;
    tmp.setAutoRemove(qEnvironmentVariableIsEmpty("MOELAB_KEEP_TEST_FILES"));
    const QString a = tmp.filePath("none"), b = tmp.filePath("aux");
    makeRun(a, "lesson-collapse", 12, 0);
    makeRun(b, "lesson-collapse-aux", 12, 0);
    MainWindow w;
    w.resize(1280, 800);
    w.show();
    CompareView* cv = w.compareView();
    QVERIFY(cv->addRun(a));
    QVERIFY(cv->addRun(b));
    QVERIFY(!cv->addRun(tmp.filePath("missing")));  // an error in the banner, no crash
    QVERIFY(w.lastError().contains("missing"));
    QCOMPARE(cv->runs().size(), 2);
    QCustomPlot* loss = cv->charts()[1]->plot();
    QCustomPlot* cvPlot = cv->charts()[2]->plot();
    for (int r = 0; r < 2; ++r) {
      const auto log = records(r == 0 ? a : b);
      const QString name = r == 0 ? "lesson-collapse" : "lesson-collapse-aux";  // the preset names the run
      QCPGraph* g = graphNamed(loss, name);
      QCPGraph* c = graphNamed(cvPlot, name);
      QVERIFY(g && c);
      QCOMPARE(g->data()->size(), int(log.size()));
      for (int i = 0; i < int(log.size()); ++i) {
        QCOMPARE((g->data()->constBegin() + i)->key, log[size_t(i)]["step"].get<double>());
        QCOMPARE((g->data()->constBegin() + i)->value, log[size_t(i)]["lm_loss"].get<double>());
        QCOMPARE((c->data()->constBegin() + i)->value, log[size_t(i)]["layers"][0]["cv"].get<double>());
        for (int e = 0; e < 8; ++e)
          QCOMPARE(cv->collapseValue(r, i, e), log[size_t(i)]["layers"][0]["load"][size_t(e)].get<double>());
      }
      // The table: final figures from the last record, worst layer, computed here from the JSON.
      const json& last = log.back();
      double worstCv = 0;
      int64_t dead = 0;
      for (const json& L : last["layers"]) worstCv = std::max(worstCv, L["cv"].get<double>()), dead += L["dead"].get<int64_t>();
      double val = NAN;
      for (const json& rec : log)
        if (rec.contains("val_loss")) val = rec["val_loss"].get<double>();
      TableChart* t = cv->table();
      QCOMPARE(t->cell(r, 0), name);
      QCOMPARE(t->cell(r, 2), QString::number(last["step"].get<int64_t>()));
      QCOMPARE(t->cell(r, 3), QString::number(last["lm_loss"].get<double>(), 'f', 3));
      QCOMPARE(t->cell(r, 4), QString::number(val, 'f', 3));
      QCOMPARE(t->cell(r, 5), QString::number(worstCv, 'f', 2));
      QCOMPARE(t->cell(r, 7), QString::number(dead));
    }
    QVERIFY(cv->charts()[3]->csv().contains("aux loss 0.01"));
    // Every compare chart exports as valid files (PNG not blank).
    for (ChartPanel* c : cv->charts()) {
      const QString base = tmp.filePath(c->id());
      QCOMPARE(c->exportAll(tmp.path(), QSize(900, 560)), QString());
      QImage img(base + ".png");
      std::set<QRgb> colours;
      for (int y = 0; y < img.height(); y += 5)
        for (int x = 0; x < img.width(); x += 5) colours.insert(img.pixel(x, y));
      QVERIFY2(colours.size() > 8, qPrintable(c->id() + " PNG looks blank"));
    }
  }

  void exportRunWritesEveryChartOfACliRun() {
    QTemporaryDir tmp;
    const QString run = tmp.filePath("run"), out = tmp.filePath("charts");
    QProcess cli;
    cli.start(MOELAB_CLI, {"train", "--config", "lesson-collapse-bias", "--steps", "30", "--out", run});
    QVERIFY(cli.waitForFinished(120000));
    QVERIFY2(cli.exitCode() == 0, cli.readAllStandardError().constData());
    QProcess exp;
    exp.start(MOELAB_GUI, {"export", "--run", run, "--out", out, "--format", "png,svg,pdf,csv", "--theme", "presentation"});
    QVERIFY(exp.waitForFinished(120000));
    QVERIFY2(exp.exitCode() == 0, exp.readAllStandardError().constData());
    const QStringList ids = {"loss", "balance", "entropy", "saturation", "specialisation-score", "collapse-layer0",
                             "collapse-layer1", "load-final-layer0", "load-final-layer1", "specialisation-layer0",
                             "specialisation-layer1", "bias-layer0", "bias-layer1"};
    for (const QString& id : ids) {
      const QString base = QDir(out).filePath(id);
      QImage img(base + ".png");
      QCOMPARE(img.size(), QSize(1920, 1200));  // 1280x800 points at 144 DPI
      std::set<QRgb> colours;
      for (int y = 0; y < img.height(); y += 7)
        for (int x = 0; x < img.width(); x += 7) colours.insert(img.pixel(x, y));
      QVERIFY2(colours.size() > 8, qPrintable(id + " PNG looks blank"));
      QFile svg(base + ".svg");
      QVERIFY(svg.open(QIODevice::ReadOnly));
      QXmlStreamReader xml(&svg);
      int drawing = 0;
      while (!xml.atEnd())
        if (xml.readNext() == QXmlStreamReader::StartElement && (xml.name() == u"path" || xml.name() == u"polyline" ||
                                                                 xml.name() == u"text" || xml.name() == u"image"))
          ++drawing;
      QVERIFY2(!xml.hasError() && drawing > 3, qPrintable(id + ": SVG " + xml.errorString()));
      QFile pdf(base + ".pdf");
      QVERIFY(pdf.open(QIODevice::ReadOnly));
      const QByteArray p = pdf.readAll();
      QVERIFY2(p.startsWith("%PDF-") && p.contains("/Type /Page") && p.size() > 1000, qPrintable(id));
      QVERIFY(QFile::exists(base + ".csv"));
    }
    // The CSVs hold the log's numbers.
    const auto log = records(run);
    QFile collapse(QDir(out).filePath("collapse-layer1.csv"));
    QVERIFY(collapse.open(QIODevice::ReadOnly));
    const QStringList rows = QString::fromUtf8(collapse.readAll()).split('\n', Qt::SkipEmptyParts);
    QCOMPARE(rows.size(), 1 + int(log.size()));
    for (int i = 0; i < int(log.size()); ++i) {
      const QStringList cells = rows[i + 1].split(',');
      QCOMPARE(cells[0].toLongLong(), log[size_t(i)]["step"].get<int64_t>());
      for (int e = 0; e < 8; ++e)
        QVERIFY(std::abs(cells[e + 1].toDouble() - log[size_t(i)]["layers"][1]["load"][size_t(e)].get<double>()) < 1e-7);
    }
    QFile bias(QDir(out).filePath("bias-layer0.csv"));
    QVERIFY(bias.open(QIODevice::ReadOnly));
    const QStringList brows = QString::fromUtf8(bias.readAll()).split('\n', Qt::SkipEmptyParts);
    const QStringList lastBias = brows.back().split(',');
    for (int e = 0; e < 8; ++e)
      QVERIFY(std::abs(lastBias[e + 1].toDouble() - log.back()["layers"][0]["bias"][size_t(e)].get<double>()) < 1e-6);
    // Bad input: one line naming the problem, non-zero exit, nothing half-written.
    QProcess bad;
    bad.start(MOELAB_GUI, {"export", "--run", tmp.filePath("nowhere"), "--out", tmp.filePath("x")});
    QVERIFY(bad.waitForFinished(60000));
    QCOMPARE(bad.exitCode(), 1);
    const QString err = QString::fromUtf8(bad.readAllStandardError()).trimmed().split('\n').last();
    QVERIFY2(err.startsWith("moelab export: ") && err.contains("nowhere"), qPrintable(err));
    bad.start(MOELAB_GUI, {"export", "--run", run, "--out", out, "--format", "gif"});
    QVERIFY(bad.waitForFinished(60000));
    QCOMPARE(bad.exitCode(), 1);
    QVERIFY(QString::fromUtf8(bad.readAllStandardError()).contains("gif"));
  }

  void replayScrubsAndOpensTheCheckpoint() {
    QTemporaryDir tmp;
    const QString run = tmp.filePath("run");
    makeRun(run, "moe-8x-top2", 20, 10);
    MainWindow w;
    w.resize(1280, 800);
    w.show();
    TrainingView* tv = w.trainingView();
    QVERIFY(tv->openRun(run));
    QCOMPARE(tv->history().size(), 20);
    const auto log = records(run);
    tv->setShownSteps(7);
    QCOMPARE(tv->shownSteps(), 7);
    QCustomPlot* heat = tv->charts()[0]->plot();
    auto* map = qobject_cast<QCPColorMap*>(heat->plottable(0));
    QVERIFY(map);
    QCOMPARE(map->data()->keySize(), 7);
    for (int i = 0; i < 7; ++i)
      for (int e = 0; e < 8; ++e) QCOMPARE(tv->collapseValue(i, e), log[size_t(i)]["layers"][0]["load"][size_t(e)].get<double>());
    // Play at 200 steps/s: it reaches the end by itself.
    tv->setReplaySpeed(200);
    tv->playReplay(true);
    waitUntil([&] { return !tv->isReplaying(); }, 5000);
    QCOMPARE(tv->shownSteps(), 20);
    // At step 15 the newest checkpoint at or before it is step 10: it opens in the Tokens view.
    tv->setShownSteps(15);
    QSignalSpy opened(w.tokensView(), &TokensView::modelChanged);
    tv->openInTokens();
    waitUntil([&] { return opened.count() > 0; }, 20000);
    QCOMPARE(opened.count(), 1);
    QVERIFY2(opened.at(0).at(0).toString().contains("step-000010"), qPrintable(opened.at(0).at(0).toString()));
    QVERIFY(w.lastError().isEmpty());
  }

  void collapseLessonCollapsesInTheWindowAndBalancingPreventsIt() {
    MainWindow w;
    w.resize(1280, 800);
    w.show();
    TrainingView* tv = w.trainingView();
    w.tabs()->setCurrentWidget(tv);
    const int steps = 400;  // as the lesson test: collapse shows well before the preset's 1200
    for (const char* preset : {"lesson-collapse", "lesson-collapse-aux"}) {
      tv->selectPreset(QString::fromLatin1(preset));
      tv->setSteps(steps);
      QSignalSpy done(tv, &TrainingView::trainingFinished);
      tv->startTraining();
      waitUntil([&] { return done.count() > 0; }, 240000);
      QCOMPARE(tv->history().size(), steps);
      const WorstLayer worst = worstLayerFromView(tv, int(kLessonWindow));
      qInfo("%s: worst layer CV %.2f, busiest expert %.0f%%, %d dead", preset, worst.cv, 100 * worst.maxShare, worst.dead);
      if (QByteArray(preset) == "lesson-collapse") {
        QVERIFY(worst.cv >= kCollapsedCv && worst.maxShare >= kCollapsedMaxShare && worst.dead >= kCollapsedDead);
      } else {
        QVERIFY(worst.cv < kBalancedCv && worst.maxShare < kBalancedMaxShare && worst.dead == 0);
      }
    }
    QVERIFY(w.lastError().isEmpty());
  }

  void sessionSavesReopensAndAsksBeforeLosingWork() {
    QTemporaryDir tmp;
    const QString a = tmp.filePath("a"), b = tmp.filePath("b");
    makeRun(a, "lesson-collapse", 10, 5);
    makeRun(b, "lesson-collapse-aux", 10, 0);
    const QString session = tmp.filePath("class.moelab");
    QJsonObject saved;
    {
      MainWindow w;
      w.show();
      TrainingView* tv = w.trainingView();
      tv->selectPreset(QStringLiteral("moe-8x-top2"));
      tv->setBalancing(1, 0.02);
      tv->setSteps(123);
      QVERIFY(tv->openRun(a));
      tv->setShownSteps(6);
      QVERIFY(w.compareView()->addRun(a));
      QVERIFY(w.compareView()->addRun(b));
      QVERIFY(w.hasUnsavedWork());
      QCOMPARE(w.saveSession(session), QString());
      QVERIFY(!w.hasUnsavedWork());
      saved = tv->state();
      // Unsaved work asks before closing: Cancel keeps the window, Discard closes it.
      w.markUnsaved();
      answerNextDialog(QMessageBox::Cancel);
      QVERIFY(!w.close());
      QVERIFY(w.isVisible());
      answerNextDialog(QMessageBox::Discard);
      QVERIFY(w.close());
    }
    MainWindow w2;
    w2.show();
    QCOMPARE(w2.openSession(session), QString());
    QCOMPARE(w2.trainingView()->state(), saved);
    QCOMPARE(w2.trainingView()->shownSteps(), 6);
    QCOMPARE(w2.compareView()->runDirs(), (QStringList{QDir(a).absolutePath(), QDir(b).absolutePath()}));
    QVERIFY(!w2.hasUnsavedWork());
    // A malformed or foreign session file: one line naming the file, nothing changed.
    QFile bad(tmp.filePath("bad.moelab"));
    QVERIFY(bad.open(QIODevice::WriteOnly));
    bad.write("{\"format\": \"moelab-session\", \"version\": 1,");
    bad.close();
    const QString err = w2.openSession(bad.fileName());
    QVERIFY2(err.contains("bad.moelab") && err.contains("malformed"), qPrintable(err));
    QFile other(tmp.filePath("other.moelab"));
    QVERIFY(other.open(QIODevice::WriteOnly));
    other.write("{\"hello\": 1}");
    other.close();
    QVERIFY(w2.openSession(other.fileName()).contains("not a MoE Lab session"));
    // A FIFO (or a directory) named like a session: refused at once, never a blocked open.
    const QString fifo = tmp.filePath("fifo.moelab");
    QCOMPARE(::mkfifo(QFile::encodeName(fifo).constData(), 0600), 0);
    QVERIFY(w2.openSession(fifo).contains("not a regular file"));
    QVERIFY(w2.openSession(tmp.path()).contains("not a regular file"));
    QCOMPARE(w2.compareView()->runs().size(), 2);
  }

  void aRunTornByACrashReopensAndContinues() {
    QTemporaryDir tmp;
    const QString run = tmp.filePath("run");
    makeRun(run, "moe-4x-top1", 14, 10);
    {  // the crash: half a record at the end of the log
      QFile f(QDir(run).filePath("metrics.jsonl"));
      QVERIFY(f.open(QIODevice::Append));
      f.write("{\"step\": 15, \"loss\": 3.");
    }
    MainWindow w;
    w.show();
    TrainingView* tv = w.trainingView();
    QVERIFY(tv->openRun(run));
    QCOMPARE(tv->history().size(), 14);  // every complete step, the torn one skipped
    tv->continueRun();                  // from the checkpoint of step 10, to the run's 14 steps
    waitUntil([&] { return !tv->isRunning() && tv->history().size() == 14 && tv->history().back()->step == 14; }, 60000);
    QVERIFY(w.lastError().isEmpty());
    const auto log = records(run);
    QCOMPARE(int(log.size()), 14);
    for (int i = 0; i < 14; ++i) QCOMPARE(log[size_t(i)]["step"].get<int64_t>(), int64_t(i + 1));
    for (int i = 0; i < 14; ++i) QCOMPARE(tv->history()[i]->step, int64_t(i + 1));
  }
};

QTEST_MAIN(TestLab)
#include "test_lab.moc"
