#include "main_window.hpp"

#include "knob_drawer.hpp"
#include "lesson_player.hpp"

#include <QAction>
#include <QActionGroup>
#include <QApplication>
#include <QCloseEvent>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QDir>
#include <QFileDialog>
#include <QFile>
#include <QFileInfo>
#include <QKeySequence>
#include <QJsonArray>
#include <QJsonObject>
#include <QLabel>
#include <QMessageBox>
#include <QMenuBar>
#include <QMimeData>
#include <QElapsedTimer>
#include <QHBoxLayout>
#include <QProgressBar>
#include <QPushButton>
#include <QTimer>
#include <QScreen>
#include <QSettings>
#include <QShortcut>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTabWidget>
#include <QUrl>
#include <QVBoxLayout>
#include <qcustomplot.h>

#include "chart_panel.hpp"
#include "compare_view.hpp"
#include "devices.hpp"
#include "error.hpp"
#include "lab_session.hpp"
#include "model_view.hpp"
#include "safetensors.hpp"
#include "theme.hpp"
#include "tokens_view.hpp"
#include "training_view.hpp"

namespace {
// The one line the error banner shows for a worker's device and precision fallbacks.
QString joinProblems(const QString& deviceProblem, const QString& precisionProblem) {
  QStringList parts{deviceProblem, precisionProblem};
  parts.removeAll(QString());
  return parts.join(QStringLiteral("; "));
}
}  // namespace

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
  setWindowTitle(tr("MoE Lab"));
  auto* central = new QWidget(this);
  auto* layout = new QVBoxLayout(central);
  layout->setContentsMargins(4, 4, 4, 4);
  m_errorBanner = new QLabel(central);
  m_errorBanner->setWordWrap(true);
  m_errorBanner->setStyleSheet(QStringLiteral("QLabel { background: #fbe3d6; color: #7a1f00; padding: 6px; border: 1px solid #D55E00; }"));
  m_errorBanner->setToolTip(tr("Click to dismiss"));
  m_errorBanner->hide();
  m_errorBanner->installEventFilter(this);
  layout->addWidget(m_errorBanner);
  m_tabs = new QTabWidget(central);
  m_model = new ModelView(m_tabs);
  m_tokens = new TokensView(m_tabs);
  m_tabs->addTab(m_model, tr("Model"));
  m_tabs->addTab(m_tokens, tr("Tokens"));
  m_training = new TrainingView(m_tabs);
  m_tabs->addTab(m_training, tr("Training"));
  m_compare = new CompareView(m_tabs);
  m_tabs->addTab(m_compare, tr("Compare"));
  layout->addWidget(m_tabs, 1);
  setCentralWidget(central);

  m_modelLabel = new QLabel(this);
  m_deviceLabel = new QLabel(this);
  statusBar()->addWidget(m_modelLabel, 1);
  createLoadIndicator();
  statusBar()->addPermanentWidget(m_deviceLabel);

  connect(m_model, &ModelView::errorOccurred, this, &MainWindow::showError);
  connect(m_tokens, &TokensView::errorOccurred, this, &MainWindow::showError);
  connect(m_training, &TrainingView::errorOccurred, this, &MainWindow::showError);
  connect(m_compare, &CompareView::errorOccurred, this, &MainWindow::showError);
  connect(m_training, &TrainingView::openModelRequested, this, &MainWindow::openModel);
  connect(m_training, &TrainingView::runChanged, this, &MainWindow::markUnsaved);
  connect(m_compare, &CompareView::runsChanged, this, &MainWindow::markUnsaved);
  connect(m_compare, &CompareView::addCurrentRunRequested, this, [this] {
    if (m_training->run().history.isEmpty()) return showError(tr("The Training view has no run yet"));
    m_compare->addRunData(m_training->run());
  });
  connect(m_tokens, &TokensView::modelChanged, this, [this](const QString& name, const moelab::ModelConfig& c) {
    m_modelLabel->setText(tr("Model: %1 — %2, %3 layers, %4 experts, top-%5")
                              .arg(name, QString::fromStdString(c.architecture))
                              .arg(c.num_layers)
                              .arg(c.num_experts)
                              .arg(c.top_k));
    m_model->showConfig(c, name);
  });
  connect(m_tokens, &TokensView::checkpointRead, this, [this](const CheckpointSummary& c) {
    m_model->setStorage(c.present ? c.dtype : QString(), double(c.bytes));  // before modelChanged
  });
  connect(m_tokens, &TokensView::deviceInUse, this,
          [this](const QString& name, const QString& deviceProblem, const QString& precisionProblem) {
            m_deviceLabel->setText(name);
            if (!deviceProblem.isEmpty()) fallBackToCpu();
            if (!precisionProblem.isEmpty()) fallBackToFp32();
            if (const QString why = joinProblems(deviceProblem, precisionProblem); !why.isEmpty()) showError(why);
          });
  connect(m_training, &TrainingView::deviceInUse, this,
          [this](const QString&, const QString& deviceProblem, const QString& precisionProblem) {
            // The run trains on the CPU, or in fp32, and says so.
            if (const QString why = joinProblems(deviceProblem, precisionProblem); !why.isEmpty()) showError(why);
          });
  connect(m_tokens, &TokensView::lastTokenRouting, m_model, &ModelView::setHighlightedExperts);
  for (ChartPanel* c : m_model->charts() + m_tokens->charts() + m_training->charts() + m_compare->charts())
    connect(c, &ChartPanel::errorOccurred, this, &MainWindow::showError);

  // A model joins the recent list once it has loaded (the load runs on the worker thread).
  connect(m_tokens, &TokensView::modelChanged, this, [this] {
    if (!m_pendingRecent.isEmpty()) addRecent(m_pendingRecent);
    m_pendingRecent.clear();
  });
  connect(m_tokens, &TokensView::errorOccurred, this, [this] { m_pendingRecent.clear(); });
  connect(m_tokens, &TokensView::modelChanged, this, [this] { m_shownModelPath = m_modelPath; });

  // Files dropped anywhere in the window, text fields included (eventFilter).
  setAcceptDrops(true);
  qApp->installEventFilter(this);

  createActions();
  LessonPlayer::install(this);
  KnobDrawers::install(this);  // after the lesson dock, which it watches
  readSettings();
  m_tokens->openModel(QStringLiteral("builtin"));
  updateTitle();
  // A session that stopped because a mapped weights file vanished (SIGBUS) left one line here:
  // say it once, at this start, so a teacher knows why the window disappeared.
  const QString notes = QStandardPaths::writableLocation(QStandardPaths::AppDataLocation);
  QDir().mkpath(notes);
  const QString note = QDir(notes).filePath(QStringLiteral("last-stop.txt"));
  moelab::set_sigbus_note_file(note.toStdString());
  QFile last(note);
  if (last.open(QIODevice::ReadOnly)) {
    const QString text = QString::fromUtf8(last.read(4096)).trimmed();
    last.close();
    last.remove();
    if (!text.isEmpty()) showError(tr("The lab stopped last time: %1").arg(text));
  }
}

