// Parsing and validating a lesson file (docs/lessons.md). Everything a lesson names (action,
// knob and its value, view, page, chart, preset, published model, metric, placeholder, run) is
// checked here, so a malformed lesson is refused when it is opened, in one line naming the file,
// the step and the problem.
#include "lesson_script.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "error.hpp"
#include "files.hpp"
#include "presets.hpp"

namespace moelab {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Where a problem is: "FILE: step 3 "Title": " + what.
struct Where {
  std::string file;
  int step = 0;  // 1-based; 0 = the lesson itself
  std::string title;
  std::string part;  // "action 2 (knob)", "ask", "check 1"
  [[noreturn]] void fail(const std::string& what) const {
    std::string w;
    if (step > 0) {
      w = "step " + std::to_string(step);
      if (!title.empty()) w += " \"" + title + "\"";
      w += ": ";
    }
    if (!part.empty()) w += part + ": ";
    throw Error(file + ": " + w + what);
  }
};

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// " (did you mean X?)" for a near miss, else " (known: A, B, …)" for short lists.
std::string suggest(const std::string& got, const std::vector<std::string>& known) {
  std::string best;
  size_t d = 3;
  for (const auto& k : known)
    if (size_t e = edit_distance(got.substr(0, 64), k); e < d) d = e, best = k;
  if (!best.empty()) return " (did you mean \"" + best + "\"?)";
  if (known.size() > 14) return "";
  std::string s = " (known: ";
  for (size_t i = 0; i < known.size(); ++i) s += (i ? ", " : "") + known[i];
  return s + ")";
}

std::string q(const std::string& s) { return "\"" + (s.size() > 60 ? s.substr(0, 60) + "…" : s) + "\""; }

// Refuses a nesting deeper than kLessonMaxDepth before the recursive parser sees it.
void check_depth(const std::string& text, const std::string& file) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kLessonMaxDepth)
        fail(file, "nested more than " + std::to_string(kLessonMaxDepth) + " levels deep: not a lesson");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

void only_keys(const json& j, const std::vector<std::string>& allowed, const Where& w) {
  for (const auto& [k, v] : j.items()) {
    if (k == "comment" || (!k.empty() && k[0] == '_')) continue;
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end())
      w.fail("unknown field " + q(k) + suggest(k, allowed));
  }
}

const json& need(const json& j, const char* key, const Where& w) {
  if (!j.contains(key)) w.fail(std::string("missing field \"") + key + "\"");
  return j.at(key);
}

std::string text_of(const json& j, const char* key, const Where& w, bool required, size_t max_len = 20000) {
  if (!j.contains(key)) {
    if (required) w.fail(std::string("missing field \"") + key + "\"");
    return {};
  }
  const json& v = j.at(key);
  std::string s;
  if (v.is_string()) {
    s = v.get<std::string>();
  } else if (v.is_array()) {  // a long text may be written as an array of lines
    for (const json& line : v) {
      if (!line.is_string()) w.fail(std::string("\"") + key + "\" must be text or a list of lines of text");
      if (!s.empty()) s += '\n';
      s += line.get<std::string>();
    }
  } else {
    w.fail(std::string("\"") + key + "\" must be text");
  }
  if (required && s.find_first_not_of(" \t\n") == std::string::npos) w.fail(std::string("\"") + key + "\" is empty");
  if (s.size() > max_len) w.fail(std::string("\"") + key + "\" is longer than " + std::to_string(max_len) + " characters");
  return s;
}

double number_of(const json& v, const std::string& key, const Where& w, double lo, double hi) {
  if (!v.is_number()) w.fail("\"" + key + "\" must be a number, not " + q(v.dump()));
  const double x = v.get<double>();
  if (!std::isfinite(x)) w.fail("\"" + key + "\" is not a finite number");
  if (x < lo || x > hi) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "\"%s\" is %g, outside %g..%g", key.c_str(), x, lo, hi);
    w.fail(buf);
  }
  return x;
}

int64_t int_of(const json& v, const std::string& key, const Where& w, double lo, double hi) {
  const double x = number_of(v, key, w, lo, hi);
  if (x != std::floor(x)) w.fail("\"" + key + "\" must be a whole number, not " + q(v.dump()));
  return int64_t(x);
}

std::vector<std::string> names_of_metrics(bool training_only) {
  std::vector<std::string> n;
  for (const auto& m : lesson_metrics())
    if (!training_only || m.source == "training") n.push_back(m.name);
  return n;
}

