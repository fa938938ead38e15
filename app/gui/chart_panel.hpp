// A chart as a teacher uses it: a title, the chart, a one- or two-sentence caption in plain
// words, and export (PNG at a chosen size and DPI, SVG, PDF, CSV of the data) from a context
// menu and a toolbar button. The chart is a QCustomPlot or any widget that paints itself.
#pragma once

#include <QWidget>
#include <functional>

class QCustomPlot;
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
};