void MainWindow::updateTitle() {
  setWindowTitle(tr("%1[*] — MoE Lab")
                     .arg(m_sessionPath.isEmpty() ? tr("untitled session") : QFileInfo(m_sessionPath).fileName()));
}

void MainWindow::createActions() {
  QMenu* file = menuBar()->addMenu(tr("&File"));
  QAction* open = file->addAction(tr("&Open Model Folder…"), this, [this] {
    // Start beside the model opened last.
    const QString last = recentModels().value(0);
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Open a model folder (config.json + safetensors)"),
                                                          last.isEmpty() ? QString() : QFileInfo(last).absolutePath());
    if (!dir.isEmpty()) openModel(dir);
  });
  open->setShortcut(QKeySequence::Open);
  open->setStatusTip(tr("Open a Hugging Face model folder or a lab checkpoint"));
  file->addAction(tr("Open &config.json…"), this, [this] {
    const QString f = QFileDialog::getOpenFileName(this, tr("Open a config.json"), QString(), tr("JSON (*.json)"));
    if (!f.isEmpty()) openModel(f);
  })->setStatusTip(tr("Open a Hugging Face config.json: its architecture runs with random weights"));
  file->addAction(tr("Built-in Model"), this, [this] { openModel(QStringLiteral("builtin")); });
  m_recentMenu = file->addMenu(tr("Open Recent &Model"));
  m_recentMenu->setToolTipsVisible(true);  // why an entry is disabled
  connect(m_recentMenu, &QMenu::aboutToShow, this, &MainWindow::rebuildRecentMenu);  // a folder may have gone
  file->addSeparator();
  file->addAction(tr("Open &Run Folder…"), this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Open a run folder (run.json + metrics.jsonl)"),
                                                          TrainingView::runsFolder());
    if (dir.isEmpty()) return;
    if (m_training->openRun(dir)) m_tabs->setCurrentWidget(m_training);
  })->setStatusTip(tr("Replay a finished training run in the Training view"));
  file->addSeparator();
  QAction* openSessionAction = file->addAction(tr("Open Lab &Session…"), this, [this] {
    if (!maybeSave()) return;
    const QString f = QFileDialog::getOpenFileName(this, tr("Open a lab session"), QString(), tr("Lab sessions (*.moelab)"));
    if (f.isEmpty()) return;
    if (const QString err = openSession(f); !err.isEmpty()) showError(err);
  });
  openSessionAction->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_O));
  openSessionAction->setStatusTip(tr("Reopen the models, settings and runs of a saved lab session"));
  QAction* save = file->addAction(tr("&Save Lab Session"), this, [this] { saveSessionInteractive(false); });
  save->setShortcut(QKeySequence::Save);
  save->setStatusTip(tr("Save the views' settings, the model and the runs' folders"));
  QAction* saveAs = file->addAction(tr("Save Lab Session &As…"), this, [this] { saveSessionInteractive(true); });
  saveAs->setShortcut(QKeySequence::SaveAs);
  file->addSeparator();
  QAction* exp = file->addAction(tr("&Export All Charts…"), this, &MainWindow::exportAll);
  exp->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_E));
  exp->setStatusTip(tr("Write every chart of this view as PNG, SVG, PDF and CSV into a folder"));
  file->addSeparator();
  QAction* quit = file->addAction(tr("&Quit"), this, &QWidget::close);
  quit->setShortcut(QKeySequence::Quit);

  QMenu* view = menuBar()->addMenu(tr("&View"));
  m_presentationAction = view->addAction(tr("&Presentation Mode"));
  m_presentationAction->setCheckable(true);
  m_presentationAction->setShortcut(Qt::Key_F11);
  m_presentationAction->setStatusTip(tr("Large fonts and thick lines for a projector"));
  connect(m_presentationAction, &QAction::toggled, this, &MainWindow::setPresentation);
  createDeviceMenu();

  // Space steps a token while the Tokens view is showing.
  auto* step = new QShortcut(QKeySequence(Qt::Key_Space), this);
  connect(step, &QShortcut::activated, this, [this] {
    if (m_tabs->currentWidget() == m_tokens) m_tokens->stepOnce();
  });
}