// A metric a placeholder or check names: a known one, or run.NAME.M of a run named so far.
void check_metric(const std::string& name, const std::set<std::string>& runs, const Where& w, bool need_number) {
  if (name.rfind("run.", 0) == 0) {
    const size_t dot = name.find('.', 4);
    const std::string run = dot == std::string::npos ? name.substr(4) : name.substr(4, dot - 4);
    const std::string m = dot == std::string::npos ? "" : name.substr(dot + 1);
    if (!runs.count(run))
      w.fail("metric " + q(name) + " names run " + q(run) +
             ", which no train action (with \"name\") before it trains");
    const MetricSpec* spec = find_metric(m);
    if (!spec || spec->source != "training")
      w.fail("metric " + q(name) + ": " + q(m) + " is not a training metric" + suggest(m, names_of_metrics(true)));
    return;
  }
  const MetricSpec* spec = find_metric(name);
  if (!spec) w.fail("unknown metric " + q(name) + suggest(name, names_of_metrics(false)));
  if (need_number && spec->kind != MetricKind::Number) w.fail("metric " + q(name) + " is text, a check needs a number");
}

// Checks every {placeholder} of a text: its syntax and its metric.
void check_placeholders(const std::string& text, const std::set<std::string>& runs, const Where& w) {
  try {
    format_lesson_text(text, {});
  } catch (const Error& e) {
    w.fail(e.what());
  }
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '{' && i + 1 < text.size() && text[i + 1] == '{') {
      ++i;
      continue;
    }
    if (text[i] != '{') continue;
    const size_t close = text.find('}', i);
    const std::string body = text.substr(i + 1, close - i - 1);
    check_metric(body.substr(0, body.find(':')), runs, w, false);
    i = close;
  }
}

LessonCheck parse_check(const json& j, const std::set<std::string>& runs, const Where& w) {
  if (!j.is_object()) w.fail("a check must be an object {\"metric\", \"op\", \"value\"}");
  only_keys(j, {"metric", "op", "value", "than", "tolerance", "holds", "fails"}, w);
  LessonCheck c;
  c.metric = text_of(j, "metric", w, true, 200);
  check_metric(c.metric, runs, w, true);
  c.op = text_of(j, "op", w, true, 4);
  static const std::vector<std::string> ops = {">=", ">", "<=", "<", "==", "!="};
  if (std::find(ops.begin(), ops.end(), c.op) == ops.end()) w.fail("bad op " + q(c.op) + " (use >= > <= < == !=)");
  if (j.contains("value") == j.contains("than")) w.fail("a check needs either \"value\" (a number) or \"than\" (a metric)");
  if (j.contains("value")) c.value = number_of(j.at("value"), "value", w, -1e300, 1e300);
  if (j.contains("than")) {
    c.than = text_of(j, "than", w, true, 200);
    check_metric(c.than, runs, w, true);
  }
  if (j.contains("tolerance")) c.tolerance = number_of(j.at("tolerance"), "tolerance", w, 0, 1e300);
  c.holds = text_of(j, "holds", w, false, 2000);
  c.fails = text_of(j, "fails", w, false, 2000);
  check_placeholders(c.holds, runs, w);
  check_placeholders(c.fails, runs, w);
  return c;
}

LessonQuestion parse_question(const json& j, const std::set<std::string>& runs, const Where& w) {
  if (!j.is_object()) w.fail("\"ask\" must be an object {\"question\", \"choices\", \"answer\"}");
  only_keys(j, {"question", "choices", "answer", "number", "explain"}, w);
  LessonQuestion q;
  q.question = text_of(j, "question", w, true, 2000);
  q.explain = text_of(j, "explain", w, false, 4000);
  check_placeholders(q.question, runs, w);
  check_placeholders(q.explain, runs, w);
  if (j.contains("choices") == j.contains("number"))
    w.fail("a question needs either \"choices\" (with \"answer\") or \"number\"");
  if (j.contains("choices")) {
    const json& ch = j.at("choices");
    if (!ch.is_array() || ch.size() < 2 || ch.size() > 8) w.fail("\"choices\" must be a list of 2 to 8 answers");
    for (const json& c : ch) {
      if (!c.is_string() || c.get<std::string>().empty() || c.get<std::string>().size() > 300)
        w.fail("each choice must be a short non-empty text");
      q.choices.push_back(c.get<std::string>());
    }
    const json& a = need(j, "answer", w);
    q.answer = int(int_of(a, "answer", w, 0, double(q.choices.size() - 1)));
  } else {
    const json& n = j.at("number");
    if (!n.is_object()) w.fail("\"number\" must be an object {\"answer\", \"tolerance\", \"unit\"}");
    only_keys(n, {"answer", "tolerance", "unit"}, w);
    q.number = number_of(need(n, "answer", w), "answer", w, -1e300, 1e300);
    if (n.contains("tolerance")) q.tolerance = number_of(n.at("tolerance"), "tolerance", w, 0, 1e300);
    q.unit = text_of(n, "unit", w, false, 40);
    if (j.contains("answer")) w.fail("a number question keeps its answer inside \"number\"");
  }
  return q;
}

