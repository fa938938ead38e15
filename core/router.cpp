// The router: the spec builder, the pipeline on a Backend, and the CPU reference of each step
// (see router.hpp for the steps and their shapes).
#include "router.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "config.hpp"
#include "error.hpp"
#include "model.hpp"
#include "random.hpp"

namespace moelab {

int64_t expert_capacity(double capacity_factor, int64_t tokens, int64_t top_k, int64_t experts) {
  if (!(capacity_factor > 0) || experts <= 0) return 0;
  return int64_t(std::ceil(capacity_factor * double(tokens * top_k) / double(experts)));
}

bool RoutingOverrides::active() const {
  return top_k > 0 || renormalize.has_value() || !banned.empty() || forced.has_value() || capacity.limited();
}

RouterSpec router_spec(Backend& b, const ModelConfig& c, const LayerWeights& L, const RoutingOverrides* what_if,
                       const StepKnobs* training) {
  const int64_t E = c.num_experts;
  RouterSpec spec;
  spec.top_k = what_if && what_if->top_k > 0 ? std::min(what_if->top_k, E) : c.top_k;
  spec.renormalize = what_if && what_if->renormalize ? *what_if->renormalize : c.norm_topk_prob;
  spec.sigmoid = c.scoring == RouterScoring::Sigmoid;
  if (!L.selection_bias.empty()) spec.selection_bias = L.selection_bias;
  if (training) {
    spec.capacity = training->capacity;
    spec.noisy = training->noise && !L.router_noise.empty();
  }
  if (!what_if) return spec;
  spec.capacity = what_if->capacity;
  if (what_if->banned.empty() && !what_if->forced) return spec;
  // Banned and forced experts: a selection bias of their own, -inf / +inf on top of the model's.
  std::vector<float> hb(size_t(E), 0.0f);
  if (!L.selection_bias.empty()) b.download(L.selection_bias, hb.data());
  for (int64_t e : what_if->banned)
    if (e >= 0 && e < E) hb[size_t(e)] = -std::numeric_limits<float>::infinity();
  if (what_if->forced && *what_if->forced >= 0 && *what_if->forced < E)
    hb[size_t(*what_if->forced)] = std::numeric_limits<float>::infinity();
  spec.selection_bias = b.alloc({E});
  b.upload(spec.selection_bias, hb.data());
  // Banned experts are never chosen: with fewer allowed experts than K, K shrinks to them.
  const int64_t allowed = std::count_if(hb.begin(), hb.end(), [](float v) { return !(std::isinf(v) && v < 0); });
  if (allowed == 0) fail(c.architecture, "every expert is banned: allow at least one");
  spec.top_k = std::min(spec.top_k, allowed);
  return spec;
}

Routing route(Backend& b, const Tensor& h, const LayerWeights& L, const RouterSpec& spec, Rng* noise_rng) {
  const int64_t T = h.rows(), E = L.router.rows(), K = spec.top_k;
  Routing r;
  r.logits = b.alloc_uninit({T, E});
  if (spec.noisy) {
    // Noisy top-k (Shazeer et al. 2017): logits = h·W_g + ε ⊙ softplus(h·W_noise), ε ~ N(0, 1).
    MOELAB_ASSERT(noise_rng && !L.router_noise.empty(), "noisy routing needs a noise router and an Rng");
    Tensor clean = b.alloc_uninit({T, E});
    r.raw = b.alloc_uninit({T, E});
    r.noise = b.alloc_uninit({T, E});
    b.linear(h, L.router, nullptr, clean);
    b.linear(h, L.router_noise, nullptr, r.raw);
    std::vector<float> eps(size_t(T * E));
    for (float& e : eps) e = float(noise_rng->normal());
    b.upload(r.noise, eps.data());
    b.noisy_logits(clean, r.raw, r.noise, r.logits);
  } else {
    b.linear(h, L.router, nullptr, r.logits);  // [T,E]
  }
  r.probs = b.alloc_uninit({T, E});
  r.ids = b.alloc_uninit({T, K}, Elem::Int32);
  r.weights = b.alloc_uninit({T, K});
  b.route(r.logits, spec, r.probs, r.ids, r.weights);
  if (const int64_t capacity = spec.capacity_for(T, E); capacity > 0) {
    r.wanted = b.alloc_uninit({T, K}, Elem::Int32);
    b.copy(r.ids, r.wanted);
    r.dropped = b.alloc({T, K});
    b.limit_capacity(r.probs, spec, capacity, r.ids, r.weights, r.dropped);
  }
  return r;
}

RoutingEvent routing_event(Backend& b, int64_t layer, int64_t pos0, const Tensor& h, const Routing& r) {
  const int64_t T = r.probs.rows(), E = r.probs.cols(), K = r.ids.cols();
  RoutingEvent ev;
  ev.layer = layer;
  ev.pos0 = pos0;
  ev.tokens = T;
  ev.experts = E;
  ev.top_k = K;
  Tensor norms = b.alloc({T});
  b.row_norms(h, norms);
  ev.input_norm.resize(size_t(T));
  b.download(norms, ev.input_norm.data());
  ev.logits.resize(size_t(T * E));
  ev.probs.resize(size_t(T * E));
  ev.ids.resize(size_t(T * K));
  ev.weights.resize(size_t(T * K));
  b.download(r.logits, ev.logits.data());
  b.download(r.probs, ev.probs.data());
  b.download(r.ids, ev.ids.data());
  b.download(r.weights, ev.weights.data());
  ev.dropped.assign(size_t(T * K), 0);
  if (r.dropped.empty()) {
    ev.wanted = ev.ids;
  } else {
    ev.wanted.resize(size_t(T * K));
    b.download(r.wanted, ev.wanted.data());
    std::vector<float> flags(size_t(T * K));
    b.download(r.dropped, flags.data());
    for (size_t i = 0; i < flags.size(); ++i) ev.dropped[i] = uint8_t(flags[i]);
  }
  return ev;
}

void update_selection_bias(std::vector<float>& bias, const std::vector<const std::vector<int32_t>*>& step_ids,
                           float gamma) {
  const int64_t E = int64_t(bias.size());
  std::vector<double> load(size_t(E), 0.0);
  double total = 0;
  for (const std::vector<int32_t>* ids : step_ids)
    for (int32_t id : *ids)
      if (id >= 0) {
        load[size_t(id)] += 1;
        total += 1;
      }
  const double mean = total / double(E);
  for (int64_t e = 0; e < E; ++e) {
    const double d = mean - load[size_t(e)];
    bias[size_t(e)] += gamma * float(d > 0 ? 1 : d < 0 ? -1 : 0);
  }
}

namespace router_cpu {

template <class S>
void scores(const S* l, int64_t E, bool sig, S* p) {
  if (sig) {
    for (int64_t e = 0; e < E; ++e) p[e] = S(1) / (S(1) + std::exp(-l[e]));
    return;
  }
  const S m = *std::max_element(l, l + E);
  S sum = 0;
  for (int64_t e = 0; e < E; ++e) sum += (p[e] = std::exp(l[e] - m));
  for (int64_t e = 0; e < E; ++e) p[e] /= sum;
}

template <class S>
void selection_order(const S* p, const float* bias, int64_t E, int64_t n, std::vector<int32_t>& order,
                     std::vector<S>& sel) {
  sel.resize(size_t(E));
  for (int64_t e = 0; e < E; ++e) sel[size_t(e)] = bias ? p[e] + S(bias[e]) : p[e];
  order.resize(size_t(E));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&sel](int32_t a, int32_t b) {
    return sel[size_t(a)] > sel[size_t(b)] || (sel[size_t(a)] == sel[size_t(b)] && a < b);
  });
}

