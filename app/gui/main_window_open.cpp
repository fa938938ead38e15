// MainWindow: opening models and files — the status bar's load indicator (progress, stage,
// seconds, Cancel), File ▸ Open Recent Model, and files dropped on the window.
#include "main_window.hpp"

#include <QAction>
#include <QDir>
#include <QElapsedTimer>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QLabel>
#include <QMenu>
#include <QProgressBar>
#include <QPushButton>
#include <QSettings>
#include <QStatusBar>
#include <QTabWidget>
#include <QTimer>

#include "tokens_view.hpp"
#include "training_view.hpp"

void MainWindow::createLoadIndicator() {
  // A bar (busy until Model::load reports how far it has come), the stage the loader is at, and
  // the seconds so far, which tick on while the weights are read (the window never waits for them).
  m_loadBox = new QWidget(this);
  auto* row = new QHBoxLayout(m_loadBox);
  row->setContentsMargins(0, 0, 0, 0);
  m_loadBar = new QProgressBar(m_loadBox);
  m_loadBar->setRange(0, 0);
  m_loadBar->setTextVisible(false);
  m_loadBar->setMaximumWidth(120);
  m_loadLabel = new QLabel(m_loadBox);
  m_cancelLoad = new QPushButton(tr("Cancel"), m_loadBox);
  m_cancelLoad->setToolTip(tr("Stop opening this model; the model shown stays"));
  row->addWidget(m_loadBar);
  row->addWidget(m_loadLabel, 1);
  row->addWidget(m_cancelLoad);
  statusBar()->addPermanentWidget(m_loadBox);  // never hidden by a passing message
  m_loadBox->hide();
  m_loadClock = std::make_unique<QElapsedTimer>();
  m_loadTick = new QTimer(this);
  m_loadTick->setInterval(500);
  connect(m_loadTick, &QTimer::timeout, this, &MainWindow::updateLoadText);
  connect(m_cancelLoad, &QPushButton::clicked, m_tokens, &TokensView::cancelLoad);
  connect(m_tokens, &TokensView::loadStarted, this, [this](const QString& what) {
    m_loadWhat = what;
    m_loadStage.clear();
    m_loadBar->setRange(0, 0);
    m_loadClock->start();
    m_loadTick->start();
    updateLoadText();
    m_loadBox->show();
  });
  connect(m_tokens, &TokensView::loadProgress, this, [this](const QString& stage, double fraction) {
    m_loadStage = stage;
    if (fraction >= 0) {
      m_loadBar->setRange(0, 1000);
      m_loadBar->setValue(int(fraction * 1000));
    } else {
      m_loadBar->setRange(0, 0);
    }
    updateLoadText();
  });
  connect(m_tokens, &TokensView::loadFinished, this, [this](bool cancelled) {
    m_loadTick->stop();
    m_loadBox->hide();
    if (!cancelled) return;
    m_pendingRecent.clear();
    m_modelPath = m_shownModelPath;
    statusBar()->showMessage(tr("Opening %1 cancelled; the model shown stays").arg(m_loadWhat), 8000);
  });
}

QString MainWindow::loadText() const { return m_loadLabel->text(); }

void MainWindow::updateLoadText() {
  const qint64 s = m_loadClock->isValid() ? m_loadClock->elapsed() / 1000 : 0;
  m_loadLabel->setText(m_loadStage.isEmpty() ? tr("Opening %1… %2 s").arg(m_loadWhat).arg(s)
                                             : tr("Opening %1: %2… %3 s").arg(m_loadWhat, m_loadStage).arg(s));
}
namespace {
const QString kRecentKey = QStringLiteral("recentModels");
}  // namespace

QStringList MainWindow::recentModels() const { return QSettings().value(kRecentKey).toStringList(); }

void MainWindow::addRecent(const QString& path) {
  // Absolute and clean, so that "run/ck" and "./run/ck/" are one entry and a path given on the
  // command line still opens from another working directory.
  const QString p = QDir::cleanPath(QFileInfo(path).absoluteFilePath());
  QStringList recent = recentModels();
  recent.removeAll(p);
  recent.prepend(p);
  while (recent.size() > kMaxRecentModels) recent.removeLast();
  QSettings().setValue(kRecentKey, recent);
  rebuildRecentMenu();
}

