// The Device menu driven like a teacher would, offscreen: it says where the model runs, a GPU
// that fails falls back to the CPU with the reason, the precision modes apply to the model shown
// and to training, and the choice is kept in settings and lab sessions.
#include <QAction>
#include <QActionGroup>
#include <QDir>
#include <QJsonDocument>
#include <QJsonObject>
#include <QMenu>
#include <QSettings>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QtTest>
#include <qcustomplot.h>

#include <nlohmann/json.hpp>

#include "devices.hpp"
#include "generation_worker.hpp"
#include "gui_test_util.hpp"
#include "main_window.hpp"
#include "presets.hpp"
#include "tokens_view.hpp"
#include "training_view.hpp"

using namespace moelab;

class TestGuiDevices : public QObject {
  Q_OBJECT
 private:
  MainWindow* window() { return guitest::labWindow(); }

 private slots:
  void initTestCase() { QStandardPaths::setTestModeEnabled(true); }

  void theDeviceMenuShowsWhereTheModelRuns() {
    std::unique_ptr<MainWindow> w(window());
    const DeviceChoice gpu = list_devices().at(1);
    QAction* cpu = w->deviceAction(QStringLiteral("cpu"));
    QAction* cuda = w->deviceAction(QStringLiteral("cuda"));
    QVERIFY(w->deviceMenu() && cpu && cuda);
    QVERIFY(w->deviceMenu()->actions().contains(cpu) && w->deviceMenu()->actions().contains(cuda));
    QVERIFY(cpu->isEnabled());
    QCOMPARE(cuda->isEnabled(), gpu.available);
    // Auto at start: the GPU where there is one, else the CPU; the status bar names it.
    QCOMPARE(cuda->isChecked(), gpu.available);
    QCOMPARE(cpu->isChecked(), !gpu.available);
    QVERIFY2(w->deviceName().startsWith(gpu.available ? "GPU" : "CPU (Eigen, "), qPrintable(w->deviceName()));
    if (!gpu.available) {
      QCOMPARE(cuda->statusTip(), QString::fromStdString(gpu.why_not));
      QVERIFY(!cuda->toolTip().isEmpty());
      QVERIFY(cuda->text().contains(QStringLiteral("not available")));
    }
    if (qEnvironmentVariableIsSet("MOELAB_DEVICE_SHOTS")) {  // for looking at the menu and status bar
      const QDir dir(qEnvironmentVariable("MOELAB_DEVICE_SHOTS"));
      w->deviceMenu()->popup(w->mapToGlobal(QPoint(200, 30)));
      QApplication::processEvents();
      QVERIFY(w->grab().save(dir.filePath(QStringLiteral("window.png"))));
      QVERIFY(w->deviceMenu()->grab().save(dir.filePath(QStringLiteral("device-menu.png"))));
      w->deviceMenu()->hide();
    }
    // The CPU chosen explicitly: the Tokens view's model runs there and keeps generating.
    cpu->trigger();
    QVERIFY(w->tokensView()->waitForIdle());
    QVERIFY(cpu->isChecked());
    QVERIFY2(w->deviceName().startsWith(QStringLiteral("CPU (Eigen, ")), qPrintable(w->deviceName()));
    const int before = w->tokensView()->snapshot()->count();
    w->tokensView()->stepOnce();
    QVERIFY(w->tokensView()->waitForIdle());
    QCOMPARE(w->tokensView()->snapshot()->count(), before + 1);
    QVERIFY2(w->lastError().isEmpty(), qPrintable(w->lastError()));
  }

  void aDeviceThatFailsFallsBackToTheCpu() {
    const DeviceChoice gpu = list_devices().at(1);
    if (gpu.available) QSKIP("a GPU answers here: the GPU cannot be made to fail");
    std::unique_ptr<MainWindow> w(window());
    // As if the GPU had gone away since the menu was built: the model loads on the CPU, the
    // window says why in one line and switches the menu to the CPU.
    w->tokensView()->setDevice(QStringLiteral("cuda"));
    w->tokensView()->reloadModel();
    QVERIFY(w->tokensView()->waitForIdle());
    QVERIFY2(w->lastError().contains(QString::fromStdString(gpu.why_not)), qPrintable(w->lastError()));
    QVERIFY(w->lastError().endsWith(QStringLiteral("using the CPU")));
    QVERIFY(w->deviceAction(QStringLiteral("cpu"))->isChecked());
    QVERIFY(w->deviceName().startsWith(QStringLiteral("CPU (Eigen, ")));
    w->tokensView()->stepOnce();
    QVERIFY(w->tokensView()->waitForIdle());
    QVERIFY(w->tokensView()->snapshot()->count() > 1);
  }

