#include "chart_panel.hpp"

#include <QContextMenuEvent>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QMenu>
#include <QPainter>
#include <QPdfWriter>
#include <QSaveFile>
#include <QSpinBox>
#include <QSvgGenerator>
#include <QToolButton>
#include <QVBoxLayout>
#include <algorithm>
#include <qcustomplot.h>

#include "theme.hpp"

ChartPanel::ChartPanel(const QString& id, const QString& title, const QString& caption, QWidget* custom,
                       QWidget* parent)
    : QWidget(parent), m_id(id) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(6, 6, 6, 6);
  layout->setSpacing(4);
  auto* header = new QHBoxLayout;
  m_title = new QLabel(title, this);
  m_title->setWordWrap(true);
  header->addWidget(m_title, 1);
  m_exportButton = new QToolButton(this);
  m_exportButton->setText(tr("Export…"));
  m_exportButton->setToolTip(tr("Export this chart as PNG, SVG, PDF or CSV"));
  m_exportButton->setStatusTip(m_exportButton->toolTip());
  connect(m_exportButton, &QToolButton::clicked, this, &ChartPanel::exportWithDialog);
  header->addWidget(m_exportButton);
  layout->addLayout(header);
  if (custom) {
    m_content = custom;
    custom->setParent(this);
  } else {
    m_plot = new QCustomPlot(this);
    m_content = m_plot;
    m_minNormal = m_minPresentation = 160;
  }
  layout->addWidget(m_content, 1);
  m_caption = new QLabel(caption, this);
  m_caption->setWordWrap(true);
  layout->addWidget(m_caption);
  applyTheme(Theme::current());
}

QString ChartPanel::title() const { return m_title->text(); }
void ChartPanel::setCaption(const QString& caption) { m_caption->setText(caption); }
void ChartPanel::setTitle(const QString& title) { m_title->setText(title); }

void ChartPanel::setMinimumChartHeight(int normal, int presentation) {
  m_minNormal = normal;
  m_minPresentation = presentation;
  m_content->setMinimumHeight(std::max(0, Theme::current().presentation ? presentation : normal));
}

void ChartPanel::applyTheme(const Theme& t) {
  if (const int least = t.presentation ? m_minPresentation : m_minNormal; least >= 0) m_content->setMinimumHeight(least);
  m_title->setFont(t.title);
  QFont c = t.text;
  c.setItalic(!t.presentation);
  if (t.presentation) c.setPointSizeF(t.text.pointSizeF() - 2);  // captions: large, but below the chart
  m_caption->setFont(c);
  QPalette pal = m_caption->palette();
  pal.setColor(QPalette::WindowText, t.subtle);
  m_caption->setPalette(pal);
  if (m_plot) {
    t.applyTo(m_plot);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
  } else {
    m_content->setFont(t.text);
    m_content->update();
  }
}

void ChartPanel::replot() {
  if (m_plot)
    m_plot->replot(QCustomPlot::rpQueuedReplot);
  else
    m_content->update();
}

void ChartPanel::paintContent(QPaintDevice* device, QSize size, double scale) const {
  if (m_painter) {
    // Content that paints itself at any size (e.g. a table): straight onto the device.
    QPainter p(device);
    p.setRenderHint(QPainter::Antialiasing);
    p.scale(scale, scale);
    m_painter(p, size);
  } else if (m_plot) {
    // Vector output: QCustomPlot draws itself onto any device at the requested size.
    QCPPainter p(device);
    p.setRenderHint(QPainter::Antialiasing);
    p.scale(scale, scale);
    m_plot->toPainter(&p, size.width(), size.height());
  } else {
    // A chart on a page not shown yet has no layout size: give it the export size first.
    if (!m_content->isVisible()) {
      m_content->resize(size);
      m_content->ensurePolished();
    }
    // One scale for both directions (drawings keep their proportions), centred.
    QPainter p(device);
    p.setRenderHint(QPainter::Antialiasing);
    const double k = std::min(double(size.width()) / std::max(1, m_content->width()),
                              double(size.height()) / std::max(1, m_content->height()));
    p.scale(scale, scale);
    p.fillRect(QRect(QPoint(0, 0), size), Theme::current().background);
    p.translate((size.width() - k * m_content->width()) / 2, (size.height() - k * m_content->height()) / 2);
    p.scale(k, k);
    m_content->render(&p, QPoint(), QRegion(), QWidget::DrawChildren);
  }
}

