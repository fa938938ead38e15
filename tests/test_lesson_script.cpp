// Lesson files (core/lesson_script.hpp): a good lesson parses into what it says; every kind of
// malformed lesson is refused in one line naming the file, the step and the problem; hostile
// inputs (huge, deeply nested, not UTF-8, NaN) are refused without a crash; placeholders format
// as documented and checks say plainly whether they held. Every shipped lesson parses.
#include <cmath>
#include <filesystem>

#include "check.hpp"
#include "lesson_script.hpp"

using namespace moelab;

namespace {

// A valid lesson with one step whose body is `step` (a JSON fragment inside the step object).
std::string lesson_with(const std::string& step, const std::string& before = "") {
  return std::string(R"({"format": 1, "title": "T", "summary": "S", "steps": [)") + before +
         R"({"title": "The step", "text": "Words.")" + (step.empty() ? "" : ", " + step) + "}]}";
}

std::string refusal(const std::string& text) {
  return check::error_of([&] { parse_lesson(text, "bad.json"); });
}

const char* kGood = R"({
  "format": 1, "title": "Collapse", "summary": "One line.", "minutes": 4,
  "steps": [
    {"title": "Set up", "text": ["Line one.", "Line two."],
     "do": [{"action": "view", "view": "training", "page": "Collapse"},
            {"action": "preset", "name": "lesson-collapse"},
            {"action": "knob", "name": "training.balancing", "value": "none"},
            {"action": "knob", "name": "tokens.capacity", "value": 1.25},
            {"action": "knob", "name": "model.experts", "value": 16}]},
    {"title": "Predict", "text": "Watch.",
     "ask": {"question": "Will it collapse?", "choices": ["yes", "no"], "answer": 0, "explain": "Rich get richer."},
     "do": [{"action": "train", "steps": 200, "name": "plain",
             "until": {"metric": "collapsed", "op": "==", "value": 1}},
            {"action": "highlight", "chart": "collapse", "text": "CV {worst_cv:.2}"}],
     "then": "Expert {busiest_expert} takes {busiest_share:%} after {step} steps.",
     "check": {"metric": "worst_cv", "op": ">=", "value": 0.8, "fails": "Only CV {worst_cv:.2} this time."}},
    {"title": "Compare", "text": "Run {{braces}} and {run.plain.worst_cv:.1}.",
     "ask": {"question": "How many?", "number": {"answer": 46.7, "tolerance": 2, "unit": "B"}},
     "do": [{"action": "compare", "runs": ["plain"]}, {"action": "real_model", "name": "mixtral-8x7b"},
            {"action": "model", "use": "builtin"}, {"action": "prompt", "text": "the cat"},
            {"action": "generate", "tokens": 4}, {"action": "token", "index": -1}],
     "check": [{"metric": "run.plain.worst_cv", "op": ">", "than": "worst_cv"}]},
    {"title": "Real", "text": "Yours.", "needs": "real-model", "without_real_model": "Open one with File > Open Model.",
     "do": [{"action": "model", "use": "real"}]}
  ]})";

}  // namespace

TEST(a_good_lesson_parses_into_what_it_says) {
  const Lesson l = parse_lesson(kGood, "dir/01-collapse.json");
  CHECK_EQ(l.id, std::string("01-collapse"));
  CHECK_EQ(l.title, std::string("Collapse"));
  CHECK_NEAR(l.minutes, 4, 0);
  CHECK_EQ(l.steps.size(), size_t(4));
  CHECK_EQ(l.steps[0].text, std::string("Line one.\nLine two."));
  CHECK_EQ(l.steps[0].actions.size(), size_t(5));
  CHECK_EQ(l.steps[0].actions[0].page, std::string("Collapse"));
  CHECK_EQ(l.steps[0].actions[1].target, std::string("both"));
  CHECK_EQ(l.steps[0].actions[2].choice, std::string("none"));
  CHECK_NEAR(l.steps[0].actions[3].number, 1.25, 0);
  CHECK_NEAR(l.steps[0].actions[4].number, 16, 0);
  const LessonStep& s = l.steps[1];
  CHECK(s.ask.has_value() && !s.ask->numeric() && s.ask->answer == 0 && s.ask->choices.size() == 2);
  CHECK_EQ(s.actions[0].count, int64_t(200));
  CHECK_EQ(s.actions[0].name, std::string("plain"));
  CHECK(s.actions[0].until.has_value() && s.actions[0].until->metric == "collapsed");
  CHECK_EQ(s.checks.size(), size_t(1));  // a single check object is a list of one
  CHECK_EQ(s.checks[0].op, std::string(">="));
  CHECK(l.steps[2].ask->numeric() && l.steps[2].ask->number == 46.7 && l.steps[2].ask->unit == "B");
  CHECK_EQ(l.steps[2].checks[0].than, std::string("worst_cv"));
  CHECK_EQ(l.steps[2].actions[5].count, int64_t(-1));
  CHECK(l.steps[3].needs_real_model && !l.steps[3].without_real_model.empty());
}

