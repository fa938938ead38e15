// The lab window driven like a student would, offscreen: the heatmap shows exactly the core's
// routing trace, top-k and bans change routing as the core says, and every export is a valid
// file of its kind.
#include <QAction>
#include <QActionGroup>
#include <QDeadlineTimer>
#include <QDir>
#include <QElapsedTimer>
#include <QImage>
#include <QJsonDocument>
#include <QJsonObject>
#include <QMenu>
#include <QSettings>
#include <qcustomplot.h>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QXmlStreamReader>
#include <QtTest>
#include <set>

#include "chart_panel.hpp"
#include "devices.hpp"
#include "generation_worker.hpp"
#include "gui_test_util.hpp"
#include "main_window.hpp"
#include "model.hpp"
#include "model_view.hpp"
#include "params.hpp"
#include "presets.hpp"
#include "run_charts.hpp"
#include "token_charts.hpp"
#include "tokens_view.hpp"
#include "training_view.hpp"
#include <nlohmann/json.hpp>

using namespace moelab;

class TestGui : public QObject {
  Q_OBJECT
 private:
  RoutingTrace coreTrace(const TokensSnapshot& s, const RoutingOverrides* ov = nullptr) { return guitest::coreTrace(s, ov); }
  MainWindow* window() { return guitest::labWindow(); }

 private slots:
  void initTestCase() { QStandardPaths::setTestModeEnabled(true); }

  void heatmapCellsEqualTheCoreTrace() {
    std::unique_ptr<MainWindow> w(window());
    TokensView* t = w->tokensView();
    SnapshotPtr s = t->snapshot();
    QVERIFY(s);
    QCOMPARE(s->count(), 10 + 6);  // <bos> + 9 prompt bytes + 6 generated
    const RoutingTrace trace = coreTrace(*s);
    for (int li = 0; li < int(trace.layers().size()); ++li) {
      t->selectLayer(li);
      const auto& L = trace.layers()[size_t(li)];
      const int E = int(L.experts), K = int(L.top_k);
      // The last generated token is not fed back yet: the trace covers count() - 1 positions.
      for (int tok = 0; tok < s->count() - 1; ++tok)
        for (int e = 0; e < E; ++e) {
          QVERIFY(std::abs(t->heatmapValue(tok, e) - L.probs[size_t(tok * E + e)]) < 1e-5);
          const bool chosen = std::find(L.ids.begin() + tok * K, L.ids.begin() + (tok + 1) * K, e) != L.ids.begin() + (tok + 1) * K;
          QCOMPARE(t->heatmapMarked(tok, e), chosen);
        }
    }
  }

