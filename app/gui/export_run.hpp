// Headless export of a finished run's charts (`moelab export --run DIR --out DIR`): every chart
// of the Training view, drawn from the run log without a window, in the chosen formats — for
// preparing a class. Per-layer charts are written once per MoE layer (collapse-layer0.png, …).
#pragma once

#include <QSize>
#include <QStringList>

struct ExportOptions {
  QString runDir, outDir;
  QStringList formats = {QStringLiteral("png"), QStringLiteral("svg"), QStringLiteral("pdf"), QStringLiteral("csv")};
  bool presentation = false;
  QSize size = QSize(1280, 800);
  double dpi = 144;
};

// Returns "" on success, else one line naming the file and the problem. `written` (optional)
// receives every file written.
QString exportRun(const ExportOptions& options, QStringList* written = nullptr);

// The command line: `moelab export --run DIR --out DIR [--format png,svg,pdf,csv]
// [--theme normal|presentation] [--size WxH] [--dpi N]`. args[0] is the program name, then the
// options. Returns the exit code (0, 1 = the export failed, 2 = usage).
int exportMain(const QStringList& args);
