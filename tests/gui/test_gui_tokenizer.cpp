// The Tokens view on a model with a tokenizer.json: a typed prompt becomes the tokenizer's ids,
// tokens read as their text pieces (leading spaces, newlines and byte-fallback pieces visible),
// tooltips and the Why panel name the piece and the id; a model without a tokenizer takes token
// ids and says so; a malformed tokenizer.json is a one-line error naming the file.
#include <QDir>
#include <QFile>
#include <QLineEdit>
#include <QTemporaryDir>
#include <QtTest>

#include "files.hpp"
#include "presets.hpp"
#include "hf_tokenizer.hpp"
#include "main_window.hpp"
#include "token_charts.hpp"
#include "token_text.hpp"
#include "tokenizer.hpp"
#include "tokens_view.hpp"

namespace {

// A hand-made byte-fallback BPE with Metaspace, as Llama and Mixtral tokenizers are, in 41 ids so
// that every id fits the built-in model's vocabulary (260). Letters a..z are ids 5..30.
// "▁hello": h e (rank 0), l l (1), he ll (2), hell o (3), ▁ hello (4) -> ▁hello (35).
// "▁world": o r (5) -> ▁ w or l d; ▁ w (6) -> ▁w or l d; ▁w or (7) -> ▁wor (38) l (16) d (8).
// "é" is not in the vocabulary: its UTF-8 bytes C3 A9 are <0xC3> (39) <0xA9> (40).
QByteArray tokenizerJson() {
  QString vocab = QStringLiteral(R"("<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "▁": 4)");
  for (int i = 0; i < 26; ++i) vocab += QStringLiteral(R"(, "%1": %2)").arg(QChar('a' + i)).arg(5 + i);
  vocab += QStringLiteral(R"(, "he": 31, "ll": 32, "hell": 33, "hello": 34, "▁hello": 35, "or": 36, "▁w": 37,)"
                          R"( "▁wor": 38, "<0xC3>": 39, "<0xA9>": 40)");
  auto added = [](int id, const char* content) {
    return QStringLiteral(R"({"id": %1, "content": "%2", "single_word": false, "lstrip": false, "rstrip": false, )"
                          R"("normalized": false, "special": true})")
        .arg(id)
        .arg(QLatin1String(content));
  };
  const QString json = QStringLiteral(R"({"version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [%1, %2, %3],
  "normalizer": null,
  "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": null,
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
    "vocab": {%4},
    "merges": ["h e", "l l", "he ll", "hell o", "▁ hello", "o r", "▁ w", "▁w or"]}})")
                           .arg(added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"), vocab);
  return json.toUtf8();
}

}  // namespace

class TestGuiTokenizer : public QObject {
  Q_OBJECT
 private:
  QTemporaryDir m_tmp;

  // The built-in model's config.json and weights in a folder of their own, with this tokenizer.json.
  QString model(const QString& name, const QByteArray& tokenizer) {
    const QString builtin = QString::fromStdString(moelab::resources_dir()) + QStringLiteral("/models/builtin/");
    const QString dir = m_tmp.filePath(name);
    if (!QDir().mkpath(dir)) qFatal("cannot make %s", qPrintable(dir));
    for (const char* f : {"config.json", "model.safetensors"})
      if (!QFile::copy(builtin + QLatin1String(f), dir + QLatin1Char('/') + QLatin1String(f))) qFatal("cannot copy %s", f);
    if (!tokenizer.isEmpty()) {
      QFile t(dir + QStringLiteral("/tokenizer.json"));
      if (!t.open(QIODevice::WriteOnly) || t.write(tokenizer) != tokenizer.size()) qFatal("cannot write tokenizer.json");
    }
    return dir;
  }

  static void openAndWait(MainWindow& w, const QString& path) {
    w.openModel(path);
    QVERIFY(w.tokensView()->waitForIdle());
    QCoreApplication::processEvents();
    QVERIFY(w.tokensView()->waitForIdle());  // the prompt run after modelChanged
    QCoreApplication::processEvents();
  }

