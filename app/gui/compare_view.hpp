// The Compare view: two or more runs side by side (e.g. no balancing vs auxiliary loss vs the
// bias method): language-model and validation loss overlaid, the load's CV overlaid, the collapse
// heatmaps next to each other on one shared colour scale, and a table of final figures.
#pragma once

#include <QStringList>
#include <QWidget>

#include "run_charts.hpp"
#include "run_data.hpp"

class ChartPage;
class ChartPanel;
class QComboBox;
class QListWidget;
class QTabWidget;
class TableChart;
struct Theme;

class KnobDrawer;

class CompareView : public QWidget {
  Q_OBJECT
 public:
  explicit CompareView(QWidget* parent = nullptr);
  KnobDrawer* knobDrawer() const { return m_drawer; }  // the knob panel (knob_drawer.hpp)

  QList<ChartPanel*> charts() const;
  void applyTheme(const Theme& t);
  const QVector<RunData>& runs() const { return m_runs; }
  QStringList runDirs() const;
  int selectedLayer() const;
  TableChart* table() const { return m_table; }
  QTabWidget* pages() const { return m_pages; }
  QString label(int run) const;  // the run's name in legends and the table
  // The collapse heatmap cell of run r (step index i, expert e), as drawn.
  double collapseValue(int r, int i, int e) const;

 public slots:
  bool addRun(const QString& dir);
  void addRunData(const RunData& run);  // a run already in memory (the Training view's)
  void removeRun(int index);
  void clearRuns();
  void redraw();

 signals:
  void errorOccurred(const QString& message);
  void runsChanged();
  void addCurrentRunRequested();

 protected:
  bool eventFilter(QObject* watched, QEvent* e) override;  // the collapse titles follow the width

 private:
  void drawLoss();
  void drawCv();
  void drawCollapse();
  void fillTable();
  QString tableCsv() const;
  void refreshList();

  QVector<RunData> m_runs;
  QListWidget* m_list = nullptr;
  QComboBox* m_layer = nullptr;
  TableChart* m_table = nullptr;
  QTabWidget* m_pages = nullptr;
  ChartPanel *m_loss = nullptr, *m_cv = nullptr, *m_collapse = nullptr, *m_figures = nullptr;
  KnobDrawer* m_drawer = nullptr;
  QList<ChartPage*> m_chartPages;
  int m_collapseDrawnWidth = -1;
};