void MainWindow::setPresentation(bool on) {
  Theme::setCurrent(on ? Theme::projector() : Theme::normal());
  QFont f = QApplication::font();
  f.setPointSizeF(on ? 15 : 10);
  QApplication::setFont(f);
  if (m_presentationAction->isChecked() != on) m_presentationAction->setChecked(on);
  m_model->applyTheme(Theme::current());
  m_tokens->applyTheme(Theme::current());
  m_training->applyTheme(Theme::current());
  m_compare->applyTheme(Theme::current());
  emit themeChanged();
}

bool MainWindow::presentation() const { return Theme::current().presentation; }

void MainWindow::openModel(const QString& path) {
  m_errorBanner->hide();
  if (path != m_modelPath) markUnsaved();
  m_modelPath = path;
  m_pendingRecent = path == QLatin1String("builtin") ? QString() : path;
  m_tokens->openModel(path);
  m_tabs->setCurrentWidget(m_tokens);
}

void MainWindow::showError(const QString& message) {
  m_lastError = message;
  m_errorBanner->setText(message);
  m_errorBanner->show();
  statusBar()->showMessage(message, 10000);
}

void MainWindow::exportAll() {
  const QString dir = QFileDialog::getExistingDirectory(this, tr("Export every chart of this view into…"));
  if (dir.isEmpty()) return;
  if (m_tabs->currentWidget() == m_training) m_training->redrawAll();
  const QList<ChartPanel*> charts = m_tabs->currentWidget() == m_tokens     ? m_tokens->charts()
                                    : m_tabs->currentWidget() == m_training ? m_training->charts()
                                    : m_tabs->currentWidget() == m_compare  ? m_compare->charts()
                                                                            : m_model->charts();
  for (ChartPanel* c : charts)
    if (const QString err = c->exportAll(dir, QSize(1280, 800)); !err.isEmpty()) return showError(err);
  statusBar()->showMessage(tr("%1 charts exported to %2").arg(charts.size()).arg(dir), 8000);
}

