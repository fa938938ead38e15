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
  return {600, int((m_rows.size() + 1) * fm.height() * 1.8 + fm.lineSpacing()) + 8};  // room for two-line headers
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
  QFont body = t.text;
  QFont head = t.text;
  head.setBold(true);
  // Columns share the width in proportion to their longest text (header or cell). When that is
  // wider than the box (projector fonts), the headers break at their spaces onto two lines, and
  // only then is text elided.
  bool wrap = false;
  auto headerText = [&](int c) { return wrap ? QString(m_headers[c]).replace(QLatin1Char(' '), QLatin1Char('\n')) : m_headers[c]; };
  QVector<double> widths(cols, 0.0);
  double total = 0;
  auto measure = [&] {
    total = 0;
    for (int c = 0; c < cols; ++c) {
      widths[c] = QFontMetrics(head).boundingRect(QRect(), Qt::TextDontClip, headerText(c)).width();
      for (const QStringList& r : m_rows) widths[c] = std::max<double>(widths[c], QFontMetrics(body).horizontalAdvance(r.value(c)));
      widths[c] += 16;
      total += widths[c];
    }
  };
  measure();
  if (total > W) {
    wrap = true;
    measure();
  }
  const double lineH = std::max(QFontMetrics(body).height(), QFontMetrics(head).height());
  const double rowH = lineH * 1.8;
  const double headH = wrap ? rowH + QFontMetrics(head).lineSpacing() : rowH;
  const double k = total > 0 ? W / total : 1;
  auto drawRow = [&](double y, double h, const QStringList& cells, const QFont& font, const QColor& first) {
    double x = 0;
    p.setFont(font);
    for (int c = 0; c < cols; ++c) {
      const QRectF box(x + 6, y, widths[c] * k - 12, h);
      p.setPen(c == 0 && first.isValid() ? first : t.foreground);
      const QString text = cells.value(c);
      p.drawText(box, (c == 0 ? Qt::AlignLeft : Qt::AlignRight) | Qt::AlignVCenter,
                 text.contains(QLatin1Char('\n')) ? text : QFontMetrics(font).elidedText(text, Qt::ElideRight, int(box.width())));
      x += widths[c] * k;
    }
  };
  QStringList headers;
  for (int c = 0; c < cols; ++c) headers << headerText(c);
  drawRow(0, headH, headers, head, QColor());
  p.setPen(QPen(t.foreground, t.presentation ? 2 : 1));
  p.drawLine(QPointF(0, headH), QPointF(W, headH));
  for (int r = 0; r < m_rows.size(); ++r) {
    const double y = headH + rowH * r;
    if (r % 2 == 1) p.fillRect(QRectF(0, y, W, rowH), t.grid.lighter(115));
    drawRow(y, rowH, m_rows[r], body, m_colors.value(r));
  }
}
