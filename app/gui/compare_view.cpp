#include "compare_view.hpp"

#include <QComboBox>
#include <QDir>
#include <QEvent>
#include <QFileDialog>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QListWidget>
#include <QPushButton>
#include <QSplitter>
#include <QTabWidget>
#include <QVBoxLayout>
#include <qcustomplot.h>

#include <algorithm>
#include <cstdlib>

#include "chart_kit.hpp"
#include "chart_panel.hpp"
#include "knob_drawer.hpp"
#include "table_chart.hpp"
#include "theme.hpp"
#include "training_view.hpp"

CompareView::CompareView(QWidget* parent) : QWidget(parent) {
  auto* controls = new QWidget(this);
  auto* cv = new QVBoxLayout(controls);
  auto* intro = new QLabel(tr("Runs to compare. Train with different balancing in the Training view (or with "
                              "moelab-cli train), then add their folders here."),
                           controls);
  intro->setWordWrap(true);
  cv->addWidget(intro);
  m_list = new QListWidget(controls);
  m_list->setSelectionMode(QAbstractItemView::SingleSelection);
  cv->addWidget(m_list, 1);
  auto* add = new QPushButton(tr("Add Run Folder…"), controls);
  auto* addCurrent = new QPushButton(tr("Add Training View's Run"), controls);
  auto* remove = new QPushButton(tr("Remove"), controls);
  cv->addWidget(add);
  cv->addWidget(addCurrent);
  cv->addWidget(remove);
  cv->addWidget(new QLabel(tr("Layer shown"), controls));
  m_layer = new QComboBox(controls);
  cv->addWidget(m_layer);
  connect(add, &QPushButton::clicked, this, [this] {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Add a run folder (run.json + metrics.jsonl)"),
                                                          TrainingView::runsFolder());
    if (!dir.isEmpty()) addRun(dir);
  });
  connect(addCurrent, &QPushButton::clicked, this, &CompareView::addCurrentRunRequested);
  connect(remove, &QPushButton::clicked, this, [this] { removeRun(m_list->currentRow()); });
  connect(m_layer, &QComboBox::currentIndexChanged, this, [this] { redraw(); });

  m_loss = new ChartPanel(QStringLiteral("compare-loss"), tr("Loss of each run"),
                          tr("Language-model loss (lines) and validation loss (dots) of each run: does balancing cost "
                             "quality, or help it?"));
  m_cv = new ChartPanel(QStringLiteral("compare-cv"), tr("How uneven is each run's load?"),
                        tr("Coefficient of variation of the load in the layer shown (0 = perfectly even)."));
  m_collapse = new ChartPanel(QStringLiteral("compare-collapse"), tr("Collapse views side by side"),
                              tr("Each run's expert load over training on the same colour scale: one bright row is "
                                 "collapse, an even haze is balance."));
  m_table = new TableChart;
  m_figures = new ChartPanel(QStringLiteral("compare-figures"), tr("Final figures"),
                             tr("At each run's last step; CV, busiest expert and collapse index of the worst layer, dead "
                                "experts summed over layers, specialisation of the best layer."),
                             m_table);
  m_loss->setCsvProvider([this] {
    QString out = QStringLiteral("run,step,lm_loss,val_loss\n");
    for (int i = 0; i < m_runs.size(); ++i)
      for (const auto& s : m_runs[i].history)
        out += QStringLiteral("%1,%2,%3,%4\n").arg(label(i)).arg(s->step).arg(s->lmLoss, 0, 'g', 8).arg(ChartKit::csvNumber(s->valLoss));
    return out;
  });
  m_cv->setCsvProvider([this] {
    QString out = QStringLiteral("run,step,cv\n");
    const int l = selectedLayer();
    for (int i = 0; i < m_runs.size(); ++i)
      for (const auto& s : m_runs[i].history)
        if (l < s->layers.size()) out += QStringLiteral("%1,%2,%3\n").arg(label(i)).arg(s->step).arg(s->layers[l].cv, 0, 'g', 8);
    return out;
  });
  m_collapse->setCsvProvider([this] {
    QString out = QStringLiteral("run,step,expert,load\n");
    const int l = selectedLayer();
    for (int i = 0; i < m_runs.size(); ++i)
      for (const auto& s : m_runs[i].history)
        if (l < s->layers.size())
          for (int e = 0; e < s->layers[l].load.size(); ++e)
            out += QStringLiteral("%1,%2,%3,%4\n").arg(label(i)).arg(s->step).arg(e).arg(s->layers[l].load[e], 0, 'g', 8);
    return out;
  });
  m_figures->setCsvProvider([this] { return tableCsv(); });
  m_figures->setPainter([this](QPainter& p, QSize size) { m_table->paintTable(p, size); });

  // Two pages, so each chart stays readable on a projector; a page scrolls rather than squash a
  // chart below its least height (the side-by-side heatmaps need room for two-line run titles).
  auto* page1 = new ChartPage(ChartPage::Presentation::Grid);
  page1->add(m_collapse, 0, 0);
  page1->add(m_figures, 1, 0);
  page1->setRowStretch(0, 3);
  page1->setRowStretch(1, 2);
  auto* page2 = new ChartPage(ChartPage::Presentation::Grid);
  page2->add(m_loss, 0, 0);
  page2->add(m_cv, 0, 1);
  m_chartPages = {page1, page2};
  m_collapse->plot()->installEventFilter(this);
  m_collapse->setMinimumChartHeight(200, 400);
  m_loss->setMinimumChartHeight(200, 380);
  m_cv->setMinimumChartHeight(200, 380);
  m_pages = new QTabWidget(this);
  m_pages->addTab(page1, tr("Collapse and final figures"));
  m_pages->addTab(page2, tr("Loss and unevenness"));
  auto* charts = m_pages;
  auto* split = new QSplitter(this);
  m_drawer = new KnobDrawer(controls);
  split->addWidget(m_drawer);
  split->addWidget(charts);
  split->setStretchFactor(1, 5);
  auto* outer = new QHBoxLayout(this);
  outer->setContentsMargins(0, 0, 0, 0);
  outer->addWidget(split);
  applyTheme(Theme::current());
}