TEST(malformed_lessons_are_refused_in_one_line_naming_file_step_and_problem) {
  struct Case {
    std::string text, needle;
  };
  const std::vector<Case> cases = {
      {lesson_with(R"("do": [{"action": "fly"}])"), "bad.json: step 1 \"The step\": action 1: unknown action \"fly\""},
      {lesson_with(R"("do": [{"action": "trian", "steps": 3}])"), "did you mean \"train\"?"},
      {lesson_with(R"("do": [{"action": "knob", "name": "tokens.topk", "value": 2}])"),
       "action 1 (knob): unknown knob \"tokens.topk\" (did you mean \"tokens.top_k\"?)"},
      {lesson_with(R"("do": [{"action": "knob", "name": "tokens.top_k", "value": 99}])"), "\"tokens.top_k\" is 99, outside 0..64"},
      {lesson_with(R"("do": [{"action": "knob", "name": "tokens.top_k", "value": 1.5}])"), "must be a whole number"},
      {lesson_with(R"("do": [{"action": "knob", "name": "tokens.top_k", "value": "2"}])"), "must be a number"},
      {lesson_with(R"("do": [{"action": "knob", "name": "training.balancing", "value": "aux-loss"}])"),
       "\"training.balancing\" cannot be \"aux-loss\""},
      {lesson_with(R"("do": [{"action": "knob", "name": "tokens.top_k"}])"), "missing field \"value\""},
      {lesson_with(R"("do": [{"action": "view", "view": "tokens", "page": "Nope"}])"), "the tokens view has no page \"Nope\""},
      {lesson_with(R"("do": [{"action": "view", "view": "graphs"}])"), "unknown view \"graphs\""},
      {lesson_with(R"("do": [{"action": "preset", "name": "no-such-preset"}])"), "no preset \"no-such-preset\""},
      {lesson_with(R"("do": [{"action": "real_model", "name": "gpt-5"}])"), "no published model \"gpt-5\""},
      {lesson_with(R"("do": [{"action": "highlight", "chart": "heatmap"}])"), "unknown chart \"heatmap\""},
      {lesson_with(R"("do": [{"action": "generate", "tokens": 100000}])"), "outside 1..512"},
      {lesson_with(R"("do": [{"action": "train", "steps": 10, "until": {"metric": "tokens", "op": ">", "value": 1}}])"),
       "\"until\" watches a training metric"},
      {lesson_with(R"("do": [{"action": "compare", "runs": ["ghost"]}])"), "run \"ghost\" is not named by a train action"},
      {lesson_with(R"("do": [{"action": "view", "view": "model", "colour": "red"}])"), "unknown field \"colour\""},
      {lesson_with(R"("check": {"metric": "worst_cvv", "op": ">=", "value": 0.8})"),
       "check 1: unknown metric \"worst_cvv\" (did you mean \"worst_cv\"?)"},
      {lesson_with(R"("check": {"metric": "worst_cv", "op": "=>", "value": 0.8})"), "check 1: bad op \"=>\""},
      {lesson_with(R"("check": {"metric": "worst_cv", "op": ">="})"), "needs either \"value\""},
      {lesson_with(R"("check": {"metric": "token_text", "op": ">=", "value": 1})"), "is text, a check needs a number"},
      {lesson_with(R"("check": {"metric": "run.later.worst_cv", "op": ">=", "value": 1})"),
       "names run \"later\", which no train action"},
      {lesson_with(R"("then": "CV {worst_cv:.9}")"), "bad format"},
      {lesson_with(R"("then": "CV {busiest}")"), "unknown metric \"busiest\""},
      {lesson_with(R"("then": "CV {worst_cv")"), "without its '}'"},
      {lesson_with(R"("ask": {"question": "Q?", "choices": ["a", "b"], "answer": 2})"), "ask: \"answer\" is 2, outside 0..1"},
      {lesson_with(R"("ask": {"question": "Q?", "choices": ["a"], "answer": 0})"), "2 to 8 answers"},
      {lesson_with(R"("ask": {"question": "Q?"})"), "needs either \"choices\""},
      {lesson_with(R"("needs": "real-model")"), "missing field \"without_real_model\""},
      {lesson_with(R"("chek": [])"), "unknown field \"chek\" (did you mean \"check\"?)"},
      {R"({"format": 1, "title": "T", "summary": "S", "steps": [{"text": "no title"}]})", "step 1: missing field \"title\""},
      {R"({"format": 1, "title": "T", "summary": "S", "steps": [{"title": "A", "text": "  "}]})", "step 1 \"A\": \"text\" is empty"},
      {R"({"format": 2, "title": "T", "summary": "S", "steps": []})", "bad.json: format 2 is not known"},
      {R"({"format": 1, "title": "T", "steps": []})", "bad.json: missing field \"summary\""},
      {R"({"format": 1, "title": "T", "summary": "S", "steps": []})", "\"steps\" must be a non-empty list"},
      {R"([1, 2])", "bad.json: a lesson is a JSON object"},
      {R"({"format": 1, "title": )", "bad.json: malformed JSON"},
  };
  for (const Case& c : cases) {
    const std::string msg = refusal(c.text);
    if (msg.find(c.needle) == std::string::npos || msg.find('\n') != std::string::npos || msg.rfind("bad.json: ", 0) != 0)
      check::report(__FILE__, __LINE__, "expected one line with '" + c.needle + "', got '" + msg + "'");
  }
  // The step named is the one at fault: the second of two.
  const std::string two = R"({"format": 1, "title": "T", "summary": "S", "steps": [{"title": "Fine", "text": "a"},
      {"title": "Broken", "text": "b", "do": [{"action": "knob", "name": "tokens.capacity", "value": -1}]}]})";
  CHECK_THROWS_WITH(parse_lesson(two, "x.json"), "x.json: step 2 \"Broken\": action 1 (knob): \"tokens.capacity\" is -1, outside 0..8");
}

