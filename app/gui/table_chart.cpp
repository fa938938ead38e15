#include "table_chart.hpp"

#include <QPainter>
#include <QRegularExpression>

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
  // wider than the box (projector fonts, the lesson dock beside the view), the headers break at
  // their spaces onto two lines; then the font shrinks (to 70 % at least); only then are the
  // text columns (names) elided, never a number: the number columns keep their whole width.
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
  const double points = body.pointSizeF();
  for (int shrink = 0; total > W && shrink < 6 && points > 0; ++shrink) {
    body.setPointSizeF(points * (1.0 - 0.05 * (shrink + 1)));
    head.setPointSizeF(body.pointSizeF());
    measure();
  }
  // A number column: every cell a number (digits, sign, point, %, dash for none).
  auto numeric = [&](int c) {
    static const QRegularExpression number(QStringLiteral("^[-+–]?[0-9.,]*%?$"));
    for (const QStringList& r : m_rows)
      if (!number.match(r.value(c)).hasMatch()) return false;
    return true;
  };
  QVector<double> shares = widths;  // what each column gets of the width, before scaling by k
  double k = total > 0 ? W / total : 1;
  if (total > W) {
    double fixed = 0, text = 0;
    for (int c = 0; c < cols; ++c) (numeric(c) ? fixed : text) += widths[c];
    if (text > 0 && fixed < W) {
      for (int c = 0; c < cols; ++c)
        if (!numeric(c)) shares[c] = widths[c] * (W - fixed) / text;
      k = 1;
    }
  }
  const double lineH = std::max(QFontMetrics(body).height(), QFontMetrics(head).height());
  const double rowH = lineH * 1.8;
  const double headH = wrap ? rowH + QFontMetrics(head).lineSpacing() : rowH;
  auto drawRow = [&](double y, double h, const QStringList& cells, const QFont& font, const QColor& first) {
    double x = 0;
    p.setFont(font);
    for (int c = 0; c < cols; ++c) {
      const QRectF box(x + 6, y, shares[c] * k - 12, h);
      p.setPen(c == 0 && first.isValid() ? first : t.foreground);
      const QString text = cells.value(c);
      p.drawText(box, (c == 0 ? Qt::AlignLeft : Qt::AlignRight) | Qt::AlignVCenter,
                 text.contains(QLatin1Char('\n')) ? text : QFontMetrics(font).elidedText(text, Qt::ElideRight, int(box.width())));
      x += shares[c] * k;
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