 private slots:
  void typedPromptIsTheTokenizersIds() {
    const QString dir = model(QStringLiteral("hello-bpe"), tokenizerJson());
    const auto hf = moelab::HfTokenizer::load((dir + QStringLiteral("/tokenizer.json")).toStdString());
    const std::vector<int32_t> expected = hf->encode_prompt("hello world");
    QVERIFY(expected == (std::vector<int32_t>{1, 35, 38, 16, 8}));  // worked out by hand above

    MainWindow w;
    w.resize(1280, 800);
    w.show();
    w.tabs()->setCurrentWidget(w.tokensView());
    TokensView* t = w.tokensView();
    QVERIFY(t->waitForIdle());
    openAndWait(w, dir);
    QVERIFY2(w.lastError().isEmpty(), qPrintable(w.lastError()));
    QVERIFY2(t->promptEdit()->toolTip().contains(QStringLiteral("tokenizer.json")), qPrintable(t->promptEdit()->toolTip()));
    QVERIFY(t->promptEdit()->placeholderText().contains(QStringLiteral("tokenizer.json")));
    t->setPrompt(QStringLiteral("hello world"));
    QVERIFY(t->waitForIdle());
    SnapshotPtr s = t->snapshot();
    QVERIFY(s);
    QVERIFY(std::vector<int32_t>(s->tokens.begin(), s->tokens.end()) == expected);
    QCOMPARE(s->promptLength, 5);
    QCOMPARE(s->labels.mid(0, 5), (QStringList{QStringLiteral("<s>"), QStringLiteral("␣hello"), QStringLiteral("␣wor"),
                                                QStringLiteral("l"), QStringLiteral("d")}));
    QCOMPARE(s->pieces[1], QStringLiteral("▁hello"));

    // Tooltips and the Why panel: the piece, the label and the id.
    const QString why = TokenCharts::whyHtml(*s, 0, 1);
    QVERIFY2(why.contains(QStringLiteral("&quot;▁hello&quot;  ␣hello  (id 35)")), qPrintable(why));
    const QString tip = TokenCharts::heatmapToolTip(*s, 0, 2, 0);
    QVERIFY2(tip.contains(QStringLiteral("\"▁wor\"  ␣wor  (id 38)")), qPrintable(tip));
    auto* text = t->findChild<TokenText*>();
    QVERIFY(text);
    t->pages()->setCurrentIndex(0);
    QTest::qWait(50);
    text->grab();  // lays out the token boxes
    bool found = false;
    for (int y = 2; y < 80 && !found; y += 4)
      for (int x = 2; x < text->width() && !found; x += 4)
        found = text->toolTipAt(QPoint(x, y)).contains(QStringLiteral("\"▁hello\"  ␣hello  (id 35)"));
    QVERIFY(found);

    // A newline and a byte-fallback character: visible, not blank.
    t->setPrompt(QStringLiteral("hello\n\u00e9"));  // setText keeps the newline; a QLineEdit typed one cannot
    QVERIFY(t->waitForIdle());
    s = t->snapshot();
    const std::vector<int32_t> nl = hf->encode_prompt(t->promptEdit()->text().toStdString());
    QVERIFY(std::vector<int32_t>(s->tokens.begin(), s->tokens.begin() + s->promptLength) == nl);
    QVERIFY2(s->labels.contains(QStringLiteral("<0xC3>")), qPrintable(s->labels.join(QLatin1Char('|'))));

    // Generated tokens are labelled too, by the worker.
    for (int i = 0; i < 4; ++i) t->stepOnce();
    QVERIFY(t->waitForIdle());
    s = t->snapshot();
    QCOMPARE(s->labels.size(), s->count());
    QCOMPARE(s->pieces.size(), s->count());
    QCOMPARE(s->nextLabels.size(), s->next.size());
    for (int i = 0; i < s->count(); ++i)
      QCOMPARE(s->labels[i], QString::fromStdString(moelab::TextTokenizer::hugging_face(hf)->label(s->tokens[i])));

    // A prompt too long for the context still gives the clear error.
    t->setPrompt(QStringLiteral("hello ").repeated(600));
    QVERIFY(t->waitForIdle());
    QCoreApplication::processEvents();
    QVERIFY2(w.lastError().contains(QStringLiteral("longer than")), qPrintable(w.lastError()));

    if (qEnvironmentVariableIsSet("MOELAB_TOKENIZER_SHOTS")) {  // for looking at it
      const QDir shots(qEnvironmentVariable("MOELAB_TOKENIZER_SHOTS"));
      t->setPrompt(QStringLiteral("hello world, hello\u00e9 world"));
      QVERIFY(t->waitForIdle());
      for (int i = 0; i < 8; ++i) t->stepOnce();
      QVERIFY(t->waitForIdle());
      for (bool presentation : {false, true}) {
        w.setPresentation(presentation);
        const QString theme = presentation ? QStringLiteral("presentation") : QStringLiteral("normal");
        for (int page = 0; page < t->pages()->count(); ++page) {
          t->pages()->setCurrentIndex(page);
          QTest::qWait(100);
          QVERIFY(w.grab().save(shots.filePath(QStringLiteral("tokens-%1-%2.png").arg(theme).arg(page))));
        }
      }
      w.setPresentation(false);
    }
  }

