#include "metrics.hpp"

#include <algorithm>
#include <cmath>

namespace moelab {

namespace {

void finish(LayerStats& s, const std::vector<double>& counts, double slots) {
  const size_t E = counts.size();
  s.load.resize(E);
  double mean = 1.0 / double(E), var = 0, h = 0;
  for (size_t e = 0; e < E; ++e) {
    s.load[e] = slots > 0 ? counts[e] / slots : 0.0;
    var += (s.load[e] - mean) * (s.load[e] - mean);
    if (s.load[e] > 0) h -= s.load[e] * std::log(s.load[e]);
    s.dead += s.load[e] < 1.0 / (10.0 * double(E)) ? 1 : 0;
  }
  s.cv = std::sqrt(var / double(E)) / mean;
  s.max_share = *std::max_element(s.load.begin(), s.load.end());
  s.max_over_mean = s.max_share / mean;
  s.collapse = E > 1 ? 1.0 - h / std::log(double(E)) : 0.0;
}

}  // namespace

LayerStats layer_stats_window(const std::vector<const StepRouting*>& steps) {
  LayerStats s;
  if (steps.empty()) return s;
  const int64_t E = steps[0]->experts;
  s.layer = steps[0]->layer;
  std::vector<double> counts(size_t(E), 0.0), wanted(size_t(E), 0.0), dropped(size_t(E), 0.0);
  s.importance.assign(size_t(E), 0.0);
  double slots = 0, tokens = 0, ent = 0, drops = 0, all_slots = 0;
  for (const StepRouting* r : steps) {
    const int64_t N = r->tokens, K = r->top_k;
    for (int64_t i = 0; i < N * K; ++i) {
      all_slots += 1;
      if (r->ids[size_t(i)] >= 0) {
        counts[size_t(r->ids[size_t(i)])] += 1;
        slots += 1;
      }
      if (r->dropped[size_t(i)] == 1.0f) drops += 1;
    }
    for (int64_t t = 0; t < N; ++t) {
      const float* p = r->probs.data() + t * E;
      double sum = 0, h = 0;
      for (int64_t e = 0; e < E; ++e) sum += p[e];
      for (int64_t e = 0; e < E; ++e) {
        const double q = p[e] / sum;  // sigmoid scores normalised to a distribution
        s.importance[size_t(e)] += q;
        if (q > 0) h -= q * std::log(q);
      }
      ent += E > 1 ? h / std::log(double(E)) : 0.0;
      tokens += 1;
    }
  }
  for (double& v : s.importance) v /= std::max(1.0, tokens);
  s.entropy = ent / std::max(1.0, tokens);
  s.dropped_rate = drops / std::max(1.0, all_slots);
  // Per-expert drop share: dropped slots are recorded with id -1, so attribute them to the
  // expert the router wanted — the highest-scoring expert not among the slots kept.
  for (const StepRouting* r : steps) {
    const int64_t N = r->tokens, K = r->top_k;
    for (int64_t t = 0; t < N; ++t)
      for (int64_t k = 0; k < K; ++k) {
        const int32_t id = r->ids[size_t(t * K + k)];
        if (id >= 0) wanted[size_t(id)] += 1;
        if (r->dropped[size_t(t * K + k)] != 1.0f) continue;
        const float* p = r->probs.data() + t * E;
        int64_t best = -1;
        for (int64_t e = 0; e < E; ++e) {
          bool kept = false;
          for (int64_t j = 0; j < K; ++j) kept = kept || r->ids[size_t(t * K + j)] == e;
          if (!kept && (best < 0 || p[e] > p[best])) best = e;
        }
        if (best >= 0) {
          dropped[size_t(best)] += 1;
          wanted[size_t(best)] += 1;
        }
      }
  }
  s.dropped.resize(size_t(E));
  for (int64_t e = 0; e < E; ++e) s.dropped[size_t(e)] = wanted[size_t(e)] > 0 ? dropped[size_t(e)] / wanted[size_t(e)] : 0.0;
  finish(s, counts, slots);
  return s;
}

std::vector<std::vector<double>> domain_matrix(const StepRouting& r, const std::vector<int32_t>& token_domain,
                                               int64_t n_domains) {
  std::vector<std::vector<double>> m(size_t(n_domains), std::vector<double>(size_t(r.experts), 0.0));
  for (int64_t t = 0; t < r.tokens; ++t) {
    const int32_t d = t < int64_t(token_domain.size()) ? token_domain[size_t(t)] : -1;
    if (d < 0 || d >= n_domains) continue;
    for (int64_t k = 0; k < r.top_k; ++k) {
      const int32_t e = r.ids[size_t(t * r.top_k + k)];
      if (e >= 0) m[size_t(d)][size_t(e)] += 1;
    }
  }
  return m;
}

double specialisation_score(const std::vector<std::vector<double>>& c) {
  double total = 0;
  for (const auto& row : c)
    for (double v : row) total += v;
  if (total <= 0 || c.empty()) return 0.0;
  const size_t D = c.size(), E = c[0].size();
  std::vector<double> pd(D, 0.0), pe(E, 0.0);
  for (size_t d = 0; d < D; ++d)
    for (size_t e = 0; e < E; ++e) {
      pd[d] += c[d][e] / total;
      pe[e] += c[d][e] / total;
    }
  double mi = 0, hd = 0;
  for (size_t d = 0; d < D; ++d) {
    if (pd[d] > 0) hd -= pd[d] * std::log(pd[d]);
    for (size_t e = 0; e < E; ++e) {
      const double p = c[d][e] / total;
      if (p > 0) mi += p * std::log(p / (pd[d] * pe[e]));
    }
  }
  return hd > 0 ? mi / hd : 0.0;
}

std::vector<double> drop_rate_by_position(const StepRouting& r, int64_t T) {
  std::vector<double> drops(size_t(T), 0.0), slots(size_t(T), 0.0);
  for (int64_t t = 0; t < r.tokens; ++t)
    for (int64_t k = 0; k < r.top_k; ++k) {
      slots[size_t(t % T)] += 1;
      if (r.dropped[size_t(t * r.top_k + k)] == 1.0f) drops[size_t(t % T)] += 1;
    }
  for (int64_t p = 0; p < T; ++p) drops[size_t(p)] = slots[size_t(p)] > 0 ? drops[size_t(p)] / slots[size_t(p)] : 0;
  return drops;
}

}  // namespace moelab
