// The lessons' vocabulary (views, pages, knobs, charts, metrics), placeholder formatting and
// checks. The tables are the format's reference: docs/lessons.md lists the same names.
#include <cctype>
#include <cmath>
#include <cstdio>

#include "error.hpp"
#include "lesson_script.hpp"

namespace moelab {

const std::vector<KnobSpec>& lesson_knobs() {
  using K = KnobType;
  static const std::vector<KnobSpec> knobs = {
      // Model view: the lab model whose parameters and memory the charts count.
      {"model.layers", K::Int, 1, 256, {}, "transformer blocks (L)"},
      {"model.hidden", K::Int, 8, 16384, {}, "hidden width (H)"},
      {"model.heads", K::Int, 1, 256, {}, "attention heads"},
      {"model.kv_heads", K::Int, 1, 256, {}, "key/value heads"},
      {"model.experts", K::Int, 0, 512, {}, "routed experts per MoE layer (0 = dense)"},
      {"model.top_k", K::Int, 1, 64, {}, "experts per token"},
      {"model.expert_hidden", K::Int, 1, 65536, {}, "hidden size inside one expert"},
      {"model.fine_grained", K::Int, 1, 64, {}, "fine-grained factor m (m·E experts of F/m, top-k·m)"},
      {"model.shared_experts", K::Int, 0, 16, {}, "always-on shared experts"},
      {"model.dense_layers", K::Text, 0, 0, {}, "dense (non-MoE) layers, e.g. \"0\" or \"0,1\""},
      {"model.router", K::Choice, 0, 0, {"softmax", "noisy", "sigmoid"}, "how the router scores experts"},
      // Tokens view: routing overrides on the model that generates.
      {"tokens.top_k", K::Int, 0, 64, {}, "top-k override (0 = the model's)"},
      {"tokens.banned", K::Text, 0, 0, {}, "experts banned, \"3\" or \"1,5\" (\"\" = none)"},
      {"tokens.forced", K::Int, -1, 4095, {}, "expert every token must use (-1 = none)"},
      {"tokens.renormalize", K::Choice, 0, 0, {"model", "off", "on"}, "renormalise the top-k gates"},
      {"tokens.capacity", K::Real, 0, 8, {}, "expert capacity factor (0 = no limit)"},
      {"tokens.overflow", K::Choice, 0, 0, {"dropped", "reroute"}, "a slot over capacity is dropped or re-routed"},
      {"tokens.text_experts", K::Text, 0, 0, {}, "experts the text is coloured by (\"\" = default)"},
      {"tokens.layer", K::Int, -1, 4095, {}, "MoE layer shown (index among the MoE layers, -1 = all)"},
      // Training view: the next run's settings (balancing also switches a run going on).
      {"training.balancing", K::Choice, 0, 0, {"none", "aux", "bias"}, "load balancing"},
      {"training.coefficient", K::Real, 0, 1, {}, "balancing coefficient (aux loss α or bias speed γ)"},
      {"training.router", K::Choice, 0, 0, {"preset", "softmax", "noisy", "sigmoid"}, "router of the next run"},
      {"training.capacity", K::Real, 0, 8, {}, "capacity factor while training (0 = no limit)"},
      {"training.overflow", K::Choice, 0, 0, {"dropped", "reroute"}, "a slot over capacity is dropped or re-routed"},
      {"training.lr", K::Real, 0.0001, 0.1, {}, "learning rate"},
      {"training.z_loss", K::Real, 0, 1, {}, "router z-loss coefficient"},
      {"training.steps", K::Int, 1, double(kLessonMaxTrainSteps), {}, "steps of the next run"},
      {"training.layer", K::Int, -1, 4095, {}, "MoE layer the charts show (index among the MoE layers; -1 = the most uneven, worst_layer)"},
  };
  return knobs;
}

const KnobSpec* find_knob(const std::string& name) {
  for (const KnobSpec& k : lesson_knobs())
    if (k.name == name) return &k;
  return nullptr;
}

const std::vector<ViewSpec>& lesson_views() {
  static const std::vector<ViewSpec> views = {
      {"model", {}},
      {"tokens", {"Routing", "Why, co-activation, next token"}},
      {"training", {"Collapse", "Unevenness over time", "Router", "Specialisation and drops"}},
      {"compare", {"Collapse and final figures", "Loss and unevenness"}},
  };
  return views;
}

const std::vector<ChartSpec>& lesson_charts() {
  static const std::vector<ChartSpec> charts = {
      {"params", "model"},           {"real-models", "model"},          {"memory-compute", "model"},
      {"block", "model"},            {"routing-heatmap", "tokens"},     {"token-text", "tokens"},
      {"expert-load", "tokens"},     {"why", "tokens"},                 {"coactivation", "tokens"},
      {"token-layers", "tokens"},    {"next-token", "tokens"},          {"collapse", "training"},
      {"loss", "training"},          {"load-now", "training"},          {"balance", "training"},
      {"entropy", "training"},       {"bias", "training"},              {"saturation", "training"},
      {"specialisation", "training"}, {"specialisation-score", "training"}, {"drop-by-position", "training"},
      {"compare-loss", "compare"},   {"compare-cv", "compare"},         {"compare-collapse", "compare"},
      {"compare-figures", "compare"},
  };
  return charts;
}

const std::vector<MetricSpec>& lesson_metrics() {
  using M = MetricKind;
  static const std::vector<MetricSpec> metrics = {
      // The Training view's run (the last one trained or opened); also run.NAME.*
      {"step", M::Number, "training", "steps trained"},
      {"loss", M::Number, "training", "training loss at the last step"},
      {"val_loss", M::Number, "training", "last validation loss (n/a before the first evaluation)"},
      {"worst_layer", M::Number, "training", "the MoE layer with the most uneven load (its index among MoE layers)"},
      {"worst_cv", M::Number, "training", "coefficient of variation of that layer's load (last 20 steps)"},
      {"busiest_expert", M::Number, "training", "the expert with the most load in that layer"},
      {"busiest_share", M::Number, "training", "its share of the slots (0-1)"},
      {"dead_experts", M::Number, "training", "experts that got no tokens in that layer"},
      {"dropped_share", M::Number, "training", "share of slots dropped by capacity at the last step (0-1)"},
      {"collapsed", M::Number, "training", "1 when the run counts as collapsed (core/lessons.hpp), else 0"},
      {"balanced", M::Number, "training", "1 when every MoE layer counts as balanced, else 0"},
      {"specialisation", M::Number, "training", "best layer's domain specialisation score now (0-1)"},
      {"specialisation_start", M::Number, "training", "that layer's score at the first step"},
      {"specialised", M::Number, "training", "1 when the run counts as specialised, else 0"},
      {"seconds", M::Number, "training", "seconds the run has trained"},
      // The Tokens view: the text generated and the selected token, in the selected layer
      // (the first MoE layer when all are shown).
      {"tokens", M::Number, "tokens", "tokens in the text"},
      {"token_index", M::Number, "tokens", "the selected token's position"},
      {"token_text", M::Text, "tokens", "the selected token as it reads"},
      {"token_expert", M::Number, "tokens", "the selected token's first-choice expert"},
      {"token_gate", M::Number, "tokens", "its gate weight (0-1)"},
      {"token_experts", M::Text, "tokens", "every expert the selected token ran on, \"3, 5\""},
      {"token_top_prob", M::Number, "tokens", "the router's largest probability for the selected token"},
      {"text_busiest_expert", M::Number, "tokens", "the expert with the most slots in the text"},
      {"text_busiest_share", M::Number, "tokens", "its share of the text's slots (0-1)"},
      {"text_experts_used", M::Number, "tokens", "experts that got at least one slot of the text"},
      {"dropped_slots", M::Number, "tokens", "slots dropped by capacity"},
      {"rerouted_slots", M::Number, "tokens", "slots re-routed to another expert"},
      {"top_k_used", M::Number, "tokens", "K used for the text (after the override)"},
      {"next_token", M::Text, "tokens", "the most probable next token"},
      {"next_prob", M::Number, "tokens", "its probability (0-1)"},
      {"model_name", M::Text, "tokens", "the model the Tokens view runs"},
      {"real_model_open", M::Number, "tokens", "1 when that is a checkpoint opened from disk, else 0"},
      // The Model view's lab model.
      {"total_params", M::Number, "model", "parameters stored"},
      {"active_params", M::Number, "model", "parameters one token passes through"},
      {"active_fraction", M::Number, "model", "active / total (0-1)"},
      {"experts", M::Number, "model", "routed experts per MoE layer"},
      {"top_k", M::Number, "model", "experts per token"},
      {"layers", M::Number, "model", "transformer blocks"},
      {"weight_bytes", M::Number, "model", "bytes of the weights in bf16 (2 per parameter)"},
      {"flops_per_token", M::Number, "model", "FLOPs of one token's forward pass (context 1024)"},
      // The published model chosen to compare (real_model action).
      {"real_name", M::Text, "real", "its name"},
      {"real_total_params", M::Number, "real", "its parameters stored"},
      {"real_active_params", M::Number, "real", "its parameters per token"},
      {"real_experts", M::Number, "real", "its routed experts per layer"},
      {"real_top_k", M::Number, "real", "its experts per token"},
  };
  return metrics;
}

const MetricSpec* find_metric(const std::string& name) {
  for (const MetricSpec& m : lesson_metrics())
    if (m.name == name) return &m;
  return nullptr;
}

namespace {

// The placeholder body "name" or "name:spec" → the formatted value.
std::string format_value(const MetricValue* v, const std::string& spec, const std::string& name) {
  int decimals = -1;
  bool percent = false, count = false;
  size_t i = 0;
  if (spec == "n") {
    count = true;
    i = spec.size();
  }
  if (i < spec.size() && spec[i] == '.') {
    ++i;
    if (i >= spec.size() || spec[i] < '0' || spec[i] > '6')
      fail("{" + name + ":" + spec + "}", "bad format: after '.' comes a digit 0-6");
    decimals = spec[i++] - '0';
  }
  if (i < spec.size() && spec[i] == '%') {
    percent = true;
    ++i;
  }
  if (i != spec.size()) fail("{" + name + ":" + spec + "}", "bad format (use .N, %, .N% or n)");
  if (!v) return "n/a";
  if (v->is_text) return v->text;
  double x = v->number;
  if (!std::isfinite(x)) return "n/a";
  char buf[64];
  if (count) return human_count(x);
  if (percent) {
    std::snprintf(buf, sizeof buf, "%.*f%%", decimals < 0 ? 0 : decimals, 100 * x);
    return buf;
  }
  if (decimals >= 0) {
    std::snprintf(buf, sizeof buf, "%.*f", decimals, x);
    return buf;
  }
  if (x == std::round(x) && std::fabs(x) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", x);
    return buf;
  }
  std::snprintf(buf, sizeof buf, "%.3g", x);
  return buf;
}

}  // namespace

std::string format_lesson_text(const std::string& text, const LessonMetrics& metrics) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '{' && i + 1 < text.size() && text[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (c == '}' && i + 1 < text.size() && text[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (c == '}') {
      fail("text", "a '}' without its '{' (write }} for a brace)");
    } else if (c == '{') {
      const size_t close = text.find('}', i + 1);
      if (close == std::string::npos) fail("text", "a '{' without its '}' (write {{ for a brace)");
      const std::string body = text.substr(i + 1, close - i - 1);
      const size_t colon = body.find(':');
      const std::string name = body.substr(0, colon);
      const std::string spec = colon == std::string::npos ? "" : body.substr(colon + 1);
      if (name.empty()) fail("{" + body + "}", "a placeholder needs a metric name");
      for (char ch : name)
        if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' || ch == '-'))
          fail("{" + body + "}", "a metric name has letters, digits, '_', '.' and '-' only");
      const auto it = metrics.find(name);
      out += format_value(it == metrics.end() ? nullptr : &it->second, spec, name);
      i = close;
    } else {
      out += c;
    }
  }
  return out;
}

std::string describe_check(const LessonCheck& c) {
  std::string s = c.metric;
  s += ' ';
  s += c.op;
  s += ' ';
  if (!c.than.empty()) {
    s += c.than;
  } else {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", c.value);
    s += buf;
  }
  if (c.tolerance > 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " (± %g)", c.tolerance);
    s += buf;
  }
  return s;
}

CheckResult evaluate_check(const LessonCheck& c, const LessonMetrics& metrics) {
  CheckResult r;
  auto number = [&](const std::string& name, double* out) {
    const auto it = metrics.find(name);
    if (it == metrics.end() || it->second.is_text || !std::isfinite(it->second.number)) return false;
    *out = it->second.number;
    return true;
  };
  double a = 0, b = c.value;
  r.measured = number(c.metric, &a) && (c.than.empty() || number(c.than, &b)) && std::isfinite(b);
  if (!r.measured) {
    r.held = false;
    r.message = "Not measured this time (" + describe_check(c) + "): the lab has no value for it yet.";
    return r;
  }
  const double tol = c.tolerance;
  if (c.op == ">=") r.held = a >= b;
  else if (c.op == ">") r.held = a > b;
  else if (c.op == "<=") r.held = a <= b;
  else if (c.op == "<") r.held = a < b;
  else if (c.op == "==") r.held = std::fabs(a - b) <= tol;
  else if (c.op == "!=") r.held = std::fabs(a - b) > tol;
  else fail(c.op, "unknown comparison (use >= > <= < == !=)");
  const std::string& said = r.held ? c.holds : c.fails;
  if (!said.empty()) {
    r.message = format_lesson_text(said, metrics);
  } else {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3g", a);
    // The verdict ("Held:", "Did not hold this time:") is the caller's to add, once.
    r.message = describe_check(c);
    r.message += " (measured ";
    r.message += buf;
    r.message += ")";
  }
  return r;
}

}  // namespace moelab
