#include "export_run.hpp"

#include <QCommandLineParser>
#include <QCoreApplication>
#include <QDir>
#include <QRegularExpression>
#include <cstdio>
#include <qcustomplot.h>

#include "chart_panel.hpp"
#include "run_charts.hpp"
#include "run_data.hpp"
#include "theme.hpp"

namespace {

// One chart of the run into files of every format asked for, at once.
QString writeChart(const RunCharts::RunChart& chart, int layer, const RunData& run, const QString& caption,
                   const ExportOptions& o, QStringList* written) {
  const int shown = int(run.history.size());
  const QString title = chart.titleFor(layer);
  ChartPanel panel(chart.exportNameFor(layer), title, caption);
  panel.resize(o.size);
  chart.draw(panel.plot(), run, shown, layer);
  // The title goes on the chart itself: an exported file is shown without the panel around it.
  QCustomPlot* plot = panel.plot();
  plot->plotLayout()->insertRow(0);
  auto* text = new QCPTextElement(plot, title, Theme::current().title);
  text->setTextColor(Theme::current().foreground);
  plot->plotLayout()->addElement(0, 0, text);
  panel.setCsvProvider([&] { return chart.csv(run, shown, layer); });
  const QString base = QDir(o.outDir).filePath(panel.id());
  for (const QString& f : o.formats) {
    const QString path = base + '.' + f;
    QString err = f == QLatin1String("png")   ? panel.exportPng(path, o.size, o.dpi)
                  : f == QLatin1String("svg") ? panel.exportSvg(path, o.size)
                  : f == QLatin1String("pdf") ? panel.exportPdf(path, o.size)
                                              : panel.exportCsv(path);
    if (!err.isEmpty()) return err;
    if (written) written->push_back(path);
  }
  return {};
}

}  // namespace

QString exportRun(const ExportOptions& o, QStringList* written) {
  for (const QString& f : o.formats)
    if (!QStringList{"png", "svg", "pdf", "csv"}.contains(f))
      return QObject::tr("--format: '%1' is not one of png, svg, pdf, csv").arg(f);
  RunData run;
  try {
    run = loadRun(o.runDir);
  } catch (const std::exception& e) {
    return QString::fromUtf8(e.what());
  }
  if (run.history.isEmpty()) return QObject::tr("%1/metrics.jsonl: the run has no steps yet").arg(o.runDir);
  if (!QDir().mkpath(o.outDir)) return QObject::tr("%1: cannot create the folder").arg(o.outDir);
  const Theme saved = Theme::current();
  Theme::setCurrent(o.presentation ? Theme::projector() : Theme::normal());
  const QString caption = QObject::tr("%1, %2 steps, balancing: %3").arg(run.title).arg(run.history.back()->step).arg(balancingText(run.train));
  // The Training view's charts (RunCharts::runCharts), those of every layer first, then each
  // MoE layer's; a chart with nothing to show for this run (bias without bias balancing) is left out.
  QString err;
  for (int layer = -1; layer < run.moeLayers && err.isEmpty(); ++layer)
    for (const RunCharts::RunChart& chart : RunCharts::runCharts()) {
      if (chart.perLayer != (layer >= 0) || (chart.exported && !chart.exported(run))) continue;
      if (err = writeChart(chart, layer, run, caption, o, written); !err.isEmpty()) break;
    }
  Theme::setCurrent(saved);
  return err;
}

int exportMain(const QStringList& args) {
  QCommandLineParser parser;
  parser.setApplicationDescription(QStringLiteral("Write every chart of a training run, without a window."));
  parser.addHelpOption();
  QCommandLineOption run(QStringLiteral("run"), QStringLiteral("The run folder (run.json + metrics.jsonl)."), QStringLiteral("DIR"));
  QCommandLineOption out(QStringLiteral("out"), QStringLiteral("Where to write the charts."), QStringLiteral("DIR"));
  QCommandLineOption format(QStringLiteral("format"), QStringLiteral("Comma-separated: png,svg,pdf,csv (default: all)."),
                            QStringLiteral("LIST"), QStringLiteral("png,svg,pdf,csv"));
  QCommandLineOption theme(QStringLiteral("theme"), QStringLiteral("normal or presentation (large fonts, thick lines)."),
                           QStringLiteral("THEME"), QStringLiteral("normal"));
  QCommandLineOption size(QStringLiteral("size"), QStringLiteral("Chart size in points, WxH (default 1280x800)."),
                          QStringLiteral("WxH"), QStringLiteral("1280x800"));
  QCommandLineOption dpi(QStringLiteral("dpi"), QStringLiteral("PNG resolution (default 144)."), QStringLiteral("N"),
                         QStringLiteral("144"));
  parser.addOptions({run, out, format, theme, size, dpi});
  if (!parser.parse(args)) {
    std::fprintf(stderr, "moelab export: %s\n", qPrintable(parser.errorText()));
    return 2;
  }
  if (parser.isSet(QStringLiteral("help"))) {
    std::fprintf(stdout, "%s", qPrintable(parser.helpText()));
    return 0;
  }
  if (!parser.isSet(run) || !parser.isSet(out)) {
    std::fprintf(stderr, "moelab export: give --run DIR and --out DIR\n");
    return 2;
  }
  ExportOptions o;
  o.runDir = parser.value(run);
  o.outDir = parser.value(out);
  o.formats = parser.value(format).toLower().split(',', Qt::SkipEmptyParts);
  for (QString& f : o.formats) f = f.trimmed();
  const QString t = parser.value(theme).toLower();
  if (t != QLatin1String("normal") && t != QLatin1String("presentation")) {
    std::fprintf(stderr, "moelab export: --theme must be normal or presentation, not '%s'\n", qPrintable(t));
    return 2;
  }
  o.presentation = t == QLatin1String("presentation");
  const auto m = QRegularExpression(QStringLiteral("^(\\d{3,4})x(\\d{3,4})$")).match(parser.value(size));
  if (!m.hasMatch() || m.captured(1).toInt() < 200 || m.captured(2).toInt() < 150) {
    std::fprintf(stderr, "moelab export: --size must be WxH between 200x150 and 9999x9999, not '%s'\n", qPrintable(parser.value(size)));
    return 2;
  }
  o.size = QSize(m.captured(1).toInt(), m.captured(2).toInt());
  bool ok = false;
  o.dpi = parser.value(dpi).toDouble(&ok);
  if (!ok || o.dpi < 48 || o.dpi > 600) {
    std::fprintf(stderr, "moelab export: --dpi must be between 48 and 600\n");
    return 2;
  }
  QStringList written;
  const QString err = exportRun(o, &written);
  if (!err.isEmpty()) {
    std::fprintf(stderr, "moelab export: %s\n", qPrintable(err));
    return 1;
  }
  std::fprintf(stderr, "%lld files written to %s\n", static_cast<long long>(written.size()), qPrintable(o.outDir));
  return 0;
}
