// Token-by-token generation off the GUI thread. The worker owns the model and a Decoder (which
// holds the KV cache); the GUI sends requests (queued slots) and receives immutable snapshots it
// only draws. With the routing overrides at their defaults each generated token is one
// Decoder::step (on a GPU: one CUDA graph launch); with any override set, tokens run through
// Model::forward with the overrides on the same cache. Both give the same logits and trace.
#pragma once

#include <QObject>
#include <QString>
#include <QStringList>
#include <QVector>
#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "model.hpp"
#include "random.hpp"
#include "routing.hpp"

namespace moelab {
class Decoder;
class TextTokenizer;
}

// Everything the Tokens view draws, for the text so far (prompt + generated tokens).
struct TokensSnapshot {
  QString modelName;
  moelab::ModelConfig config;
  QVector<int> tokens;       // ids
  QStringList labels;        // how each token reads: TextTokenizer::label ("␣the", "↵"), or the id
  QStringList pieces;        // each token's vocabulary entry ("Ġthe", "▁the"); empty without a tokenizer
  QString tokenizer;         // TextTokenizer::describe(), "" when the model takes token ids only
  bool ended = false;        // the last token generated is the tokenizer's end-of-text token
  int promptLength = 0;
  int64_t topK = 0;          // K used for this text (after overrides)
  struct Layer {
    int64_t layer = 0;
    QVector<float> inputNorm;      // [T] norm of the router's input
    QVector<float> logits, probs;  // [T,E]
    QVector<int> ids;              // [T,K] experts that ran each slot (-1 = dropped by capacity)
    QVector<float> weights;        // [T,K]
    QVector<int> wanted;           // [T,K] the router's own choices before capacity
    QVector<quint8> dropped;       // [T,K] 0 kept, 1 dropped, 2 re-routed
    int droppedSlots() const { return int(std::count(dropped.begin(), dropped.end(), quint8(1))); }
    int reroutedSlots() const { return int(std::count(dropped.begin(), dropped.end(), quint8(2))); }
    // What happened at (token t, expert e) with top-K routing.
    struct Cell {
      int rank = 0;         // 1-based slot that ran on e (0: none)
      float weight = 0;     // its gate weight
      int wantedRank = 0;   // 1-based slot in which the router chose e before capacity (0: none)
      int flag = 0;         // 1: the router chose e, e was full, the slot was dropped; 2: re-routed to e
      int from = -1;        // flag 2: the full expert the slot was meant for
      int movedTo = -1;     // e was chosen but full and the slot went to this expert instead
    };
    Cell cell(int t, int e, int K) const {
      Cell c;
      for (int k = 0; k < K; ++k) {
        const int i = t * K + k;
        const int flag = i < dropped.size() ? dropped[i] : 0;
        const int want = i < wanted.size() ? wanted[i] : ids[i];
        if (ids[i] == e) {
          c.rank = k + 1;
          c.weight = weights[i];
          if (flag == 2) c.flag = 2, c.from = want;
        }
        if (want == e) {
          c.wantedRank = k + 1;
          if (flag == 1) c.flag = 1;
          if (flag == 2) c.movedTo = ids[i];
        }
      }
      return c;
    }
  };
  // Expert capacity (0 = no limit): applied over the whole text as one batch, so each expert
  // takes at most `capacity` of the count()·K choices in every layer.
  double capacityFactor = 0;
  bool reroute = false;
  int64_t capacity = 0;
  QVector<Layer> layers;             // MoE layers in order
  QVector<QPair<int, float>> next;   // most probable next tokens after the last one
  QStringList nextLabels;            // their labels, as `labels`
  // How the generated tokens ran: Decoder::step (overrides at their defaults) or Model::forward
  // with the overrides. decodeProblem: why the decoder could not record its graph and runs the
  // ops directly ("" when it could, or when it is not used).
  bool decoderSteps = false;
  QString decodeProblem;
  // The precision of the backend's matrix products, as the backend reports it (Device menu).
  moelab::Precision precision = moelab::Precision::FP32;
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

// What the opened checkpoint holds, from its safetensors headers (no weights read): the Model view
// shows memory in the stored dtype against fp32 from it. present = false for a bare config.json.
struct CheckpointSummary {
  bool present = false;
  QString dtype;          // the dtype most tensors are stored in ("bf16", "f32")
  qint64 bytes = 0;       // tensor data in the files
  qint64 tensors = 0;
  int files = 0;
};

// One model load, made by the GUI thread and handed to the worker: cancelling it (from any
// thread) abandons the load. The weights are read on a loader thread of their own, so the model
// shown keeps generating meanwhile; a cancelled load is dropped when it finishes, unseen.
struct LoadTicket {
  std::atomic<bool> cancelled{false};
};
using LoadTicketPtr = std::shared_ptr<LoadTicket>;
Q_DECLARE_METATYPE(LoadTicketPtr)

class GenerationWorker : public QObject {
  Q_OBJECT
 public:
  explicit GenerationWorker(QObject* parent = nullptr);
  ~GenerationWorker() override;
  // Loads whose thread has not finished yet, cancelled ones included (any thread may ask).
  int loadsRunning() const { return m_loadsRunning.load(); }