std::vector<std::string> view_names() {
  std::vector<std::string> v;
  for (const auto& s : lesson_views()) v.push_back(s.name);
  return v;
}

std::vector<std::string> real_model_ids() {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(resources_dir()) / "real-models", ec))
    if (e.is_directory(ec)) ids.push_back(e.path().filename().string());
  std::sort(ids.begin(), ids.end());
  return ids;
}

LessonAction parse_action(const json& j, std::set<std::string>& runs, const Where& w) {
  if (!j.is_object()) w.fail("an action must be an object {\"action\": …}");
  static const std::vector<std::string> kinds = {"view",  "preset",  "knob",       "model",    "prompt",   "generate",
                                                 "token", "train",   "compare",    "real_model", "highlight"};
  LessonAction a;
  a.action = text_of(j, "action", w, true, 40);
  if (std::find(kinds.begin(), kinds.end(), a.action) == kinds.end())
    w.fail("unknown action " + q(a.action) + suggest(a.action, kinds));
  Where aw = w;
  aw.part += " (" + a.action + ")";
  const std::string& k = a.action;
  if (k == "view") {
    only_keys(j, {"action", "view", "page"}, aw);
    a.view = text_of(j, "view", aw, true, 40);
    const auto views = lesson_views();
    const auto it = std::find_if(views.begin(), views.end(), [&](const ViewSpec& v) { return v.name == a.view; });
    if (it == views.end()) aw.fail("unknown view " + q(a.view) + suggest(a.view, view_names()));
    if (j.contains("page")) {
      a.page = text_of(j, "page", aw, true, 100);
      if (std::find(it->pages.begin(), it->pages.end(), a.page) == it->pages.end())
        aw.fail("the " + a.view + " view has no page " + q(a.page) +
                (it->pages.empty() ? std::string(" (it has one page)") : suggest(a.page, it->pages)));
    }
  } else if (k == "preset") {
    only_keys(j, {"action", "name", "into"}, aw);
    a.name = text_of(j, "name", aw, true, 200);
    const auto presets = list_presets();
    if (std::find(presets.begin(), presets.end(), a.name) == presets.end())
      aw.fail("no preset " + q(a.name) + " in resources/presets" + suggest(a.name, presets));
    a.target = j.contains("into") ? text_of(j, "into", aw, true, 20) : "both";
    if (a.target != "both" && a.target != "training" && a.target != "model")
      aw.fail("\"into\" is \"training\", \"model\" or \"both\", not " + q(a.target));
  } else if (k == "knob") {
    only_keys(j, {"action", "name", "value"}, aw);
    a.name = text_of(j, "name", aw, true, 100);
    const KnobSpec* spec = find_knob(a.name);
    if (!spec) {
      std::vector<std::string> names;
      for (const auto& s : lesson_knobs()) names.push_back(s.name);
      aw.fail("unknown knob " + q(a.name) + suggest(a.name, names));
    }
    const json& v = need(j, "value", aw);
    const std::string key = a.name;
    switch (spec->type) {
      case KnobType::Int: a.number = double(int_of(v, key, aw, spec->lo, spec->hi)); break;
      case KnobType::Real: a.number = number_of(v, key, aw, spec->lo, spec->hi); break;
      case KnobType::Choice:
        if (!v.is_string()) aw.fail(q(key) + " takes one of its choices as text" + suggest("", spec->choices));
        a.choice = v.get<std::string>();
        if (std::find(spec->choices.begin(), spec->choices.end(), a.choice) == spec->choices.end())
          aw.fail(q(key) + " cannot be " + q(a.choice) + suggest(a.choice, spec->choices));
        break;
      case KnobType::Text:
        if (!v.is_string() || v.get<std::string>().size() > 200) aw.fail(q(key) + " takes a short text");
        a.choice = v.get<std::string>();
        break;
    }
  } else if (k == "model") {
    only_keys(j, {"action", "use"}, aw);
    a.target = text_of(j, "use", aw, true, 20);
    if (a.target != "builtin" && a.target != "real" && a.target != "run")
      aw.fail("\"use\" is \"builtin\", \"real\" (the model opened with File ▸ Open Model) or \"run\" (the last run's checkpoint), not " +
              q(a.target));
  } else if (k == "prompt") {
    only_keys(j, {"action", "text"}, aw);
    a.text = text_of(j, "text", aw, true, 2000);
  } else if (k == "generate") {
    only_keys(j, {"action", "tokens"}, aw);
    a.count = int_of(need(j, "tokens", aw), "tokens", aw, 1, double(kLessonMaxGenerate));
  } else if (k == "token") {
    only_keys(j, {"action", "index"}, aw);
    a.count = int_of(need(j, "index", aw), "index", aw, -4096, 4095);
  } else if (k == "train") {
    only_keys(j, {"action", "steps", "name", "until"}, aw);
    a.count = int_of(need(j, "steps", aw), "steps", aw, 1, double(kLessonMaxTrainSteps));
    if (j.contains("until")) {
      Where uw = aw;
      uw.part += " until";
      a.until = parse_check(j.at("until"), runs, uw);
      if (a.until->metric.rfind("run.", 0) == 0 || find_metric(a.until->metric)->source != "training")
        uw.fail("\"until\" watches a training metric of this run" + suggest(a.until->metric, names_of_metrics(true)));
    }
    if (j.contains("name")) {
      a.name = text_of(j, "name", aw, true, 40);
      for (char c : a.name)
        if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_'))
          aw.fail("a run's name has lower-case letters, digits and '_' only, not " + q(a.name));
      runs.insert(a.name);
    }
  } else if (k == "compare") {
    only_keys(j, {"action", "runs"}, aw);
    const json& r = need(j, "runs", aw);
    if (!r.is_array() || r.empty() || r.size() > 6) aw.fail("\"runs\" must be a list of 1 to 6 run names");
    for (const json& n : r) {
      if (!n.is_string() || !runs.count(n.get<std::string>()))
        aw.fail("run " + q(n.is_string() ? n.get<std::string>() : n.dump()) + " is not named by a train action before this one");
      a.runs.push_back(n.get<std::string>());
    }
  } else if (k == "real_model") {
    only_keys(j, {"action", "name"}, aw);
    a.name = text_of(j, "name", aw, true, 100);
    const auto ids = real_model_ids();
    if (std::find(ids.begin(), ids.end(), a.name) == ids.end())
      aw.fail("no published model " + q(a.name) + " in resources/real-models" + suggest(a.name, ids));
  } else if (k == "highlight") {
    only_keys(j, {"action", "chart", "text"}, aw);
    a.chart = text_of(j, "chart", aw, true, 100);
    std::vector<std::string> ids;
    for (const auto& c : lesson_charts()) ids.push_back(c.id);
    if (std::find(ids.begin(), ids.end(), a.chart) == ids.end()) aw.fail("unknown chart " + q(a.chart) + suggest(a.chart, ids));
    a.text = text_of(j, "text", aw, false, 500);
    check_placeholders(a.text, runs, aw);
  }
  return a;
}

