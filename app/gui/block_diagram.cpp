#include "block_diagram.hpp"

#include <QPainter>
#include <algorithm>
#include <cmath>

#include "registry.hpp"
#include "theme.hpp"

namespace {

constexpr int kMaxShownExperts = 16;

// a at t = 0, b at t = 1: light fills that keep dark text readable.
QColor mix(const QColor& a, const QColor& b, double t) {
  return QColor::fromRgbF(a.redF() + t * (b.redF() - a.redF()), a.greenF() + t * (b.greenF() - a.greenF()),
                          a.blueF() + t * (b.blueF() - a.blueF()));
}

QColor componentColor(moelab::Component c) { return Theme::component(int(c)); }

// Fonts in pixels, so the drawing looks the same on a screen, a QImage at any DPI and an SVG.
QFont pixelFont(const QFont& f, double px, bool bold = false) {
  QFont r(f);
  r.setPixelSize(std::max(6, int(std::lround(px))));
  r.setBold(bold);
  return r;
}

double textWidth(const QFont& f, const QString& s) { return QFontMetricsF(f).horizontalAdvance(s); }

// Text centred in r; the font shrinks (down to 60%) before the text is elided, so it never spills.
void drawFitted(QPainter& p, const QRectF& r, const QString& text, QFont f, int align = Qt::AlignCenter) {
  const int start = f.pixelSize();
  const int flags = align | Qt::TextWordWrap;
  for (int px = start; px >= std::max(6, int(start * 0.6)); --px) {
    f.setPixelSize(px);
    const QRectF br = QFontMetricsF(f).boundingRect(r, flags, text);
    if (br.width() <= r.width() + 0.5 && br.height() <= r.height() + 0.5) {
      p.setFont(f);
      p.drawText(r, flags, text);
      return;
    }
  }
  p.setFont(f);
  const QString line = QString(text).replace('\n', ' ');
  p.drawText(r, align, QFontMetricsF(f).elidedText(line, Qt::ElideRight, r.width()));
}

void drawBox(QPainter& p, const QRectF& r, const QColor& fill, const QPen& pen, double radius) {
  p.setPen(pen);
  p.setBrush(fill);
  p.drawRoundedRect(r, radius, radius);
}

// A line with a filled arrow head at `to`.
void drawArrow(QPainter& p, QPointF from, QPointF to, const QPen& pen, double head) {
  p.setPen(pen);
  p.setBrush(Qt::NoBrush);
  const QPointF d = to - from;
  const double len = std::hypot(d.x(), d.y());
  if (len < 1e-6) return;
  const QPointF u = d / len, n(-u.y(), u.x());
  const QPointF base = to - u * head;
  p.drawLine(from, base);
  QPolygonF tri;
  tri << to << base + n * head * 0.55 << base - n * head * 0.55;
  p.setPen(Qt::NoPen);
  p.setBrush(pen.color());
  p.drawPolygon(tri);
}

// The ⊕ of a residual connection.
void drawAdd(QPainter& p, QPointF c, double r, const QPen& pen, const QColor& bg) {
  p.setPen(pen);
  p.setBrush(bg);
  p.drawEllipse(c, r, r);
  p.drawLine(c - QPointF(r * 0.55, 0), c + QPointF(r * 0.55, 0));
  p.drawLine(c - QPointF(0, r * 0.55), c + QPointF(0, r * 0.55));
}

// "0–2, 5" from a sorted list of layer numbers.
QString ranges(const QVector<int>& v) {
  QStringList parts;
  for (int i = 0; i < v.size();) {
    int j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    parts << (j == i ? QString::number(v[i]) : QStringLiteral("%1–%2").arg(v[i]).arg(v[j]));
    i = j + 1;
  }
  return parts.join(QStringLiteral(", "));
}

// Where everything goes for a font of u pixels; `fits` says whether it fits the area.
struct Plan {
  double u = 0;
  bool fits = false;
  QRectF header, note;
  QRectF input, normA, attention;
  QPointF addA;
  double laneY = 0, gapX = 0, residualBX = 0;
  QRectF normB, router, shared, ffn;
  QVector<QRectF> cells;
  QPointF addB;
  QRectF output;
  double addRadius = 0;
};

}  // namespace

