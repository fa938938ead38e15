// The two looks of the lab: normal (a laptop) and presentation (a projector: large fonts, thick
// lines, high contrast), plus the colour-blind-safe colours every chart uses.
#pragma once

#include <QColor>
#include <QFont>
#include <QVector>

class QCustomPlot;
class QCPColorGradient;
class QWidget;

struct Theme {
  bool presentation = false;
  QFont text, title, axisLabel, tickLabel;
  int lineWidth = 2;
  int markerSize = 6;
  QColor background, foreground, grid, subtle;

  static Theme normal();
  static Theme projector();
  static const Theme& current();
  static void setCurrent(const Theme& t);

  // Okabe & Ito's colour-blind-safe qualitative palette (Color Universal Design, 2008).
  static QColor series(int i);
  // One colour per parameter component (embeddings, attention, norms, router, routed experts,
  // shared experts, dense FFN, LM head).
  static QColor component(int i);

  void applyTo(QCustomPlot* plot) const;
};

// Viridis (matplotlib's default colour map by Stéfan van der Walt and Nathaniel Smith, CC0),
// rebuilt from its published colour stops: perceptually uniform, readable in greyscale and by
// colour-blind viewers. QCustomPlot 2.1 has no such gradient.
QCPColorGradient viridisGradient();
// The viridis colour at t in [0, 1] (for text and legends drawn by hand).
QColor viridisColor(double t);
