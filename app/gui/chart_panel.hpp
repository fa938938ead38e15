// A chart as a teacher uses it: a title, the chart, a one- or two-sentence caption in plain
// words, and export (PNG at a chosen size and DPI, SVG, PDF, CSV of the data) from a context
// menu and a toolbar button. The chart is a QCustomPlot or any widget that paints itself.
// ChartPage lays a view's panels out for the theme: a grid, or in presentation one column.
#pragma once

#include <QList>
#include <QMap>
#include <QScrollArea>
#include <QWidget>
#include <functional>

class QCustomPlot;
class QGridLayout;
class QLabel;
class QPainter;
class QToolButton;
struct Theme;

class ChartPanel : public QWidget {
  Q_OBJECT
 public:
  // id names the exported files ("routing-heatmap"); the content is created by the panel (a
  // QCustomPlot) unless `custom` is given.
  ChartPanel(const QString& id, const QString& title, const QString& caption, QWidget* custom = nullptr,
             QWidget* parent = nullptr);

  QString id() const { return m_id; }
  QString title() const;
  QCustomPlot* plot() const { return m_plot; }  // null for custom content
  QWidget* content() const { return m_content; }
  void setCaption(const QString& caption);
  void setTitle(const QString& title);
  // The chart's data as CSV text (header row first); used by exportCsv.
  void setCsvProvider(std::function<QString()> provider) { m_csv = std::move(provider); }
  QString csv() const { return m_csv ? m_csv() : QString(); }
  // For custom content that can paint itself at any size: exports call this instead of
  // rendering the widget (which paints nothing while its page has never been shown).
  void setPainter(std::function<void(QPainter&, QSize)> painter) { m_painter = std::move(painter); }

  // Each returns an empty string on success, else the error (one line, naming the file).
  QString exportPng(const QString& path, QSize size, double dpi = 96) const;
  QString exportSvg(const QString& path, QSize size) const;
  QString exportPdf(const QString& path, QSize size) const;
  QString exportCsv(const QString& path) const;
  // Writes id.png, id.svg, id.pdf, id.csv into dir.
  QString exportAll(const QString& dir, QSize size) const;

  // The least height of the chart itself (not counting title and caption) in each theme, so a
  // page that is short of room scrolls (ChartPage) instead of squashing the chart.
  void setMinimumChartHeight(int normal, int presentation);

  void applyTheme(const Theme& t);
  void replot();

 signals:
  void errorOccurred(const QString& message);

 public slots:
  void exportWithDialog();

 protected:
  void contextMenuEvent(QContextMenuEvent* e) override;

 private:
  void paintContent(class QPaintDevice* device, QSize size, double scale) const;

  QString m_id;
  QLabel* m_title = nullptr;
  QLabel* m_caption = nullptr;
  QToolButton* m_exportButton = nullptr;
  QCustomPlot* m_plot = nullptr;
  QWidget* m_content = nullptr;
  std::function<QString()> m_csv;
  std::function<void(QPainter&, QSize)> m_painter;
  int m_minNormal = -1, m_minPresentation = -1;  // -1: the content's own (custom content)
};

// A page of chart panels: a grid in the normal theme. In presentation the projector fonts need
// about twice the room, so the page either keeps its grid or stacks the panels in one column
// (each then gets the page's full width), and it scrolls vertically whenever the panels' least
// heights do not fit, rather than squashing a chart below readability.
class ChartPage : public QScrollArea {
  Q_OBJECT
 public:
  enum class Presentation { Grid, Stack };
  explicit ChartPage(Presentation presentation, QWidget* parent = nullptr);

  void add(ChartPanel* panel, int row, int column, int rowSpan = 1, int columnSpan = 1);
  void setRowStretch(int row, int stretch);  // in the grid
  void applyTheme(const Theme& t);

 private:
  struct Cell {
    ChartPanel* panel;
    int row, column, rowSpan, columnSpan;
  };
  void arrange(bool stacked);

  Presentation m_presentation;
  QWidget* m_body = nullptr;
  QGridLayout* m_grid = nullptr;
  QList<Cell> m_cells;
  QMap<int, int> m_rowStretch;
};
