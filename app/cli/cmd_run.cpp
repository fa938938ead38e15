// info, forward, generate, demo: run a model token by token with its routing exposed.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "error.hpp"
#include "files.hpp"
#include "generate.hpp"
#include "hf_tokenizer.hpp"
#include "memory_plan.hpp"
#include "params.hpp"
#include "safetensors.hpp"
#include "tokenizer.hpp"
#include "weights_check.hpp"

namespace moelab::cli {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct RunOptions {
  std::string model = "builtin";
  std::string device = "auto";
  std::string precision = "fp32";
  std::string tokens;
  std::string prompt;
  std::string token_ids;
  std::string trace;
  int64_t n_new = 32;
  float temperature = 0.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  bool json_out = false;
  bool show_routing = false;
  int64_t context = 0;      // info: the context the memory is planned for (0: a default)
  int64_t plan_tokens = 0;  // info: tokens of the forward counted (0: default_plan_tokens)
};
RunOptions g;

// CLI::Range lets NaN through (every comparison with NaN is false); this range does not.
CLI::Validator number_in(double lo, double hi) {
  char range_buf[64];
  std::snprintf(range_buf, sizeof range_buf, "[%g - %g]", lo, hi);
  const std::string range = range_buf;
  return CLI::Validator(
      [lo, hi, range](std::string& text) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v) || !(v >= lo && v <= hi)) return "Value " + text + " not in " + range;
        return {};
      },
      "FLOAT in " + range);
}

// "L0 e3:.61 e1:.39 | L1 ..." — the routing of one token position in every MoE layer.
std::string routing_line(const RoutingTrace& trace, int64_t pos) {
  std::string s;
  char buf[32];
  for (const auto& L : trace.layers()) {
    if (pos >= L.tokens()) continue;
    s += (s.empty() ? "" : " | ") + std::string("L") + std::to_string(L.layer);
    for (int64_t k = 0; k < L.top_k; ++k) {
      std::snprintf(buf, sizeof buf, " e%d:%.2f", L.ids[size_t(pos * L.top_k + k)], L.weights[size_t(pos * L.top_k + k)]);
      s += buf;
    }
  }
  return s;
}

// The model's tokenizer: its folder's tokenizer.json, or the byte tokenizer of lab models.
std::shared_ptr<const TextTokenizer> model_tokenizer(const Model& m) {
  std::error_code ec;
  const std::string dir = g.model.empty() || g.model == "builtin" ? builtin_model_dir() : g.model;
  const std::string folder = std::filesystem::is_directory(dir, ec) ? dir : std::filesystem::path(dir).parent_path().string();
  return TextTokenizer::for_model(folder, m.config());
}

std::vector<int32_t> prompt_ids(const TextTokenizer* tok) {
  if (!g.token_ids.empty()) return parse_token_ids(g.token_ids, "--token-ids");
  if (!tok)
    fail(g.model, "this model has no tokenizer.json; put the model's tokenizer.json in its folder, "
                  "or pass --token-ids instead of --prompt");
  if (auto bad = invalid_utf8_offset(g.prompt)) fail("--prompt", "not valid UTF-8 at byte " + std::to_string(*bad));
  return tok->encode_prompt(g.prompt);
}

