// Token-by-token generation off the GUI thread. The worker owns the model and its KV cache; the
// GUI sends requests (queued slots) and receives immutable snapshots it only draws.
#pragma once

#include <QObject>
#include <QString>
#include <QStringList>
#include <QVector>
#include <memory>
#include <optional>

#include "model.hpp"
#include "random.hpp"
#include "routing.hpp"

// Everything the Tokens view draws, for the text so far (prompt + generated tokens).
struct TokensSnapshot {
  QString modelName;
  moelab::ModelConfig config;
  QVector<int> tokens;       // ids
  QStringList labels;        // how each token reads
  int promptLength = 0;
  int64_t topK = 0;          // K used for this text (after overrides)
  struct Layer {
    int64_t layer = 0;
    QVector<float> inputNorm;      // [T] norm of the router's input
    QVector<float> logits, probs;  // [T,E]
    QVector<int> ids;              // [T,K]
    QVector<float> weights;        // [T,K]
  };
  QVector<Layer> layers;             // MoE layers in order
  QVector<QPair<int, float>> next;   // most probable next tokens after the last one
  int64_t experts() const { return config.num_experts; }
  int count() const { return int(tokens.size()); }
};
using SnapshotPtr = std::shared_ptr<const TokensSnapshot>;
Q_DECLARE_METATYPE(SnapshotPtr)

struct GenerationSettings {
  QString prompt = QStringLiteral("the quiet river ");
  float temperature = 0.0f;
  quint64 seed = 1;
  moelab::RoutingOverrides overrides;
};

class GenerationWorker : public QObject {
  Q_OBJECT
 public:
  explicit GenerationWorker(QObject* parent = nullptr);
  ~GenerationWorker() override;

 public slots:
  // "builtin" or a model directory / config.json (random weights for a bare config).
  void loadModel(const QString& path);
  // Start over: run the prompt with these settings; then `regenerate` tokens are generated again
  // (used when routing knobs change so the same amount of text is recomputed).
  void reset(const GenerationSettings& settings, int regenerate);
  // Generate n more tokens (stops at the context limit).
  void step(int n);

 signals:
  void modelLoaded(const QString& name, const moelab::ModelConfig& config);
  void snapshotReady(SnapshotPtr snapshot);
  void errorOccurred(const QString& message);

 private:
  void emitSnapshot();
  void runTokens(const std::vector<int32_t>& ids);

  std::unique_ptr<moelab::Model> m_model;
  QString m_name;
  std::optional<moelab::KvCache> m_cache;
  GenerationSettings m_settings;
  std::vector<int32_t> m_tokens;
  int m_promptLength = 0;
  std::vector<float> m_lastLogits;
  std::unique_ptr<class RoutingCollector> m_trace;
  std::unique_ptr<moelab::Rng> m_rng;
};

Q_DECLARE_METATYPE(GenerationSettings)
Q_DECLARE_METATYPE(moelab::ModelConfig)