LessonStep parse_step(const json& j, std::set<std::string>& runs, Where w) {
  if (!j.is_object()) w.fail("a step must be an object {\"title\", \"text\", …}");
  LessonStep s;
  s.title = text_of(j, "title", w, true, 200);
  w.title = s.title;
  only_keys(j, {"title", "text", "ask", "do", "then", "check", "needs", "without_real_model"}, w);
  s.text = text_of(j, "text", w, true);
  check_placeholders(s.text, runs, w);
  if (j.contains("needs")) {
    const std::string n = text_of(j, "needs", w, true, 40);
    if (n != "real-model") w.fail("\"needs\" can only be \"real-model\", not " + q(n));
    s.needs_real_model = true;
    s.without_real_model = text_of(j, "without_real_model", w, true);
  } else if (j.contains("without_real_model")) {
    w.fail("\"without_real_model\" goes with \"needs\": \"real-model\"");
  }
  if (j.contains("ask")) {
    Where qw = w;
    qw.part = "ask";
    s.ask = parse_question(j.at("ask"), runs, qw);
  }
  if (j.contains("do")) {
    const json& d = j.at("do");
    if (!d.is_array()) w.fail("\"do\" must be a list of actions");
    if (d.size() > size_t(kLessonMaxActions)) w.fail("more than " + std::to_string(kLessonMaxActions) + " actions");
    for (size_t i = 0; i < d.size(); ++i) {
      Where aw = w;
      aw.part = "action " + std::to_string(i + 1);
      s.actions.push_back(parse_action(d[i], runs, aw));
    }
  }
  s.then = text_of(j, "then", w, false);
  check_placeholders(s.then, runs, w);
  if (j.contains("check")) {
    json c = j.at("check");
    if (c.is_object()) c = json::array({c});
    if (!c.is_array() || c.size() > size_t(kLessonMaxChecks))
      w.fail("\"check\" must be a check or a list of at most " + std::to_string(kLessonMaxChecks));
    for (size_t i = 0; i < c.size(); ++i) {
      Where cw = w;
      cw.part = "check " + std::to_string(i + 1);
      s.checks.push_back(parse_check(c[i], runs, cw));
    }
  }
  return s;
}

}  // namespace

