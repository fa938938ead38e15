// The lab's main window: it only wires the views together (Model, Tokens), the menus, the
// settings and the status bar; each view lives in its own file.
#pragma once

#include <QMainWindow>

class ModelView;
class TokensView;
class TrainingView;
class QLabel;
class QMenu;
class QTabWidget;
class QAction;

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(QWidget* parent = nullptr);

  ModelView* modelView() const { return m_model; }
  TokensView* tokensView() const { return m_tokens; }
  TrainingView* trainingView() const { return m_training; }
  QTabWidget* tabs() const { return m_tabs; }
  // Render every view at `size` in the normal and the presentation theme, as PNGs in dir.
  QString saveScreenshots(const QString& dir, QSize size);
  void setPresentation(bool on);
  bool presentation() const;
  QString lastError() const { return m_lastError; }

 public slots:
  void openModel(const QString& path);
  void showError(const QString& message);
  void exportAll();

 protected:
  void closeEvent(QCloseEvent* e) override;
  bool eventFilter(QObject* watched, QEvent* e) override;  // click the error banner to dismiss it

 private:
  void createActions();
  void readSettings();
  void writeSettings();
  void addRecent(const QString& path);
  void rebuildRecentMenu();

  QTabWidget* m_tabs = nullptr;
  ModelView* m_model = nullptr;
  TokensView* m_tokens = nullptr;
  TrainingView* m_training = nullptr;
  QLabel* m_errorBanner = nullptr;
  QLabel* m_modelLabel = nullptr;
  QLabel* m_deviceLabel = nullptr;
  QMenu* m_recentMenu = nullptr;
  QAction* m_presentationAction = nullptr;
  QString m_lastError;
};