  // Greedy generation with the routing knobs at their defaults runs each token through
  // Decoder::step; with knobs set to the model's own values (active, yet changing nothing) it runs
  // through Model::forward with the overrides. The views must get the same tokens, trace and
  // next-token probabilities either way.
  void decoderStepsGiveWhatTheForwardPathGives() {
    std::vector<std::string> devices = {"cpu"};
    if (list_devices().at(1).available) devices.push_back("cuda");
    for (const std::string& device : devices) {
      auto generate = [&](bool knobsAtModelValues) {
        GenerationWorker w;  // in this thread: its signals arrive directly
        SnapshotPtr snap;
        ModelConfig config;
        QString error;
        connect(&w, &GenerationWorker::snapshotReady, &w, [&](SnapshotPtr s) { snap = std::move(s); });
        connect(&w, &GenerationWorker::modelLoaded, &w, [&](const QString&, const ModelConfig& c) { config = c; });
        connect(&w, &GenerationWorker::errorOccurred, &w, [&](const QString& m) { error = m; });
        w.setDevice(QString::fromStdString(device));
        w.loadModel(QStringLiteral("builtin"));  // on a loader thread: installed by a queued call
        QDeadlineTimer loading(60000);
        while (config.num_layers == 0 && error.isEmpty() && !loading.hasExpired())
          QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
        GenerationSettings s;
        s.prompt = QStringLiteral("12+7=19; ");
        s.temperature = 0;  // greedy
        if (knobsAtModelValues) {
          s.overrides.top_k = config.top_k;
          s.overrides.renormalize = config.norm_topk_prob;
        }
        w.reset(s, 0);
        w.step(5);
        w.step(7);
        if (!error.isEmpty()) qWarning("%s", qPrintable(error));
        return snap;
      };
      const SnapshotPtr a = generate(false), b = generate(true);
      QVERIFY(a && b);
      QVERIFY(a->decoderSteps);
      QVERIFY(!b->decoderSteps);
      QVERIFY2(a->decodeProblem.isEmpty(), qPrintable(a->decodeProblem));
      QCOMPARE(a->count(), 10 + 12);
      QCOMPARE(a->tokens, b->tokens);
      QCOMPARE(a->topK, b->topK);
      // The CPU runs Model::forward in both: bit for bit. A GPU replays a recorded graph.
      const float tol = device == "cpu" ? 0.0f : 1e-4f;
      auto close = [tol](const QVector<float>& x, const QVector<float>& y) {
        if (x.size() != y.size()) return false;
        for (int i = 0; i < x.size(); ++i)
          if (!(std::abs(x[i] - y[i]) <= tol * std::max(1.0f, std::abs(y[i])))) return false;
        return true;
      };
      QCOMPARE(a->layers.size(), b->layers.size());
      for (int li = 0; li < a->layers.size(); ++li) {
        const auto &x = a->layers[li], &y = b->layers[li];
        QCOMPARE(x.layer, y.layer);
        QCOMPARE(x.ids.size(), a->count() * int(a->topK));  // every position, the prompt's and each step's
        QCOMPARE(x.ids, y.ids);
        QCOMPARE(x.wanted, y.wanted);
        QCOMPARE(x.dropped, y.dropped);
        QVERIFY(close(x.inputNorm, y.inputNorm));
        QVERIFY(close(x.logits, y.logits));
        QVERIFY(close(x.probs, y.probs));
        QVERIFY(close(x.weights, y.weights));
      }
      QCOMPARE(a->next.size(), b->next.size());
      for (int i = 0; i < a->next.size(); ++i) {
        QCOMPARE(a->next[i].first, b->next[i].first);
        QVERIFY(std::abs(a->next[i].second - b->next[i].second) <= tol);
      }
    }
  }

  void topKChangesTheActiveCount() {
    std::unique_ptr<MainWindow> w(window());
    TokensView* t = w->tokensView();
    t->setTopKOverride(4);
    QVERIFY(t->waitForIdle());
    SnapshotPtr s = t->snapshot();
    QCOMPARE(s->topK, int64_t(4));
    RoutingOverrides ov;
    ov.top_k = 4;
    const RoutingTrace trace = coreTrace(*s, &ov);
    t->selectLayer(0);
    for (int tok = 0; tok < s->count() - 1; ++tok) QCOMPARE(t->markedPerToken(tok), int(trace.layers()[0].top_k));
    QCOMPARE(std::vector<int>(s->layers[0].ids.begin(), s->layers[0].ids.end()),
             std::vector<int>(trace.layers()[0].ids.begin(), trace.layers()[0].ids.end()));
  }

  void aBannedExpertIsNeverChosen() {
    std::unique_ptr<MainWindow> w(window());
    TokensView* t = w->tokensView();
    // Ban the expert the model uses most in layer 0.
    SnapshotPtr before = t->snapshot();
    std::vector<int> counts(size_t(before->experts()), 0);
    for (int id : before->layers[0].ids) counts[size_t(id)]++;
    const int busiest = int(std::max_element(counts.begin(), counts.end()) - counts.begin());
    t->setBannedExperts(QString::number(busiest));
    QVERIFY(t->waitForIdle());
    for (const auto& L : t->snapshot()->layers)
      for (int id : L.ids) QVERIFY(id != busiest);
    t->selectLayer(0);
    for (int tok = 0; tok < t->snapshot()->count() - 1; ++tok) QVERIFY(!t->heatmapMarked(tok, busiest));
  }

