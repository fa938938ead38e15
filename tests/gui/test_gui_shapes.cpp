// The window with models of real routing shapes (issue 17): 64 experts × 16 layers (OLMoE),
// 128 × 48 (Qwen3-30B-A3B), 256 × 61 (DeepSeek-V3), as tiny-width bf16 checkpoints
// (demo_models.hpp). Tick labels never overlap, in either theme, on every routing chart; the
// text is coloured by the experts picked; the why panel lists the top experts only; a load can
// be cancelled and the model shown keeps working; the Model view shows the stored dtype against
// fp32 and the bytes one token reads.
#include <QApplication>
#include <QElapsedTimer>
#include <QFontMetricsF>
#include <QStandardPaths>
#include <QProgressBar>
#include <QPushButton>
#include <QTemporaryDir>
#include <QtTest>
#include <cmath>
#include <qcustomplot.h>

#include <nlohmann/json.hpp>

#include "chart_kit.hpp"
#include "files.hpp"
#include "presets.hpp"
#include "safetensors.hpp"
#include "chart_panel.hpp"
#include "demo_models.hpp"
#include "main_window.hpp"
#include "model_charts.hpp"
#include "model_view.hpp"
#include "params.hpp"
#include "theme.hpp"
#include "token_charts.hpp"
#include "token_text.hpp"
#include "tokens_view.hpp"

using namespace moelab;

namespace {

// A 500 MB bf16 checkpoint (10 layers of 16 experts of 512 × 1024), all zeros: written from one
// zero buffer, quick to make, slow enough to read that a cancel lands in the middle.
QString writeBigCheckpoint(const QString& dir) {
  try {
    const nlohmann::json spec = {{"layers", 10},  {"hidden", 512},         {"heads", 4},
                                 {"kv_heads", 2}, {"experts", 16},         {"top_k", 2},
                                 {"expert_hidden", 1024}};
    const ModelConfig c = lab_model_from_json(spec, "big");
    const std::vector<TensorSpec> specs = tensor_specs(c);
    int64_t most = 0;
    for (const TensorSpec& s : specs) most = std::max(most, s.numel());
    const std::vector<float> zeros(size_t(most), 0.0f);
    std::vector<TensorToWrite> tw;
    for (const TensorSpec& s : specs) tw.push_back({s.name, s.shape, zeros.data(), DType::BF16});
    write_checkpoint_weights(dir.toStdString(), tw);
    ModelConfig saved = c;
    saved.dtype = "bfloat16";
    write_text_atomic(dir.toStdString() + "/config.json", config_to_json(saved).dump(2));
    return {};
  } catch (const std::exception& e) {
    return QString::fromUtf8(e.what());
  }
}

// Every pair of neighbouring tick labels on `axis`, as drawn, keeps a gap: along a vertical axis
// their centres are at least a line apart, along a horizontal one at least the wider half-widths
// apart (rotated labels: a line over the sine of the angle). "" or what overlaps.
QString overlap(QCPAxis* axis, const QString& where) {
  const QVector<double> ticks = axis->tickVector();
  const QVector<QString> labels = axis->tickVectorLabels();
  const QFontMetricsF fm(axis->tickLabelFont());
  const double angle = std::abs(axis->tickLabelRotation()) * M_PI / 180.0;
  for (int i = 1; i < ticks.size(); ++i) {
    if (labels[i].isEmpty() || labels[i - 1].isEmpty()) continue;
    const double gap = std::abs(axis->coordToPixel(ticks[i]) - axis->coordToPixel(ticks[i - 1]));
    double need = 0;
    if (axis->orientation() == Qt::Vertical) need = fm.height();
    else if (angle > 0.1) need = fm.height() / std::sin(angle);
    else need = (fm.horizontalAdvance(labels[i]) + fm.horizontalAdvance(labels[i - 1])) / 2;
    if (gap < need)
      return QStringLiteral("%1: labels '%2' and '%3' are %4 px apart, need %5").arg(where, labels[i - 1], labels[i]).arg(gap).arg(need);
  }
  return {};
}

// Every visible axis with tick labels on the plot.
QString overlapOnPlot(QCustomPlot* plot, const QString& where) {
  plot->replot(QCustomPlot::rpImmediateRefresh);
  plot->replot(QCustomPlot::rpImmediateRefresh);  // the second with the margins the first found
  for (QCPAxisRect* r : plot->axisRects())
    for (QCPAxis* a : r->axes())
      if (a->visible() && a->tickLabels())
        if (QString o = overlap(a, where + QLatin1Char('/') + QString::number(int(a->axisType()))); !o.isEmpty()) return o;
  return {};
}

}  // namespace