  // The Device menu's Precision group: three exclusive modes, tf32 only where the GPU is used,
  // bf16 on the CPU an emulation that says so. Choosing bf16 reloads the Tokens view's model on a
  // backend in bf16 (as the backend reports it), the status bar says "bf16", and the router's
  // logits move by bf16's rounding; fp32 again gives the fp32 numbers back.
  void thePrecisionMenuAppliesTheModeToTheModelShown() {
    std::unique_ptr<MainWindow> w(window());
    w->setPrecision(QStringLiteral("fp32"));  // whatever this user's settings say
    QVERIFY(w->tokensView()->waitForIdle());
    const bool gpu = w->deviceAction(QStringLiteral("cuda"))->isChecked();
    QAction* fp32 = w->precisionAction(QStringLiteral("fp32"));
    QAction* bf16 = w->precisionAction(QStringLiteral("bf16"));
    QAction* tf32 = w->precisionAction(QStringLiteral("tf32"));
    QVERIFY(fp32 && bf16 && tf32);
    for (QAction* a : {fp32, bf16, tf32}) {
      QVERIFY(w->deviceMenu()->actions().contains(a));
      QVERIFY(a->isCheckable());
      QVERIFY(a->actionGroup() && a->actionGroup()->isExclusive() && a->actionGroup() == fp32->actionGroup());
    }
    QCOMPARE(fp32->text(), QStringLiteral("fp32 (exact)"));
    QCOMPARE(bf16->text(), QStringLiteral("bf16 products (bf16 operands, fp32 sums)"));
    QCOMPARE(tf32->text(), QStringLiteral("tf32 (GPU tensor cores)"));
    QVERIFY(fp32->isChecked());
    QVERIFY(fp32->isEnabled() && bf16->isEnabled());
    QCOMPARE(tf32->isEnabled(), gpu);
    if (!gpu) {
      QCOMPARE(tf32->toolTip(), QString::fromStdString(precision_why_not("cpu", Precision::TF32)));
      QVERIFY(tf32->toolTip().contains(QStringLiteral("tf32")));
      QVERIFY2(bf16->statusTip().contains(QStringLiteral("emulation")) && bf16->statusTip().contains(QStringLiteral("not a speed-up")),
               qPrintable(bf16->statusTip()));
    }
    QVERIFY2(!w->deviceName().contains(QStringLiteral("·")), qPrintable(w->deviceName()));
    const SnapshotPtr before = w->tokensView()->snapshot();
    QVERIFY(before && before->precision == Precision::FP32);

    bf16->trigger();
    QVERIFY(w->tokensView()->waitForIdle());
    QVERIFY(bf16->isChecked());
    QVERIFY(w->hasUnsavedWork());
    const SnapshotPtr b16 = w->tokensView()->snapshot();
    QVERIFY(b16 && b16->precision == Precision::BF16);  // what the worker's backend reports
    QVERIFY2(w->deviceName().endsWith(QStringLiteral(" · bf16")), qPrintable(w->deviceName()));
    QVERIFY2(w->lastError().isEmpty(), qPrintable(w->lastError()));
    // The prompt's positions (the same tokens; causal, so the generated ones do not reach them):
    // router logits within bf16's rounding of fp32's, and not equal to them.
    auto compare = [&](const TokensSnapshot& x, const TokensSnapshot& y, double* worst) {
      *worst = 0;
      const int T = y.promptLength;
      QVERIFY(x.promptLength == T && x.layers.size() == y.layers.size() && !x.layers.isEmpty());
      for (int i = 0; i < T; ++i) QCOMPARE(x.tokens[i], y.tokens[i]);
      for (int li = 0; li < x.layers.size(); ++li)
        for (int i = 0; i < T * int(x.experts()); ++i)
          *worst = std::max(*worst, double(std::abs(x.layers[li].logits[i] - y.layers[li].logits[i])));
    };
    double moved = 0;
    compare(*before, *b16, &moved);
    qInfo("bf16 moves the prompt's router logits by up to %.3g", moved);
    QVERIFY2(moved > 1e-5, "bf16 chosen, yet the logits are fp32's: the mode did not apply");
    QVERIFY2(moved < 0.1, "bf16 moved the logits far more than its rounding could");

    fp32->trigger();
    QVERIFY(w->tokensView()->waitForIdle());
    const SnapshotPtr back = w->tokensView()->snapshot();
    QVERIFY(back && back->precision == Precision::FP32);
    QVERIFY2(!w->deviceName().contains(QStringLiteral("bf16")), qPrintable(w->deviceName()));
    double again = 0;
    compare(*before, *back, &again);
    QVERIFY(again <= (gpu ? 1e-4 : 0.0));  // the CPU is deterministic: fp32's numbers exactly

    // tf32 chosen where the CPU is used: kept as the choice (for a GPU), computed in fp32.
    w->setDevice(QStringLiteral("cpu"));
    QVERIFY(w->tokensView()->waitForIdle());
    QVERIFY(!tf32->isEnabled());
    w->setPrecision(QStringLiteral("tf32"));
    QVERIFY(w->tokensView()->waitForIdle());
    QVERIFY(fp32->isChecked());
    QVERIFY(w->tokensView()->snapshot()->precision == Precision::FP32);
    QVERIFY2(w->lastError().isEmpty(), qPrintable(w->lastError()));
  }

