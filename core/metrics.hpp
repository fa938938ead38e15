// Routing metrics of one step, per MoE layer. Definitions (all over the N·K routed slots of the
// step, N tokens, K slots each, E experts):
//   load_i        share of the slots that chose expert i (sums to 1; uniform = 1/E)
//   importance_i  mean router probability of expert i over the N tokens
//   dropped_i     share of expert i's wanted slots dropped by the capacity limit
//   entropy       mean over tokens of the router distribution's entropy, divided by log E
//                 (1 = the router cannot tell experts apart, 0 = it is certain)
//   cv            coefficient of variation of the loads: std(load) / mean(load)
//   max_over_mean max_i load_i / (1/E)
//   dead          experts whose load is below 1/(10·E)
//   collapse      1 − H(load) / log E: 0 when the load is uniform, 1 when one expert takes all
//                 the slots (the collapse index the lab reports and the lessons use)
// Per domain: the domain × expert matrix of slot counts, and the specialisation score
//   I(domain; expert) / H(domain) in [0, 1] — how much knowing the chosen expert tells about
//   the domain of the text (0 = experts are used the same way by every domain).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train_step.hpp"

namespace moelab {

struct LayerStats {
  int64_t layer = 0;
  std::vector<double> load, importance, dropped;
  double entropy = 0, cv = 0, max_over_mean = 0, max_share = 0, collapse = 0, dropped_rate = 0;
  int64_t dead = 0;
};

// Loads over several steps (one step: a window of one) (the lessons measure a window, since bias balancing oscillates).
LayerStats layer_stats_window(const std::vector<const StepRouting*>& steps);

// counts[d][e]: slots of tokens from domain d (token_domain[t], -1 = unlabelled) that chose e.
std::vector<std::vector<double>> domain_matrix(const StepRouting& r, const std::vector<int32_t>& token_domain,
                                               int64_t n_domains);
double specialisation_score(const std::vector<std::vector<double>>& counts);

// Share of dropped slots at each position 0..T-1 of the sequences (capacity overflow).
std::vector<double> drop_rate_by_position(const StepRouting& r, int64_t T);

}  // namespace moelab