QString ChartPanel::exportPng(const QString& path, QSize size, double dpi) const {
  // Render at `dpi` (96 = screen): a 1280x800 chart at 192 DPI is 2560x1600 pixels.
  const double scale = dpi / 96.0;
  QImage img(QSize(int(size.width() * scale), int(size.height() * scale)), QImage::Format_ARGB32);
  img.fill(Theme::current().background);
  paintContent(&img, size, scale);
  // The DPI is metadata for slide software; set after painting so fonts are not scaled twice.
  img.setDotsPerMeterX(int(dpi / 0.0254));
  img.setDotsPerMeterY(int(dpi / 0.0254));
  QSaveFile f(path);
  if (!f.open(QIODevice::WriteOnly) || !img.save(&f, "PNG") || !f.commit())
    return tr("%1: cannot write the PNG (%2)").arg(path, f.errorString());
  return {};
}

QString ChartPanel::exportSvg(const QString& path, QSize size) const {
  // QSvgGenerator writes to its device as it paints: paint into memory, then save atomically.
  QBuffer buffer;
  QSvgGenerator gen;
  gen.setOutputDevice(&buffer);
  gen.setSize(size);
  gen.setViewBox(QRect(QPoint(0, 0), size));
  gen.setTitle(title());
  gen.setDescription(m_caption->text());
  paintContent(&gen, size, 1.0);
  QSaveFile f(path);
  if (!f.open(QIODevice::WriteOnly) || f.write(buffer.data()) != buffer.data().size() || !f.commit())
    return tr("%1: cannot write the SVG (%2)").arg(path, f.errorString());
  return {};
}

QString ChartPanel::exportPdf(const QString& path, QSize size) const {
  QBuffer buffer;
  buffer.open(QIODevice::WriteOnly);
  {
    QPdfWriter pdf(&buffer);
    pdf.setTitle(title());
    pdf.setCreator(QStringLiteral("MoE Lab"));
    pdf.setResolution(96);
    pdf.setPageSize(QPageSize(QSizeF(size.width(), size.height()), QPageSize::Point));
    pdf.setPageMargins(QMarginsF(0, 0, 0, 0));
    paintContent(&pdf, size, double(pdf.width()) / size.width());
  }
  QSaveFile f(path);
  if (!f.open(QIODevice::WriteOnly) || f.write(buffer.data()) != buffer.data().size() || !f.commit())
    return tr("%1: cannot write the PDF (%2)").arg(path, f.errorString());
  return {};
}

QString ChartPanel::exportCsv(const QString& path) const {
  QSaveFile f(path);
  const QByteArray data = csv().toUtf8();
  if (!f.open(QIODevice::WriteOnly) || f.write(data) != data.size() || !f.commit())
    return tr("%1: cannot write the CSV (%2)").arg(path, f.errorString());
  return {};
}

QString ChartPanel::exportAll(const QString& dir, QSize size) const {
  if (!QDir().mkpath(dir)) return tr("%1: cannot create the folder").arg(dir);
  const QString base = QDir(dir).filePath(m_id);
  for (const QString& err : {exportPng(base + ".png", size, 96), exportSvg(base + ".svg", size),
                             exportPdf(base + ".pdf", size), exportCsv(base + ".csv")})
    if (!err.isEmpty()) return err;
  return {};
}