  // Banning all but one expert: every token is sent to that one alone (top-2 shrinks to 1), and
  // the heatmap marks one expert per token.
  void banningAllButOneLeavesOnlyThatExpert() {
    std::unique_ptr<MainWindow> w(window());
    TokensView* t = w->tokensView();
    const int E = int(t->snapshot()->experts());
    QStringList banned;
    for (int e = 0; e < E; ++e)
      if (e != 3) banned << QString::number(e);
    t->setBannedExperts(banned.join(','));
    QVERIFY(t->waitForIdle());
    SnapshotPtr s = t->snapshot();
    QCOMPARE(s->topK, int64_t(1));
    for (const auto& L : s->layers)
      for (int id : L.ids) QCOMPARE(id, 3);
    t->selectLayer(0);
    for (int tok = 0; tok < s->count() - 1; ++tok) {
      QCOMPARE(t->markedPerToken(tok), 1);
      QVERIFY(t->heatmapMarked(tok, 3));
    }
    QVERIFY(t->statusText().contains(QStringLiteral("top-1 of %1 experts; %2 of %1 experts banned").arg(E).arg(E - 1)));
  }

  void capacityDropsAndReroutesAreMarkedAsTheCoreSays() {
    std::unique_ptr<MainWindow> w(window());
    TokensView* t = w->tokensView();
    // Capacity factor 1: each expert takes its even share of the text's choices, and no more.
    for (bool reroute : {false, true}) {
      t->setOverflowReroute(reroute);
      t->setCapacityFactor(1.0);
      QVERIFY(t->waitForIdle());
      SnapshotPtr s = t->snapshot();
      QCOMPARE(s->count(), 10 + 6);
      RoutingOverrides ov;
      ov.capacity = {1.0, reroute};
      const RoutingTrace trace = coreTrace(*s, &ov);  // the whole text as one batch
      QCOMPARE(int(trace.layers().size()), int(s->layers.size()));
      const int E = int(s->experts()), K = int(s->topK);
      QCOMPARE(s->capacity, expert_capacity(1.0, s->count(), K, E));
      int dropped = 0, rerouted = 0;
      for (int li = 0; li < int(trace.layers().size()); ++li) {
        t->selectLayer(li);
        const auto& L = trace.layers()[size_t(li)];
        QCOMPARE(std::vector<uint8_t>(s->layers[li].dropped.begin(), s->layers[li].dropped.end()), L.dropped);
        // Every cell's mark: what the core's flags say (a dropped choice at the expert it wanted).
        std::vector<int> want(size_t(s->count() * E), -1);
        for (int tok = 0; tok < s->count(); ++tok)
          for (int k = 0; k < K; ++k) {
            const size_t i = size_t(tok * K + k);
            const int flag = L.dropped[i];
            dropped += flag == 1;
            rerouted += flag == 2;
            want[size_t(tok * E + (flag == 1 ? L.wanted[i] : L.ids[i]))] = flag;
          }
        for (int tok = 0; tok < s->count(); ++tok)
          for (int e = 0; e < E; ++e) QCOMPARE(t->heatmapMark(tok, e), want[size_t(tok * E + e)]);
      }
      if (!reroute) {
        QVERIFY2(dropped > 0, "a capacity of the even share drops some choices of this text");
        QCOMPARE(rerouted, 0);
      } else {
        // Re-routing: the overflow goes to experts with room; with room for every choice
        // (E · capacity >= tokens · K) nothing is dropped.
        QVERIFY(E * s->capacity >= s->count() * K);
        QVERIFY(rerouted > 0);
        QCOMPARE(dropped, 0);
      }
      // The heatmap's CSV carries the flags: one row per dropped (or re-routed) choice.
      const QStringList rows = t->charts()[0]->csv().split('\n', Qt::SkipEmptyParts);
      QVERIFY(rows[0].endsWith(QStringLiteral(",dropped")));
      int csvDropped = 0, csvRerouted = 0;
      for (int i = 1; i < rows.size(); ++i) {
        const QString flag = rows[i].section(',', -1);
        csvDropped += flag == QLatin1String("1");
        csvRerouted += flag == QLatin1String("2");
      }
      QCOMPARE(csvDropped, dropped);
      QCOMPARE(csvRerouted, rerouted);
      if (qEnvironmentVariableIsSet("MOELAB_CAPACITY_SHOTS")) {  // for looking at the marks
        t->selectLayer(0);
        const QString dir = qEnvironmentVariable("MOELAB_CAPACITY_SHOTS") + (reroute ? "/reroute" : "/drop");
        QCOMPARE(w->saveScreenshots(dir, QSize(1280, 800)), QString());
      }
    }
    // No limit again: no drop marks.
    t->setCapacityFactor(0);
    QVERIFY(t->waitForIdle());
    t->selectLayer(0);
    QCOMPARE(t->snapshot()->capacity, int64_t(0));
    for (int tok = 0; tok < t->snapshot()->count(); ++tok)
      for (int e = 0; e < int(t->snapshot()->experts()); ++e) QVERIFY(t->heatmapMark(tok, e) != 1 && t->heatmapMark(tok, e) != 2);
  }

