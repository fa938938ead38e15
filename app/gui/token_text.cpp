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

void TokenText::setExpertGroup(const QVector<int>& experts, const QString& why) {
  m_group = experts.mid(0, kMaxGroup);
  m_groupWhy = why;
  update();
}

int TokenText::groupExpertOf(int i, int* rank) const {
  if (!m_snap || m_snap->layers.isEmpty() || m_group.isEmpty()) return -1;
  const auto& L = m_snap->layers[std::clamp(m_layer, 0, int(m_snap->layers.size()) - 1)];
  const int K = int(m_snap->topK);
  if (K <= 0 || (i + 1) * K > L.ids.size()) return -1;
  for (int k = 0; k < K; ++k)  // the slots in rank order: the best-ranked group expert wins
    if (L.ids[i * K + k] >= 0 && m_group.contains(L.ids[i * K + k])) {
      if (rank) *rank = k + 1;
      return L.ids[i * K + k];
    }
  return -1;
}

QColor TokenText::tokenColor(int i) const {
  if (!m_snap || m_snap->layers.isEmpty() || i < 0 || i >= m_snap->count()) return {};
  const auto& L = m_snap->layers[std::clamp(m_layer, 0, int(m_snap->layers.size()) - 1)];
  const int64_t K = std::max<int64_t>(1, m_snap->topK);
  if (i >= L.ids.size() / K) return {};
  if (!m_group.isEmpty()) {
    const int e = groupExpertOf(i);
    return e >= 0 ? Theme::series(int(m_group.indexOf(e))) : QColor();
  }
  const int top = L.ids[i * int(K)];
  return top >= 0 ? expertColor(top, m_snap->experts()) : kDroppedColor;
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
    const QColor c = tokenColor(i);
    if (c.isValid()) {
      anyDropped = anyDropped || (m_group.isEmpty() && c == kDroppedColor);  // first choice dropped (capacity)
      p.setBrush(c);
      p.setPen(QPen(i == m_selected ? t.foreground : c.darker(130), i == m_selected ? 3 : 1));
      p.drawRoundedRect(box, 4, 4);
      p.setPen(c.lightnessF() < 0.55 ? Qt::white : Qt::black);
    } else {  // plain: sent to no expert of the group (or not routed yet)
      p.setBrush(Qt::NoBrush);
      p.setPen(QPen(i == m_selected ? t.foreground : t.subtle, i == m_selected ? 3 : 1));
      if (!m_group.isEmpty() && i < L.ids.size() / std::max<int64_t>(1, K)) p.drawRoundedRect(box, 4, 4);
      p.setPen(t.foreground);
    }
    if (i < m_snap->promptLength) {  // prompt tokens underlined
      p.drawLine(box.bottomLeft() + QPoint(3, -3), box.bottomRight() + QPoint(-3, -3));
    }
    p.drawText(box, Qt::AlignCenter, label);
    x += w + 3;
  }
  // Legend: expert colours (top expert in this layer), wrapping onto more lines as needed; or the
  // group's experts, each with the number of tokens sent to it.
  p.setFont(t.text);
  const QFontMetrics lf(t.text);
  QVector<int> chips;  // experts in the legend
  QStringList chipText;
  if (m_group.isEmpty()) {
    for (int e = 0; e < E && e < 64; ++e) chips << e, chipText << QString::number(e);
  } else {
    for (int e : m_group) {
      int n = 0;
      for (int i = 0; i < m_snap->count(); ++i) n += groupExpertOf(i) == e;
      chips << e, chipText << tr("expert %1: %n token(s)", "", n).arg(e);
    }
  }
  const QString head = m_group.isEmpty() ? tr("Layer %1, colour = first-choice expert:").arg(L.layer)
                                         : tr("Layer %1, colour = sent to expert (%2); plain: none of these:")
                                               .arg(L.layer).arg(m_groupWhy);
  int cellW = 0;
  for (const QString& c : chipText) cellW = std::max(cellW, lf.horizontalAdvance(c) + 10);
  const int perLine = std::max(1, (width() - 12) / (cellW + 3));
  const int headLines = std::max(1, (lf.horizontalAdvance(head) + width() - 13) / std::max(1, width() - 12));
  const int lines = headLines + int((chips.size() + (anyDropped ? 3 : 0) + perLine - 1) / perLine);
  const int textBottom = y;
  y = std::max(y + lineH + 6, height() - lines * (lf.height() + 4) - 4);
  x = 6;
  p.setPen(t.foreground);
  const QRect headBox(x, y, width() - 12, headLines * (lf.height() + 4));
  p.drawText(headBox, Qt::AlignLeft | Qt::AlignTop | Qt::TextWordWrap, head);
  y += headLines * (lf.height() + 4);
  for (int j = 0; j < chips.size(); ++j) {
    if (x + cellW > width() - 4) {
      x = 6;
      y += lf.height() + 4;
    }
    const QColor c = m_group.isEmpty() ? expertColor(chips[j], E) : Theme::series(j);
    p.setBrush(c);
    p.setPen(Qt::NoPen);
    p.drawRoundedRect(QRect(x, y, cellW, lf.height()), 3, 3);
    p.setPen(c.lightnessF() < 0.55 ? Qt::white : Qt::black);
    p.drawText(QRect(x, y, cellW, lf.height()), Qt::AlignCenter, chipText[j]);
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
  // Ask the layout for the room the text and legend need (at this width, whatever the height),
  // more or less than before: the projector's fonts need more, the normal theme after it less.
  const int needed = textBottom + lineH + 6 + lines * (lf.height() + 4) + 6;
  if (needed != minimumHeight()) QTimer::singleShot(0, this, [this, needed] { setMinimumHeight(std::max(120, needed)); });
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