void ChartPanel::exportWithDialog() {
  const QString path = QFileDialog::getSaveFileName(this, tr("Export %1").arg(title()), m_id + ".png",
                                                    tr("PNG image (*.png);;SVG drawing (*.svg);;PDF (*.pdf);;CSV data (*.csv)"));
  if (path.isEmpty()) return;
  const QString suffix = QFileInfo(path).suffix().toLower();
  const QSize screen = m_content->size().isValid() && m_content->width() > 50 ? m_content->size() : QSize(1280, 800);
  QString err;
  if (suffix == "png") {
    QDialog d(this);
    d.setWindowTitle(tr("PNG size"));
    auto* form = new QFormLayout(&d);
    auto* w = new QSpinBox(&d);
    auto* h = new QSpinBox(&d);
    auto* dpi = new QSpinBox(&d);
    w->setRange(200, 8000);
    h->setRange(150, 8000);
    dpi->setRange(72, 600);
    w->setValue(1280);
    h->setValue(800);
    dpi->setValue(144);
    form->addRow(tr("Width (points)"), w);
    form->addRow(tr("Height (points)"), h);
    form->addRow(tr("DPI"), dpi);
    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &d);
    form->addRow(buttons);
    connect(buttons, &QDialogButtonBox::accepted, &d, &QDialog::accept);
    connect(buttons, &QDialogButtonBox::rejected, &d, &QDialog::reject);
    if (d.exec() != QDialog::Accepted) return;
    err = exportPng(path, QSize(w->value(), h->value()), dpi->value());
  } else if (suffix == "svg") {
    err = exportSvg(path, screen);
  } else if (suffix == "pdf") {
    err = exportPdf(path, screen);
  } else if (suffix == "csv") {
    err = exportCsv(path);
  } else {
    err = tr("%1: choose a .png, .svg, .pdf or .csv file name").arg(path);
  }
  if (!err.isEmpty()) emit errorOccurred(err);
}

void ChartPanel::contextMenuEvent(QContextMenuEvent* e) {
  QMenu menu(this);
  menu.addAction(tr("Export chart…"), this, &ChartPanel::exportWithDialog);
  menu.addAction(tr("Copy data as CSV"), this, [this] { QGuiApplication::clipboard()->setText(csv()); });
  menu.exec(e->globalPos());
}

ChartPage::ChartPage(Presentation presentation, QWidget* parent) : QScrollArea(parent), m_presentation(presentation) {
  m_body = new QWidget(this);
  m_grid = new QGridLayout(m_body);
  m_grid->setContentsMargins(0, 0, 0, 0);
  setWidget(m_body);
  setWidgetResizable(true);  // the body fills the page when the panels fit, and scrolls when not
  setFrameShape(QFrame::NoFrame);
  setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
}

void ChartPage::add(ChartPanel* panel, int row, int column, int rowSpan, int columnSpan) {
  panel->setParent(m_body);
  m_cells.push_back({panel, row, column, rowSpan, columnSpan});
  m_grid->addWidget(panel, row, column, rowSpan, columnSpan);
  m_grid->setColumnStretch(column, 1);
}

void ChartPage::setRowStretch(int row, int stretch) {
  m_rowStretch[row] = stretch;
  m_grid->setRowStretch(row, stretch);
}

void ChartPage::arrange(bool stacked) {
  for (const Cell& c : m_cells) m_grid->removeWidget(c.panel);
  for (int r = 0; r < m_grid->rowCount(); ++r) m_grid->setRowStretch(r, 0);
  for (int col = 0; col < m_grid->columnCount(); ++col) m_grid->setColumnStretch(col, 0);
  if (stacked) {
    // Reading order: the grid's rows top to bottom, each row left to right.
    QList<Cell> order = m_cells;
    std::stable_sort(order.begin(), order.end(), [](const Cell& a, const Cell& b) {
      return a.row != b.row ? a.row < b.row : a.column < b.column;
    });
    for (int i = 0; i < int(order.size()); ++i) {
      m_grid->addWidget(order[i].panel, i, 0);
      m_grid->setRowStretch(i, 1);
    }
    m_grid->setColumnStretch(0, 1);
  } else {
    for (const Cell& c : m_cells) {
      m_grid->addWidget(c.panel, c.row, c.column, c.rowSpan, c.columnSpan);
      m_grid->setColumnStretch(c.column, 1);
    }
    for (auto it = m_rowStretch.cbegin(); it != m_rowStretch.cend(); ++it) m_grid->setRowStretch(it.key(), it.value());
  }
}

void ChartPage::applyTheme(const Theme& t) {
  arrange(t.presentation && m_presentation == Presentation::Stack);
}