  // TokenCharts draws a snapshot without any view: each slot's mark sits where the snapshot says
  // (a dropped slot at the expert it wanted), the CSVs carry the same flags and counts, and the
  // tooltip and the Why panel name what became of each choice.
  void tokenChartsMarkEverySlotOfASnapshot() {
    TokensSnapshot s;
    s.config.num_experts = 4;
    s.config.top_k = 2;
    s.topK = 2;
    s.tokens = {1, 2, 3};
    s.labels = {QStringLiteral("a"), QStringLiteral("b,\"c\""), QStringLiteral("d")};
    s.capacity = 2;
    s.capacityFactor = 1.0;
    s.reroute = true;
    TokensSnapshot::Layer L;
    L.layer = 1;
    L.inputNorm = {1, 1, 1};
    for (int i = 0; i < 12; ++i) L.probs << 0.25f, L.logits << float(i) / 10;
    // token 0: experts 0, 1; token 1: 0 and 1 again; token 2: wanted 0 (full) re-routed to 2, and 3
    L.ids = {0, 1, 0, 1, 2, 3};
    L.wanted = {0, 1, 0, 1, 0, 3};
    L.dropped = {0, 0, 0, 0, 2, 0};
    L.weights = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    s.layers = {L};
    QCustomPlot plot;
    plot.resize(600, 300);
    TokenCharts::drawRoutingHeatmap(&plot, s, 0, -1);
    const int want[3][4] = {{0, 0, -1, -1}, {0, 0, -1, -1}, {-1, -1, 2, 0}};
    for (int t = 0; t < 3; ++t) {
      QCOMPARE(TokenCharts::markedPerToken(&plot, t), 2);
      for (int e = 0; e < 4; ++e) {
        QCOMPARE(TokenCharts::heatmapMark(&plot, t, e), want[t][e]);
        QCOMPARE(TokenCharts::heatmapValue(&plot, t, e), 0.25);
      }
    }
    QVERIFY(TokenCharts::heatmapToolTip(s, 0, 2, 0).contains(QStringLiteral("re-routed to expert 2")));
    QVERIFY(TokenCharts::heatmapToolTip(s, 0, 2, 2).contains(QStringLiteral("RE-ROUTED here (expert 0 was full)")));
    QVERIFY(TokenCharts::heatmapToolTip(s, 0, 0, 3).contains(QStringLiteral("not chosen")));
    QVERIFY(TokenCharts::heatmapToolTip(s, 0, 3, 0).isEmpty());  // no such token
    QVERIFY(TokenCharts::whyHtml(s, 0, 2).contains(QStringLiteral("<b>re-routed</b> to expert 2")));
    QVERIFY(TokenCharts::routingHeatmapCaption(s, 0).contains(QStringLiteral("Layer 1: 1 of 6 choices re-routed, 0 dropped.")));
    // The CSV: one row per (token, expert), the label quoted as RFC 4180 asks, the flags as drawn.
    const QStringList rows = TokenCharts::routingHeatmapCsv(s).split('\n', Qt::SkipEmptyParts);
    QCOMPARE(rows.size(), 1 + 3 * 4);
    QVERIFY(rows[5].startsWith(QStringLiteral("1,1,\"b,\"\"c\"\"\",0,")));
    QVERIFY(rows[1 + 2 * 4 + 2].endsWith(QStringLiteral(",1,0.5,0,2")));  // token 2, expert 2: re-routed here
    // Co-activation: experts 0 and 1 together twice; 2 and 3 once.
    QVERIFY(TokenCharts::coactivationCsv(s, 0).contains(QStringLiteral("\n0,1,2\n")));
    QVERIFY(TokenCharts::coactivationCsv(s, 0).contains(QStringLiteral("\n2,3,1\n")));
    QVERIFY(TokenCharts::loadCsv(s, 0).contains(QStringLiteral("\n0,0.333333333,0\n")));
  }