template <class S>
void gate_weights(const S* p, const int32_t* ids, int64_t K, bool renorm, S* w) {
  S sum = 0;
  for (int64_t k = 0; k < K; ++k)
    if (ids[k] >= 0) sum += p[ids[k]];
  for (int64_t k = 0; k < K; ++k) w[k] = ids[k] < 0 ? S(0) : renorm ? p[ids[k]] / sum : p[ids[k]];
}

template <class S>
void route(const S* logits, int64_t T, int64_t E, int64_t K, bool sigmoid, bool renormalize, const float* bias,
           S* probs, int32_t* ids, S* weights) {
  std::vector<int32_t> order;
  std::vector<S> sel(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    S* p = probs + t * E;
    scores(logits + t * E, E, sigmoid, p);
    selection_order(p, bias, E, K, order, sel);
    for (int64_t k = 0; k < K; ++k) ids[t * K + k] = order[size_t(k)];
    gate_weights(p, ids + t * K, K, renormalize, weights + t * K);
  }
}

template <class S>
void limit_capacity(const S* probs, int64_t T, int64_t E, int64_t K, const float* bias, int64_t capacity,
                    bool reroute, bool renormalize, int32_t* id, S* weights, S* dropped) {
  std::fill(dropped, dropped + T * K, S(0));
  if (capacity <= 0) return;
  std::vector<int64_t> load(static_cast<size_t>(E), 0);
  std::vector<int32_t> order;
  std::vector<S> sel(static_cast<size_t>(E));
  // Choice rank first (every token's first choice before any second choice), then token order.
  for (int64_t k = 0; k < K; ++k)
    for (int64_t t = 0; t < T; ++t) {
      int32_t& e = id[t * K + k];
      if (load[size_t(e)] < capacity) {
        ++load[size_t(e)];
        continue;
      }
      dropped[t * K + k] = 1;
      const int32_t wanted = e;
      e = -1;
      if (!reroute) continue;
      selection_order(probs + t * E, bias, E, E, order, sel);
      for (int32_t cand : order) {
        if (sel[size_t(cand)] == -std::numeric_limits<S>::infinity()) break;  // banned, and all after it
        bool taken = cand == wanted;
        for (int64_t j = 0; j < K; ++j) taken = taken || id[t * K + j] == cand;
        if (!taken && load[size_t(cand)] < capacity) {
          e = cand;
          ++load[size_t(cand)];
          dropped[t * K + k] = 2;
          break;
        }
      }
    }
  for (int64_t t = 0; t < T; ++t) gate_weights(probs + t * E, id + t * K, K, renormalize, weights + t * K);
}