 public slots:
  // "builtin" or a model directory / config.json (random weights for a bare config), on the
  // device set (the CPU when that device fails; deviceInUse says so). The load runs on a thread
  // of its own (loadProgress names its stage); the model shown stays usable until the new one is
  // in place. A cancelled ticket drops the load: nothing is emitted for it.
  void loadModel(const QString& path, LoadTicketPtr ticket = nullptr);
  // "cpu" or "cuda", for the loads that follow.
  void setDevice(const QString& device);
  // The precision of matrix products, for the loads that follow (set on each new backend).
  void setPrecision(moelab::Precision precision);
  // The model shown, loaded again (on the device set now).
  void reloadModel(LoadTicketPtr ticket = nullptr) { loadModel(m_path, std::move(ticket)); }
  // Start over: run the prompt with these settings; then `regenerate` tokens are generated again
  // (used when routing knobs change so the same amount of text is recomputed).
  void reset(const GenerationSettings& settings, int regenerate);
  // Generate n more tokens (stops at the context limit).
  void step(int n);

 signals:
  void modelLoaded(const QString& name, const moelab::ModelConfig& config);
  // Before modelLoaded: what the checkpoint holds (headers only).
  void checkpointRead(const CheckpointSummary& summary);
  // While a load runs (emitted from the loader thread): its stage in a few words, e.g.
  // "checking the weights for NaN/Inf", and the fraction of it done (-1 when not known).
  void loadProgress(const QString& stage, double fraction);
  // Before modelLoaded: how the model reads text, TextTokenizer::describe() ("" when the model has
  // no tokenizer and takes comma-separated token ids).
  void tokenizerLoaded(const QString& description);
  // Before modelLoaded: where the model runs ("CPU (Eigen, 2 threads)", "GPU: ...", with the
  // precision when not fp32: "... · bf16"); when the device set failed and the CPU was used
  // instead, deviceProblem says why in one line; when the backend refused the precision set
  // (tf32 on the CPU) and fp32 was used instead, precisionProblem does ("" otherwise).
  void deviceInUse(const QString& name, const QString& deviceProblem, const QString& precisionProblem);
  void snapshotReady(SnapshotPtr snapshot);
  // A load that failed (the model shown stays): one line naming the file.
  void loadFailed(const QString& message);
  void errorOccurred(const QString& message);

 private:
  void emitSnapshot();
  // Run new tokens after the text so far: the prompt (Decoder::prefill) or one generated token
  // (Decoder::step, or Model::forward when overrides are active). With an expert capacity the
  // whole text runs again as one batch (capacity is a property of a batch; one token at a time
  // could never overflow).
  void runTokens(const std::vector<int32_t>& ids, bool prompt);

  struct Loaded;  // a finished load, handed from the loader thread to the worker's
  void install(std::shared_ptr<Loaded> loaded);

  std::mutex m_loadersMutex;
  std::vector<std::thread> m_loaders;  // loads running or finished; joined on destruction
  std::set<LoadTicketPtr> m_tickets;   // their tickets, cancelled on destruction
  std::atomic<int> m_loadsRunning{0};

  std::unique_ptr<moelab::Model> m_model;
  std::shared_ptr<const moelab::TextTokenizer> m_tok;  // nullptr: the model takes token ids only
  QString labelOf(int32_t id) const;
  QString m_name, m_path = QStringLiteral("builtin");
  std::string m_device = "cpu";
  moelab::Precision m_precision = moelab::Precision::FP32;
  std::unique_ptr<moelab::Decoder> m_decoder;  // holds the KV cache; refers to *m_model, so declared after it
  GenerationSettings m_settings;
  std::vector<int32_t> m_tokens;
  int m_promptLength = 0;
  std::vector<float> m_lastLogits;
  moelab::RoutingTrace m_trace;  // every routing event of the current text
  std::unique_ptr<moelab::Rng> m_rng;
};

Q_DECLARE_METATYPE(GenerationSettings)
Q_DECLARE_METATYPE(moelab::ModelConfig)
Q_DECLARE_METATYPE(CheckpointSummary)
