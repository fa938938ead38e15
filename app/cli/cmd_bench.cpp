// moelab-cli bench: prefill (a 128-token forward) and token-by-token decode of a fixed lab model
// (4 layers, width 256, 8 experts of 512, top-2), then the same model in eager PyTorch
// (tests/reference/bench_peer.py) in the same run, with ratios and each figure as a fraction of
// this machine's measured limits (memory bandwidth for decode, GEMM peak for prefill).
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include "background_load.hpp"
#include "bench.hpp"
#include "commands.hpp"
#include "common.hpp"
#include "error.hpp"
#include "model.hpp"
#include "params.hpp"
#include "random.hpp"
#include "corpus.hpp"
#include "trainer.hpp"

namespace moelab::cli {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

BenchOptions& o = bench_options();

ModelConfig bench_config() {
  return bench_model_config(o.layers, o.hidden, o.heads, o.kv_heads, o.experts, o.expert_hidden, o.top_k,
                            o.prefill + o.prompt + o.decode);
}

// Sustained read bandwidth over a working set of `bytes` on every thread (bytes/s). With a
// working set the size of the model's weights this is the limit decode actually meets (caches
// included); with 512 MiB it is main memory.
double measure_bandwidth(size_t bytes) {
  const size_t n = std::max<size_t>(bytes / 4, 1 << 16) / 64 * 64;
  std::unique_ptr<float[]> a(new float[n]);
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) a[i] = float(i & 1023);
  const int reps = int(std::max<size_t>(1, (size_t(1) << 30) / (n * 4)));
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    float total = 0;
    const auto t = Clock::now();
    for (int k = 0; k < reps; ++k) {
      float sum = 0;
#pragma omp parallel reduction(+ : sum)
      {  // each thread sums its contiguous share with Eigen's unrolled vector reduction
        const size_t nt = size_t(omp_get_num_threads()), id = size_t(omp_get_thread_num());
        const size_t chunk = n / nt, begin = id * chunk, len = id + 1 == nt ? n - begin : chunk;
        sum += Eigen::Map<const Eigen::VectorXf>(a.get() + begin, Eigen::Index(len)).sum();
      }
      total += sum;
    }
    const double s = seconds_since(t);
    if (total < 0) std::printf("%f", double(total));  // keep the loop
    best = std::max(best, double(n) * 4 * reps / s);
  }
  return best;
}

// GEMM peak: a 1024³ fp32 Eigen product on all threads (FLOP/s).
double measure_gemm_peak() {
  const int n = 1024;
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  c.noalias() = a * b;
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    const auto t = Clock::now();
    c.noalias() = a * b;
    best = std::max(best, 2.0 * n * n * double(n) / seconds_since(t));
  }
  return best;
}

nlohmann::json run_peer(const std::string& env, int threads) {
  const std::string train_args = o.train ? " --train --batch " + std::to_string(o.train_batch) + " --seq " +
                                               std::to_string(o.train_seq) + " --train-steps " + std::to_string(o.train_steps)
                                         : "";
  return run_peer_script(env, train_args + " --layers " + std::to_string(o.layers) + " --hidden " +
                                  std::to_string(o.hidden) + " --heads " + std::to_string(o.heads) + " --kv-heads " +
                                  std::to_string(o.kv_heads) + " --experts " + std::to_string(o.experts) +
                                  " --expert-hidden " + std::to_string(o.expert_hidden) + " --topk " +
                                  std::to_string(o.top_k) + " --prefill " + std::to_string(o.prefill) + " --decode " +
                                  std::to_string(o.decode) + " --prompt " + std::to_string(o.prompt) + " --threads " +
                                  std::to_string(threads));
}

// The best PyTorch result over its thread settings for one metric.
nlohmann::json best_peer(const char* key) {
  nlohmann::json best = nullptr;
  std::error_code ec;
  if (o.no_peer) return best;
  if (!std::filesystem::exists(o.peer, ec)) {
    std::fprintf(stderr, "bench: peer script %s not found, PyTorch comparison skipped\n", o.peer.c_str());
    return best;
  }
  // OpenBLAS's threads can fight torch's on 2 cores: try 1 and 2 threads, and
  // OPENBLAS_NUM_THREADS=1 with 2 torch threads; keep the fastest.
  for (auto [env, th] : std::array<std::pair<const char*, int>, 3>{
           {{"OPENBLAS_NUM_THREADS=1", 1}, {"", 2}, {"OPENBLAS_NUM_THREADS=1", 2}}}) {
    nlohmann::json r = run_peer(env, th);
    if (r.is_null() || !r.contains(key)) continue;
    r["setting"] = std::string(env) + (env[0] ? " " : "") + "torch threads " + std::to_string(th);
    if (best.is_null() || r[key].get<double>() > best[key].get<double>()) best = r;
  }
  if (best.is_null()) std::fprintf(stderr, "bench: the PyTorch peer did not run (is python3-torch installed?)\n");
  return best;
}