template <class S>
void route_backward(const S* probs, const int32_t* ids, const S* dweights, int64_t T, int64_t E, int64_t K,
                    bool sigmoid, bool renormalize, S* dlogits, bool acc) {
  std::vector<S> dp(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const S* p = probs + t * E;
    const int32_t* id = ids + t * K;
    const S* dw = dweights + t * K;
    std::fill(dp.begin(), dp.end(), S(0));
    // w_k = p_{i_k} / Σ_j p_{i_j} (renormalised) or p_{i_k}:
    //   ∂L/∂p_{i_k} = (dw_k − Σ_j dw_j w_j) / Σ  or  dw_k.
    S sum = 0, dot = 0;
    for (int64_t j = 0; j < K; ++j)
      if (id[j] >= 0) sum += p[id[j]];
    for (int64_t j = 0; j < K; ++j)
      if (id[j] >= 0) dot += dw[j] * p[id[j]] / sum;
    for (int64_t j = 0; j < K; ++j)
      if (id[j] >= 0) dp[size_t(id[j])] += renormalize ? (dw[j] - dot) / sum : dw[j];
    S* d = dlogits + t * E;
    if (sigmoid) {  // s = σ(z): ∂s/∂z = s(1−s)
      for (int64_t e = 0; e < E; ++e) {
        const S v = dp[size_t(e)] * p[e] * (S(1) - p[e]);
        d[e] = acc ? d[e] + v : v;
      }
    } else {  // softmax: dz = p ⊙ (dp − p·dp)
      S pdp = 0;
      for (int64_t e = 0; e < E; ++e) pdp += p[e] * dp[size_t(e)];
      for (int64_t e = 0; e < E; ++e) {
        const S v = p[e] * (dp[size_t(e)] - pdp);
        d[e] = acc ? d[e] + v : v;
      }
    }
  }
}

template <class S>
std::pair<double, double> router_losses(const S* logits, const int32_t* ids, int64_t N, int64_t E, int64_t K,
                                        float aux_coef, float z_coef, S* dlogits) {
  std::vector<double> f(static_cast<size_t>(E), 0.0), mean_p(static_cast<size_t>(E), 0.0);
  for (int64_t s = 0; s < N * K; ++s)
    if (ids[s] >= 0) f[size_t(ids[s])] += 1.0;
  for (double& v : f) v /= double(std::max<int64_t>(1, N * K));
  std::vector<S> p(static_cast<size_t>(E));
  double z_loss = 0.0;
  for (int64_t t = 0; t < N; ++t) {
    const S* l = logits + t * E;
    scores(l, E, false, p.data());
    const S m = *std::max_element(l, l + E);
    double se = 0;
    for (int64_t e = 0; e < E; ++e) se += std::exp(double(l[e] - m));
    const double lse = double(m) + std::log(se);
    z_loss += lse * lse;
    // aux: ∂/∂p[t,i] = E·f_i / N → through softmax: p ⊙ (g − p·g)
    double pg = 0;
    for (int64_t e = 0; e < E; ++e) {
      mean_p[size_t(e)] += double(p[size_t(e)]);
      pg += double(p[size_t(e)]) * double(E) * f[size_t(e)] / double(N);
    }
    S* d = dlogits + t * E;
    for (int64_t e = 0; e < E; ++e) {
      const double ga = double(p[size_t(e)]) * (double(E) * f[size_t(e)] / double(N) - pg);
      const double gz = 2.0 * lse * double(p[size_t(e)]) / double(N);  // ∂(lse²)/∂z = 2·lse·softmax
      d[e] += S(double(aux_coef) * ga + double(z_coef) * gz);
    }
  }
  double aux = 0.0;
  for (int64_t e = 0; e < E; ++e) aux += f[size_t(e)] * mean_p[size_t(e)] / double(N);
  return {double(E) * aux, z_loss / double(N)};
}

#define MOELAB_ROUTER_CPU(S)                                                                                        \
  template void scores<S>(const S*, int64_t, bool, S*);                                                              \
  template void selection_order<S>(const S*, const float*, int64_t, int64_t, std::vector<int32_t>&, std::vector<S>&); \
  template void gate_weights<S>(const S*, const int32_t*, int64_t, bool, S*);                                         \
  template void route<S>(const S*, int64_t, int64_t, int64_t, bool, bool, const float*, S*, int32_t*, S*);           \
  template void limit_capacity<S>(const S*, int64_t, int64_t, int64_t, const float*, int64_t, bool, bool, int32_t*, \
                                  S*, S*);                                                                           \
  template void route_backward<S>(const S*, const int32_t*, const S*, int64_t, int64_t, int64_t, bool, bool, S*,     \
                                  bool);                                                                             \
  template std::pair<double, double> router_losses<S>(const S*, const int32_t*, int64_t, int64_t, int64_t, float,   \
                                                      float, S*);
MOELAB_ROUTER_CPU(float)
MOELAB_ROUTER_CPU(double)
#undef MOELAB_ROUTER_CPU

}  // namespace router_cpu
}  // namespace moelab