void run_generate(bool demo) {
  Model m = open_model(g.model, cli_backend(g.device, g.precision));
  if (demo && g.prompt.empty()) g.prompt = "the quiet river ";
  const auto tok = model_tokenizer(m);
  const std::vector<int32_t> prompt = prompt_ids(tok.get());
  RoutingTrace trace;
  SamplingOptions opt{g.temperature, g.top_p, g.seed};
  if (demo) {
    std::fprintf(stderr, "%s: %d layers, %d experts, top-%d; %s sampling (seed %llu)\n",
                 g.model == "builtin" ? "built-in lab model" : g.model.c_str(), int(m.config().num_layers),
                 int(m.config().num_experts), int(m.config().top_k), opt.temperature > 0 ? "temperature" : "greedy",
                 (unsigned long long)opt.seed);
    std::fprintf(stderr, "each line: the token, then per MoE layer the chosen experts and their gate weights\n");
  }
  int64_t pos = int64_t(prompt.size()) - 1;
  std::vector<int32_t> generated;
  std::string shown;  // the text printed so far (streaming: a character split over tokens waits)
  auto on_token = [&](int32_t id) {
    generated.push_back(id);
    if (demo || g.show_routing) {
      // The routing shown is the one that produced this token: the previous position's.
      const std::string label = tok ? "'" + tok->label(id) + "'" : std::to_string(id);
      std::printf("%-8s %s\n", label.c_str(), routing_line(trace, pos).c_str());
    } else if (tok) {
      const std::string text = tok->decode(generated);
      if (text.size() >= shown.size() && text.compare(0, shown.size(), shown) == 0 &&
          !(text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0)) {
        std::fputs(text.c_str() + shown.size(), stdout);
        shown = text;
      }
    } else {
      std::printf("%d ", id);
    }
    std::fflush(stdout);
    ++pos;
  };
  const std::optional<int32_t> eos = tok ? tok->eos() : std::nullopt;
  const std::vector<int32_t> out = generate(m, prompt, g.n_new, opt, &trace, on_token, eos ? *eos : -1);
  if (!demo && !g.show_routing && tok) {
    const std::string text = tok->decode(out);
    if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) std::fputs(text.c_str() + shown.size(), stdout);
  }
  if (!demo && !g.show_routing) std::printf("\n");
  if (demo && tok) std::printf("\ntext: %s%s\n", g.prompt.c_str(), tok->decode(out).c_str());
  if (!g.trace.empty()) {
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), out.begin(), out.end());
    json labels = json::array();
    for (int32_t id : all) labels.push_back(tok ? tok->label(id) : std::to_string(id));
    json j = {{"model", g.model},
              {"architecture", m.config().architecture},
              {"tokenizer", tok ? tok->describe() : "none (token ids)"},
              {"tokens", all},
              {"token_text", labels},
              {"prompt_length", prompt.size()},
              {"sampling", {{"temperature", opt.temperature}, {"top_p", opt.top_p}, {"seed", opt.seed}}},
              {"routing", routing_to_json(trace)}};
    if (tok && tok->hf()) {
      json pieces = json::array();
      for (int32_t id : all) pieces.push_back(tok->piece(id));
      j["token_pieces"] = pieces;
    }
    write_json_file(g.trace, j);
    std::fprintf(stderr, "routing trace of %zu tokens written to %s\n", all.size(), g.trace.c_str());
  }
}

void run_forward() {
  Model m = open_model(g.model, cli_backend(g.device, g.precision));
  const std::vector<int32_t> ids = parse_token_ids(g.tokens, "--tokens");
  RoutingTrace trace;
  const std::vector<float> logits = m.forward_full(ids, &trace);
  const int64_t V = m.config().vocab_size, T = int64_t(ids.size());
  if (g.json_out) {
    json lj = json::array();
    for (int64_t t = 0; t < T; ++t) lj.push_back(std::vector<float>(logits.begin() + t * V, logits.begin() + (t + 1) * V));
    std::cout << json{{"logits", lj}, {"routing", routing_to_json(trace)}}.dump() << "\n";
    return;
  }
  for (int64_t t = 0; t < T; ++t) {
    const float* row = logits.data() + t * V;
    const int64_t best = std::max_element(row, row + V) - row;
    std::printf("pos %-3d token %-6d next %-6d (logit %.3f)  %s\n", int(t), ids[size_t(t)], int(best), row[best],
                routing_line(trace, t).c_str());
  }
}

// "model.safetensors, 291 tensors, bf16, 13.8 GB"
std::string weights_summary(const WeightsCheck& w) {
  std::string s = w.files.size() == 1 ? w.files[0] : std::to_string(w.files.size()) + " shards";
  s += ", " + std::to_string(w.tensors) + " tensors, ";
  std::string dtypes;
  for (const auto& [name, n] : w.dtypes)
    dtypes += (dtypes.empty() ? "" : " + ") + name + (w.dtypes.size() > 1 ? " (" + std::to_string(n) + ")" : "");
  return s + (dtypes.empty() ? "no dtype" : dtypes) + ", " + human_bytes(double(w.bytes));
}

