// The lab's main window: it only wires the views together (Model, Tokens, Training, Compare),
// the menus, lab sessions, the settings and the status bar; each view lives in its own file.
#pragma once

#include <QMainWindow>
#include <memory>

class CompareView;
class ModelView;
class TokensView;
class TrainingView;
class QLabel;
class QMenu;
class QTabWidget;
class QAction;
class QActionGroup;
class QElapsedTimer;
class QProgressBar;
class QPushButton;
class QTimer;

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(QWidget* parent = nullptr);

  ModelView* modelView() const { return m_model; }
  TokensView* tokensView() const { return m_tokens; }
  TrainingView* trainingView() const { return m_training; }
  CompareView* compareView() const { return m_compare; }
  QTabWidget* tabs() const { return m_tabs; }
  // Render every view at `size` in the normal and the presentation theme, as PNGs in dir
  // ("tokens-1-normal.png"); with a tag, the Model and Tokens views only ("tokens-TAG-1-normal.png").
  QString saveScreenshots(const QString& dir, QSize size, const QString& tag = {});
  void setPresentation(bool on);
  bool presentation() const;
  QString lastError() const { return m_lastError; }
  QString modelPath() const { return m_modelPath; }  // the Tokens view's model: "builtin" or a path
  // The status bar's load indicator (busy bar, what is opened and its stage, seconds, Cancel):
  // visible while a model loads.
  QWidget* loadIndicator() const { return m_loadBox; }
  QString loadText() const;
  QPushButton* cancelLoadButton() const { return m_cancelLoad; }
  // Lab sessions: the views' settings, the model and the runs. "" on success, else the error.
  QString saveSession(const QString& path);
  QString openSession(const QString& path);
  QString sessionPath() const { return m_sessionPath; }
  bool hasUnsavedWork() const { return isWindowModified(); }
  void markUnsaved() { setWindowModified(true); }
  // The Device menu: one checkable action per device (data: "cpu", "cuda"), the one in use checked.
  QMenu* deviceMenu() const { return m_deviceMenu; }
  QAction* deviceAction(const QString& id) const;
  QString deviceName() const;  // the status bar's: where the Tokens view's model runs (" · bf16")
  // Its Precision group: one checkable action per mode (data: "fp32", "bf16", "tf32"), the one in
  // effect checked; a mode the device in use lacks (tf32 on the CPU) is disabled, its tooltip
  // saying why.
  QAction* precisionAction(const QString& id) const;
  // File ▸ Open Recent Model: the models opened (most recent first, at most kMaxRecentModels,
  // absolute paths, kept in QSettings "recentModels"); one that no longer exists is disabled.
  static constexpr int kMaxRecentModels = 8;
  QStringList recentModels() const;
  QMenu* recentMenu() const { return m_recentMenu; }
  void clearRecentModels();
  // A file or folder dropped on the window: a model folder (or its config.json or safetensors
  // file) opens as File ▸ Open Model does, a run folder (or its run.json) as Open Run Folder, a
  // *.moelab file as Open Lab Session. "" when it opened, else the one line the status bar shows.
  QString openDropped(const QString& path);

 signals:
  void themeChanged();  // setPresentation: the views have their new theme

 public slots:
  void openModel(const QString& path);
  // "cpu", "cuda" or "auto" (the GPU when available): the Tokens view's model moves there and the
  // next training run trains there; a run going on keeps its device.
  void setDevice(const QString& device);
  // "fp32", "bf16" or "tf32", the precision of matrix products, taking effect as a device change
  // does. Where the device in use lacks it (tf32 on the CPU) fp32 is used, the choice kept.
  void setPrecision(const QString& precision);
  void showError(const QString& message);
  void exportAll();
  bool saveSessionInteractive(bool askPath);

 protected:
  void closeEvent(QCloseEvent* e) override;
  // Click the error banner to dismiss it; files dropped anywhere in the window (also on a text
  // field, which would otherwise take the path as text) go to openDropped.
  bool eventFilter(QObject* watched, QEvent* e) override;

 private:
  void createActions();
  void readSettings();
  void writeSettings();
  void addRecent(const QString& path);
  void openRecent(const QString& path);
  void rebuildRecentMenu();
  bool maybeSave();  // true = go on (saved or discarded), false = cancel
  void updateTitle();
  void createDeviceMenu();
  void useDevice(const QString& device);   // the choice, without moving the model shown
  void usePrecision(const QString& precision);  // likewise, for the device checked now
  void fallBackToCpu();   // the device failed: the workers are on the CPU
  void fallBackToFp32();  // the backend refused the precision: the workers compute in fp32

  QTabWidget* m_tabs = nullptr;
  ModelView* m_model = nullptr;
  TokensView* m_tokens = nullptr;
  TrainingView* m_training = nullptr;
  CompareView* m_compare = nullptr;
  QString m_sessionPath, m_modelPath = QStringLiteral("builtin");
  QLabel* m_errorBanner = nullptr;
  QLabel* m_modelLabel = nullptr;
  QLabel* m_deviceLabel = nullptr;
  QWidget* m_loadBox = nullptr;
  QProgressBar* m_loadBar = nullptr;
  QLabel* m_loadLabel = nullptr;
  QPushButton* m_cancelLoad = nullptr;
  QTimer* m_loadTick = nullptr;
  std::unique_ptr<QElapsedTimer> m_loadClock;
  QString m_loadWhat, m_loadStage;
  QString m_shownModelPath = QStringLiteral("builtin");  // the model shown, while another loads
  void createLoadIndicator();
  void updateLoadText();
  QMenu* m_recentMenu = nullptr;
  QString m_pendingRecent;  // the model asked for, added to the recent list once it has loaded
  QMenu* m_deviceMenu = nullptr;
  QActionGroup* m_devices = nullptr;
  QString m_device = QStringLiteral("auto");  // the user's choice (settings, sessions)
  QActionGroup* m_precisions = nullptr;
  QString m_precision = QStringLiteral("fp32");  // likewise
  // What the views were last told. Not read back from the checked actions: a menu checks the
  // action chosen before it triggers, so the choice would always look already made.
  QString m_activeDevice, m_activePrecision;
  QAction* m_presentationAction = nullptr;
  QString m_lastError;
};