QList<ChartPanel*> CompareView::charts() const { return {m_collapse, m_loss, m_cv, m_figures}; }

void CompareView::applyTheme(const Theme& t) {
  for (ChartPanel* c : charts()) c->applyTheme(t);
  for (ChartPage* p : m_chartPages) p->applyTheme(t);
  redraw();
}

QStringList CompareView::runDirs() const {
  QStringList out;
  for (const RunData& r : m_runs) out << r.dir;
  return out;
}

int CompareView::selectedLayer() const { return std::max(0, m_layer->currentIndex()); }

bool CompareView::addRun(const QString& dir) {
  try {
    addRunData(loadRun(dir));
    return true;
  } catch (const std::exception& e) {
    emit errorOccurred(QString::fromUtf8(e.what()));
    return false;
  }
}

void CompareView::addRunData(const RunData& run) {
  for (RunData& r : m_runs)
    if (!run.dir.isEmpty() && r.dir == run.dir) {
      r = run;  // refreshed: a run that went on since it was added
      refreshList();
      return;
    }
  m_runs.push_back(run);
  refreshList();
}

void CompareView::removeRun(int index) {
  if (index < 0 || index >= m_runs.size()) return;
  m_runs.remove(index);
  refreshList();
}

void CompareView::clearRuns() {
  m_runs.clear();
  refreshList();
}

QString CompareView::label(int i) const {
  // The preset names the run; a second run of the same preset gets its folder's time as well.
  const RunData& r = m_runs[i];
  const QString base = r.preset.isEmpty() ? r.name : r.preset;
  for (int j = 0; j < m_runs.size(); ++j)
    if (j != i && (m_runs[j].preset.isEmpty() ? m_runs[j].name : m_runs[j].preset) == base)
      return QStringLiteral("%1 (%2)").arg(base).arg(i + 1);
  return base;
}

