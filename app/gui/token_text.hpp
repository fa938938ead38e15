// The generated text drawn token by token, each token's box coloured by the expert its router
// ranked first in the selected layer (grey where that choice was dropped by an expert capacity),
// with a legend. Eight colours cannot name 64 experts: with a group of experts set (at most 8,
// one colour each), a token is coloured by the best-ranked expert of the group it was sent to,
// and left plain when it went to none of them. Clicking a token selects it; its tooltip names its
// piece and id.
#pragma once

#include <QWidget>

#include "generation_worker.hpp"

class TokenText : public QWidget {
  Q_OBJECT
 public:
  explicit TokenText(QWidget* parent = nullptr);
  void setSnapshot(SnapshotPtr s, int layerIndex, int selected);
  // The experts to colour by (empty: each token's first choice); `why` heads the legend
  // ("picked", "the 4 busiest in this layer").
  static constexpr int kMaxGroup = 8;
  void setExpertGroup(const QVector<int>& experts, const QString& why);
  QVector<int> expertGroup() const { return m_group; }
  // The fill of token i's box as drawn; invalid when the token is drawn plain (no expert of the
  // group, or not routed yet).
  QColor tokenColor(int i) const;
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
  QVector<int> m_group;
  QString m_groupWhy;
  // The group expert token i was sent to (best rank), -1 none; its rank in *rank (1-based).
  int groupExpertOf(int i, int* rank = nullptr) const;
  QVector<QRect> m_boxes;
};