// The memory plan of a runnable model on the CPU: the checkpoint's own tensors when they match the
// config (what Model::load will hold), else every tensor in config.json's torch_dtype.
MemoryPlan info_memory_plan(const ModelConfig& c, const std::string& dir, const WeightsCheck& w, int64_t context,
                            int64_t tokens, std::string* basis) {
  if (w.matches()) {
    const Checkpoint ck(dir);  // headers only
    const std::vector<TensorSpec> specs = tensor_specs(c);
    std::vector<const TensorView*> views;
    for (const TensorSpec& s : specs) views.push_back(ck.find(s.name));
    *basis = "the checkpoint's tensors";
    return memory_plan(c, plan_stored_weights(c, specs, views, true, 4, dir), context, tokens, 4);
  }
  DType stored = DType::F32;
  try {
    stored = dtype_from_torch_name(c.dtype, "config.json");
  } catch (const Error&) {
  }
  if (!dtype_is_float(stored)) stored = DType::F32;
  *basis = std::string("config.json's torch_dtype, ") + c.dtype;
  return memory_plan(c, stored, context, tokens, true, 4);
}

// The memory table: what a model needs for a context, and whether this machine has it.
void print_memory(const MemoryPlan& p, const std::string& basis) {
  const MemoryBudget b = memory_budget();
  const auto hb = [](int64_t v) { return human_bytes(double(v)); };
  std::printf("memory            for a context of %lld tokens and a forward of %lld (CPU; from %s)\n",
              static_cast<long long>(p.context), static_cast<long long>(p.tokens), basis.c_str());
  std::string dtypes;
  for (const auto& [name, bytes] : p.mapped_by_dtype) dtypes += (dtypes.empty() ? "" : " + ") + name;
  std::printf("  weights as stored   %10s  %s\n", hb(p.mapped).c_str(),
              p.mapped > 0 ? (dtypes + ", read in place from the memory map").c_str() : "none (fp32 checkpoint)");
  std::printf("  weights as fp32     %10s  %s\n", hb(p.owned).c_str(),
              p.mapped > 0 ? "norms, routers, biases and tensors the CPU does not read as stored"
                           : "every weight, copied from the checkpoint");
  std::printf("  KV cache            %10s  keys and values, %lld tokens\n", hb(p.kv_cache).c_str(),
              static_cast<long long>(p.context));
  std::printf("  activations         %10s  one forward of %lld tokens, at most\n", hb(p.activations).c_str(),
              static_cast<long long>(p.tokens));
  std::printf("  total               %10s\n", hb(p.total()).c_str());
  std::printf("  all fp32            %10s  every weight widened (training, load with widen)\n",
              hb(p.widened_total()).c_str());
  std::string verdict = p.total() <= b.usable ? "fits, with " + hb(b.usable - p.total()) + " to spare"
                                              : "does not fit: needs " + hb(p.total()) + ", this machine can give " + hb(b.usable);
  std::printf("  this machine        %10s  %s, less a reserve: %s usable; %s\n", hb(b.total).c_str(), b.source.c_str(),
              hb(b.usable).c_str(), verdict.c_str());
}

nlohmann::json memory_json(const MemoryPlan& p, const std::string& basis) {
  const MemoryBudget b = memory_budget();
  return {{"context", p.context},   {"tokens", p.tokens},           {"basis", basis},
          {"mapped", p.mapped},     {"mapped_by_dtype", p.mapped_by_dtype},
          {"owned", p.owned},       {"kv_cache", p.kv_cache},       {"activations", p.activations},
          {"total", p.total()},     {"fp32_weights", p.fp32_weights}, {"fp32_total", p.widened_total()},
          {"budget", {{"total", b.total}, {"usable", b.usable}, {"source", b.source}}},
          {"fits", p.total() <= b.usable}};
}