void CompareView::refreshList() {
  m_list->clear();
  int64_t layers = 0;
  for (int i = 0; i < m_runs.size(); ++i) {
    const RunData& r = m_runs[i];
    const QString balancing = balancingText(r.train);
    auto* item = new QListWidgetItem(label(i) == balancing ? label(i) : QStringLiteral("%1\n%2").arg(label(i), balancing));
    item->setForeground(Theme::series(i));
    item->setToolTip(QStringLiteral("%1\n%2").arg(r.title, r.dir));
    m_list->addItem(item);
    layers = i == 0 ? r.moeLayers : std::min(layers, r.moeLayers);
  }
  const int keep = m_layer->currentIndex();
  m_layer->blockSignals(true);
  m_layer->clear();
  for (int64_t l = 0; l < layers; ++l) m_layer->addItem(tr("MoE layer %1").arg(l));
  m_layer->setCurrentIndex(std::clamp(keep, 0, int(layers) - 1));
  m_layer->blockSignals(false);
  redraw();
  emit runsChanged();
}

void CompareView::redraw() {
  drawLoss();
  drawCv();
  drawCollapse();
  fillTable();
}

void CompareView::drawLoss() {
  QCustomPlot* plot = m_loss->plot();
  ChartKit::resetPlot(plot);
  ChartKit::legendBelow(plot, 2);  // under the axes: the curves cross every corner
  plot->legend->setVisible(!m_runs.isEmpty());
  for (int i = 0; i < m_runs.size(); ++i) {
    const RunData& r = m_runs[i];
    QCPGraph* g = ChartKit::line(plot, plot->yAxis, label(i), Theme::series(i));
    QCPGraph* v = plot->addGraph();
    v->removeFromLegend();
    v->setLineStyle(QCPGraph::lsNone);
    v->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, Theme::series(i), Theme::current().markerSize + 2));
    for (const auto& s : r.history) {
      g->addData(double(s->step), s->lmLoss);
      if (!std::isnan(s->valLoss)) v->addData(double(s->step), s->valLoss);
    }
  }
  plot->xAxis->setLabel(tr("training step"));
  plot->yAxis->setLabel(tr("language-model loss"));
  plot->rescaleAxes();
  plot->yAxis->setRangeLower(0);
  ChartKit::finish(plot);
}

void CompareView::drawCv() {
  QCustomPlot* plot = m_cv->plot();
  ChartKit::resetPlot(plot);
  ChartKit::legendBelow(plot, 2);
  plot->legend->setVisible(!m_runs.isEmpty());
  const int l = selectedLayer();
  for (int i = 0; i < m_runs.size(); ++i) {
    QCPGraph* g = ChartKit::line(plot, plot->yAxis, label(i), Theme::series(i));
    for (const auto& s : m_runs[i].history)
      if (l < s->layers.size()) g->addData(double(s->step), s->layers[l].cv);
  }
  plot->xAxis->setLabel(tr("training step"));
  plot->yAxis->setLabel(tr("CV of load, MoE layer %1").arg(l));
  plot->rescaleAxes();
  plot->yAxis->setRangeLower(0);
  ChartKit::finish(plot);
}

bool CompareView::eventFilter(QObject* watched, QEvent* e) {
  if (e->type() == QEvent::Resize && watched == m_collapse->plot() && !m_runs.isEmpty() &&
      std::abs(m_collapse->plot()->width() - m_collapseDrawnWidth) > 40)
    drawCollapse();
  return QWidget::eventFilter(watched, e);
}