TEST(hostile_inputs_are_refused_without_crash_or_giant_allocation) {
  // Huge: over the 1 MiB cap, refused before parsing.
  const std::string huge = lesson_with("\"then\": \"" + std::string(2 << 20, 'a') + "\"");
  CHECK_THROWS_WITH(parse_lesson(huge, "huge.json"), "huge.json: larger than 1 MiB");
  // Deep nesting: a stack-overflow attempt on the recursive parser.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  CHECK_THROWS_WITH(parse_lesson(deep, "deep.json"), "deep.json: nested more than 16 levels deep");
  // Brackets inside strings do not count.
  CHECK(refusal(lesson_with("\"then\": \"" + std::string(40, '[') + "\"")).empty());
  // Not UTF-8.
  CHECK_THROWS_WITH(parse_lesson(lesson_with("\"then\": \"caf\xe9\""), "latin1.json"), "latin1.json: malformed JSON");
  // NaN and infinities are not JSON; a number too large to hold is refused.
  CHECK_THROWS_WITH(parse_lesson(lesson_with(R"("check": {"metric": "loss", "op": "<", "value": NaN})"), "nan.json"),
                    "nan.json: malformed JSON");
  const std::string big = refusal(lesson_with(R"("do": [{"action": "knob", "name": "tokens.capacity", "value": 1e999}])"));
  CHECK(!big.empty() && big.find('\n') == std::string::npos);
  // Long texts, many steps, an empty file, NUL bytes.
  std::string many = R"({"format": 1, "title": "T", "summary": "S", "steps": [)";
  for (int i = 0; i < 150; ++i) many += std::string(i ? "," : "") + R"({"title": "s", "text": "t"})";
  many += "]}";
  CHECK_THROWS_WITH(parse_lesson(many, "many.json"), "more than 100 steps");
  CHECK_THROWS_WITH(parse_lesson("", "empty.json"), "empty.json: malformed JSON");
  CHECK_THROWS_WITH(parse_lesson(std::string("{\0}", 3), "nul.json"), "nul.json: malformed JSON");
  CHECK_THROWS_WITH(parse_lesson(lesson_with("\"then\": \"" + std::string(30000, 'x') + "\""), "long.json"),
                    "longer than 20000 characters");
  // Placeholders with hostile bodies.
  CHECK(!refusal(lesson_with(R"("then": "{}")")).empty());
  CHECK(!refusal(lesson_with(R"("then": "{a b}")")).empty());
  CHECK(!refusal(lesson_with(R"("then": "}")")).empty());
}

TEST(placeholders_format_as_documented) {
  LessonMetrics m;
  m["worst_cv"] = MetricValue::of(0.8766);
  m["busiest_share"] = MetricValue::of(0.4321);
  m["step"] = MetricValue::of(300);
  m["total_params"] = MetricValue::of(46702792704.0);
  m["token_text"] = MetricValue::of_text("␣the");
  m["loss"] = MetricValue::of(std::nan(""));
  m["val_loss"] = MetricValue::of(INFINITY);
  CHECK_EQ(format_lesson_text("CV {worst_cv:.2}", m), std::string("CV 0.88"));
  CHECK_EQ(format_lesson_text("{busiest_share:%}", m), std::string("43%"));
  CHECK_EQ(format_lesson_text("{busiest_share:.1%}", m), std::string("43.2%"));
  CHECK_EQ(format_lesson_text("{step} steps", m), std::string("300 steps"));
  CHECK_EQ(format_lesson_text("{worst_cv}", m), std::string("0.877"));  // 3 significant digits
  CHECK_EQ(format_lesson_text("{total_params:n}", m), std::string("46.7B"));
  CHECK_EQ(format_lesson_text("token {token_text}", m), std::string("token ␣the"));
  CHECK_EQ(format_lesson_text("{loss:.2} {val_loss} {tokens}", m), std::string("n/a n/a n/a"));
  CHECK_EQ(format_lesson_text("{{literal}} {step:.0}", m), std::string("{literal} 300"));
  CHECK_THROWS_WITH(format_lesson_text("{step:x}", m), "bad format");
  CHECK_THROWS_WITH(format_lesson_text("a } b", m), "without its '{'");
}

