// A drawing of one transformer block of the model, the way a teacher draws it on the board:
// input → RMSNorm → attention (dense) → add → RMSNorm → router → E expert boxes → add → output.
// The experts the last token chose are highlighted (thick outline and fill, so the drawing also
// reads in greyscale), shared experts are drawn as always-on boxes, and a dense layer shows one
// FFN box. It paints from Theme::current() only, so QWidget::render into a QImage, an SVG or a
// PDF (how ChartPanel exports it) gives the same picture as the screen.
#pragma once

#include <QVector>
#include <QWidget>

#include "config.hpp"

class QPainter;

class BlockDiagram : public QWidget {
  Q_OBJECT
 public:
  explicit BlockDiagram(QWidget* parent = nullptr);

  void setConfig(const moelab::ModelConfig& c);
  const moelab::ModelConfig& config() const { return m_config; }
  // Which layer (0-based) the drawing shows; clamped to the model's layers.
  void setLayer(int layer);
  int layer() const { return m_layer; }
  QVector<int> highlighted() const { return m_highlighted; }

  QSize sizeHint() const override;
  QSize minimumSizeHint() const override;

 public slots:
  // The routed experts to highlight (e.g. the top-k of the last token); indices outside
  // [0, experts) are ignored, an empty list clears the highlight.
  void setHighlighted(QVector<int> experts);

 protected:
  void paintEvent(QPaintEvent* e) override;

 private:
  void paintDiagram(QPainter& p, const QRectF& area) const;

  moelab::ModelConfig m_config;
  int m_layer = 0;
  QVector<int> m_highlighted;
};
