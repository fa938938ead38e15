// File ▸ Open Recent Model and files dropped on the window, offscreen: the recent list is kept in
// settings (most recent first, at most eight, a folder that has gone disabled, Clear Recent), and
// a dropped model folder, config.json, safetensors file or lab session opens as the File menu
// opens it; anything else gets one status line.
#include <QAction>
#include <QDir>
#include <QFile>
#include <QLineEdit>
#include <QMenu>
#include <QMimeData>
#include <QProcess>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTemporaryDir>
#include <QUrl>
#include <QtTest>

#include "main_window.hpp"
#include "presets.hpp"
#include "tokens_view.hpp"
#include "training_view.hpp"

class TestGuiFiles : public QObject {
  Q_OBJECT
 private:
  QTemporaryDir m_tmp;

  // A model folder in the temporary folder: the built-in model's config.json, with its weights
  // when asked (without, the window runs the architecture with random weights).
  QString model(const QString& name, bool weights = false) {
    const QString builtin = QString::fromStdString(moelab::resources_dir()) + QStringLiteral("/models/builtin/");
    const QString dir = m_tmp.filePath(name);
    if (QDir(dir).exists()) return dir;
    if (!QDir().mkpath(dir) || !QFile::copy(builtin + QStringLiteral("config.json"), dir + QStringLiteral("/config.json")))
      qFatal("cannot make the model folder %s", qPrintable(dir));
    if (weights && !QFile::copy(builtin + QStringLiteral("model.safetensors"), dir + QStringLiteral("/model.safetensors")))
      qFatal("cannot copy the weights into %s", qPrintable(dir));
    return dir;
  }

  // Open through the window and wait for the worker to load it (or to fail).
  static void openAndWait(MainWindow& w, const QString& path) {
    w.openModel(path);
    QVERIFY(w.tokensView()->waitForIdle());
    QCoreApplication::processEvents();  // the queued modelChanged / errorOccurred
  }

  // The recent menu's model entries (not the separator and Clear Recent), refreshed as on showing.
  static QList<QAction*> recentEntries(MainWindow& w) {
    emit w.recentMenu()->aboutToShow();
    QList<QAction*> out;
    for (QAction* a : w.recentMenu()->actions())
      if (!a->isSeparator() && a->data().isValid()) out.push_back(a);
    return out;
  }

  static QAction* clearAction(MainWindow& w) {
    for (QAction* a : w.recentMenu()->actions())
      if (a->text().contains(QStringLiteral("Clear Recent"))) return a;
    return nullptr;
  }