  // The names of the reference lines (the even split 1/E, the capacity) sit in the right margin,
  // whole, in both themes: never over a bar, never over each other, never cut off.
  void referenceLineNamesNeverCoverTheBars() {
    auto check = [](QCustomPlot* plot, int names, const QString& what) {
      plot->replot(QCustomPlot::rpImmediateRefresh);  // lays the plot out and places the items
      const QRect axes = plot->axisRect()->rect();
      QList<QRectF> boxes;
      for (int i = 0; i < plot->itemCount(); ++i)
        if (auto* text = qobject_cast<QCPItemText*>(plot->item(i)))
          boxes << QRectF(text->topLeft->pixelPosition(), text->bottomRight->pixelPosition()).normalized();
      QVERIFY2(boxes.size() == names, qPrintable(what));
      for (int i = 0; i < int(boxes.size()); ++i) {
        QVERIFY2(boxes[i].left() >= axes.right(), qPrintable(what + ": a name is over the axes"));
        QVERIFY2(boxes[i].right() <= plot->width() + 0.5 && boxes[i].top() >= 0 && boxes[i].bottom() <= plot->height(),
                 qPrintable(what + ": a name is cut off"));
        for (int j = 0; j < i; ++j) QVERIFY2(!boxes[i].intersects(boxes[j]), qPrintable(what + ": names overlap"));
      }
    };
    std::unique_ptr<MainWindow> w(window());
    TokensView* t = w->tokensView();
    QCustomPlot* load = nullptr;
    for (ChartPanel* c : t->charts())
      if (c->id() == QLatin1String("expert-load")) load = c->plot();
    QVERIFY(load);
    // The load at the last step of a run whose last expert is busy: the old name sat on its bar.
    RunData run;
    run.experts = 8;
    run.moeLayers = 1;
    run.topK = 2;
    auto step = std::make_shared<StepSummary>();
    step->step = 1;
    step->layers.resize(1);
    step->layers[0].load = {0.05, 0.1, 0.05, 0.1, 0.1, 0.1, 0.1, 0.4};
    run.history.push_back(step);
    QCustomPlot loadNow;
    loadNow.resize(420, 300);
    loadNow.show();
    for (bool presentation : {false, true}) {
      w->setPresentation(presentation);
      const QString theme = presentation ? QStringLiteral("presentation") : QStringLiteral("normal");
      RunCharts::drawLoadNow(&loadNow, run, 1, 0);
      check(&loadNow, 1, "load now, " + theme);
      for (double capacity : {0.0, 1.0}) {
        t->setCapacityFactor(capacity);
        QVERIFY(t->waitForIdle());
        check(load, capacity > 0 ? 2 : 1, QStringLiteral("Tokens load, capacity %1, ").arg(capacity) + theme);
        if (QTest::currentTestFailed()) return;
      }
    }
    w->setPresentation(false);
  }

