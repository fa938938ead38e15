// The lessons' verdicts, with the thresholds the lab documents and tests. Loads are measured
// over a window of recent steps (the bias method oscillates step to step), and a model counts as
// collapsed or balanced by its worst MoE layer.
//
// Thresholds (chosen from runs of the lesson presets on a 2-core machine, with about 2x margin
// on each side; see README "Lessons"):
//   collapsed: CV of load >= 0.8, the busiest expert takes >= 35% of the slots, >= 2 dead experts
//   balanced:  CV of load <  0.5, the busiest expert takes <  25% of the slots, no dead expert
//   specialised: the domain x expert specialisation score I(domain; expert) / H(domain) reaches
//                >= 0.3 in some MoE layer and has risen by >= 0.15 since the first step
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer.hpp"

namespace moelab {

constexpr double kCollapsedCv = 0.8, kCollapsedMaxShare = 0.35;
constexpr int64_t kCollapsedDead = 2;
constexpr double kBalancedCv = 0.5, kBalancedMaxShare = 0.25;
constexpr double kSpecialisedScore = 0.3, kSpecialisedRise = 0.15;
constexpr int64_t kLessonWindow = 20;

struct CollapseVerdict {
  bool collapsed = false, balanced = false;
  int64_t layer = -1;  // the worst layer (highest CV)
  double cv = 0, max_share = 0;
  int64_t dead = 0;
  std::string summary;  // one sentence a teacher can read out
};

// From the raw routing of the last steps (StepRecord::routing), worst layer.
CollapseVerdict judge_collapse(const std::vector<StepRecord>& recent);

struct SpecialisationVerdict {
  bool specialised = false;
  int64_t layer = -1;
  double start = 0, now = 0;
  std::string summary;
};

SpecialisationVerdict judge_specialisation(const StepRecord& first, const StepRecord& last);

}  // namespace moelab