class TestGuiShapes : public QObject {
  Q_OBJECT
  QTemporaryDir m_dir;
  std::unique_ptr<MainWindow> m_window;

  // The window showing `shape` with a prompt and 8 generated tokens.
  TokensView* open(const DemoModels::Shape& shape) {
    const QString folder = m_dir.filePath(shape.id);
    if (!QFileInfo::exists(folder + QStringLiteral("/config.json"))) {
      const QString err = DemoModels::write(shape, folder);
      if (!err.isEmpty()) qFatal("%s", qPrintable(err));
    }
    TokensView* t = m_window->tokensView();
    m_window->openModel(folder);
    if (!t->waitForIdle(240000)) qFatal("the model did not load");
    t->setPrompt(QStringLiteral("the quiet river "));
    t->waitForIdle(60000);
    for (int i = 0; i < 8; ++i) t->stepOnce();
    t->waitForIdle(60000);
    return t;
  }

 private slots:
  void initTestCase() {
    QStandardPaths::setTestModeEnabled(true);
    m_window = std::make_unique<MainWindow>();
    m_window->resize(1280, 800);
    m_window->show();
    m_window->tokensView()->waitForIdle(60000);
  }
  void cleanupTestCase() { m_window.reset(); }

  void tickLabelsNeverOverlapAtRealShapes() {
    for (const DemoModels::Shape& shape : DemoModels::shapes()) {
      TokensView* t = open(shape);
      QCOMPARE(int(t->snapshot()->experts()), shape.experts);
      QCOMPARE(int(t->snapshot()->layers.size()), shape.layers - shape.denseLayers);
      for (bool pres : {false, true}) {
        m_window->setPresentation(pres);
        for (int layer : {int(t->snapshot()->layers.size()) / 2, -1}) {  // one layer; the layers × experts overview
          t->selectLayer(layer);
          for (int page = 0; page < 2; ++page) {
            t->pages()->setCurrentIndex(page);
            QTest::qWait(30);  // laid out, and the charts that fit their rows to it drawn again
            for (ChartPanel* c : t->charts())
              if (c->plot() && c->plot()->isVisible()) {
                const QString o = overlapOnPlot(c->plot(), QStringLiteral("%1 %2 layer %3 %4")
                                                               .arg(shape.id, pres ? "presentation" : "normal")
                                                               .arg(layer).arg(c->id()));
                QVERIFY2(o.isEmpty(), qPrintable(o));
              }
          }
        }
        // Zoomed into the experts: more labels come back, still apart.
        t->selectLayer(0);
        t->pages()->setCurrentIndex(0);
        QApplication::processEvents();
        QCustomPlot* heat = t->charts()[0]->plot();
        QCPAxis* experts = heat->axisRect()->axis(QCPAxis::atLeft);
        heat->replot(QCustomPlot::rpImmediateRefresh);
        const int before = int(experts->tickVector().size());
        experts->setRange(-0.5, 15.5);
        QVERIFY2(overlapOnPlot(heat, shape.id + QStringLiteral(" zoomed")).isEmpty(), qPrintable(overlapOnPlot(heat, shape.id)));
        QVERIFY2(experts->tickVector().size() >= 2, "zoomed in, the expert axis keeps its labels");
        if (shape.experts > 16) QVERIFY(int(experts->tickVector().size()) * 16 / shape.experts <= before + 16);
        // Zoom and pan stay on the cells.
        experts->setRange(-100, 10000);
        QCOMPARE(experts->range().lower, -0.5);
        QCOMPARE(experts->range().upper, shape.experts - 0.5);
      }
      m_window->setPresentation(false);
    }
  }

