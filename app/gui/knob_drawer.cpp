#include "knob_drawer.hpp"

#include "compare_view.hpp"
#include "main_window.hpp"
#include "model_view.hpp"
#include "theme.hpp"
#include "tokens_view.hpp"
#include "training_view.hpp"

#include <QAction>
#include <QDockWidget>
#include <QEvent>
#include <QHBoxLayout>
#include <QMenu>
#include <QMenuBar>
#include <QPainter>
#include <QSplitter>
#include <QStyleOptionButton>
#include <QTabWidget>
#include <QTimer>
#include <algorithm>

namespace {

QString tabArrow(bool open) { return open ? QStringLiteral("◂") : QStringLiteral("▸"); }
QString tabTip(bool open) {
  return open ? KnobDrawer::tr("Fold the knobs away to give the charts the room (Ctrl+K)")
              : KnobDrawer::tr("Show the knobs (Ctrl+K)");
}

}  // namespace

DrawerTab::DrawerTab(QWidget* parent) : QAbstractButton(parent) {
  setFocusPolicy(Qt::NoFocus);  // a presenter's clicker keys go to the lesson, not here
  setCursor(Qt::PointingHandCursor);
  setSizePolicy(QSizePolicy::Fixed, QSizePolicy::Expanding);
}

QSize DrawerTab::sizeHint() const {
  const QFontMetrics fm(font());
  return {fm.height() + 10, fm.horizontalAdvance(text()) + 2 * fm.height() + 24};
}

void DrawerTab::paintEvent(QPaintEvent*) {
  QPainter p(this);
  const QPalette& pal = palette();
  QColor bg = pal.color(QPalette::Button);
  if (underMouse()) bg = bg.darker(112);
  if (isDown()) bg = bg.darker(125);
  p.fillRect(rect(), bg);
  p.setPen(pal.color(QPalette::Mid));
  p.drawLine(rect().topLeft(), rect().bottomLeft());
  p.setPen(pal.color(QPalette::ButtonText));
  p.setFont(font());
  // The arrow upright at the top (which way the panel goes), the word top to bottom below it, as
  // the tabs of a side bar read.
  const int h = QFontMetrics(font()).height();
  p.drawText(QRect(0, 8, width(), h), Qt::AlignCenter, m_arrow);
  p.translate(width(), 0);
  p.rotate(90);
  p.drawText(QRect(h + 16, 0, height() - h - 16, width()), Qt::AlignLeft | Qt::AlignVCenter, text());
}

KnobDrawer::KnobDrawer(QWidget* content, QWidget* parent) : QWidget(parent), m_content(content) {
  auto* row = new QHBoxLayout(this);
  row->setContentsMargins(0, 0, 0, 0);
  row->setSpacing(0);
  content->setParent(this);
  row->addWidget(content, 1);
  m_tab = new DrawerTab(this);
  m_tab->setObjectName(QStringLiteral("knobDrawerTab"));
  m_tab->setText(tr("Knobs"));
  m_tab->setArrow(tabArrow(true));
  m_tab->setToolTip(tabTip(true));
  row->addWidget(m_tab);
  connect(m_tab, &QAbstractButton::clicked, this, [this] {
    setOpen(!m_open);
    emit toggled(m_open);
  });
}

int KnobDrawer::openWidth() const {
  return std::max(m_content->minimumWidth(), m_content->minimumSizeHint().width()) + m_tab->sizeHint().width();
}

void KnobDrawer::setOpen(bool open) {
  if (open == m_open) return;
  m_open = open;
  m_content->setVisible(open);
  m_tab->setArrow(tabArrow(open));
  m_tab->setToolTip(tabTip(open));
  m_tab->updateGeometry();
  setMaximumWidth(open ? QWIDGETSIZE_MAX : m_tab->sizeHint().width());
  fitSplitter();
}

