// The lessons work live: each lesson preset, trained from its seed on the built-in corpus for
// 400 steps (about 10-15 s on a 2-core machine, well inside the 60 s a class waits), shows its
// effect by the thresholds in core/lessons.hpp.
#include <chrono>

#include "check.hpp"
#include "lessons.hpp"
#include "presets.hpp"

using namespace moelab;

static std::vector<StepRecord> run_lesson(const std::string& name, int64_t steps, StepRecord* first = nullptr) {
  const Preset p = load_preset(name);
  auto corpus = open_corpus(p.corpus);
  Model m = Model::random(p.model, p.train.weights_seed(), make_eigen_backend());
  TrainConfig tc = p.train;
  tc.steps = steps;
  tc.eval_every = 0;
  Trainer t(m, *corpus, tc);
  std::vector<StepRecord> recent;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) {
    StepRecord r = t.step();
    if (i == 0 && first) *first = r;
    recent.push_back(std::move(r));
    if (recent.size() > size_t(kLessonWindow)) recent.erase(recent.begin());
  }
  std::fprintf(stderr, "  %s: %lld steps in %.1f s\n", name.c_str(), (long long)steps,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return recent;
}

TEST(collapse_without_balancing) {
  const CollapseVerdict v = judge_collapse(run_lesson("lesson-collapse", 400));
  std::fprintf(stderr, "  %s\n", v.summary.c_str());
  CHECK(v.collapsed);
  CHECK(!v.balanced);
}

TEST(auxiliary_loss_keeps_the_load_balanced) {
  const CollapseVerdict v = judge_collapse(run_lesson("lesson-collapse-aux", 400));
  std::fprintf(stderr, "  %s\n", v.summary.c_str());
  CHECK(v.balanced);
  CHECK(!v.collapsed);
}

TEST(bias_method_keeps_the_load_balanced) {
  const CollapseVerdict v = judge_collapse(run_lesson("lesson-collapse-bias", 400));
  std::fprintf(stderr, "  %s\n", v.summary.c_str());
  CHECK(v.balanced);
  CHECK(!v.collapsed);
}

TEST(experts_specialise_by_domain) {
  StepRecord first;
  const auto recent = run_lesson("lesson-specialisation", 400, &first);
  const SpecialisationVerdict v = judge_specialisation(first, recent.back());
  std::fprintf(stderr, "  %s\n", v.summary.c_str());
  CHECK(v.specialised);
}

CHECK_MAIN()
