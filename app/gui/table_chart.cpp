#include "table_chart.hpp"

#include <QPainter>

#include "theme.hpp"

void TableChart::setTable(const QStringList& headers, const QVector<QStringList>& rows, const QVector<QColor>& rowColors) {
  m_headers = headers;
  m_rows = rows;
  m_colors = rowColors;
  updateGeometry();
  update();
}

QSize TableChart::sizeHint() const {
  const QFontMetrics fm(Theme::current().text);
  return {600, int((m_rows.size() + 1) * fm.height() * 1.8) + 8};
}

void TableChart::paintEvent(QPaintEvent*) {
  QPainter p(this);
  paintTable(p, size());
}

void TableChart::paintTable(QPainter& p, QSize size) const {
  const Theme& t = Theme::current();
  const int W = size.width();
  p.fillRect(QRect(QPoint(0, 0), size), t.background);
  if (m_headers.isEmpty()) return;
  const int cols = int(m_headers.size());
  QFont head = t.text;
  head.setBold(true);
  const double rowH = std::max(QFontMetrics(t.text).height(), QFontMetrics(head).height()) * 1.8;
  // Columns share the width in proportion to their longest text (header or cell).
  QVector<double> widths(cols, 0.0);
  for (int c = 0; c < cols; ++c) {
    widths[c] = QFontMetrics(head).horizontalAdvance(m_headers[c]);
    for (const QStringList& r : m_rows) widths[c] = std::max<double>(widths[c], QFontMetrics(t.text).horizontalAdvance(r.value(c)));
    widths[c] += 16;
  }
  double total = 0;
  for (double w : widths) total += w;
  const double k = total > 0 ? W / total : 1;
  auto drawRow = [&](double y, const QStringList& cells, const QFont& font, const QColor& first) {
    double x = 0;
    p.setFont(font);
    for (int c = 0; c < cols; ++c) {
      const QRectF box(x + 6, y, widths[c] * k - 12, rowH);
      p.setPen(c == 0 && first.isValid() ? first : t.foreground);
      p.drawText(box, (c == 0 ? Qt::AlignLeft : Qt::AlignRight) | Qt::AlignVCenter,
                 QFontMetrics(font).elidedText(cells.value(c), Qt::ElideRight, int(box.width())));
      x += widths[c] * k;
    }
  };
  drawRow(0, m_headers, head, QColor());
  p.setPen(QPen(t.foreground, t.presentation ? 2 : 1));
  p.drawLine(QPointF(0, rowH), QPointF(W, rowH));
  for (int r = 0; r < m_rows.size(); ++r) {
    const double y = rowH * (r + 1);
    if (r % 2 == 1) p.fillRect(QRectF(0, y, W, rowH), t.grid.lighter(115));
    drawRow(y, m_rows[r], t.text, m_colors.value(r));
  }
}
