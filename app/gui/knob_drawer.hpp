// The knob panel on the left of every view, as a drawer that folds to a thin tab.
//
// At a projector's 1280 × 800 with the lesson panel open, the presentation theme's knob panel
// (about 420 px) and the lesson (about 400 px) leave the charts too little room: headings are cut
// and bars squashed. So each view's knobs sit in a KnobDrawer: a strip on its right edge reads
// "◂ Knobs" and folds them away; folded, the strip alone remains, reading "▸ Knobs". The lab stays
// a lab: one click (or View ▸ Show Knobs, Ctrl+K) brings them back, and a lesson's settings still
// reach a folded panel's knobs.
//
// KnobDrawers keeps the four views' drawers in step and folds them by itself when the lesson
// panel is open and the charts would get less than they need (kChartRoom); it unfolds them again
// when the room comes back, unless the person chose otherwise meanwhile.
#pragma once

#include <QAbstractButton>
#include <QList>
#include <QObject>
#include <QWidget>

class MainWindow;
class QAction;
class QDockWidget;

// The strip: vertical text, as wide as one line of the current font.
class DrawerTab : public QAbstractButton {
  Q_OBJECT
 public:
  explicit DrawerTab(QWidget* parent = nullptr);
  QSize sizeHint() const override;
  QSize minimumSizeHint() const override { return sizeHint(); }
  void setArrow(const QString& arrow) {
    m_arrow = arrow;
    update();
  }
  QString arrow() const { return m_arrow; }

 protected:
  void paintEvent(QPaintEvent* e) override;

 private:
  QString m_arrow;
};

class KnobDrawer : public QWidget {
  Q_OBJECT
 public:
  explicit KnobDrawer(QWidget* content, QWidget* parent = nullptr);
  QWidget* content() const { return m_content; }
  DrawerTab* tab() const { return m_tab; }
  bool isOpen() const { return m_open; }
  // Shows or folds the knobs and gives the splitter holding the drawer the width that frees (or
  // takes it back). Emits nothing: toggled() is for the person's click.
  void setOpen(bool open);
  // The width the open drawer needs (its content's minimum plus the strip).
  int openWidth() const;

 signals:
  void toggled(bool open);

 private:
  void fitSplitter();
  QWidget* m_content;
  DrawerTab* m_tab;
  bool m_open = true;
};

class KnobDrawers : public QObject {
  Q_OBJECT
 public:
  // Chart room below which the drawers fold while a lesson is open, per theme (px).
  static constexpr int kChartRoomNormal = 600;  // the Why table needs ~280 px in a two-column grid
  static constexpr int kChartRoomPresentation = 760;

  // Adds View ▸ Show Knobs and watches the lesson dock, the window's size and the theme. Call
  // after LessonPlayer::install.
  static KnobDrawers* install(MainWindow* w);
  QAction* action() const { return m_action; }
  bool open() const { return m_open; }
  void setOpen(bool open);  // all four views
  QList<KnobDrawer*> drawers() const;

 protected:
  bool eventFilter(QObject* watched, QEvent* e) override;

 private:
  explicit KnobDrawers(MainWindow* w);
  void scheduleFit();
  void fit();          // the automatic rule
  bool cramped() const;  // lesson open and the charts would get less than the theme's room
  MainWindow* m_w;
  QDockWidget* m_dock = nullptr;
  QAction* m_action = nullptr;
  bool m_open = true;
  bool m_autoFolded = false;  // folded by fit(), not by the person
  bool m_wasCramped = false;
  bool m_fitQueued = false;
};