BlockDiagram::BlockDiagram(QWidget* parent) : QWidget(parent) {
  setAttribute(Qt::WA_OpaquePaintEvent);
  setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Expanding);
}

void BlockDiagram::setConfig(const moelab::ModelConfig& c) {
  m_config = c;
  m_layer = std::clamp<int>(m_layer, 0, int(std::max<int64_t>(1, c.num_layers)) - 1);
  update();
}

void BlockDiagram::setLayer(int layer) {
  m_layer = std::clamp<int>(layer, 0, int(std::max<int64_t>(1, m_config.num_layers)) - 1);
  update();
}

void BlockDiagram::setHighlighted(QVector<int> experts) {
  m_highlighted = std::move(experts);
  update();
}

QSize BlockDiagram::sizeHint() const { return {520, 380}; }
QSize BlockDiagram::minimumSizeHint() const { return {240, 180}; }

void BlockDiagram::paintEvent(QPaintEvent*) {
  // QPainter(this) also works under QWidget::render: Qt redirects it to the export device.
  QPainter p(this);
  p.setRenderHint(QPainter::Antialiasing);
  p.setRenderHint(QPainter::TextAntialiasing);
  paintDiagram(p, QRectF(rect()));
}

void BlockDiagram::paintDiagram(QPainter& p, const QRectF& area) const {
  const Theme& t = Theme::current();
  p.fillRect(area, t.background);
  const moelab::ModelConfig& c = m_config;
  const double dpi = logicalDpiY() > 0 ? logicalDpiY() : 96;
  const double basePx = t.text.pointSizeF() * dpi / 72.0;
  if (c.num_layers <= 0) {
    p.setPen(t.subtle);
    drawFitted(p, area, tr("No model yet"), pixelFont(t.text, basePx));
    return;
  }
  using moelab::Component;
  const int layer = m_layer;
  const bool moe = c.is_moe_layer(layer);
  const int64_t E = c.num_experts;

  // Which routed experts get a box: all when there are few, else the highlighted ones and the
  // lowest numbers, then one "+N more" cell.
  QVector<int> hi;
  if (moe)
    for (int e : m_highlighted)
      if (e >= 0 && e < E && !hi.contains(e)) hi << e;
  QVector<int> shown;
  bool more = false;
  if (moe) {
    if (E <= kMaxShownExperts) {
      for (int e = 0; e < E; ++e) shown << e;
    } else {
      shown = hi.mid(0, kMaxShownExperts - 1);
      for (int e = 0; shown.size() < kMaxShownExperts - 1; ++e)
        if (!shown.contains(e)) shown << e;
      std::sort(shown.begin(), shown.end());
      more = true;
    }
  }
  const int nCells = int(shown.size()) + (more ? 1 : 0);
  const bool hasShared = moe && c.shared_ffn_size > 0;

  // Texts
  QVector<int> dense;
  for (int l = 0; l < c.num_layers; ++l)
    if (!c.is_moe_layer(l)) dense << l;
  const QString header = E <= 0 ? tr("Layer %1 · a dense model: one FFN for every token").arg(layer)
                         : moe  ? tr("Layer %1 · MoE: each token uses %2 of %3 experts").arg(layer).arg(c.top_k).arg(E)
                                : tr("Layer %1 · a dense layer: one FFN for every token").arg(layer);
  QString note;
  if (E > 0 && !dense.isEmpty() && dense.size() < c.num_layers)
    note = tr("Layers 0–%1; dense (no experts): %2; the other %3 are MoE")
               .arg(c.num_layers - 1)
               .arg(ranges(dense))
               .arg(c.num_layers - dense.size());
  else if (c.num_layers > 1)
    note = E > 0 ? tr("All %1 layers (0–%2) look like this").arg(c.num_layers).arg(c.num_layers - 1)
                 : tr("All %1 layers (0–%2) are dense").arg(c.num_layers).arg(c.num_layers - 1);
  const QString how = c.router_noise ? tr("noisy softmax")
                     : c.scoring == moelab::RouterScoring::Sigmoid ? tr("sigmoid + bias")
                                                                    : tr("softmax");
  const QString routerText = tr("Router (%1) picks %2 of %3").arg(how).arg(c.top_k).arg(E);

  // Lay out for a font of u pixels; shrink u until everything fits.
  auto plan = [&](double u) {
    Plan pl;
    pl.u = u;
    const QRectF in = area.adjusted(0.5 * u, 0.4 * u, -0.5 * u, -0.4 * u);
    const QFont bold = pixelFont(t.text, u, true);
    const QFont cellFont = pixelFont(t.text, 0.8 * u, true);
    pl.header = QRectF(in.left(), in.top(), in.width(), 1.5 * u);
    double y = pl.header.bottom();
    if (!note.isEmpty()) {
      pl.note = QRectF(in.left(), y, in.width(), 1.25 * u);
      y = pl.note.bottom();
    }
    y += 0.3 * u;
    const double box = 1.9 * u, arrow = 0.9 * u, gap = 0.35 * u;
    pl.addRadius = 0.6 * u;
    // Column A (attention half) and column B (feed-forward half), with lanes for the residual
    // lines at the outer edges and the connecting line between them.
    const double laneA = 1.0 * u, laneB = 1.0 * u, between = 1.6 * u;
    const double usable = in.width() - laneA - laneB - between;
    const double wA = std::max(usable * 0.28, textWidth(bold, tr("Attention")) + 1.0 * u);
    const double wB = usable - wA;
    const double xA = in.left() + laneA, xB = xA + wA + between;
    pl.gapX = xA + wA + between / 2;
    pl.residualBX = xB + wB + laneB / 2;
    pl.input = QRectF(xA, y, wA, 1.4 * u);
    pl.laneY = pl.input.center().y();
    pl.normA = QRectF(xA, pl.input.bottom() + arrow, wA, box);
    pl.attention = QRectF(xA, pl.normA.bottom() + arrow, wA, 2.9 * u);
    pl.addA = QPointF(xA + wA / 2, pl.attention.bottom() + arrow + pl.addRadius);

    pl.normB = QRectF(xB, pl.normA.top(), wB, box);
    double yb = pl.normB.bottom() + arrow;
    // The shared expert gets a column right of the router and the routed experts.
    const double sharedW =
        hasShared ? std::min(std::max(wB * 0.24, textWidth(bold, tr("always on")) + 0.8 * u), wB * 0.4) : 0.0;
    const double bx = xB, bw = wB - (hasShared ? sharedW + 0.6 * u : 0.0);
    bool wideEnough = wA >= textWidth(bold, tr("RMSNorm")) + 0.4 * u && bw > 4 * u;
    if (moe) {
      pl.router = QRectF(bx, yb, bw, box);
      const double gridTop = pl.router.bottom() + 0.9 * u;
      const double minCell = std::max(textWidth(cellFont, QStringLiteral("E%1").arg(shown.isEmpty() ? 0 : shown.back())),
                                      more ? textWidth(cellFont, QStringLiteral("+%1").arg(E - shown.size())) : 0.0) +
                             0.4 * u;
      int cols = std::clamp(int((bw + gap) / (minCell + gap)), 1, std::min(nCells, 8));
      const int rows = (nCells + cols - 1) / cols;
      cols = (nCells + rows - 1) / rows;
      const double cw = std::min((bw - (cols - 1) * gap) / cols, 4.0 * u), ch = 1.6 * u;
      wideEnough = wideEnough && cw >= minCell;
      const double gx = bx + (bw - (cols * cw + (cols - 1) * gap)) / 2;
      for (int i = 0; i < nCells; ++i)
        pl.cells << QRectF(gx + (i % cols) * (cw + gap), gridTop + (i / cols) * (ch + gap), cw, ch);
      yb = pl.cells.isEmpty() ? gridTop : pl.cells.back().bottom();
      if (hasShared) {
        pl.shared = QRectF(xB + wB - sharedW, gridTop, sharedW, std::max(yb - gridTop, 3.0 * u));
        yb = std::max(yb, pl.shared.bottom());
      }
    } else {
      pl.ffn = QRectF(xB, yb, wB, 2.9 * u);
      yb = pl.ffn.bottom();
    }
    pl.addB = QPointF(xB + wB / 2, yb + arrow + pl.addRadius);
    pl.output = QRectF(xB, pl.addB.y() + pl.addRadius + 0.1 * u, wB, 1.3 * u);
    pl.fits = wideEnough && pl.output.bottom() <= in.bottom() + 0.5 && pl.addA.y() + pl.addRadius <= in.bottom();
    return pl;
  };
  // Start a little above the theme's size (a big empty panel reads better with bigger boxes).
  Plan pl;
  for (double u = basePx * 1.3; u >= 6.0; u *= 0.94) {
    pl = plan(u);
    if (pl.fits) break;
  }
  const double u = pl.u;
  // Centre the drawing vertically in the space left over.
  const double spare = area.bottom() - 0.4 * u - std::max(pl.output.bottom(), pl.addA.y() + pl.addRadius);
  if (spare > 0) p.translate(0, spare / 2);

  // Pens and fills
  const QPen line(t.foreground, std::max(1.5, 0.12 * u));
  const QPen thin(t.subtle, std::max(1.0, 0.07 * u));
  const QPen strong(t.foreground, std::max(3.0, 0.26 * u));
  const double head = 0.45 * u, radius = 0.3 * u;
  const QFont bold = pixelFont(t.text, u, true), plain = pixelFont(t.text, u), small = pixelFont(t.text, 0.85 * u);
  const QColor bg = t.background;

  // Header
  p.setPen(t.foreground);
  drawFitted(p, pl.header, header, bold, Qt::AlignLeft | Qt::AlignVCenter);
  if (!note.isEmpty()) {
    p.setPen(t.subtle);
    drawFitted(p, pl.note, note, small, Qt::AlignLeft | Qt::AlignVCenter);
  }

  // Column A: input → RMSNorm → attention → ⊕ (residual around both)
  p.setPen(t.foreground);
  drawFitted(p, pl.input, layer == 0 ? tr("token vectors in") : tr("from layer %1").arg(layer - 1), plain);
  const double cxA = pl.normA.center().x();
  drawArrow(p, {cxA, pl.input.bottom()}, {cxA, pl.normA.top()}, line, head);
  drawBox(p, pl.normA, mix(componentColor(Component::Norms), bg, 0.55), thin, radius);
  p.setPen(t.foreground);
  drawFitted(p, pl.normA, tr("RMSNorm"), bold);
  drawArrow(p, {cxA, pl.normA.bottom()}, {cxA, pl.attention.top()}, line, head);
  drawBox(p, pl.attention, mix(componentColor(Component::Attention), bg, 0.6), line, radius);
  p.setPen(t.foreground);
  drawFitted(p, pl.attention.adjusted(0.2 * u, 0, -0.2 * u, 0), tr("Attention\nstays dense"), bold);
  drawArrow(p, {cxA, pl.attention.bottom()}, {cxA, pl.addA.y() - pl.addRadius}, line, head);
  const double laneAX = pl.normA.left() - 0.5 * u;
  p.setPen(line);
  p.drawPolyline(QPolygonF{QPointF(cxA, pl.input.bottom() + 0.35 * u), QPointF(laneAX, pl.input.bottom() + 0.35 * u),
                           QPointF(laneAX, pl.addA.y())});
  drawArrow(p, {laneAX, pl.addA.y()}, {pl.addA.x() - pl.addRadius, pl.addA.y()}, line, head);
  drawAdd(p, pl.addA, pl.addRadius, line, bg);

  // The stream goes over to column B.
  const double cxB = pl.normB.center().x();
  p.setPen(line);
  p.drawPolyline(QPolygonF{QPointF(pl.addA.x() + pl.addRadius, pl.addA.y()), QPointF(pl.gapX, pl.addA.y()),
                           QPointF(pl.gapX, pl.laneY), QPointF(cxB, pl.laneY)});
  drawArrow(p, {cxB, pl.laneY}, {cxB, pl.normB.top()}, line, head);
  // Residual around the feed-forward half.
  p.setPen(line);
  p.drawPolyline(QPolygonF{QPointF(cxB, pl.laneY), QPointF(pl.residualBX, pl.laneY), QPointF(pl.residualBX, pl.addB.y())});
  drawArrow(p, {pl.residualBX, pl.addB.y()}, {pl.addB.x() + pl.addRadius, pl.addB.y()}, line, head);

  drawBox(p, pl.normB, mix(componentColor(Component::Norms), bg, 0.55), thin, radius);
  p.setPen(t.foreground);
  drawFitted(p, pl.normB, tr("RMSNorm"), bold);
  if (moe) {
    const double cxR = pl.router.center().x();
    drawArrow(p, {cxR, pl.normB.bottom()}, {cxR, pl.router.top()}, line, head);
    drawBox(p, pl.router, mix(componentColor(Component::Router), bg, 0.6), line, radius);
    p.setPen(t.foreground);
    drawFitted(p, pl.router.adjusted(0.2 * u, 0, -0.2 * u, 0), routerText, bold);
    // One arrow to the experts: the chosen ones are marked by their outline and fill, since
    // arrows to every chosen box would cross the rows of boxes above them.
    if (!pl.cells.isEmpty()) drawArrow(p, {cxR, pl.router.bottom()}, {cxR, pl.cells.front().top()}, line, head);
    const QFont cellFont = pixelFont(t.text, 0.8 * u, true);
    for (int i = 0; i < int(pl.cells.size()); ++i) {
      const QRectF r = pl.cells[i];
      if (i >= int(shown.size())) {  // the "+N more" cell
        drawBox(p, r, bg, QPen(t.subtle, thin.widthF(), Qt::DashLine), radius);
        p.setPen(t.subtle);
        drawFitted(p, r, QStringLiteral("+%1").arg(E - shown.size()), cellFont);
        continue;
      }
      const bool chosen = hi.contains(shown[i]);
      // Chosen: full colour and a thick dark outline (reads in greyscale); idle: pale, thin.
      drawBox(p, r, chosen ? componentColor(Component::RoutedExperts) : mix(componentColor(Component::RoutedExperts), bg, 0.8),
              chosen ? strong : thin, radius);
      p.setPen(chosen ? t.foreground : t.subtle);
      drawFitted(p, r.adjusted(0.1 * u, 0, -0.1 * u, 0), QStringLiteral("E%1").arg(shown[i]), cellFont);
    }
    // The experts' weighted outputs are summed into the stream.
    const double gridBottom = pl.cells.isEmpty() ? pl.router.bottom() : pl.cells.back().bottom();
    const QPointF addTop(pl.addB.x(), pl.addB.y() - pl.addRadius);
    drawArrow(p, {cxR, gridBottom}, addTop, line, head);
    if (hasShared) {
      // The shared expert takes the normalised input directly: no router in its way.
      const double yTap = pl.normB.bottom() + 0.45 * u, xs = pl.shared.center().x();
      p.setPen(line);
      p.drawLine(QPointF(cxR, yTap), QPointF(xs, yTap));
      drawArrow(p, {xs, yTap}, {xs, pl.shared.top()}, line, head);
      drawBox(p, pl.shared, mix(componentColor(Component::SharedExperts), bg, 0.5), strong, radius);
      p.setPen(t.foreground);
      drawFitted(p, pl.shared.adjusted(0.15 * u, 0, -0.15 * u, 0), tr("Shared expert\nalways on"), bold);
      drawArrow(p, {xs, pl.shared.bottom()}, addTop, line, head);
    }
  } else {
    const double cx = pl.ffn.center().x();
    drawArrow(p, {cx, pl.normB.bottom()}, {cx, pl.ffn.top()}, line, head);
    drawBox(p, pl.ffn, mix(componentColor(Component::DenseFfn), bg, 0.6), line, radius);
    p.setPen(t.foreground);
    drawFitted(p, pl.ffn.adjusted(0.2 * u, 0, -0.2 * u, 0), tr("Dense FFN\nevery token uses all of it"), bold);
    drawArrow(p, {pl.addB.x(), pl.ffn.bottom()}, {pl.addB.x(), pl.addB.y() - pl.addRadius}, line, head);
  }
  drawAdd(p, pl.addB, pl.addRadius, line, bg);
  p.setPen(t.foreground);
  drawFitted(p, pl.output, layer + 1 < c.num_layers ? tr("to layer %1").arg(layer + 1) : tr("to the final norm and LM head"),
             plain);
}
