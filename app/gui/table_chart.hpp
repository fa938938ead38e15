// A table that paints itself (header row, then one row per item, the first column in each row's
// colour), so it exports to PNG, SVG and PDF like a chart, also from a page that is not showing.
#pragma once

#include <QColor>
#include <QStringList>
#include <QVector>
#include <QWidget>

class TableChart : public QWidget {
  Q_OBJECT
 public:
  explicit TableChart(QWidget* parent = nullptr) : QWidget(parent) {}
  void setTable(const QStringList& headers, const QVector<QStringList>& rows, const QVector<QColor>& rowColors);
  int rowCount() const { return int(m_rows.size()); }
  QString cell(int row, int column) const { return m_rows.value(row).value(column); }
  QSize sizeHint() const override;
  // Paint the table into a box of `size` (the widget's paintEvent and exports both use it).
  void paintTable(QPainter& p, QSize size) const;

 protected:
  void paintEvent(QPaintEvent*) override;

 private:
  QStringList m_headers;
  QVector<QStringList> m_rows;
  QVector<QColor> m_colors;
};