  // A drag entering `target` and dropped there, as the platform sends them.
  static bool drop(QWidget* target, const QList<QUrl>& urls) {
    QMimeData mime;
    mime.setUrls(urls);
    mime.setText(urls.first().toString());  // file managers send the path as text too
    const QPoint at = target->rect().center();
    QDragEnterEvent enter(at, Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QApplication::sendEvent(target, &enter);
    if (!enter.isAccepted()) return false;
    QDropEvent dropped(QPointF(at), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QApplication::sendEvent(target, &dropped);
    QCoreApplication::processEvents();  // the window opens it after the drop returns
    return dropped.isAccepted();
  }

 private slots:
  void initTestCase() {
    QStandardPaths::setTestModeEnabled(true);  // QSettings under ~/.qttest, not the user's
    QVERIFY(m_tmp.isValid());
    QVERIFY2(QSettings().fileName().contains(QStringLiteral(".qttest")), qPrintable(QSettings().fileName()));
    QSettings().remove(QStringLiteral("recentModels"));
  }
  void cleanup() { QSettings().remove(QStringLiteral("recentModels")); }

  // The line a SIGBUS stop leaves (core/safetensors.cpp) is shown once at the next start.
  void aStopLeftByAVanishedWeightsFileIsShownOnceAtTheNextStart() {
    const QString dir = QStandardPaths::writableLocation(QStandardPaths::AppDataLocation);
    QVERIFY(QDir().mkpath(dir));
    const QString note = QDir(dir).filePath(QStringLiteral("last-stop.txt"));
    QFile f(note);
    QVERIFY(f.open(QIODevice::WriteOnly) && f.write("/models/olmoe/model.safetensors: the weights file was truncated\n") > 0);
    f.close();
    {
      MainWindow w;
      QVERIFY2(w.lastError().contains(QStringLiteral("The lab stopped last time: /models/olmoe/model.safetensors")),
               qPrintable(w.lastError()));
      QVERIFY(!QFile::exists(note));
    }
    MainWindow again;
    QVERIFY(again.lastError().isEmpty());
  }

  void recentModelsAreStoredMostRecentFirstAtMostEight() {
    MainWindow w;
    w.show();
    QVERIFY(w.tokensView()->waitForIdle());
    QVERIFY(w.recentModels().isEmpty());
    QVERIFY(recentEntries(w).isEmpty());
    QVERIFY(clearAction(w) && !clearAction(w)->isEnabled());

    // A model with weights: once loaded it is in the list and in the menu, by absolute path.
    const QString a = model(QStringLiteral("a"), true);
    openAndWait(w, a);
    QVERIFY2(w.lastError().isEmpty(), qPrintable(w.lastError()));
    QCOMPARE(w.recentModels(), QStringList{a});
    QList<QAction*> entries = recentEntries(w);
    QCOMPARE(entries.size(), 1);
    QCOMPARE(entries[0]->data().toString(), a);
    QVERIFY(entries[0]->isEnabled() && entries[0]->text().contains(QDir::toNativeSeparators(a)));
    QVERIFY(clearAction(w)->isEnabled());

    // The built-in model and a model that fails to load are not added.
    openAndWait(w, QStringLiteral("builtin"));
    const QString broken = m_tmp.filePath(QStringLiteral("broken"));
    QVERIFY(QDir().mkpath(broken));
    QFile cfg(broken + QStringLiteral("/config.json"));
    QVERIFY(cfg.open(QIODevice::WriteOnly) && cfg.write("{not json") > 0);
    cfg.close();
    openAndWait(w, broken);
    QVERIFY2(w.lastError().contains(QStringLiteral("broken")), qPrintable(w.lastError()));
    QCOMPARE(w.recentModels(), QStringList{a});

    // Nine more: the eight most recent, newest first; a relative path with a trailing slash is
    // the same entry as its absolute path, and opening it again moves it to the front.
    QStringList opened{a};
    for (int i = 0; i < 9; ++i) {
      const QString m = model(QStringLiteral("m%1").arg(i));
      openAndWait(w, m);
      opened.prepend(m);
    }
    QCOMPARE(w.recentModels().size(), MainWindow::kMaxRecentModels);
    QCOMPARE(w.recentModels(), opened.mid(0, MainWindow::kMaxRecentModels));
    QVERIFY(!w.recentModels().contains(a));
    const QString again = opened[5];
    openAndWait(w, QDir::current().relativeFilePath(again) + QStringLiteral("/"));
    QCOMPARE(w.recentModels().first(), again);
    QCOMPARE(w.recentModels().count(again), 1);
    QCOMPARE(w.recentModels().size(), MainWindow::kMaxRecentModels);

    // Kept in the settings: a new window shows the same list, in the same order.
    {
      MainWindow w2;
      QCOMPARE(w2.recentModels(), w.recentModels());
      const QList<QAction*> e2 = recentEntries(w2);
      QCOMPARE(e2.size(), MainWindow::kMaxRecentModels);
      QCOMPARE(e2.first()->data().toString(), again);
      QVERIFY(e2.first()->text().startsWith(QStringLiteral("&1 ")));
      QVERIFY(w2.tokensView()->waitForIdle());
    }

    // A folder that has gone: disabled and marked when the menu is shown.
    const QString gone = w.recentModels()[1];
    QVERIFY(QDir(gone).removeRecursively());
    if (qEnvironmentVariableIsSet("MOELAB_FILE_SHOTS")) {  // for looking at the menu (showing it rebuilds it: the entries are fetched after)
      const QDir dir(qEnvironmentVariable("MOELAB_FILE_SHOTS"));
      w.recentMenu()->popup(w.mapToGlobal(QPoint(200, 30)));
      QApplication::processEvents();
      QVERIFY(w.recentMenu()->grab().save(dir.filePath(QStringLiteral("recent-menu.png"))));
      w.recentMenu()->hide();
      auto* file = qobject_cast<QMenu*>(w.recentMenu()->parent());
      QVERIFY(file);
      file->popup(w.mapToGlobal(QPoint(0, 30)));
      QApplication::processEvents();
      QVERIFY(file->grab().save(dir.filePath(QStringLiteral("file-menu.png"))));
      file->hide();
    }
    entries = recentEntries(w);
    QCOMPARE(entries.size(), MainWindow::kMaxRecentModels);
    QAction* stale = entries[1];
    QCOMPARE(stale->data().toString(), gone);
    QVERIFY(!stale->isEnabled());
    QVERIFY2(stale->text().endsWith(QStringLiteral("(missing)")), qPrintable(stale->text()));
    QVERIFY(entries[0]->isEnabled());
    // One that goes while the menu is open: choosing it says so and forgets it.
    const QString goes = entries[2]->data().toString();
    QVERIFY(QDir(goes).removeRecursively());
    entries[2]->trigger();
    QVERIFY2(w.statusBar()->currentMessage().contains(goes) &&
                 w.statusBar()->currentMessage().contains(QStringLiteral("no longer exists")),
             qPrintable(w.statusBar()->currentMessage()));
    QVERIFY(!w.recentModels().contains(goes));
    QVERIFY(w.recentModels().contains(gone));  // still listed, disabled: a drive may come back

    // Choosing an entry opens it.
    entries = recentEntries(w);
    QSignalSpy loaded(w.tokensView(), &TokensView::modelChanged);
    const QString pick = entries[3]->data().toString();
    entries[3]->trigger();
    QVERIFY(w.tokensView()->waitForIdle());
    QTRY_COMPARE(loaded.count(), 1);
    QCOMPARE(w.recentModels().first(), pick);

    // Clear Recent empties the list and the menu.
    clearAction(w)->trigger();
    QVERIFY(w.recentModels().isEmpty());
    QVERIFY(recentEntries(w).isEmpty());
    QVERIFY(!clearAction(w)->isEnabled());
    QVERIFY(QSettings().value(QStringLiteral("recentModels")).toStringList().isEmpty());
  }

  void aDroppedModelOpensAsOpenModelDoes() {
    MainWindow w;
    w.resize(1280, 800);
    w.show();
    QVERIFY(w.tokensView()->waitForIdle());
    QSignalSpy loaded(w.tokensView(), &TokensView::modelChanged);

    // A model folder dropped on the window.
    const QString dir = model(QStringLiteral("dropped"), true);
    QVERIFY(drop(&w, {QUrl::fromLocalFile(dir)}));
    QVERIFY(w.tokensView()->waitForIdle());
    QTRY_COMPARE(loaded.count(), 1);
    QCOMPARE(loaded.last().at(0).toString(), QStringLiteral("dropped"));
    QCOMPARE(w.recentModels().value(0), dir);
    QCOMPARE(w.tabs()->currentWidget(), w.tokensView());
    QVERIFY2(w.lastError().isEmpty(), qPrintable(w.lastError()));

    // Its model.safetensors, dropped on the prompt field (which would take text): the folder
    // opens and the prompt keeps its text.
    auto* prompt = w.tokensView()->findChild<QLineEdit*>();
    QVERIFY(prompt);
    const QString before = prompt->text();
    const QString other = model(QStringLiteral("other"), true);
    QVERIFY(drop(prompt, {QUrl::fromLocalFile(other + QStringLiteral("/model.safetensors"))}));
    QVERIFY(w.tokensView()->waitForIdle());
    QTRY_COMPARE(loaded.count(), 2);
    QCOMPARE(loaded.last().at(0).toString(), QStringLiteral("other"));
    QCOMPARE(prompt->text(), before);
    QCOMPARE(w.recentModels().value(0), other);

    // A bare config.json: its architecture with random weights, as File ▸ Open config.json.
    const QString bare = model(QStringLiteral("bare"));
    QVERIFY(drop(&w, {QUrl::fromLocalFile(bare + QStringLiteral("/config.json"))}));
    QVERIFY(w.tokensView()->waitForIdle());
    QTRY_COMPARE(loaded.count(), 3);
    QVERIFY2(loaded.last().at(0).toString().startsWith(QStringLiteral("bare")), qPrintable(loaded.last().at(0).toString()));

    // Anything else: one status line naming it, nothing opened, no error banner.
    auto refused = [&](const QUrl& url, const QString& needle) {
      const int n = int(loaded.count());
      w.statusBar()->clearMessage();
      QVERIFY(drop(&w, {url}));
      QVERIFY(w.tokensView()->waitForIdle());
      QCoreApplication::processEvents();
      const QString msg = w.statusBar()->currentMessage();
      QVERIFY2(msg.contains(needle) && !msg.contains('\n'), qPrintable(msg));
      QCOMPARE(int(loaded.count()), n);
    };
    const QString text = m_tmp.filePath(QStringLiteral("notes.txt"));
    QFile f(text);
    QVERIFY(f.open(QIODevice::WriteOnly) && f.write("hello") > 0);
    f.close();
    refused(QUrl::fromLocalFile(text), QStringLiteral("notes.txt: not a model folder, config.json"));
    const QString empty = m_tmp.filePath(QStringLiteral("empty"));
    QVERIFY(QDir().mkpath(empty));
    refused(QUrl::fromLocalFile(empty), QStringLiteral("empty: not a model folder (no config.json)"));
    const QString lone = m_tmp.filePath(QStringLiteral("lone"));
    QVERIFY(QDir().mkpath(lone) && QFile::copy(other + QStringLiteral("/model.safetensors"), lone + QStringLiteral("/model.safetensors")));
    refused(QUrl::fromLocalFile(lone + QStringLiteral("/model.safetensors")), QStringLiteral("no config.json beside it"));
    refused(QUrl(QStringLiteral("https://huggingface.co/Qwen/Qwen3-30B-A3B")), QStringLiteral("only files and folders"));
    refused(QUrl::fromLocalFile(m_tmp.filePath(QStringLiteral("nothing-here"))), QStringLiteral("no such file or folder"));
    QVERIFY2(w.lastError().isEmpty(), qPrintable(w.lastError()));
    QCOMPARE(w.recentModels().value(0), QDir::cleanPath(bare + QStringLiteral("/config.json")));

    // Text without a URL is left to the widget under it (the prompt takes dropped text).
    QMimeData plain;
    plain.setText(QStringLiteral("just text"));
    QDragEnterEvent enter(QPoint(5, 5), Qt::CopyAction, &plain, Qt::LeftButton, Qt::NoModifier);
    enter.ignore();
    QApplication::sendEvent(&w, &enter);
    QVERIFY(!enter.isAccepted());
  }

  void aDroppedRunFolderOpensInTheTrainingView() {
    const QString run = m_tmp.filePath(QStringLiteral("run"));
    QProcess cli;
    cli.start(QStringLiteral(MOELAB_CLI), {"train", "--config", "moe-4x-top1", "--steps", "3", "--batch", "1",
                                           "--seq-len", "8", "--out", run, "--quiet"});
    QVERIFY(cli.waitForFinished(120000));
    QVERIFY2(cli.exitCode() == 0, cli.readAllStandardError().constData());
    MainWindow w;
    w.show();
    QVERIFY(w.tokensView()->waitForIdle());
    QVERIFY(drop(&w, {QUrl::fromLocalFile(run)}));
    QCOMPARE(w.tabs()->currentWidget(), w.trainingView());
    QCOMPARE(QDir(w.trainingView()->run().dir), QDir(run));
    QCOMPARE(w.trainingView()->run().history.size(), 3);
    QVERIFY2(w.lastError().isEmpty(), qPrintable(w.lastError()));
    // Its run.json opens the same run; the run's checkpoint is a model folder.
    w.tabs()->setCurrentIndex(0);  // the Model view
    QVERIFY(drop(&w, {QUrl::fromLocalFile(run + QStringLiteral("/run.json"))}));
    QCOMPARE(w.tabs()->currentWidget(), w.trainingView());
    QSignalSpy loaded(w.tokensView(), &TokensView::modelChanged);
    const QString ck = QDir(run + QStringLiteral("/checkpoints")).entryInfoList(QDir::Dirs | QDir::NoDotAndDotDot).value(0).filePath();
    QVERIFY(!ck.isEmpty());
    QVERIFY(drop(&w, {QUrl::fromLocalFile(ck)}));
    QVERIFY(w.tokensView()->waitForIdle());
    QTRY_COMPARE(loaded.count(), 1);
    QCOMPARE(w.recentModels().value(0), ck);
    // A run folder whose run.json is broken: the error names it, nothing crashes.
    const QString bad = m_tmp.filePath(QStringLiteral("badrun"));
    QVERIFY(QDir().mkpath(bad));
    QFile f(bad + QStringLiteral("/run.json"));
    QVERIFY(f.open(QIODevice::WriteOnly) && f.write("[1, 2]") > 0);
    f.close();
    QVERIFY(drop(&w, {QUrl::fromLocalFile(bad)}));
    QVERIFY2(w.lastError().contains(QStringLiteral("badrun")), qPrintable(w.lastError()));
  }

  void aDroppedLabSessionOpensIt() {
    const QString path = m_tmp.filePath(QStringLiteral("lesson.moelab"));
    const QString dir = model(QStringLiteral("in-session"), true);
    {
      MainWindow w;
      QVERIFY(w.tokensView()->waitForIdle());
      openAndWait(w, dir);
      QCOMPARE(w.saveSession(path), QString());
    }
    MainWindow w;
    w.show();
    QVERIFY(w.tokensView()->waitForIdle());
    QSignalSpy loaded(w.tokensView(), &TokensView::modelChanged);
    QVERIFY(drop(&w, {QUrl::fromLocalFile(path)}));
    QVERIFY(w.tokensView()->waitForIdle());
    QTRY_COMPARE(loaded.count(), 1);
    QCOMPARE(w.sessionPath(), path);
    QCOMPARE(loaded.last().at(0).toString(), QStringLiteral("in-session"));
    QVERIFY(!w.hasUnsavedWork());
  }
};

QTEST_MAIN(TestGuiFiles)
#include "test_gui_files.moc"