// One training measurement (ours and the peer's) as JSON.
nlohmann::json measure_train() {
  const ModelConfig c = bench_config();
  Model m = Model::random(c, 1, make_eigen_backend(), 0.05f);
  const double median = median_train_step_seconds(m, o);
  const double tps = double(o.train_batch * o.train_seq) / median;
  const double peak = measure_gemm_peak();
  // A training step costs about 3 forward passes (forward, and backward for inputs and weights).
  const double flops = 3.0 * forward_flops_per_token(c, o.train_seq / 2) * tps;
  const nlohmann::json peer = best_peer("train_tokens_per_s");
  nlohmann::json j = {{"train_tokens_per_s", tps},
                      {"train_step_ms", median * 1e3},
                      {"batch", o.train_batch},
                      {"seq", o.train_seq},
                      {"threads", omp_get_max_threads()},
                      {"gflop_s", flops / 1e9},
                      {"gemm_peak_gflop_s", peak / 1e9},
                      {"fraction_of_gemm_peak", flops / peak}};
  if (!peer.is_null()) {
    j["pytorch"] = peer;
    j["train_ratio"] = tps / peer["train_tokens_per_s"].get<double>();
  }
  return j;
}

void print_train(const nlohmann::json& j) {
  const ModelConfig c = bench_config();
  std::printf("training: %d layers, width %d, %d experts of %d, top-2, batch %d x %d tokens, AdamW, aux loss, clip\n",
              int(c.num_layers), int(c.hidden_size), int(c.num_experts), int(c.expert_ffn_size), int(o.train_batch),
              int(o.train_seq));
  std::printf("moelab   %8.0f tokens/s  (%.1f ms/step, %.1f GFLOP/s = %.0f%% of the %.0f GFLOP/s GEMM peak, %d threads)\n",
              j["train_tokens_per_s"].get<double>(), j["train_step_ms"].get<double>(), j["gflop_s"].get<double>(),
              100 * j["fraction_of_gemm_peak"].get<double>(), j["gemm_peak_gflop_s"].get<double>(),
              j["threads"].get<int>());
  if (j.contains("pytorch"))
    std::printf("pytorch  %8.0f tokens/s  (%s, %s)\nratio    %8.2fx\n", j["pytorch"]["train_tokens_per_s"].get<double>(),
                j["pytorch"]["setting"].get<std::string>().c_str(), j["pytorch"]["torch_version"].get<std::string>().c_str(),
                j["train_ratio"].get<double>());
}