TEST(checks_say_whether_they_held_and_never_claim_an_unmeasured_one) {
  LessonMetrics m;
  m["worst_cv"] = MetricValue::of(0.62);
  m["run.aux.worst_cv"] = MetricValue::of(0.2);
  m["loss"] = MetricValue::of(std::nan(""));
  LessonCheck c{"worst_cv", ">=", 0.8, "", 0, "Collapsed (CV {worst_cv:.2}).", "Not this time: CV {worst_cv:.2}."};
  CheckResult r = evaluate_check(c, m);
  CHECK(!r.held && r.measured);
  CHECK_EQ(r.message, std::string("Not this time: CV 0.62."));
  c.value = 0.6;
  r = evaluate_check(c, m);
  CHECK(r.held);
  CHECK_EQ(r.message, std::string("Collapsed (CV 0.62)."));
  // Without texts, the default sentence names the check and the value measured, without a verdict
  // (the panel and the headless output add "Held:" / "Did not hold this time:" once).
  LessonCheck d{"worst_cv", "<", 0.5, "", 0, "", ""};
  r = evaluate_check(d, m);
  CHECK(!r.held);
  CHECK_EQ(r.message, std::string("worst_cv < 0.5 (measured 0.62)"));
  r = evaluate_check(LessonCheck{"worst_cv", ">", 0.5, "", 0, "", ""}, m);
  CHECK(r.held);
  CHECK_EQ(r.message, std::string("worst_cv > 0.5 (measured 0.62)"));
  // Against another metric.
  LessonCheck e{"run.aux.worst_cv", "<", 0, "worst_cv", 0, "", ""};
  CHECK(evaluate_check(e, m).held);
  // == and != with a tolerance.
  CHECK(evaluate_check(LessonCheck{"worst_cv", "==", 0.6, "", 0.05, "", ""}, m).held);
  CHECK(!evaluate_check(LessonCheck{"worst_cv", "==", 0.6, "", 0.01, "", ""}, m).held);
  CHECK(evaluate_check(LessonCheck{"worst_cv", "!=", 0.6, "", 0.01, "", ""}, m).held);
  // NaN or missing: not measured, not held, and it says so.
  for (const char* name : {"loss", "step"}) {
    r = evaluate_check(LessonCheck{name, "<", 100, "", 0, "yes", "no"}, m);
    CHECK(!r.held && !r.measured);
    CHECK(r.message.find("Not measured") != std::string::npos);
  }
}

TEST(every_shipped_lesson_parses) {
  const auto paths = list_lessons();
  for (const std::string& p : paths) {
    const std::string err = check::error_of([&] { load_lesson(p); });
    if (!err.empty()) check::report(__FILE__, __LINE__, err);
  }
  std::fprintf(stderr, "  %zu shipped lessons\n", paths.size());
  // Lessons are found by file stem, with or without the "NN-" prefix.
  if (!paths.empty()) {
    const std::string stem = std::filesystem::path(paths[0]).stem().string();
    CHECK_EQ(load_lesson(stem).file, paths[0]);
    CHECK_EQ(load_lesson(stem.substr(stem.find('-') + 1)).file, paths[0]);
  }
  CHECK_THROWS_WITH(load_lesson("no-such-lesson"), "no-such-lesson: no such lesson file");
}

TEST(the_vocabulary_is_consistent) {
  // Every chart names a view; knob names carry their view; ranges are sane.
  std::vector<std::string> views;
  for (const auto& v : lesson_views()) views.push_back(v.name);
  for (const auto& c : lesson_charts()) CHECK(std::find(views.begin(), views.end(), c.view) != views.end());
  for (const auto& k : lesson_knobs()) {
    const std::string view = k.name.substr(0, k.name.find('.'));
    CHECK(std::find(views.begin(), views.end(), view) != views.end());
    if (k.type == KnobType::Int || k.type == KnobType::Real) CHECK(k.lo <= k.hi);
    if (k.type == KnobType::Choice) CHECK(!k.choices.empty());
  }
  for (const auto& m : lesson_metrics()) CHECK(find_metric(m.name) == &m);
}

CHECK_MAIN()
