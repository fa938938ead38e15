#include "decoder.hpp"

#include <algorithm>
#include <string>

#include "error.hpp"

namespace moelab {

struct Decoder::Recorded {
  std::unique_ptr<OpGraph> graph;
  Tensor logits;  // [1,V], written by each replay
};

Decoder::Decoder(Model& model, int64_t capacity, bool use_graphs)
    : model_(model), cache_(model.new_cache(capacity)), use_graphs_(use_graphs && model.backend().can_record()) {}

Decoder::~Decoder() {
  // A replay may still be queued: let it finish before its graph and buffers go.
  try {
    if (plain_ || traced_) model_.backend().synchronize();
  } catch (...) {
  }
}

std::vector<float> Decoder::prefill(const std::vector<int32_t>& tokens, RoutingObserver* observer,
                                    const RoutingOverrides* overrides) {
  return model_.forward(tokens, cache_, observer, overrides);
}

bool Decoder::graphed() const { return use_graphs_; }

int64_t Decoder::graph_nodes() const {
  const Recorded* r = traced_ ? traced_.get() : plain_.get();
  return r ? r->graph->nodes() : 0;
}

Decoder::Recorded& Decoder::recorded(bool with_trace) {
  std::unique_ptr<Recorded>& slot = with_trace ? traced_ : plain_;
  if (slot) return *slot;
  Backend& b = model_.backend();
  const ModelConfig& c = model_.config();
  if (token_.empty()) {
    token_ = b.alloc({1}, Elem::Int32);
    position_ = b.alloc({1}, Elem::Int32);
  }
  if (with_trace && trace_.values.empty()) {
    const int64_t M = std::max<int64_t>(1, c.num_moe_layers());
    trace_.values = b.alloc({M, DeviceTrace::row_width(c.num_experts, c.top_k)});
    trace_.ids = b.alloc({M, c.top_k}, Elem::Int32);
  }
  auto r = std::make_unique<Recorded>();
  b.synchronize();
  b.begin_recording(position_, cache_.capacity);
  try {
    r->logits = model_.forward_tensors(token_, cache_.length, cache_, nullptr, nullptr, with_trace ? &trace_ : nullptr);
    r->graph = b.end_recording();
  } catch (...) {
    b.abort_recording();
    throw;
  }
  slot = std::move(r);
  return *slot;
}

std::vector<float> Decoder::step(int32_t token, RoutingObserver* observer, const RoutingOverrides* overrides) {
  const ModelConfig& c = model_.config();
  if (overrides && overrides->active()) return model_.forward({token}, cache_, observer, overrides);
  if (!use_graphs_) return model_.forward({token}, cache_, observer);
  model_.check_input(&token, 1, cache_);
  Backend& b = model_.backend();
  Recorded* rec = nullptr;
  try {
    rec = &recorded(observer != nullptr);
  } catch (const Error& e) {  // e.g. a context too long for the recorded attention: run ops directly
    use_graphs_ = false;
    graph_problem_ = e.what();
    return model_.forward({token}, cache_, observer);
  }
  Recorded& r = *rec;
  const int32_t pos = int32_t(cache_.length);
  b.upload(token_, &token);
  b.upload(position_, &pos);
  r.graph->replay();
  std::vector<float> logits(size_t(c.vocab_size));
  b.download(r.logits, logits.data());
  cache_.length += 1;
  if (observer) emit_trace(*observer, pos);
  return logits;
}

void Decoder::emit_trace(RoutingObserver& observer, int64_t pos) {
  Backend& b = model_.backend();
  const ModelConfig& c = model_.config();
  const int64_t E = c.num_experts, K = c.top_k, W = DeviceTrace::row_width(E, K);
  std::vector<float> real(size_t(trace_.values.numel()));
  std::vector<int32_t> ids(size_t(trace_.ids.numel()));
  b.download(trace_.values, real.data());
  b.download(trace_.ids, ids.data());
  int64_t m = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.is_moe_layer(l)) continue;
    const float* row = real.data() + m * W;
    RoutingEvent ev;
    ev.layer = l;
    ev.pos0 = pos;
    ev.tokens = 1;
    ev.experts = E;
    ev.top_k = K;
    ev.input_norm.assign(row, row + 1);
    ev.logits.assign(row + 1, row + 1 + E);
    ev.probs.assign(row + 1 + E, row + 1 + 2 * E);
    ev.weights.assign(row + 1 + 2 * E, row + W);
    ev.ids.assign(ids.begin() + m * K, ids.begin() + (m + 1) * K);
    ev.wanted = ev.ids;
    ev.dropped.assign(size_t(K), 0);
    observer.on_routing(ev);
    ++m;
  }
}

}  // namespace moelab