// One inference measurement (prefill and decode, ours and the peer's) as JSON.
nlohmann::json measure_inference() {
  const ModelConfig c = bench_config();
  Model m = Model::random(c, 1, make_eigen_backend(), 0.05f);
  Rng rng(7);
  std::vector<int32_t> tokens(size_t(o.prefill + o.prompt));
  for (auto& t : tokens) t = int32_t(rng.next_u64() % 256);
  const std::vector<int32_t> prefill_tokens(tokens.begin(), tokens.begin() + o.prefill);

  // Prefill: best of `repeats` after a warm-up.
  m.forward_full(prefill_tokens);
  double prefill_best = 1e30;
  for (int64_t r = 0; r < o.repeats; ++r) {
    const auto t = Clock::now();
    m.forward_full(prefill_tokens);
    prefill_best = std::min(prefill_best, seconds_since(t));
  }
  const double prefill_tps = double(o.prefill) / prefill_best;

  // Decode: a short prompt, then `decode` tokens one at a time (greedy), best of 3.
  double decode_best = 1e30;
  for (int r = 0; r < 3; ++r) {
    KvCache cache = m.new_cache(o.prompt + o.decode + 1);
    std::vector<float> logits = m.forward({tokens.begin(), tokens.begin() + o.prompt}, cache);
    const auto t = Clock::now();
    for (int64_t i = 0; i < o.decode; ++i) {
      const float* last = logits.data() + logits.size() - size_t(c.vocab_size);
      const int32_t next = int32_t(std::max_element(last, last + c.vocab_size) - last);
      logits = m.forward({next}, cache);
    }
    decode_best = std::min(decode_best, seconds_since(t));
  }
  const double decode_tps = double(o.decode) / decode_best;

  const ParamCount p = count_params(c);
  const double dram = measure_bandwidth(size_t(512) << 20), peak = measure_gemm_peak();
  const double bandwidth = measure_bandwidth(size_t(p.total) * 4);
  // Bytes a decoded token must read: every active weight once (one embedding row only).
  const double active_bytes =
      4.0 * double(p.active - p.active_by[size_t(Component::Embeddings)] + c.hidden_size);
  const double decode_fraction = active_bytes * decode_tps / bandwidth;
  const double flops_per_token = forward_flops_per_token(c, o.prefill / 2);
  const double prefill_fraction = flops_per_token * prefill_tps / peak;

  nlohmann::json peer = nullptr;
  if (!o.no_peer) {
    std::error_code ec;
    if (!std::filesystem::exists(o.peer, ec)) {
      std::fprintf(stderr, "bench: peer script %s not found, PyTorch comparison skipped\n", o.peer.c_str());
    } else {
      // The peer at its best on this machine: OpenBLAS's threads can fight torch's, so try
      // 1 and 2 threads and OPENBLAS_NUM_THREADS=1 with 2 torch threads; keep the fastest of each.
      for (auto [env, th] : std::array<std::pair<const char*, int>, 3>{
               {{"OPENBLAS_NUM_THREADS=1", 1}, {"", 2}, {"OPENBLAS_NUM_THREADS=1", 2}}}) {
        nlohmann::json r = run_peer(env, th);
        if (r.is_null()) continue;
        r["setting"] = std::string(env) + (env[0] ? " " : "") + "torch threads " + std::to_string(th);
        if (peer.is_null()) {
          peer = {{"prefill", r}, {"decode", r}};
          continue;
        }
        if (r["prefill_tokens_per_s"].get<double>() > peer["prefill"]["prefill_tokens_per_s"].get<double>())
          peer["prefill"] = r;
        if (r["decode_tokens_per_s"].get<double>() > peer["decode"]["decode_tokens_per_s"].get<double>())
          peer["decode"] = r;
      }
      if (peer.is_null()) std::fprintf(stderr, "bench: the PyTorch peer did not run (is python3-torch installed?)\n");
    }
  }

  nlohmann::json j = {
      {"model", {{"layers", c.num_layers}, {"hidden", c.hidden_size}, {"experts", c.num_experts},
                 {"expert_hidden", c.expert_ffn_size}, {"top_k", c.top_k}, {"total_params", p.total},
                 {"active_params", p.active}}},
      {"threads", omp_get_max_threads()},
      {"prefill_tokens_per_s", prefill_tps},
      {"decode_tokens_per_s", decode_tps},
      {"decode_us_per_token", 1e6 / decode_tps},
      {"memory_bandwidth_gb_s", dram / 1e9},
      {"bandwidth_at_model_size_gb_s", bandwidth / 1e9},
      {"gemm_peak_gflop_s", peak / 1e9},
      {"decode_fraction_of_bandwidth", decode_fraction},
      {"prefill_fraction_of_gemm_peak", prefill_fraction}};
  if (!peer.is_null()) {
    const double pp = peer["prefill"]["prefill_tokens_per_s"], pd = peer["decode"]["decode_tokens_per_s"];
    j["pytorch"] = {{"prefill_tokens_per_s", pp},
                    {"decode_tokens_per_s", pd},
                    {"prefill_setting", peer["prefill"]["setting"]},
                    {"decode_setting", peer["decode"]["setting"]},
                    {"blas", peer["prefill"]["blas"]},
                    {"torch_version", peer["prefill"]["torch_version"]}};
    j["prefill_ratio"] = prefill_tps / pp;
    j["decode_ratio"] = decode_tps / pd;
  }
  return j;
}