  // The worker refuses what its backend lacks (tf32 on the CPU, as after a GPU fell back): fp32,
  // and the reason in one line where device fallbacks say theirs; the menu follows.
  void aPrecisionTheBackendLacksFallsBackToFp32() {
    std::unique_ptr<MainWindow> w(window());
    w->setDevice(QStringLiteral("cpu"));
    w->setPrecision(QStringLiteral("bf16"));
    QVERIFY(w->tokensView()->waitForIdle());
    QVERIFY(w->precisionAction(QStringLiteral("bf16"))->isChecked());
    w->tokensView()->setPrecision(Precision::TF32);  // behind the menu's back
    w->tokensView()->reloadModel();
    QVERIFY(w->tokensView()->waitForIdle());
    const QString why = QString::fromStdString(precision_why_not("cpu", Precision::TF32));
    QVERIFY2(w->lastError() == why + QStringLiteral("; using fp32"), qPrintable(w->lastError()));
    QVERIFY(w->precisionAction(QStringLiteral("fp32"))->isChecked());
    QVERIFY(w->deviceAction(QStringLiteral("cpu"))->isChecked());  // not taken for a device failure
    QVERIFY(w->tokensView()->snapshot()->precision == Precision::FP32);
    QVERIFY2(!w->deviceName().contains(QStringLiteral("·")), qPrintable(w->deviceName()));
    w->tokensView()->stepOnce();
    QVERIFY(w->tokensView()->waitForIdle());
  }

  // Training runs in the precision chosen: its backend reports bf16 (run.json records what the
  // backend reports, as the command line does), and the first step's loss moves by bf16's
  // rounding from the fp32 run's with the same seed.
  void trainingRunsInThePrecisionChosen() {
    std::unique_ptr<MainWindow> w(window());
    TrainingView* tv = w->trainingView();
    QTemporaryDir dir;
    auto train = [&](const QString& precision) {
      w->setPrecision(precision);
      tv->selectPreset(QStringLiteral("lesson-collapse"));
      tv->setSteps(2);
      tv->startTraining(dir.filePath(precision));
      const bool done = QTest::qWaitFor([&] { return !tv->isRunning() && tv->history().size() == 2; }, 60000);
      QFile info(dir.filePath(precision + QStringLiteral("/run.json")));
      QFile log(dir.filePath(precision + QStringLiteral("/metrics.jsonl")));
      if (!done || !info.open(QIODevice::ReadOnly) || !log.open(QIODevice::ReadOnly)) return std::make_pair(std::string("?"), 0.0);
      const auto run = nlohmann::json::parse(info.readAll().toStdString());
      const auto first = nlohmann::json::parse(log.readLine().toStdString());
      return std::make_pair(run.value("precision", std::string("none")), first.at("loss").get<double>());
    };
    const auto [p32, loss32] = train(QStringLiteral("fp32"));
    const auto [p16, loss16] = train(QStringLiteral("bf16"));
    QCOMPARE(p32, std::string("fp32"));
    QCOMPARE(p16, std::string("bf16"));
    qInfo("step-1 loss: fp32 %.7f, bf16 %.7f", loss32, loss16);
    QVERIFY2(loss16 != loss32, "bf16 chosen, yet the loss is fp32's: the mode did not apply");
    QVERIFY(std::abs(loss16 - loss32) < 0.01 * loss32);
    QVERIFY2(w->lastError().isEmpty(), qPrintable(w->lastError()));
  }