void KnobDrawer::fitSplitter() {
  auto* split = qobject_cast<QSplitter*>(parentWidget());
  if (!split || split->count() != 2) return;
  const int i = split->indexOf(this);
  split->setCollapsible(i, false);
  QList<int> sizes = split->sizes();
  const int total = sizes[0] + sizes[1];
  if (total <= 0) return;  // not laid out yet: the minimum and maximum widths decide
  const int want = std::min(total - 200, m_open ? std::max(openWidth(), m_content->sizeHint().width() + m_tab->sizeHint().width())
                                                : m_tab->sizeHint().width());
  sizes[i] = want;
  sizes[1 - i] = total - want;
  split->setSizes(sizes);
}

KnobDrawers::KnobDrawers(MainWindow* w) : QObject(w), m_w(w) {}

KnobDrawers* KnobDrawers::install(MainWindow* w) {
  auto* d = new KnobDrawers(w);
  d->m_dock = w->findChild<QDockWidget*>(QStringLiteral("lessonDock"));
  d->m_action = new QAction(tr("Show &Knobs"), w);
  d->m_action->setCheckable(true);
  d->m_action->setChecked(true);
  d->m_action->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_K));
  d->m_action->setStatusTip(tr("Show or fold away the knob panel on the left of every view"));
  for (QAction* a : w->menuBar()->actions())
    if (a->menu() && a->text() == tr("&View")) a->menu()->addAction(d->m_action);
  w->addAction(d->m_action);  // the shortcut works with the menu bar hidden too
  connect(d->m_action, &QAction::triggered, d, [d](bool on) {
    d->m_autoFolded = false;
    d->setOpen(on);
  });
  for (KnobDrawer* k : d->drawers())
    connect(k, &KnobDrawer::toggled, d, [d](bool on) {
      d->m_autoFolded = false;
      d->setOpen(on);
    });
  if (d->m_dock) {
    connect(d->m_dock, &QDockWidget::visibilityChanged, d, &KnobDrawers::scheduleFit);
    connect(d->m_dock, &QDockWidget::topLevelChanged, d, &KnobDrawers::scheduleFit);
  }
  connect(w, &MainWindow::themeChanged, d, &KnobDrawers::scheduleFit);
  w->installEventFilter(d);
  return d;
}

QList<KnobDrawer*> KnobDrawers::drawers() const {
  return {m_w->modelView()->knobDrawer(), m_w->tokensView()->knobDrawer(), m_w->trainingView()->knobDrawer(),
          m_w->compareView()->knobDrawer()};
}

void KnobDrawers::setOpen(bool open) {
  m_open = open;
  for (KnobDrawer* k : drawers()) k->setOpen(open);
  if (m_action->isChecked() != open) m_action->setChecked(open);
}

bool KnobDrawers::eventFilter(QObject* watched, QEvent* e) {
  if (watched == m_w && e->type() == QEvent::Resize) scheduleFit();
  return false;
}

void KnobDrawers::scheduleFit() {
  if (m_fitQueued) return;
  m_fitQueued = true;
  QTimer::singleShot(0, this, [this] {
    m_fitQueued = false;
    fit();
  });
}

bool KnobDrawers::cramped() const {
  if (!m_dock || !m_dock->isVisible() || m_dock->isFloating()) return false;
  int knobs = 0;
  for (KnobDrawer* k : drawers()) knobs = std::max(knobs, k->openWidth());
  const int room = Theme::current().presentation ? kChartRoomPresentation : kChartRoomNormal;
  return m_w->tabs()->width() - knobs < room;
}

void KnobDrawers::fit() {
  // Only a change of situation moves the drawers: a person's choice stands until the lesson panel
  // opens or closes, or the window or theme makes room (or takes it).
  const bool c = cramped();
  if (c == m_wasCramped) return;
  m_wasCramped = c;
  if (c && m_open) {
    setOpen(false);
    m_autoFolded = true;
  } else if (!c && m_autoFolded) {
    m_autoFolded = false;
    setOpen(true);
  }
}
