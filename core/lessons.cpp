#include "lessons.hpp"

#include <algorithm>
#include <cstdio>

namespace moelab {

CollapseVerdict judge_collapse(const std::vector<StepRecord>& recent) {
  CollapseVerdict v;
  if (recent.empty()) return v;
  const size_t from = recent.size() > size_t(kLessonWindow) ? recent.size() - size_t(kLessonWindow) : 0;
  std::vector<int64_t> layers;
  for (const auto& r : recent.back().routing)
    if (std::find(layers.begin(), layers.end(), r.layer) == layers.end()) layers.push_back(r.layer);
  bool all_balanced = !layers.empty();
  for (int64_t l : layers) {
    std::vector<const StepRouting*> window;
    for (size_t i = from; i < recent.size(); ++i)
      for (const auto& r : recent[i].routing)
        if (r.layer == l) window.push_back(&r);
    const LayerStats s = layer_stats_window(window);
    if (v.layer < 0 || s.cv > v.cv) {
      v.layer = l;
      v.cv = s.cv;
      v.max_share = s.max_share;
      v.dead = s.dead;
    }
    all_balanced = all_balanced && s.cv < kBalancedCv && s.max_share < kBalancedMaxShare && s.dead == 0;
  }
  v.collapsed = v.cv >= kCollapsedCv && v.max_share >= kCollapsedMaxShare && v.dead >= kCollapsedDead;
  v.balanced = all_balanced;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s: in layer %lld the busiest expert takes %.0f%% of the tokens, load CV %.2f, %lld idle experts",
                v.collapsed ? "Collapsed" : v.balanced ? "Balanced" : "In between", (long long)v.layer,
                100 * v.max_share, v.cv, (long long)v.dead);
  v.summary = buf;
  return v;
}

SpecialisationVerdict judge_specialisation(const StepRecord& first, const StepRecord& last) {
  SpecialisationVerdict v;
  for (size_t i = 0; i < last.specialisation.size() && i < first.specialisation.size(); ++i) {
    if (v.layer < 0 || last.specialisation[i] > v.now) {
      v.layer = last.layers[i].layer;
      v.now = last.specialisation[i];
      v.start = first.specialisation[i];
    }
  }
  v.specialised = v.now >= kSpecialisedScore && v.now - v.start >= kSpecialisedRise;
  char buf[200];
  std::snprintf(buf, sizeof buf, "%s: in layer %lld the chosen expert tells %.0f%% of the domain's information (%.0f%% at the start)",
                v.specialised ? "Specialised" : "Not yet specialised", (long long)v.layer, 100 * v.now, 100 * v.start);
  v.summary = buf;
  return v;
}

}  // namespace moelab