  void everyExportIsAValidFile() {
    std::unique_ptr<MainWindow> w(window());
    QTemporaryDir dir;
    QList<ChartPanel*> charts = w->tokensView()->charts() + w->modelView()->charts();
    QVERIFY(charts.size() >= 8);
    for (ChartPanel* c : charts) {
      const QString base = dir.filePath(c->id());
      QCOMPARE(c->exportPng(base + ".png", QSize(900, 560), 192), QString());
      QImage img(base + ".png");
      QCOMPARE(img.size(), QSize(1800, 1120));
      std::set<QRgb> colours;
      for (int y = 0; y < img.height(); y += 7)
        for (int x = 0; x < img.width(); x += 7) colours.insert(img.pixel(x, y));
      QVERIFY2(colours.size() > 8, qPrintable(c->id() + " PNG looks blank"));
      QCOMPARE(c->exportSvg(base + ".svg", QSize(900, 560)), QString());
      QFile svg(base + ".svg");
      QVERIFY(svg.open(QIODevice::ReadOnly));
      QXmlStreamReader xml(&svg);
      int drawing = 0;
      while (!xml.atEnd())
        if (xml.readNext() == QXmlStreamReader::StartElement &&
            (xml.name() == u"path" || xml.name() == u"rect" || xml.name() == u"polyline" || xml.name() == u"text" ||
             xml.name() == u"image"))
          ++drawing;
      QVERIFY2(!xml.hasError(), qPrintable(c->id() + ": " + xml.errorString()));
      QVERIFY2(drawing > 3, qPrintable(c->id() + " SVG has no drawing"));
      QCOMPARE(c->exportPdf(base + ".pdf", QSize(900, 560)), QString());
      QFile pdf(base + ".pdf");
      QVERIFY(pdf.open(QIODevice::ReadOnly));
      const QByteArray p = pdf.readAll();
      QVERIFY(p.startsWith("%PDF-") && p.contains("/Type /Page") && p.size() > 1000);
      QCOMPARE(c->exportCsv(base + ".csv"), QString());
      QFile csv(base + ".csv");
      QVERIFY(csv.open(QIODevice::ReadOnly));
      QCOMPARE(QString::fromUtf8(csv.readAll()), c->csv());
    }
    // The heatmap's CSV holds exactly the snapshot: one row per (layer, token, expert).
    SnapshotPtr s = w->tokensView()->snapshot();
    const QStringList rows = w->tokensView()->charts()[0]->csv().split('\n', Qt::SkipEmptyParts);
    QCOMPARE(rows.size(), 1 + int(s->layers.size()) * s->count() * int(s->experts()));
    const QStringList first = rows[1].split(',');
    QCOMPARE(float(first[4].toDouble()), s->layers[0].probs[0]);  // 9 digits round-trip a float
  }

  void modelViewCountsWhatTheCoreCounts() {
    std::unique_ptr<MainWindow> w(window());
    const ModelConfig& c = w->modelView()->labConfig();
    const ParamCount p = count_params(c);
    const QString csv = w->modelView()->charts()[0]->csv();
    QVERIFY2(csv.contains(QString::number(p.total)), qPrintable(csv));
    QVERIFY2(csv.contains(QString::number(p.active)), qPrintable(csv));
  }

