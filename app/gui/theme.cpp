#include "theme.hpp"

#include <QApplication>
#include <optional>
#include <qcustomplot.h>

namespace {
// Made on first use (after QApplication exists: the fonts come from it).
std::optional<Theme> g_current;

struct Stop {
  double t;
  const char* hex;
};
// Viridis at nine evenly spaced points (matplotlib's _viridis_data, sampled).
constexpr Stop kViridis[] = {{0.0, "#440154"},   {0.125, "#472c7a"}, {0.25, "#3b528b"},
                             {0.375, "#2c728e"}, {0.5, "#21918c"},   {0.625, "#28ae80"},
                             {0.75, "#5ec962"},  {0.875, "#addc30"}, {1.0, "#fde725"}};
}  // namespace

Theme Theme::normal() {
  Theme t;
  t.presentation = false;
  t.text = QApplication::font();
  t.text.setPointSizeF(10);
  t.title = t.text;
  t.title.setPointSizeF(12);
  t.title.setBold(true);
  t.axisLabel = t.text;
  t.axisLabel.setPointSizeF(10);
  t.tickLabel = t.text;
  t.tickLabel.setPointSizeF(9);
  t.lineWidth = 2;
  t.markerSize = 6;
  t.background = QColor("#ffffff");
  t.foreground = QColor("#1a1a1a");
  t.grid = QColor("#d9d9d9");
  t.subtle = QColor("#666666");
  return t;
}

Theme Theme::projector() {
  Theme t = normal();
  t.presentation = true;
  t.text.setPointSizeF(16);
  t.title.setPointSizeF(20);
  t.axisLabel.setPointSizeF(16);
  t.axisLabel.setBold(true);
  t.tickLabel.setPointSizeF(14);
  t.lineWidth = 4;
  t.markerSize = 10;
  t.foreground = QColor("#000000");
  t.grid = QColor("#bdbdbd");
  t.subtle = QColor("#333333");
  return t;
}

const Theme& Theme::current() {
  if (!g_current) g_current = Theme::normal();
  return *g_current;
}
void Theme::setCurrent(const Theme& t) { g_current = t; }

QColor Theme::series(int i) {
  static const QColor c[] = {QColor("#0072B2"), QColor("#E69F00"), QColor("#009E73"), QColor("#D55E00"),
                             QColor("#CC79A7"), QColor("#56B4E9"), QColor("#F0E442"), QColor("#000000")};
  return c[((i % 8) + 8) % 8];
}

QColor Theme::component(int i) {
  // embeddings, attention, norms, router, routed experts, shared experts, dense FFN, LM head
  static const QColor c[] = {QColor("#999999"), QColor("#0072B2"), QColor("#F0E442"), QColor("#CC79A7"),
                             QColor("#E69F00"), QColor("#D55E00"), QColor("#009E73"), QColor("#56B4E9")};
  return c[((i % 8) + 8) % 8];
}

void Theme::applyTo(QCustomPlot* plot) const {
  plot->setBackground(background);
  for (QCPAxisRect* rect : plot->axisRects()) {
    for (QCPAxis* axis : rect->axes()) {
      axis->setLabelFont(axisLabel);
      axis->setTickLabelFont(tickLabel);
      axis->setLabelColor(foreground);
      axis->setTickLabelColor(foreground);
      QPen pen(foreground, presentation ? 2 : 1);
      axis->setBasePen(pen);
      axis->setTickPen(pen);
      axis->setSubTickPen(pen);
      axis->grid()->setPen(QPen(grid, 1, Qt::DotLine));
    }
  }
  if (plot->legend) {
    plot->legend->setFont(text);
    plot->legend->setTextColor(foreground);
    plot->legend->setBrush(QColor(255, 255, 255, 230));
    plot->legend->setBorderPen(QPen(grid));
  }
  for (int i = 0; i < plot->graphCount(); ++i) {
    QPen p = plot->graph(i)->pen();
    p.setWidthF(lineWidth);
    plot->graph(i)->setPen(p);
  }
}

QCPColorGradient viridisGradient() {
  QCPColorGradient g;
  g.clearColorStops();
  for (const Stop& s : kViridis) g.setColorStopAt(s.t, QColor(s.hex));
  g.setColorInterpolation(QCPColorGradient::ciRGB);
  g.setLevelCount(256);
  return g;
}

QColor viridisColor(double t) {
  t = std::clamp(t, 0.0, 1.0);
  for (size_t i = 1; i < std::size(kViridis); ++i) {
    if (t <= kViridis[i].t) {
      const double f = (t - kViridis[i - 1].t) / (kViridis[i].t - kViridis[i - 1].t);
      const QColor a(kViridis[i - 1].hex), b(kViridis[i].hex);
      return QColor::fromRgbF(a.redF() + f * (b.redF() - a.redF()), a.greenF() + f * (b.greenF() - a.greenF()),
                              a.blueF() + f * (b.blueF() - a.blueF()));
    }
  }
  return QColor(kViridis[std::size(kViridis) - 1].hex);
}