  void theExpertPickerColoursTheText() {
    TokensView* t = open(DemoModels::shapes()[0]);  // 64 experts, top-8
    t->selectLayer(3);
    QApplication::processEvents();
    const SnapshotPtr s = t->snapshot();
    const auto& L = s->layers[3];
    const int K = int(s->topK);
    // By default the 4 busiest experts of the layer, one colour each.
    QCOMPARE(int(t->tokenText()->expertGroup().size()), 4);
    for (int e : {5, 42}) {
      t->setTextExperts(QString::number(e));
      QCOMPARE(t->tokenText()->expertGroup(), QVector<int>{e});
      int coloured = 0;
      for (int i = 0; i < s->count(); ++i) {
        bool sent = false;
        for (int k = 0; k < K; ++k) sent = sent || L.ids[i * K + k] == e;
        QCOMPARE(t->tokenText()->tokenColor(i).isValid(), sent);
        if (sent) QCOMPARE(t->tokenText()->tokenColor(i), Theme::series(0));
        coloured += sent;
      }
      qInfo("expert %d: %d of %d tokens coloured", e, coloured, s->count());
    }
    // A group: each token takes the colour of the best-ranked expert of the group it was sent to.
    t->setTextExperts(QStringLiteral("3, 17,40"));
    QCOMPARE(t->tokenText()->expertGroup(), (QVector<int>{3, 17, 40}));
    for (int i = 0; i < s->count(); ++i) {
      int want = -1;
      for (int k = 0; k < K && want < 0; ++k)
        if (QVector<int>{3, 17, 40}.contains(L.ids[i * K + k])) want = int(QVector<int>{3, 17, 40}.indexOf(L.ids[i * K + k]));
      QCOMPARE(t->tokenText()->tokenColor(i), want < 0 ? QColor() : Theme::series(want));
    }
    t->setTextExperts(QString());
  }

  void theWhyPanelListsTheTopExperts() {
    for (const DemoModels::Shape& shape : DemoModels::shapes()) {
      TokensView* t = open(shape);
      const SnapshotPtr s = t->snapshot();
      const int K = int(s->topK);
      for (bool pres : {false, true}) {
        m_window->setPresentation(pres);
        for (int token : {0, s->count() / 2, s->count() - 1}) {
          const QString html = TokenCharts::whyHtml(*s, 2, token);
          const int rows = int(html.count(QStringLiteral("<tr"))) - 2;  // less the header and the "… more" line
          QVERIFY2(rows <= K + 3 && rows >= K, qPrintable(QStringLiteral("%1 rows: %2").arg(rows).arg(html)));
          QVERIFY(html.contains(QStringLiteral("more experts")));
          for (int k = 0; k < K; ++k)  // every chosen expert is listed (in bold)
            QVERIFY(html.contains(QStringLiteral("style='font-weight:bold'><td>%1</td>").arg(s->layers[2].ids[token * K + k])));
        }
      }
      m_window->setPresentation(false);
    }
  }

  void cancellingALoadKeepsTheModelShown() {
    TokensView* t = open(DemoModels::shapes()[0]);
    const QString shown = t->snapshot()->modelName;
    const int before = t->snapshot()->count();
    // Open the biggest, cancel at once: whenever the load finishes, it is dropped unseen.
    const DemoModels::Shape& big = DemoModels::shapes()[2];
    const QString folder = m_dir.filePath(big.id);
    if (!QFileInfo::exists(folder + QStringLiteral("/config.json"))) QCOMPARE(DemoModels::write(big, folder), QString());
    m_window->openModel(folder);
    QVERIFY(t->loading());
    QVERIFY(m_window->loadIndicator()->isVisible());
    QVERIFY2(m_window->loadText().contains(big.id), qPrintable(m_window->loadText()));
    QTest::qWait(50);  // the loader has started
    m_window->cancelLoadButton()->click();
    QVERIFY(!t->loading());
    QVERIFY(!m_window->loadIndicator()->isVisible());
    // The model shown still generates, while the cancelled load may still be reading.
    t->stepOnce();
    QVERIFY(t->waitForIdle(60000));
    QCOMPARE(t->snapshot()->modelName, shown);
    QCOMPARE(t->snapshot()->count(), before + 1);
    QTRY_COMPARE_WITH_TIMEOUT(t->loadsRunning(), 0, 60000);
    t->stepOnce();
    QVERIFY(t->waitForIdle(60000));
    QCOMPARE(t->snapshot()->modelName, shown);
    QCOMPARE(int(t->snapshot()->experts()), 64);
    QCOMPARE(t->snapshot()->count(), before + 2);
    QVERIFY(m_window->lastError().isEmpty());
    // Not cancelled, the same load puts the model in place, and the indicator goes. While the
    // weights are read the window answers: a 5 ms timer keeps firing.
    m_window->openModel(folder);
    QVERIFY(m_window->loadIndicator()->isVisible());
    QElapsedTimer clock, gap;
    clock.start();
    gap.start();
    qint64 worst = 0;
    while (t->loading() && clock.elapsed() < 120000) {
      QTest::qWait(5);
      const qint64 g = gap.restart();
      if (t->loading()) worst = std::max(worst, g);  // not the turn that installs the model and draws it
    }
    qInfo("loaded in %lld ms; worst event-loop gap while loading %lld ms", static_cast<long long>(clock.elapsed()),
          static_cast<long long>(worst));
    QVERIFY2(worst < 250, "the window froze while a model loaded");
    QVERIFY(t->waitForIdle(120000));
    QCOMPARE(int(t->snapshot()->experts()), 256);
    QVERIFY(!m_window->loadIndicator()->isVisible());
  }