QString MainWindow::saveScreenshots(const QString& dir, QSize size, const QString& tag) {
  if (!QDir().mkpath(dir)) return tr("%1: cannot create the folder").arg(dir);
  resize(size);
  const bool was = presentation();
  for (bool pres : {false, true}) {
    setPresentation(pres);
    for (int i = 0; i < m_tabs->count(); ++i) {
      if (!tag.isEmpty() && m_tabs->widget(i) != m_model && m_tabs->widget(i) != m_tokens) continue;
      m_tabs->setCurrentIndex(i);
      QTabWidget* sub = m_tabs->widget(i) == m_tokens     ? m_tokens->pages()
                        : m_tabs->widget(i) == m_training ? m_training->pages()
                        : m_tabs->widget(i) == m_compare  ? m_compare->pages()
                                                          : nullptr;
      const int pages = sub ? sub->count() : 1;
      for (int page = 0; page < pages; ++page) {
        if (sub) sub->setCurrentIndex(page);
        QApplication::processEvents();
        for (ChartPanel* c : m_model->charts() + m_tokens->charts() + m_training->charts() + m_compare->charts())
          if (c->plot()) c->plot()->replot(QCustomPlot::rpImmediateRefresh);
        QApplication::processEvents();
        const QString name = QStringLiteral("%1%2-%3.png")
                                 .arg(m_tabs->tabText(i).toLower() + (tag.isEmpty() ? QString() : QLatin1Char('-') + tag),
                                      pages > 1 ? QStringLiteral("-%1").arg(page + 1) : QString(),
                                      pres ? "presentation" : "normal");
        if (!grab().save(QDir(dir).filePath(name))) return tr("%1: cannot write").arg(QDir(dir).filePath(name));
      }
      if (sub) sub->setCurrentIndex(0);
    }
  }
  setPresentation(was);
  return {};
}

void MainWindow::readSettings() {
  QSettings s;
  const QByteArray geometry = s.value(QStringLiteral("geometry")).toByteArray();
  if (geometry.isEmpty() || !restoreGeometry(geometry)) resize(1280, 800);
  setPresentation(s.value(QStringLiteral("presentation"), false).toBool());
  useDevice(s.value(QStringLiteral("device"), QStringLiteral("auto")).toString());
  usePrecision(s.value(QStringLiteral("precision"), QStringLiteral("fp32")).toString());
  rebuildRecentMenu();
}

void MainWindow::writeSettings() {
  QSettings s;
  s.setValue(QStringLiteral("geometry"), saveGeometry());
  s.setValue(QStringLiteral("presentation"), presentation());
  s.setValue(QStringLiteral("device"), m_device);
  s.setValue(QStringLiteral("precision"), m_precision);
}

bool MainWindow::eventFilter(QObject* watched, QEvent* e) {
  if (watched == m_errorBanner && e->type() == QEvent::MouseButtonPress) {
    m_errorBanner->hide();
    return true;
  }
  const QEvent::Type type = e->type();
  if (type == QEvent::DragEnter || type == QEvent::DragMove || type == QEvent::Drop) {
    auto* w = qobject_cast<QWidget*>(watched);
    auto* drop = static_cast<QDropEvent*>(e);  // QDragEnterEvent and QDragMoveEvent derive from it
    if (!w || (w != this && !isAncestorOf(w)) || !drop->mimeData() || !drop->mimeData()->hasUrls())
      return QMainWindow::eventFilter(watched, e);
    if (type != QEvent::Drop) {
      drop->acceptProposedAction();  // anything with a URL: what it is is said on the drop
      return true;
    }
    drop->acceptProposedAction();
    const QList<QUrl> urls = drop->mimeData()->urls();
    const QUrl& url = urls.first();
    if (!url.isLocalFile()) {
      statusBar()->showMessage(tr("%1: only files and folders on this computer can be opened").arg(url.toString()), 10000);
      return true;
    }
    // Opened after the drop has returned: a session's "save changes?" dialog must not run inside
    // the drag-and-drop loop.
    const QString path = url.toLocalFile();
    const int more = int(urls.size()) - 1;
    QMetaObject::invokeMethod(
        this,
        [this, path, more] {
          if (openDropped(path).isEmpty() && more > 0)
            statusBar()->showMessage(tr("Opened %1; the other %n dropped item(s) were not opened", "", more)
                                         .arg(QFileInfo(path).fileName()),
                                     10000);
        },
        Qt::QueuedConnection);
    return true;
  }
  return QMainWindow::eventFilter(watched, e);
}