  void modelWithoutTokenizerTakesIds() {
    const QString dir = model(QStringLiteral("ids-only"), {});
    // Its config says nothing of a tokenizer: token ids only.
    QFile cfg(dir + QStringLiteral("/config.json"));
    QVERIFY(cfg.open(QIODevice::ReadOnly));
    QByteArray text = cfg.readAll();
    cfg.close();
    const QByteArray before = text;
    text.replace(",\n    \"tokenizer\": \"bytes\"", "");
    QVERIFY(text != before);
    QVERIFY(cfg.open(QIODevice::WriteOnly | QIODevice::Truncate) && cfg.write(text) == text.size());
    cfg.close();
    MainWindow w;
    w.resize(1280, 800);
    w.show();
    TokensView* t = w.tokensView();
    QVERIFY(t->waitForIdle());
    openAndWait(w, dir);
    QVERIFY2(w.lastError().isEmpty(), qPrintable(w.lastError()));
    QVERIFY2(t->promptEdit()->toolTip().contains(QStringLiteral("no tokenizer.json: type token ids, e.g. 1,2,3")),
             qPrintable(t->promptEdit()->toolTip()));
    t->setPrompt(QStringLiteral("3,1,4"));
    QVERIFY(t->waitForIdle());
    QCOMPARE(t->snapshot()->tokens.mid(0, 3), (QVector<int>{3, 1, 4}));
    QCOMPARE(t->snapshot()->labels.mid(0, 3), (QStringList{QStringLiteral("3"), QStringLiteral("1"), QStringLiteral("4")}));
    QCOMPARE(TokenCharts::tokenDescription(*t->snapshot(), 0), QStringLiteral("id 3"));
    // Long labels (a 150K vocabulary's pieces, named specials) end in an ellipsis on the axes.
    QCOMPARE(TokenCharts::shortLabel(QStringLiteral("<|endoftext|>"), 9), QStringLiteral("<|endoft…"));
    QCOMPARE(TokenCharts::shortLabel(QStringLiteral("␣the"), 9), QStringLiteral("␣the"));
  }

  void malformedTokenizerIsOneLineError() {
    MainWindow w;
    w.resize(1280, 800);
    w.show();
    TokensView* t = w.tokensView();
    QVERIFY(t->waitForIdle());
    const QString name = t->snapshot() ? t->snapshot()->modelName : QString();
    const QString dir = model(QStringLiteral("broken-tokenizer"), QByteArray("{\"model\": {\"type\": \"BPE\", \"vocab\": [1, 2"));
    openAndWait(w, dir);
    QVERIFY2(w.lastError().contains(QStringLiteral("tokenizer.json")), qPrintable(w.lastError()));
    QVERIFY2(!w.lastError().contains(QLatin1Char('\n')), qPrintable(w.lastError()));
    // The window stays usable, on the model it had.
    t->setPrompt(QStringLiteral("ab"));
    QVERIFY(t->waitForIdle());
    QVERIFY(t->snapshot());
    QCOMPARE(t->snapshot()->modelName, name);
    QCOMPARE(t->snapshot()->tokens.mid(1, 2), (QVector<int>{'a', 'b'}));
  }
};

QTEST_MAIN(TestGuiTokenizer)
#include "test_gui_tokenizer.moc"
