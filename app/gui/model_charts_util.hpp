// Drawing helpers shared by the Model view's source files: number formats, log axes, bars,
// labels placed in rows. Header-only (inline) so both files use one definition.
#pragma once

#include <QComboBox>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QRegularExpression>
#include <QRegularExpressionValidator>
#include <QScrollArea>
#include <QScrollBar>
#include <QSpinBox>
#include <QSplitter>
#include <QTimer>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <qcustomplot.h>

#include "theme.hpp"

namespace model_charts {
namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kContext = 1024;           // context length for "compute per token"
constexpr int64_t kMaxExpertBlocks = 32768;  // layers × experts the knobs may ask to count (~0.15 s)

// 46.7B, 1.25M, 900: three significant digits with the largest unit under 1000.
inline QString scaled(double v, const QStringList& units) {
  int u = 0;
  while (std::abs(v) >= 999.5 && u + 1 < units.size()) {
    v /= 1000.0;
    ++u;
  }
  return QString::number(v, 'g', 3) + units[u];
}
inline QString countText(double n) { return scaled(n, {"", "K", "M", "B", "T"}); }
inline QString bytesText(double b) { return scaled(b, {" B", " kB", " MB", " GB", " TB", " PB"}); }

// Tick labels in the units above instead of QCustomPlot's "1.2·10^6".
class FormattedTicker : public QCPAxisTicker {
 public:
  explicit FormattedTicker(std::function<QString(double)> f) : m_format(std::move(f)) {}

 protected:
  QString getTickLabel(double tick, const QLocale&, QChar, int) override { return m_format(tick); }

 private:
  std::function<QString(double)> m_format;
};
// A log axis with a tick and grid line at every power of ten ("each step is 10×"). Over more
// than three decades only 1K, 1M, 1B, 1T… carry a label, so narrow charts and projector fonts
// never crowd the axis with overlapping numbers.
class DecadeTicker : public QCPAxisTicker {
 public:
  explicit DecadeTicker(std::function<QString(double)> f) : m_format(std::move(f)) {}

 protected:
  int getSubTickCount(double) override { return 0; }
  QVector<double> createTickVector(double, const QCPRange& range) override {
    QVector<double> ticks;
    if (range.lower <= 0) return ticks;
    const int lo = int(std::ceil(std::log10(range.lower) - 1e-9)), hi = int(std::floor(std::log10(range.upper) + 1e-9));
    m_labelEvery = hi - lo > 3 ? 3 : 1;
    for (int e = lo; e <= hi; ++e) ticks << std::pow(10.0, e);
    return ticks;
  }
  QString getTickLabel(double tick, const QLocale&, QChar, int) override {
    const int e = int(std::lround(std::log10(tick)));
    return ((e % m_labelEvery) + m_labelEvery) % m_labelEvery == 0 ? m_format(tick) : QString();
  }