// Describe the config, then compare the checkpoint's safetensors headers with it (no weights are
// read): only weights that match the config "run in the lab".
void run_info() {
  const std::string model = g.model == "builtin" ? builtin_model_dir() : g.model;
  const ModelConfig c = load_config(model);
  const std::string dir = fs::path(config_path_of(model)).parent_path().string();
  WeightsCheck w;
  std::string unreadable;
  try {
    w = check_weights(c, dir.empty() ? "." : dir);
  } catch (const Error& e) {
    unreadable = e.what();
  }
  const char* status = !c.runnable()       ? "count only"
                       : !unreadable.empty() ? "weights unreadable: counts only"
                       : !w.present          ? "config only: counts, no forward"
                       : !w.matches()        ? "weights do not match the config: counts only"
                                             : "runs in the lab";
  const ParamCount p = count_params(c);
  // The context planned for: --context, else 4096 or less when the model's positions (or its
  // sliding window, which the lab runs no further than) are fewer.
  int64_t window = c.max_positions;
  if (c.sliding_window > 0) window = std::min(window, c.sliding_window);
  const int64_t context = g.context > 0 ? g.context : std::min<int64_t>(4096, window);
  if (c.runnable() && context > window)
    fail(config_path_of(model), "--context " + std::to_string(context) + " is more than the " + std::to_string(window) +
                                    " positions this model runs (" +
                                    (window == c.max_positions ? "max_position_embeddings" : "sliding_window") + ")");
  const int64_t tokens = g.plan_tokens > 0 ? std::min(g.plan_tokens, context) : default_plan_tokens(context);
  MemoryPlan plan;
  std::string basis;
  if (c.runnable() && unreadable.empty()) plan = info_memory_plan(c, dir.empty() ? "." : dir, w, context, tokens, &basis);
  if (g.json_out) {
    nlohmann::json j = {{"architecture", c.architecture}, {"status", status}, {"total_params", p.total}};
    if (!unreadable.empty()) j["error"] = unreadable;
    if (c.runnable() && unreadable.empty()) j["memory"] = memory_json(plan, basis);
    std::cout << j.dump() << "\n";
    if (!unreadable.empty()) {
      std::fprintf(stderr, "moelab-cli: %s\n", unreadable.c_str());
      set_exit_code(1);
    }
    return;
  }
  std::printf("architecture      %s (%s)\n", c.architecture.c_str(), status);
  std::printf("layers            %d (%d MoE, %d dense)\n", int(c.num_layers), int(c.num_moe_layers()),
              int(c.num_layers - c.num_moe_layers()));
  std::printf("hidden / heads    %d / %d query, %d key-value, head dim %d\n", int(c.hidden_size), int(c.num_heads),
              int(c.num_kv_heads), int(c.head_dim));
  std::printf("experts           %d routed, top-%d%s, expert hidden %d%s\n", int(c.num_experts), int(c.top_k),
              c.norm_topk_prob ? " (renormalised)" : "", int(c.expert_ffn_size),
              c.shared_ffn_size ? (", shared expert hidden " + std::to_string(c.shared_ffn_size)).c_str() : "");
  std::printf("vocabulary        %d\n", int(c.vocab_size));
  std::printf("dtype             %s\n", c.dtype.c_str());
  std::printf("parameters        %s total, %s active per token (%.1f%%)\n", human_count(double(p.total)).c_str(),
              human_count(double(p.active)).c_str(), 100.0 * double(p.active) / double(p.total));
  if (!c.runnable())
    std::printf("memory (weights)  %s as fp32, %s as bf16\n", human_bytes(double(p.total) * 4).c_str(),
                human_bytes(double(p.total) * 2).c_str());
  else if (unreadable.empty())
    print_memory(plan, basis);
  if (!unreadable.empty()) {
    // The description above stands; the unreadable file is an error: one line, exit 1.
    std::printf("weights           unreadable (%s)\n", unreadable.c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "moelab-cli: %s\n", unreadable.c_str());
    set_exit_code(1);
    return;
  }
  if (!w.present) {
    std::printf("weights           none (config only: counts, no forward)\n");
    return;
  }
  if (w.matches()) {
    std::printf("weights           %s — match the config\n", weights_summary(w).c_str());
  } else {
    std::printf("weights           %s — %lld difference%s from the config:\n", weights_summary(w).c_str(),
                static_cast<long long>(w.problem_count), w.problem_count == 1 ? "" : "s");
    const size_t shown = std::min<size_t>(w.problems.size(), 8);
    for (size_t i = 0; i < shown; ++i) std::printf("  %s\n", w.problems[i].c_str());
    if (w.problem_count > int64_t(shown))
      std::printf("  … and %lld more\n", static_cast<long long>(w.problem_count - int64_t(shown)));
  }
  if (w.other_dtype > 0)
    std::printf("  %lld tensor%s stored in another dtype than %s (e.g. %s); the lab converts them as it loads\n",
                static_cast<long long>(w.other_dtype), w.other_dtype == 1 ? "" : "s", c.dtype.c_str(),
                w.other_dtype_example.c_str());
}

}  // namespace