void print_inference(const nlohmann::json& j) {
  const ModelConfig c = bench_config();
  const ParamCount p = count_params(c);
  const nlohmann::json& peer = j.contains("pytorch") ? j["pytorch"] : nlohmann::json(nullptr);
  const double dram = j["memory_bandwidth_gb_s"].get<double>() * 1e9, bandwidth = j["bandwidth_at_model_size_gb_s"].get<double>() * 1e9,
               peak = j["gemm_peak_gflop_s"].get<double>() * 1e9;
  std::printf("model: %d layers, width %d, %d experts of %d, top-%d (%s params, %s active), fp32, %d threads\n",
              int(c.num_layers), int(c.hidden_size), int(c.num_experts), int(c.expert_ffn_size), int(c.top_k),
              human_count(double(p.total)).c_str(), human_count(double(p.active)).c_str(), j["threads"].get<int>());
  std::printf("machine (measured now): %.1f GB/s main-memory read, %.1f GB/s over a %s working set (the model's\n"
              "  weights, caches included), %.1f GFLOP/s fp32 GEMM peak\n",
              dram / 1e9, bandwidth / 1e9, human_bytes(double(p.total) * 4).c_str(), peak / 1e9);
  std::printf("%-8s %14s %14s %8s  %s\n", "", "moelab tok/s", "pytorch tok/s", "ratio", "fraction of machine limit");
  auto row = [&](const char* name, const char* key, const char* frac, const char* limit) {
    const double ours = j[key], f = j[frac];
    if (!peer.is_null()) {
      const double theirs = peer[key];
      std::printf("%-8s %14.0f %14.0f %7.2fx  %.0f%% of %s\n", name, ours, theirs, ours / theirs, 100 * f, limit);
    } else {
      std::printf("%-8s %14.0f %14s %8s  %.0f%% of %s\n", name, ours, "-", "-", 100 * f, limit);
    }
  };
  row("prefill", "prefill_tokens_per_s", "prefill_fraction_of_gemm_peak", "GEMM peak");
  row("decode", "decode_tokens_per_s", "decode_fraction_of_bandwidth", "read bandwidth at model size");
  if (!peer.is_null())
    std::printf("pytorch %s, BLAS: %s; best settings: prefill %s, decode %s\n",
                peer["torch_version"].get<std::string>().c_str(),
                peer["blas"].value("openblas_config", std::string("generic")).c_str(),
                peer["prefill_setting"].get<std::string>().c_str(), peer["decode_setting"].get<std::string>().c_str());
}

void run_bench() {
  if (!o.tokenizer.empty()) {
    run_tokenizer_bench(o);
    return;
  }
  if (!o.shape.empty()) {
    if (o.device != "cpu" || o.train || o.background_load)
      fail("bench", "--shape measures inference on the CPU (no --device cuda, --train or --background-load)");
    run_shape_bench();
    return;
  }
  if (o.device == "cuda") {
    if (o.background_load) fail("bench", "--background-load is for the CPU benchmark");
    run_cuda_bench();
    return;
  }
  if (o.device != "cpu") fail("bench", "--device " + o.device + ": not a device (cpu or cuda)");
  if (parse_precision(o.precision) != Precision::FP32)
    fail("bench", "--precision " + o.precision + " is a GPU mode here (the CPU's bf16 is an emulation for tests, not faster)");
  const auto measure = o.train ? measure_train : measure_inference;
  const auto print = o.train ? print_train : print_inference;
  if (!o.background_load) {
    const nlohmann::json j = measure();
    if (o.json_out)
      std::cout << j.dump(2) << "\n";
    else
      print(j);
    return;
  }
  // Under load first (the busy process lives exactly as long as `load`), then idle, both printed.
  nlohmann::json loaded;
  {
    BackgroundLoad load;
    std::fprintf(stderr, "bench: background load: process %d keeps one core busy\n", int(load.pid()));
    loaded = measure();
    loaded["background_load_pid"] = load.pid();
  }
  const nlohmann::json idle = measure();
  if (o.json_out) {
    std::cout << nlohmann::json{{"idle", idle}, {"loaded", loaded}}.dump(2) << "\n";
    return;
  }
  std::printf("== idle\n");
  print(idle);
  std::printf("\n== with one core kept busy by another process (a busy loop), during our run and PyTorch's\n");
  print(loaded);
  std::printf("\n");
  auto summary = [&](const char* name, const char* key, const char* ratio) {
    std::printf("%-8s under load moelab keeps %.0f%% of its idle speed", name,
                100 * loaded[key].get<double>() / idle[key].get<double>());
    if (idle.contains(ratio) && loaded.contains(ratio))
      std::printf(", PyTorch %.0f%%; ratio %.2fx idle, %.2fx under load",
                  100 * loaded["pytorch"][key].get<double>() / idle["pytorch"][key].get<double>(),
                  idle[ratio].get<double>(), loaded[ratio].get<double>());
    std::printf("\n");
  };
  if (o.train) {
    summary("training", "train_tokens_per_s", "train_ratio");
  } else {
    summary("prefill", "prefill_tokens_per_s", "prefill_ratio");
    summary("decode", "decode_tokens_per_s", "decode_ratio");
  }
}

}  // namespace

BenchOptions& bench_options() {
  static BenchOptions options;
  return options;
}

ModelConfig bench_model_config(int64_t layers, int64_t hidden, int64_t heads, int64_t kv_heads, int64_t experts,
                               int64_t expert_hidden, int64_t top_k, int64_t context) {
  ModelConfig c = builtin_config();
  c.num_layers = layers;
  c.hidden_size = hidden;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.num_experts = experts;
  c.expert_ffn_size = expert_hidden;
  c.top_k = top_k;
  c.rope_theta = 1e6;
  c.max_positions = std::max<int64_t>(4096, context);
  return c;
}