void MainWindow::clearRecentModels() {
  QSettings().remove(kRecentKey);
  // Rebuilt after the menu's action that called this has returned: clear() deletes that action.
  QMetaObject::invokeMethod(this, &MainWindow::rebuildRecentMenu, Qt::QueuedConnection);
}

void MainWindow::openRecent(const QString& path) {
  if (QFileInfo::exists(path)) return openModel(path);
  // Gone since the menu was built: say so and forget it.
  QStringList recent = recentModels();
  recent.removeAll(path);
  QSettings().setValue(kRecentKey, recent);
  QMetaObject::invokeMethod(this, &MainWindow::rebuildRecentMenu, Qt::QueuedConnection);  // as in clearRecentModels
  statusBar()->showMessage(tr("%1: no longer exists; removed from the recent models").arg(path), 10000);
}

void MainWindow::rebuildRecentMenu() {
  m_recentMenu->clear();
  const QStringList recent = recentModels();
  for (int i = 0; i < recent.size(); ++i) {
    const QString& p = recent[i];
    const QString shown = QDir::toNativeSeparators(p).replace(QLatin1Char('&'), QStringLiteral("&&"));
    const bool exists = QFileInfo::exists(p);
    QAction* a = m_recentMenu->addAction(i < 9 ? QStringLiteral("&%1 %2").arg(i + 1).arg(shown) : shown, this,
                                         [this, p] { openRecent(p); });
    a->setData(p);
    a->setEnabled(exists);
    a->setToolTip(exists ? tr("Open %1").arg(p) : tr("%1 no longer exists").arg(p));
    a->setStatusTip(a->toolTip());
    if (!exists) a->setText(tr("%1 (missing)").arg(a->text()));
  }
  m_recentMenu->addSeparator();
  QAction* clear = m_recentMenu->addAction(tr("&Clear Recent"), this, &MainWindow::clearRecentModels);
  clear->setEnabled(!recent.isEmpty());
  clear->setStatusTip(tr("Forget the models opened before"));
}

QString MainWindow::openDropped(const QString& path) {
  const QFileInfo fi(path);
  const QString name = fi.fileName();
  auto say = [this](const QString& message) {
    statusBar()->showMessage(message, 10000);
    return message;
  };
  if (!fi.exists()) return say(tr("%1: no such file or folder").arg(path));
  const QDir dir = fi.isDir() ? QDir(fi.absoluteFilePath()) : fi.absoluteDir();
  if (fi.isFile() && fi.suffix() == QLatin1String("moelab")) {
    if (!maybeSave()) return say(tr("%1: not opened (the session has unsaved changes)").arg(path));
    if (const QString err = openSession(fi.absoluteFilePath()); !err.isEmpty()) {
      showError(err);
      return err;
    }
    return {};
  }
  // A run folder, or its run.json or metrics.jsonl.
  if ((fi.isDir() || name == QLatin1String("run.json") || name == QLatin1String("metrics.jsonl")) &&
      dir.exists(QStringLiteral("run.json"))) {
    if (!m_training->openRun(dir.path())) return lastError();  // openRun showed the error
    m_tabs->setCurrentWidget(m_training);
    return {};
  }
  // A model folder, its config.json, or its weights (model.safetensors, a shard, the index).
  const bool weightsFile = name.endsWith(QLatin1String(".safetensors")) ||
                           name == QLatin1String("model.safetensors.index.json");
  if (fi.isFile() && name == QLatin1String("config.json")) {
    openModel(fi.absoluteFilePath());
    return {};
  }
  if ((fi.isDir() || weightsFile) && dir.exists(QStringLiteral("config.json"))) {
    openModel(dir.path());
    return {};
  }
  if (weightsFile) return say(tr("%1: no config.json beside it, so the lab cannot tell its architecture").arg(path));
  if (fi.isDir())
    return say(tr("%1: not a model folder (no config.json) or a run folder (no run.json)").arg(path));
  return say(tr("%1: not a model folder, config.json, safetensors file, run folder or lab session").arg(path));
}
