#include "token_text.hpp"

#include <QHelpEvent>
#include <QMouseEvent>
#include <QToolTip>
#include <QPainter>
#include <QTimer>

#include "theme.hpp"
#include "token_charts.hpp"

namespace {
const QColor kDroppedColor("#bbbbbb");
}  // namespace

TokenText::TokenText(QWidget* parent) : QWidget(parent) { setMinimumHeight(120); }

QColor TokenText::expertColor(int e, int64_t E) {
  if (E <= 8) return Theme::series(e);
  return viridisColor(E > 1 ? double(e) / double(E - 1) : 0.0);
}

void TokenText::setSnapshot(SnapshotPtr s, int layerIndex, int selected) {
  m_snap = std::move(s);
  m_layer = layerIndex;
  m_selected = selected;
  update();
}

void TokenText::paintEvent(QPaintEvent*) {
  QPainter p(this);
  const Theme& t = Theme::current();
  p.fillRect(rect(), t.background);
  p.setRenderHint(QPainter::Antialiasing);
  m_boxes.clear();
  if (!m_snap || m_snap->layers.isEmpty()) {
    p.setPen(t.subtle);
    p.setFont(t.text);
    p.drawText(rect(), Qt::AlignCenter, tr("Type a prompt and press Step (Space)."));
    return;
  }
  const auto& L = m_snap->layers[std::clamp(m_layer, 0, int(m_snap->layers.size()) - 1)];
  const int64_t E = m_snap->experts(), K = m_snap->topK;
  QFont mono = t.text;
  mono.setFamily(QStringLiteral("DejaVu Sans Mono"));
  p.setFont(mono);
  const QFontMetrics fm(mono);
  const int lineH = fm.height() + 10;
  int x = 6, y = 6;
  bool anyDropped = false;
  for (int i = 0; i < m_snap->count(); ++i) {
    QString label = m_snap->labels[i];
    if (label == QLatin1String(" ")) label = QStringLiteral("␣");
    label = TokenCharts::shortLabel(label, 24);  // a box never wider than the view
    const int w = fm.horizontalAdvance(label) + 8;
    if (x + w > width() - 6) {
      x = 6;
      y += lineH;
    }
    const QRect box(x, y, w, lineH - 4);
    m_boxes.push_back(box);
    if (i < L.ids.size() / std::max<int64_t>(1, K)) {
      const int top = L.ids[i * int(K)];
      QColor c = top >= 0 ? expertColor(top, E) : kDroppedColor;  // first choice dropped (capacity)
      anyDropped = anyDropped || top < 0;
      p.setBrush(c);
      p.setPen(QPen(i == m_selected ? t.foreground : c.darker(130), i == m_selected ? 3 : 1));
      p.drawRoundedRect(box, 4, 4);
      p.setPen(c.lightnessF() < 0.55 ? Qt::white : Qt::black);
    } else {
      p.setPen(t.foreground);
    }
    if (i < m_snap->promptLength) {  // prompt tokens underlined
      p.drawLine(box.bottomLeft() + QPoint(3, -3), box.bottomRight() + QPoint(-3, -3));
    }
    p.drawText(box, Qt::AlignCenter, label);
    x += w + 3;
  }
  // Legend: expert colours (top expert in this layer), wrapping onto more lines as needed.
  p.setFont(t.text);
  const QFontMetrics lf(t.text);
  const QString head = tr("Layer %1, colour = first-choice expert:").arg(L.layer);
  int cellW = lf.horizontalAdvance(QString::number(std::max<int64_t>(0, E - 1))) + 10;
  const int perLine = std::max(1, (width() - 12) / (cellW + 3));
  const int lines = 1 + int((std::min<int64_t>(E, 64) + (anyDropped ? 3 : 0) + perLine - 1) / perLine);
  y = std::max(y + lineH + 6, height() - lines * (lf.height() + 4) - 4);
  x = 6;
  p.setPen(t.foreground);
  p.drawText(QPoint(x, y + lf.ascent()), head);
  y += lf.height() + 4;
  for (int e = 0; e < E && e < 64; ++e) {
    if (x + cellW > width() - 4) {
      x = 6;
      y += lf.height() + 4;
    }
    const QColor c = expertColor(e, E);
    p.setBrush(c);
    p.setPen(Qt::NoPen);
    p.drawRoundedRect(QRect(x, y, cellW, lf.height()), 3, 3);
    p.setPen(c.lightnessF() < 0.55 ? Qt::white : Qt::black);
    p.drawText(QRect(x, y, cellW, lf.height()), Qt::AlignCenter, QString::number(e));
    x += cellW + 3;
  }
  if (anyDropped) {  // grey: the first choice was dropped, the token skipped its expert
    const QString text = tr("dropped");
    const int w = lf.horizontalAdvance(text) + 10;
    if (x + w > width() - 4) {
      x = 6;
      y += lf.height() + 4;
    }
    p.setBrush(kDroppedColor);
    p.setPen(Qt::NoPen);
    p.drawRoundedRect(QRect(x, y, w, lf.height()), 3, 3);
    p.setPen(Qt::black);
    p.drawText(QRect(x, y, w, lf.height()), Qt::AlignCenter, text);
  }
  // Ask the layout for room when the text and legend need more than we were given.
  const int needed = y + lf.height() + 6;
  if (needed > height() && needed != minimumHeight())
    QTimer::singleShot(0, this, [this, needed] { setMinimumHeight(needed); });
}

void TokenText::mousePressEvent(QMouseEvent* e) {
  for (int i = 0; i < m_boxes.size(); ++i)
    if (m_boxes[i].contains(e->pos())) emit tokenClicked(i);
}

QString TokenText::toolTipAt(const QPoint& pos) const {
  if (!m_snap) return {};
  for (int i = 0; i < m_boxes.size(); ++i)
    if (m_boxes[i].contains(pos)) return tr("token %1: %2").arg(i).arg(TokenCharts::tokenDescription(*m_snap, i));
  return {};
}

bool TokenText::event(QEvent* e) {
  if (e->type() == QEvent::ToolTip) {
    auto* help = static_cast<QHelpEvent*>(e);
    const QString text = toolTipAt(help->pos());
    if (text.isEmpty()) QToolTip::hideText(), e->ignore();
    else QToolTip::showText(help->globalPos(), text, this);
    return true;
  }
  return QWidget::event(e);
}