Lesson parse_lesson(const std::string& text, const std::string& file) {
  if (int64_t(text.size()) > kLessonMaxBytes) fail(file, "larger than 1 MiB: not a lesson");
  check_depth(text, file);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    std::string what = e.what();
    // nlohmann's messages start "[json.exception.parse_error.101] "; keep the readable part.
    if (const size_t p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    fail(file, "malformed JSON (" + what + ")");
  }
  Where w{file, 0, {}, {}};
  if (!j.is_object()) w.fail("a lesson is a JSON object {\"format\": 1, \"title\", \"summary\", \"steps\"}");
  only_keys(j, {"format", "title", "summary", "minutes", "needs", "steps"}, w);
  const int64_t format = int_of(need(j, "format", w), "format", w, -1e9, 1e9);
  if (format != kLessonFormat)
    w.fail("format " + std::to_string(format) + " is not known to this lab (it reads format " + std::to_string(kLessonFormat) + ")");
  Lesson l;
  l.file = file;
  l.id = fs::path(file).stem().string();
  l.title = text_of(j, "title", w, true, 200);
  l.summary = text_of(j, "summary", w, true, 1000);
  if (j.contains("minutes")) l.minutes = number_of(j.at("minutes"), "minutes", w, 0.5, 60);
  if (j.contains("needs")) {
    const std::string n = text_of(j, "needs", w, true, 40);
    if (n != "real-model") w.fail("\"needs\" can only be \"real-model\", not " + q(n));
    l.needs_real_model = true;
  }
  const json& steps = need(j, "steps", w);
  if (!steps.is_array() || steps.empty()) w.fail("\"steps\" must be a non-empty list");
  if (steps.size() > size_t(kLessonMaxSteps)) w.fail("more than " + std::to_string(kLessonMaxSteps) + " steps");
  std::set<std::string> runs;
  for (size_t i = 0; i < steps.size(); ++i) {
    Where sw{file, int(i + 1), {}, {}};
    l.steps.push_back(parse_step(steps[i], runs, sw));
  }
  return l;
}

std::string lessons_dir() { return (fs::path(resources_dir()) / "lessons").string(); }

std::vector<std::string> list_lessons() {
  std::vector<std::string> paths;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(lessons_dir(), ec))
    if (e.path().extension() == ".json") paths.push_back(e.path().string());
  std::sort(paths.begin(), paths.end());
  return paths;
}

Lesson load_lesson(const std::string& name_or_path) {
  std::error_code ec;
  std::string path = name_or_path;
  if (!fs::is_regular_file(path, ec)) {
    path.clear();
    for (const std::string& p : list_lessons()) {
      const std::string stem = fs::path(p).stem().string();
      // "01-router" matches itself, "router" matches "01-router"
      const size_t dash = stem.find('-');
      const bool numbered = dash != std::string::npos && dash > 0 &&
                            std::all_of(stem.begin(), stem.begin() + long(dash), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
      if (stem == name_or_path || stem + ".json" == name_or_path || (numbered && stem.substr(dash + 1) == name_or_path)) {
        path = p;
        break;
      }
    }
    if (path.empty()) {
      std::vector<std::string> names;
      for (const std::string& p : list_lessons()) names.push_back(fs::path(p).stem().string());
      fail(name_or_path, "no such lesson file, nor a lesson in " + lessons_dir() + suggest(name_or_path, names));
    }
  }
  return parse_lesson(read_text_file(path, kLessonMaxBytes), path);
}

}  // namespace moelab