void CompareView::drawCollapse() {
  QCustomPlot* plot = m_collapse->plot();
  m_collapseDrawnWidth = plot->width();
  const int l = selectedLayer(), n = int(m_runs.size());
  if (n == 0) {
    ChartKit::resetPlot(plot);
    ChartKit::emptyMessage(plot, tr("Add two or more runs to compare them"));
    ChartKit::finish(plot);
    return;
  }
  // Each run's collapse heatmap (RunCharts::drawCollapse) side by side, its name and balancing
  // above it, on one colour scale: the share of the tokens, the same for every run.
  ChartKit::clearPlot(plot);
  auto* group = new QCPMarginGroup(plot);
  // A long run name is shortened in the middle to its column (the y axis and the colour scale take
  // about 260 px), and the titles never widen the chart beyond its page: the name is in the table too.
  const QFontMetrics fm(Theme::current().axisLabel);
  const int column = plot->width() > 300 ? (plot->width() - 260) / n : 100000;
  for (int i = 0; i < n; ++i) {
    const RunData& r = m_runs[i];
    const QString name = fm.elidedText(label(i), Qt::ElideMiddle, std::max(column, fm.horizontalAdvance(QStringLiteral("ab…yz"))));
    const QString balancing = balancingText(r.train);
    auto* title = new QCPTextElement(plot, label(i) == balancing ? name : QStringLiteral("%1\n%2").arg(name, balancing),
                                     Theme::current().axisLabel);
    title->setMinimumSize(1, 0);
    title->setTextColor(Theme::series(i).darker(120));
    plot->plotLayout()->addElement(0, i, title);
    auto* rect = new QCPAxisRect(plot);
    rect->setMarginGroup(QCP::msTop | QCP::msBottom, group);
    plot->plotLayout()->addElement(1, i, rect);
    rect->axis(QCPAxis::atBottom)->setLabel(tr("training step"));
    if (i == 0) rect->axis(QCPAxis::atLeft)->setLabel(tr("expert (MoE layer %1)").arg(l));
    RunCharts::drawCollapse(rect, r, int(r.history.size()), l);
  }
  QCPColorScale* scale = ChartKit::colorScale(plot, QCPRange(0, 1), tr("share of tokens"), 1, n);
  scale->setMarginGroup(QCP::msTop | QCP::msBottom, group);
  plot->plotLayout()->setRowStretchFactor(0, 0.01);
  ChartKit::finish(plot, scale);
}

double CompareView::collapseValue(int r, int i, int e) const {
  QCustomPlot* plot = m_collapse->plot();
  if (r < 0 || r >= plot->axisRectCount()) return std::nan("");
  for (int p = 0; p < plot->plottableCount(); ++p)
    if (auto* map = qobject_cast<QCPColorMap*>(plot->plottable(p)); map && map->keyAxis()->axisRect() == plot->axisRect(r))
      return map->data()->cell(i, e);
  return std::nan("");
}

namespace {
QString fmt(double v, int digits) { return std::isnan(v) ? QStringLiteral("–") : QString::number(v, 'f', digits); }
}  // namespace

void CompareView::fillTable() {
  const QStringList headers = {tr("run"), tr("balancing"), tr("steps"), tr("LM loss"), tr("val. loss"),
                               tr("CV"), tr("top expert"), tr("dead"), tr("spec.")};
  QVector<QStringList> rows;
  QVector<QColor> colors;
  for (int i = 0; i < m_runs.size(); ++i) {
    const FinalFigures f = finalFigures(m_runs[i]);
    const QStringList cells = {label(i), balancingText(m_runs[i].train), QString::number(f.step),
                               fmt(f.lmLoss, 3), fmt(f.valLoss, 3), fmt(f.cv, 2),
                               std::isnan(f.maxShare) ? QStringLiteral("–") : QStringLiteral("%1%").arg(100 * f.maxShare, 0, 'f', 0),
                               QString::number(f.dead), fmt(f.specialisation, 2)};
    rows.push_back(cells);
    colors.push_back(Theme::series(i).darker(120));
  }
  m_table->setTable(headers, rows, colors);
}

QString CompareView::tableCsv() const {
  QString out = QStringLiteral("run,balancing,steps,lm_loss,val_loss,cv,max_share,dead,specialisation,collapse\n");
  const auto n = ChartKit::csvNumber;
  for (int i = 0; i < m_runs.size(); ++i) {
    const RunData& r = m_runs[i];
    const FinalFigures f = finalFigures(r);
    out += QStringLiteral("%1,\"%2\",%3,%4,%5,%6,%7,%8,%9,%10\n")
               .arg(label(i), balancingText(r.train))
               .arg(f.step)
               .arg(n(f.lmLoss), n(f.valLoss), n(f.cv), n(f.maxShare))
               .arg(f.dead)
               .arg(n(f.specialisation), n(f.collapse));
  }
  return out;
}