double median_train_step_seconds(Model& m, const BenchOptions& opt) {
  const auto corpus = open_corpus("builtin:domains");
  TrainConfig tc;
  tc.batch = opt.train_batch;
  tc.seq_len = opt.train_seq;
  tc.steps = opt.train_steps + 2;
  tc.lr = 1e-3f;
  tc.warmup = 0;
  tc.aux_alpha = 0.01f;
  tc.clip = 1.0f;
  tc.eval_every = 0;
  tc.probe_every = 0;
  Trainer trainer(m, *corpus, tc);
  std::vector<double> times;
  for (int64_t i = 0; i < tc.steps; ++i) {
    const auto t = Clock::now();
    trainer.step();  // returns the step's loss: on a GPU the device has finished the step
    if (i >= 2) times.push_back(seconds_since(t));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

nlohmann::json first_json_line_of(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> p(::popen(command.c_str(), "r"), ::pclose);
  if (!p) return nullptr;
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p.get())) out.append(buf, n);
  try {
    return nlohmann::json::parse(out.substr(0, out.find('\n')));
  } catch (...) {
    return nullptr;
  }
}

nlohmann::json run_peer_script(const std::string& env, const std::string& args) {
  return first_json_line_of(env + " " + o.python + " " + o.peer + " " + args + " 2>/dev/null");
}

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Benchmark prefill and decode of a fixed lab model against PyTorch");
  cmd->add_option("--layers", o.layers)->check(CLI::Range(1, 64));
  cmd->add_option("--hidden", o.hidden)->check(CLI::Range(16, 8192));
  cmd->add_option("--experts", o.experts)->check(CLI::Range(1, 1024));
  cmd->add_option("--expert-hidden", o.expert_hidden)->check(CLI::Range(8, 65536));
  cmd->add_option("--top-k", o.top_k)->check(CLI::Range(1, 1024));
  cmd->add_option("--prefill", o.prefill, "Tokens in the timed forward")->check(CLI::Range(1, 4096));
  cmd->add_option("--decode", o.decode, "Tokens decoded one at a time")->check(CLI::Range(1, 4096));
  cmd->add_option("--python", o.python, "Python with torch for the peer");
  cmd->add_option("--peer", o.peer, "The PyTorch peer script");
  cmd->add_flag("--no-peer", o.no_peer, "Skip the PyTorch comparison");
  cmd->add_flag("--json", o.json_out, "JSON on stdout");
  cmd->add_flag("--train", o.train, "Benchmark training steps instead of inference");
  cmd->add_flag("--background-load", o.background_load,
                "Also measure (ours and PyTorch's) while another process keeps one core busy");
  cmd->add_option("--batch", o.train_batch, "Training: sequences per step")->check(CLI::Range(1, 1024));
  cmd->add_option("--seq", o.train_seq, "Training: tokens per sequence")->check(CLI::Range(2, 4096));
  cmd->add_option("--train-steps", o.train_steps, "Training: timed steps")->check(CLI::Range(3, 10000));
  cmd->add_option("--device", o.device, "cpu, or cuda: the GPU benchmark over lab sizes from tiny to large");
  cmd->add_option("--sizes", o.sizes, "GPU: lab sizes to run (tiny,small,medium,large; default all)");
  cmd->add_option("--precision", o.precision, "GPU: fp32 (TF32 off), tf32 or bf16; the PyTorch peer runs in the same mode");
  cmd->add_option("--tokenizer", o.tokenizer, "Benchmark this tokenizer.json's encoder against the Rust tokenizers library");
  cmd->add_option("--text-mb", o.tokenizer_mb, "Tokenizer: megabytes of text to encode")->check(CLI::Range(0.01, 512.0));
  cmd->add_option("--shape", o.shape,
                  "A real model's shape with random bf16 weights, generated once into the cache: olmoe-1b-7b, "
                  "granite-3b-a800m, qwen3-30b-a3b (where memory allows), olmoe-tiny, granite-tiny, qwen3-tiny");
  cmd->add_option("--cache", o.cache, "--shape: the cache folder (default $XDG_CACHE_HOME/moelab/shapes)");
  cmd->add_option("--seed", o.seed, "--shape: the random weights' seed")->check(kSeed);
  cmd->add_option("--prompt", o.shape_prompt, "--shape: prompt tokens before decoding")->check(CLI::Range(1, 4096));
  cmd->callback(run_bench);
}

}  // namespace moelab::cli