  // Settings and lab sessions keep the choice under "precision"; sessions from before it open in
  // fp32; a mode this lab does not know is a one-line warning naming the file, and fp32.
  void thePrecisionIsKeptInSettingsAndSessions() {
    QTemporaryDir tmp;
    const QString path = tmp.filePath(QStringLiteral("bf16.moelab"));
    {
      QSettings().setValue(QStringLiteral("precision"), QStringLiteral("bf16"));
      MainWindow w;
      QSettings().remove(QStringLiteral("precision"));
      QVERIFY(w.precisionAction(QStringLiteral("bf16"))->isChecked());
      QVERIFY(w.tokensView()->waitForIdle());
      QVERIFY(w.tokensView()->snapshot()->precision == Precision::BF16);
      QCOMPARE(w.saveSession(path), QString());
    }
    QFile f(path);
    QVERIFY(f.open(QIODevice::ReadOnly));
    QJsonObject saved = QJsonDocument::fromJson(f.readAll()).object();
    f.close();
    QCOMPARE(saved.value(QStringLiteral("precision")).toString(), QStringLiteral("bf16"));
    auto write = [&](const QString& name, const QJsonObject& o) {
      QFile out(tmp.filePath(name));
      if (out.open(QIODevice::WriteOnly)) out.write(QJsonDocument(o).toJson());
      return out.fileName();
    };
    MainWindow w;
    w.setPrecision(QStringLiteral("fp32"));
    QVERIFY(w.tokensView()->waitForIdle());
    QCOMPARE(w.openSession(path), QString());
    QVERIFY(w.tokensView()->waitForIdle());
    QVERIFY(w.precisionAction(QStringLiteral("bf16"))->isChecked());
    QVERIFY(w.tokensView()->snapshot()->precision == Precision::BF16);
    QVERIFY2(w.deviceName().endsWith(QStringLiteral(" · bf16")), qPrintable(w.deviceName()));
    QVERIFY(!w.hasUnsavedWork());
    QVERIFY2(w.lastError().isEmpty(), qPrintable(w.lastError()));
    // Saved before the Precision menu: fp32.
    saved.remove(QStringLiteral("precision"));
    QCOMPARE(w.openSession(write(QStringLiteral("old.moelab"), saved)), QString());
    QVERIFY(w.tokensView()->waitForIdle());
    QVERIFY(w.precisionAction(QStringLiteral("fp32"))->isChecked());
    QVERIFY(w.tokensView()->snapshot()->precision == Precision::FP32);
    // Upper case is the same mode, as on the command line.
    saved.insert(QStringLiteral("precision"), QStringLiteral("BF16"));
    QCOMPARE(w.openSession(write(QStringLiteral("upper.moelab"), saved)), QString());
    QVERIFY(w.tokensView()->waitForIdle());
    QVERIFY(w.precisionAction(QStringLiteral("bf16"))->isChecked());
    // A mode it does not know: opened, in fp32, with a warning naming the file and the value.
    saved.insert(QStringLiteral("precision"), QStringLiteral("fp16"));
    QCOMPARE(w.openSession(write(QStringLiteral("fp16.moelab"), saved)), QString());
    QVERIFY(w.tokensView()->waitForIdle());
    QVERIFY(w.precisionAction(QStringLiteral("fp32"))->isChecked());
    QVERIFY(w.tokensView()->snapshot()->precision == Precision::FP32);
    const QString err = w.lastError();
    QVERIFY2(err.contains(QStringLiteral("fp16.moelab")) && err.contains(QStringLiteral("'fp16'")) &&
                 err.endsWith(QStringLiteral("using fp32")) && !err.contains('\n'),
             qPrintable(err));
  }
};

QTEST_MAIN(TestGuiDevices)
#include "test_gui_devices.moc"
