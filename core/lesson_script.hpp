// Guided lessons as files (docs/lessons.md): a lesson is a JSON file of steps, each with text, an
// optional predict-then-watch question, actions that drive the lab's views, a closing text with
// live numbers ("{worst_cv:.2}") and checks on what the lab computed. This file parses and
// validates a lesson (refusing a malformed one in one line naming the file, the step and the
// problem), formats placeholders and evaluates checks over a map of metrics. It knows the lab's
// vocabulary (views, pages, knobs, charts, metrics) as tables, so that a lesson is checked
// completely when it is loaded, not half-way through a class; the GUI's executor maps the same
// names onto the views (tests/gui/test_gui_lesson.cpp checks that every name in these tables
// exists there). Qt-free.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace moelab {

constexpr int kLessonFormat = 1;
constexpr int64_t kLessonMaxBytes = 1 << 20;  // 1 MiB: a lesson is a few KB of text
constexpr int kLessonMaxDepth = 16;           // JSON nesting (a lesson needs 5)
constexpr int kLessonMaxSteps = 100, kLessonMaxActions = 50, kLessonMaxChecks = 20;
constexpr int64_t kLessonMaxTrainSteps = 5000, kLessonMaxGenerate = 512;

// ---- The vocabulary --------------------------------------------------------------------------

enum class KnobType { Int, Real, Choice, Text };
struct KnobSpec {
  std::string name;  // "tokens.top_k": view, dot, knob
  KnobType type;
  double lo, hi;                     // Int and Real
  std::vector<std::string> choices;  // Choice
  std::string what;                  // one line for docs/lessons.md
};
const std::vector<KnobSpec>& lesson_knobs();
const KnobSpec* find_knob(const std::string& name);

struct ViewSpec {
  std::string name;                // "tokens"
  std::vector<std::string> pages;  // the page tabs, as titled in the view (empty: one page)
};
const std::vector<ViewSpec>& lesson_views();

struct ChartSpec {
  std::string id;    // ChartPanel::id(), "collapse"
  std::string view;  // the view it is on
};
const std::vector<ChartSpec>& lesson_charts();

enum class MetricKind { Number, Text };
struct MetricSpec {
  std::string name;
  MetricKind kind;
  std::string source;  // "training", "tokens", "model", "real" (the compared published model)
  std::string what;
};
// Names usable in placeholders and checks. Besides these, "run.NAME.M" is the training metric M
// of the run that a train action named NAME (earlier in the lesson).
const std::vector<MetricSpec>& lesson_metrics();
const MetricSpec* find_metric(const std::string& name);

// ---- A parsed lesson -------------------------------------------------------------------------

struct LessonCheck {
  std::string metric;  // a metric name
  std::string op;      // >= > <= < == !=
  double value = 0;
  std::string than;    // instead of value: another metric ("run.aux.worst_cv")
  double tolerance = 0;  // for == and !=
  std::string holds, fails;  // what the player says (placeholders allowed); defaults generated
};

struct LessonQuestion {
  std::string question;
  std::vector<std::string> choices;  // multiple choice, or empty for a number
  int answer = -1;                   // index into choices
  double number = 0, tolerance = 0;  // a number answer within ± tolerance
  std::string unit;
  std::string explain;  // shown with the answer (optional)
  bool numeric() const { return choices.empty(); }
};

struct LessonAction {
  std::string action;  // view preset knob model prompt generate token layer train compare real_model highlight
  std::string view, page;       // view
  std::string name;             // preset, knob, real_model; train: the run's name
  std::string text;             // prompt text; highlight call-out
  std::string target;           // preset: "training" or "model"; model: "builtin" "real" "run"
  std::string chart;            // highlight
  double number = 0;            // knob value (Int, Real)
  std::string choice;           // knob value (Choice, Text)
  int64_t count = 0;            // generate tokens, train steps (the most when `until`), token/layer index
  std::optional<LessonCheck> until;  // train: stop early once this holds
  std::vector<std::string> runs;     // compare
};

struct LessonStep {
  std::string title, text, then;
  std::optional<LessonQuestion> ask;
  std::vector<LessonAction> actions;
  std::vector<LessonCheck> checks;
  bool needs_real_model = false;
  std::string without_real_model;  // text shown instead when none is open
};

struct Lesson {
  std::string file;  // where it came from (errors name it)
  std::string id;    // file stem, "01-router-arithmetic"
  std::string title, summary;
  double minutes = 5;
  bool needs_real_model = false;
  std::vector<LessonStep> steps;
};

// Parses and validates; every problem is a moelab::Error "FILE: step N "TITLE": problem".
Lesson parse_lesson(const std::string& text, const std::string& file);
// NAME (a file in resources/lessons, with or without its .json and its "NN-" prefix) or a path.
Lesson load_lesson(const std::string& name_or_path);
std::string lessons_dir();
std::vector<std::string> list_lessons();  // paths of the shipped lessons, in file-name order

// ---- Running -----------------------------------------------------------------------------------

struct MetricValue {
  double number = 0;
  std::string text;
  bool is_text = false;
  static MetricValue of(double v) { return {v, {}, false}; }
  static MetricValue of_text(std::string s) { return {0, std::move(s), true}; }
};
using LessonMetrics = std::map<std::string, MetricValue>;

// {name}: a number as the lab would write it (integers whole, else 3 significant digits), text
// as is. {name:.2}: two decimals. {name:%}: a fraction as a percentage ({name:.1%} one decimal).
// {name:n}: a count as model cards write it ("46.7B"). {{ and }} are braces. A metric not
// measured (absent, or NaN) reads "n/a". Throws on a malformed placeholder (parse_lesson has
// already refused those in a lesson).
std::string format_lesson_text(const std::string& text, const LessonMetrics& metrics);

struct CheckResult {
  bool held = false;
  bool measured = true;  // false: a metric it needs was not measured (counts as not held)
  std::string message;   // holds/fails text, formatted, or "worst_cv < 0.5 (measured 0.62)" (no verdict:
                         // the caller says "Held:" / "Did not hold this time:" before it)
};
CheckResult evaluate_check(const LessonCheck& check, const LessonMetrics& metrics);
std::string describe_check(const LessonCheck& check);  // "worst_cv >= 0.8"

}  // namespace moelab