  void cancelStopsABigLoadMidway() {
    TokensView* t = open(DemoModels::shapes()[0]);
    const QString shown = t->snapshot()->modelName;
    const QString folder = m_dir.filePath(QStringLiteral("big-bf16"));
    QCOMPARE(writeBigCheckpoint(folder), QString());
    // Loaded whole first (which also puts its pages in memory): how long a load takes, and that
    // the bar shows how far it has come.
    double lastFraction = -1;
    bool determinate = false;
    auto watch = connect(t, &TokensView::loadProgress, this, [&](const QString&, double f) {
      if (f >= 0) lastFraction = f;
      determinate = determinate || m_window->loadBar()->maximum() == 1000;
    });
    QElapsedTimer clock;
    clock.start();
    m_window->openModel(folder);
    while (t->loading() && clock.elapsed() < 120000) QTest::qWait(2);
    const qint64 full = clock.elapsed();
    QVERIFY(t->waitForIdle(120000));
    QCOMPARE(t->snapshot()->config.num_layers, int64_t(10));
    QVERIFY(determinate);
    QCOMPARE(lastFraction, 1.0);
    disconnect(watch);
    QTRY_COMPARE_WITH_TIMEOUT(t->loadsRunning(), 0, 10000);
    // Back to the small model, then the big one again, cancelled as soon as it reads weights:
    // its thread ends within moments, nothing of it is shown and no error either.
    t = open(DemoModels::shapes()[0]);
    bool clicked = false;
    QElapsedTimer sinceCancel;
    auto cancelAtFirst = connect(t, &TokensView::loadProgress, this, [&](const QString&, double f) {
      if (f > 0 && !clicked) {
        clicked = true;
        sinceCancel.start();
        m_window->cancelLoadButton()->click();
      }
    });
    m_window->openModel(folder);
    QTRY_VERIFY_WITH_TIMEOUT(clicked, 60000);
    while (t->loadsRunning() > 0 && sinceCancel.elapsed() < 60000) QTest::qWait(1);
    const qint64 stopped = sinceCancel.elapsed();
    disconnect(cancelAtFirst);
    qInfo("whole load %lld ms; stopped %lld ms after Cancel", static_cast<long long>(full), static_cast<long long>(stopped));
    QCOMPARE(t->loadsRunning(), 0);
    QVERIFY2(stopped < 1000, "a cancelled load kept reading");
    if (full >= 200) QVERIFY2(stopped < full / 2, "a cancelled load ran about as long as a whole one");
    QVERIFY(!t->loading());
    QVERIFY(!m_window->loadIndicator()->isVisible());
    QVERIFY(m_window->lastError().isEmpty());
    t->stepOnce();
    QVERIFY(t->waitForIdle(60000));
    QCOMPARE(t->snapshot()->modelName, shown);
    QDir(folder).removeRecursively();
  }

  void theModelViewShowsStoredBytesAndWhatATokenReads() {
    const DemoModels::Shape& shape = DemoModels::shapes()[1];
    TokensView* t = open(shape);
    const ModelConfig& c = t->snapshot()->config;
    const ParamCount p = count_params(c);
    // Stored in bf16: 2 bytes a parameter; one token reads its 8 of 128 experts per layer,
    // attention, norms, router and LM head, and one row of the embedding matrix.
    const double readParams = double(p.active - p.active_by[int(Component::Embeddings)] + c.hidden_size);
    const QString text = m_window->modelView()->storageText();
    QVERIFY2(text.startsWith(QStringLiteral("bf16 as stored: %1").arg(ChartKit::bytesText(double(p.total) * 2))), qPrintable(text));
    QVERIFY2(text.contains(QStringLiteral("fp32: %1").arg(ChartKit::bytesText(double(p.total) * 4))), qPrintable(text));
    QVERIFY2(text.contains(QStringLiteral("one token reads %1").arg(ChartKit::bytesText(readParams * 2))), qPrintable(text));
    QVERIFY(readParams < double(p.total) / 8);  // 8 of 128 experts: a small part of the weights
  }
};

QTEST_MAIN(TestGuiShapes)
#include "test_gui_shapes.moc"
