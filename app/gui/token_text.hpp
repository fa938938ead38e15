// The generated text drawn token by token, each token's box coloured by the expert its router
// ranked first in the selected layer (grey where that choice was dropped by an expert capacity),
// with a legend. Clicking a token selects it; its tooltip names its piece and id.
#pragma once

#include <QWidget>

#include "generation_worker.hpp"

class TokenText : public QWidget {
  Q_OBJECT
 public:
  explicit TokenText(QWidget* parent = nullptr);
  void setSnapshot(SnapshotPtr s, int layerIndex, int selected);
  QSize sizeHint() const override { return QSize(600, 160); }
  // Colour of expert e of E (distinct, colour-blind-safe for E <= 8, viridis beyond).
  static QColor expertColor(int e, int64_t E);
  // The tooltip of the token at `pos` (its piece, label and id), "" where there is none.
  QString toolTipAt(const QPoint& pos) const;

 signals:
  void tokenClicked(int index);

 protected:
  void paintEvent(QPaintEvent*) override;
  void mousePressEvent(QMouseEvent* e) override;
  bool event(QEvent* e) override;

 private:
  SnapshotPtr m_snap;
  int m_layer = 0, m_selected = -1;
  QVector<QRect> m_boxes;
};