  void realModelScaleStaysResponsive() {
    // DeepSeek-V3's routing shape (60 MoE layers x 256 experts, top-8) in a narrow random model.
    QTemporaryDir dir;
    QFile f(dir.filePath(QStringLiteral("config.json")));
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write(R"({"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 300,
      "hidden_size": 32, "num_hidden_layers": 60, "num_attention_heads": 2, "num_key_value_heads": 1,
      "head_dim": 16, "intermediate_size": 64, "moe_intermediate_size": 8, "num_experts": 256,
      "num_experts_per_tok": 8, "norm_topk_prob": true, "max_position_embeddings": 512})");
    f.close();
    std::unique_ptr<MainWindow> w(window());
    TokensView* t = w->tokensView();
    w->openModel(f.fileName());
    QVERIFY(t->waitForIdle(60000));
    t->setPrompt(QStringLiteral("1,2,3,4,5,6,7,8"));
    QVERIFY(t->waitForIdle(60000));
    QElapsedTimer clock;
    clock.start();
    for (int i = 0; i < 8; ++i) t->stepOnce();
    QVERIFY(t->waitForIdle(60000));
    t->selectLayer(-1);  // all layers: aggregated to layers x experts
    QApplication::processEvents();
    auto* map = qobject_cast<QCPColorMap*>(t->charts()[0]->plot()->plottable(0));
    QVERIFY(map);
    QCOMPARE(map->data()->keySize(), 256);
    QCOMPARE(map->data()->valueSize(), 60);
    QCOMPARE(t->snapshot()->layers.size(), 60);
    t->selectLayer(59);
    QApplication::processEvents();
    QCOMPARE(t->heatmapValue(3, 17), double(t->snapshot()->layers[59].probs[3 * 256 + 17]));
    qInfo("8 tokens through 60 layers x 256 experts, drawn, in %lld ms", static_cast<long long>(clock.elapsed()));
    QVERIFY2(clock.elapsed() < 20000, "generation and drawing at real-model scale took too long");
  }

  void trainingFromTheWindowMatchesTheRunLogAndStaysResponsive() {
    std::unique_ptr<MainWindow> w(window());
    TrainingView* tv = w->trainingView();
    w->tabs()->setCurrentWidget(tv);
    QTemporaryDir dir;
    tv->selectPreset(QStringLiteral("lesson-collapse"));
    tv->startTraining(dir.filePath(QStringLiteral("run")));
    // Event-loop latency while training at full speed: a 5 ms timer must keep firing.
    QElapsedTimer clock, gap;
    clock.start();
    gap.start();
    qint64 worst = 0;
    while ((tv->history().size() < 60) && clock.elapsed() < 60000) {
      QTest::qWait(5);
      worst = std::max(worst, gap.restart());
    }
    tv->pauseTraining();
    QTest::qWait(300);  // let the last steps arrive and be drawn
    QApplication::processEvents();
    qInfo("%lld steps in %lld ms; worst event-loop gap %lld ms", static_cast<long long>(tv->history().size()),
          static_cast<long long>(clock.elapsed()), static_cast<long long>(worst));
    QVERIFY(tv->history().size() >= 60);
    QVERIFY2(worst < 250, "the window froze while training");
    // The collapse view's cells are the run log's loads, step by step.
    QFile log(dir.filePath(QStringLiteral("run/metrics.jsonl")));
    QVERIFY(log.open(QIODevice::ReadOnly));
    const QList<QByteArray> lines = log.readAll().split('\n');
    int checked = 0;
    for (int i = 0; i < tv->history().size(); ++i) {
      const auto rec = nlohmann::json::parse(lines[i].toStdString());
      QCOMPARE(rec["step"].get<int64_t>(), tv->history()[i]->step);
      const auto& load = rec["layers"][0]["load"];
      for (int e = 0; e < int(load.size()); ++e, ++checked)
        QCOMPARE(tv->collapseValue(i, e), load[size_t(e)].get<double>());
    }
    QVERIFY(checked >= 60 * 8);
  }

  void aBadModelIsAMessageNotACrash() {
    std::unique_ptr<MainWindow> w(window());
    w->openModel(QStringLiteral("/nonexistent/model"));
    w->tokensView()->waitForIdle();
    QVERIFY2(w->lastError().contains(QStringLiteral("/nonexistent/model")), qPrintable(w->lastError()));
    // Still usable: the previous model keeps generating.
    w->tokensView()->stepOnce();
    QVERIFY(w->tokensView()->waitForIdle());
  }
};

QTEST_MAIN(TestGui)
#include "test_gui.moc"