 private:
  std::function<QString(double)> m_format;
  int m_labelEvery = 1;
};

inline void setLogAxis(QCPAxis* axis, std::function<QString(double)> format) {
  axis->setScaleType(QCPAxis::stLogarithmic);
  axis->setTicker(QSharedPointer<DecadeTicker>::create(std::move(format)));
}

// Whole decades around [lo, hi], so the log axis starts and ends on a labelled tick.
inline QCPRange decades(double lo, double hi) {
  lo = std::max(lo, 1.0);
  hi = std::max(hi, lo * 10);
  return QCPRange(std::pow(10.0, std::floor(std::log10(lo))), std::pow(10.0, std::ceil(std::log10(hi))));
}

inline QString componentLabel(int i) {
  QString s = QString::fromLatin1(moelab::component_name(moelab::Component(i))).replace('_', ' ');
  return s.replace(QStringLiteral("ffn"), QStringLiteral("FFN")).replace(QStringLiteral("lm head"), QStringLiteral("LM head"));
}

// The legend as a row of the plot layout (above or below the axes), outside the data.
inline void legendRow(QCustomPlot* plot, int row) {
  plot->legend->setVisible(true);
  if (plot->legend->layout() != plot->plotLayout()) {
    if (auto* inset = qobject_cast<QCPLayoutInset*>(plot->legend->layout())) inset->take(plot->legend);
    plot->plotLayout()->addElement(row, 0, plot->legend);
    plot->plotLayout()->setRowStretchFactor(row, 0.001);
  }
  plot->legend->setFillOrder(QCPLayoutGrid::foColumnsFirst);
  plot->legend->setMargins(QMargins(6, 2, 6, 2));
}

// Horizontal bars along a vertical key axis, outlined so neighbours stay apart in greyscale.
inline QCPBars* horizontalBars(QCPAxis* keys, QCPAxis* values, const QColor& fill, double width, const Theme& t) {
  auto* bars = new QCPBars(keys, values);
  bars->setWidth(width);
  bars->setBrush(fill);
  bars->setPen(QPen(t.foreground, t.presentation ? 1.5 : 1));
  bars->setBaseValue(values->scaleType() == QCPAxis::stLogarithmic ? 1 : 0);  // a log axis has no zero
  return bars;
}

inline QCPItemText* textItem(QCustomPlot* plot, const QString& text, const QFont& font, const QColor& color, Qt::Alignment align) {
  auto* label = new QCPItemText(plot);
  label->setText(text);
  label->setFont(font);
  label->setColor(color);
  label->setPositionAlignment(align);
  return label;
}

// A point whose x is a fraction of the axis rect (0 = left edge, 1 = right edge) and y a row.
inline void placeInRow(QCPItemPosition* pos, QCPAxisRect* rect, double x, double key) {
  pos->setAxisRect(rect);
  pos->setAxes(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
  pos->setTypeX(QCPItemPosition::ptAxisRectRatio);
  pos->setTypeY(QCPItemPosition::ptPlotCoords);
  pos->setCoords(x, key);
}

// The number column right of the bars, outside the plotting area.
inline QCPItemText* rowLabel(QCustomPlot* plot, QCPAxisRect* rect, double key, const QString& text, const QFont& font,
                      const QColor& color) {
  auto* label = textItem(plot, text, font, color, Qt::AlignLeft | Qt::AlignVCenter);
  label->setClipToAxisRect(false);
  placeInRow(label->position, rect, 1.0, key);
  label->setPadding(QMargins(6, 0, 0, 0));
  return label;
}

// A thick outline around one row of a horizontal bar chart (the compared model).
inline void outlineRow(QCustomPlot* plot, QCPAxisRect* rect, double key, const QPen& pen) {
  auto* box = new QCPItemRect(plot);
  box->setClipToAxisRect(false);
  placeInRow(box->topLeft, rect, 0.0, key + 0.48);
  placeInRow(box->bottomRight, rect, 1.0, key - 0.48);
  box->setPen(pen);
  box->setBrush(Qt::NoBrush);
}

// The right margin an axis rect needs for a column of labels.
inline void reserveRightMargin(QCPAxisRect* rect, const QFont& font, const QStringList& labels) {
  const QFontMetrics fm(font);
  int w = 0;
  for (const QString& s : labels) w = std::max(w, fm.horizontalAdvance(s));
  rect->setAutoMargins(QCP::msLeft | QCP::msTop | QCP::msBottom);
  QMargins m = rect->margins();
  m.setRight(w + 14);
  rect->setMargins(m);
}

// CSV cells: whole numbers, and text in quotes.
inline QString num(double v) { return QString::number(v, 'f', 0); }
inline QString quoted(QString text) { return '"' + text.replace('"', '\'') + '"'; }

inline QString stripSource(QString message) {
  if (message.startsWith(QLatin1String("knobs: "))) message.remove(0, 7);
  return message;
}

}  // namespace model_charts