bool MainWindow::maybeSave() {
  if (!isWindowModified()) return true;
  const auto answer = QMessageBox::warning(
      this, tr("MoE Lab"), tr("This lab session has unsaved changes (runs, models or settings). Save it?"),
      QMessageBox::Save | QMessageBox::Discard | QMessageBox::Cancel, QMessageBox::Save);
  if (answer == QMessageBox::Save) return saveSessionInteractive(false);
  return answer == QMessageBox::Discard;
}

bool MainWindow::saveSessionInteractive(bool askPath) {
  QString path = m_sessionPath;
  if (askPath || path.isEmpty()) {
    path = QFileDialog::getSaveFileName(this, tr("Save the lab session"), path.isEmpty() ? tr("lesson.moelab") : path,
                                        tr("Lab sessions (*.moelab)"));
    if (path.isEmpty()) return false;
    if (QFileInfo(path).suffix().isEmpty()) path += QStringLiteral(".moelab");
  }
  if (const QString err = saveSession(path); !err.isEmpty()) {
    showError(err);
    return false;
  }
  statusBar()->showMessage(tr("Session saved to %1").arg(path), 5000);
  return true;
}

QString MainWindow::saveSession(const QString& path) {
  QJsonObject s;
  s.insert(QStringLiteral("tab"), m_tabs->currentIndex());
  s.insert(QStringLiteral("presentation"), presentation());
  s.insert(QStringLiteral("device"), m_device);
  s.insert(QStringLiteral("precision"), m_precision);
  s.insert(QStringLiteral("tokens"), QJsonObject{{"model", m_modelPath}});
  s.insert(QStringLiteral("training"), m_training->state());
  s.insert(QStringLiteral("compare"), QJsonArray::fromStringList(m_compare->runDirs()));
  if (const QString err = LabSession::save(path, s); !err.isEmpty()) return err;
  m_sessionPath = path;
  setWindowModified(false);
  updateTitle();
  return {};
}

QString MainWindow::openSession(const QString& path) {
  QString err;
  const QJsonObject s = LabSession::load(path, &err);
  if (!err.isEmpty()) return err;
  const QString model = s.value(QStringLiteral("tokens")).toObject().value(QStringLiteral("model")).toString();
  // Sessions saved before the Precision menu ran in fp32. A mode this lab does not know is
  // ignored with a warning (an unknown device is taken for "auto" silently; a precision
  // changes the numbers, so it says so).
  QString precision = QStringLiteral("fp32"), warning;
  if (const QJsonValue v = s.value(QStringLiteral("precision")); !v.isUndefined()) {
    try {
      precision = QString::fromLatin1(moelab::precision_name(moelab::parse_precision(v.toString().toStdString())));
    } catch (const moelab::Error& e) {
      warning = tr("%1: %2; using fp32").arg(path, QString::fromUtf8(e.what()));
    }
  }
  useDevice(s.value(QStringLiteral("device")).toString(m_device));
  usePrecision(precision);
  openModel(model.isEmpty() ? m_modelPath : model);
  m_training->restoreState(s.value(QStringLiteral("training")).toObject());
  m_compare->clearRuns();
  for (const QJsonValue& d : s.value(QStringLiteral("compare")).toArray()) m_compare->addRun(d.toString());
  setPresentation(s.value(QStringLiteral("presentation")).toBool(presentation()));
  m_tabs->setCurrentIndex(std::clamp(s.value(QStringLiteral("tab")).toInt(), 0, m_tabs->count() - 1));
  m_sessionPath = path;
  setWindowModified(false);
  updateTitle();
  if (!warning.isEmpty()) showError(warning);  // after openModel, which clears the banner
  return {};
}

void MainWindow::closeEvent(QCloseEvent* e) {
  if (!maybeSave()) {
    e->ignore();
    return;
  }
  writeSettings();
  e->accept();
}