void add_run_commands(CLI::App& app) {
  auto* info = app.add_subcommand("info", "Describe a model: architecture, sizes, parameters, memory");
  info->add_option("--model", g.model, "Model directory or config.json")->required();
  info->add_option("--context", g.context, "Plan the memory for this many tokens of context (default 4096, or the model's maximum)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  info->add_option("--forward-tokens", g.plan_tokens, "Count the activations of a forward of this many tokens (default: 512, or the context)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  info->add_flag("--json", g.json_out, "JSON on stdout: architecture, status, parameters and the memory plan");
  info->callback(run_info);

  auto* fwd = app.add_subcommand("forward", "Run a full forward pass and print logits and routing");
  fwd->add_option("--model", g.model, "Model directory (or 'builtin')")->required();
  fwd->add_option("--tokens", g.tokens, "Comma-separated token ids, e.g. 3,1,4,1")->required();
  add_device_options(fwd, g.device, g.precision);
  fwd->add_flag("--json", g.json_out, "JSON on stdout: {logits, routing}");
  fwd->callback(run_forward);

  auto* gen = app.add_subcommand("generate", "Generate token by token (greedy or sampled) with the routing trace");
  gen->add_option("--model", g.model, "Model directory, or 'builtin' (default)");
  auto* p = gen->add_option("--prompt", g.prompt, "Prompt text (through the model folder's tokenizer.json, or the lab's byte tokenizer)");
  gen->add_option("--token-ids", g.token_ids, "Prompt as token ids, for models without a lab tokenizer")->excludes(p);
  gen->add_option("--tokens", g.n_new, "How many tokens to generate")->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  gen->add_option("--temperature", g.temperature, "0 = greedy")->check(number_in(0, 100));
  gen->add_option("--top-p", g.top_p, "Nucleus sampling mass")->check(number_in(0, 1));
  gen->add_option("--seed", g.seed, "Sampling seed")->check(kSeed);
  gen->add_option("--trace", g.trace, "Write the routing of every prompt and generated token to this JSON file");
  add_device_options(gen, g.device, g.precision);
  gen->add_flag("--show-routing", g.show_routing, "Print each token with its routing");
  gen->callback([] { run_generate(false); });

  auto* demo = app.add_subcommand("demo", "Generate from the built-in model, printing each token's routing");
  demo->add_option("--prompt", g.prompt, "Prompt text");
  demo->add_option("--tokens", g.n_new, "How many tokens to generate")->check(CLI::Range(int64_t(0), int64_t(4096)));
  demo->add_option("--temperature", g.temperature, "0 = greedy")->check(number_in(0, 100));
  demo->add_option("--seed", g.seed, "Sampling seed")->check(kSeed);
  demo->callback([] {
    g.n_new = std::min<int64_t>(g.n_new, 64);
    run_generate(true);
  });
}

}  // namespace moelab::cli
