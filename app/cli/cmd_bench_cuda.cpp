// moelab-cli bench --device cuda: lab models from tiny to large on the GPU, each figure next to
// the same model in eager PyTorch on the same GPU (tests/reference/bench_peer.py --device cuda,
// same precision) and next to this GPU's own limits, measured in the same run: the launch floor
// (graphs of empty kernels), copy bandwidth and the cuBLAS GEMM rate in the chosen precision.
//
// --precision fp32 (TF32 off) | tf32 (cuBLAS's dense products on TF32 tensor cores; the grouped
// expert products stay fp32) | bf16 (bf16 weight copies and operands, fp32 sums). The PyTorch peer
// runs in the same mode: strict fp32, TF32 matmuls, or a pure-bf16 model (bf16 weights and
// activations throughout, which is more bf16 than ours: our norms, softmax and residuals stay fp32).
//
//   decode    µs per token through the recorded step (one CUDA graph per token) and directly
//             (one launch per op); kernels per token = the graph's nodes; floor = nodes × cost
//             per node + one graph launch; bandwidth = active weight bytes per token × tokens/s
//   prefill   128 tokens in one forward
//   train     Trainer steps (AdamW, aux loss, clip) at batch × seq tokens
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "bench.hpp"
#include "common.hpp"
#include "corpus.hpp"
#include "decoder.hpp"
#include "error.hpp"
#include "model.hpp"
#include "params.hpp"
#include "random.hpp"
#include "trainer.hpp"
#ifdef MOELAB_HAVE_CUDA
#include "cuda_backend.hpp"
#include "cuda_bench.hpp"
#include "cuda_device.hpp"
#endif

namespace moelab::cli {

#ifndef MOELAB_HAVE_CUDA

void run_cuda_bench() {
  fail("bench", "--device cuda: this build has no CUDA backend (nvcc was not found when it was configured)");
}

#else

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct LabSize {
  const char* name;
  int64_t layers, hidden, heads, experts, expert_hidden;
};
// From the tiny (4 layers × 8 experts, width 128) to 16 layers × 64 experts, width 1024
// (1.68 B parameters: 6.7 GB of fp32 weights, ~27 GB with gradients and Adam moments).
const LabSize kSizes[] = {{"tiny", 4, 128, 4, 8, 256},
                          {"small", 4, 256, 8, 8, 512},
                          {"medium", 8, 512, 8, 32, 512},
                          {"large", 16, 1024, 16, 64, 512}};

std::vector<LabSize> chosen_sizes(const std::string& list) {
  if (list.empty()) return {std::begin(kSizes), std::end(kSizes)};
  std::vector<LabSize> out;
  std::stringstream ss(list);
  for (std::string name; std::getline(ss, name, ',');) {
    auto it = std::find_if(std::begin(kSizes), std::end(kSizes), [&](const LabSize& s) { return name == s.name; });
    if (it == std::end(kSizes)) fail("bench", "--sizes: '" + name + "' is not a lab size (tiny, small, medium, large)");
    out.push_back(*it);
  }
  return out;
}

ModelConfig config_of(const LabSize& s, const BenchOptions& o) {
  return bench_model_config(s.layers, s.hidden, s.heads, s.heads, s.experts, s.expert_hidden, o.top_k,
                            o.prefill + o.prompt + o.decode + 1);
}

std::string peer_model_args(const ModelConfig& c, const BenchOptions& o) {
  return " --device cuda --precision " + o.precision + " --vocab " + std::to_string(c.vocab_size) + " --layers " +
         std::to_string(c.num_layers) + " --hidden " + std::to_string(c.hidden_size) + " --heads " +
         std::to_string(c.num_heads) + " --kv-heads " + std::to_string(c.num_kv_heads) + " --experts " +
         std::to_string(c.num_experts) + " --expert-hidden " + std::to_string(c.expert_ffn_size) + " --topk " +
         std::to_string(c.top_k) + " --prefill " + std::to_string(o.prefill) + " --decode " + std::to_string(o.decode) +
         " --prompt " + std::to_string(o.prompt);
}

// Seconds per decoded token, best of 3 runs of o.decode greedy tokens after the prompt; the
// recording (first step) is not timed.
double decode_seconds(Model& m, bool graphs, const std::vector<int32_t>& prompt, const BenchOptions& o,
                      int64_t* nodes) {
  const int64_t V = m.config().vocab_size;
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    Decoder dec(m, o.prompt + o.decode + 2, graphs);
    std::vector<float> logits = dec.prefill(prompt);
    auto argmax = [&] {
      const float* last = logits.data() + logits.size() - size_t(V);
      return int32_t(std::max_element(last, last + V) - last);
    };
    logits = dec.step(argmax());  // records the graph
    const auto t = Clock::now();
    for (int64_t i = 0; i < o.decode; ++i) logits = dec.step(argmax());
    best = std::min(best, seconds_since(t) / double(o.decode));
    if (nodes) *nodes = dec.graph_nodes();
    if (graphs && !dec.graph_problem().empty() && r == 0)
      std::fprintf(stderr, "bench: the decode step could not be recorded, ops ran directly: %s\n",
                   dec.graph_problem().c_str());
  }
  return best;
}

double train_tokens_per_s(Model& m, const BenchOptions& o) {
  return double(o.train_batch * o.train_seq) / median_train_step_seconds(m, o);
}

double ratio(const nlohmann::json& peer, const char* key, double ours) {
  return peer.is_object() && peer.contains(key) ? ours / peer[key].get<double>() : 0.0;
}

}  // namespace

void run_cuda_bench() {
  const BenchOptions& o = bench_options();
  const Precision precision = parse_precision(o.precision);
  const CudaDeviceInfo dev = query_cuda_device();
  if (!dev.available) fail("bench", "--device cuda: " + dev.reason);
  auto gpu = make_cuda_backend();
  gpu->set_precision(precision);
  // Bytes per weight a product reads: the bf16 copies in bf16 mode.
  const double weight_bytes = precision == Precision::BF16 ? 2.0 : 4.0;
  const char* mode_text = precision == Precision::FP32   ? "fp32, TF32 off"
                          : precision == Precision::TF32 ? "tf32 (cuBLAS products on TF32 tensor cores)"
                                                         : "bf16 (bf16 weights and operands, fp32 sums)";

  // The device's limits, now.
  const LaunchFloor floor = cuda_measure_launch_floor();
  const double bandwidth = cuda_measure_bandwidth(size_t(2) << 30);
  const double sgemm = cuda_measure_gemm(8192, precision);
  nlohmann::json out = {
      {"device",
       {{"name", dev.name},
        {"compute_capability", std::to_string(dev.compute_major) + "." + std::to_string(dev.compute_minor)},
        {"sms", dev.sm_count},
        {"memory_gib", dev.memory_gib},
        {"datasheet_bandwidth_gb_s", dev.peak_bandwidth / 1e9},
        {"datasheet_fp32_tflop_s", dev.peak_fp32_flops / 1e12},
        {"measured_copy_bandwidth_gb_s", bandwidth / 1e9},
        {"measured_gemm_tflop_s", sgemm / 1e12},
        {"launch_floor_us_per_node", floor.per_node_us},
        {"launch_floor_us_per_graph", floor.per_graph_us}}},
      {"precision", std::string(mode_text) + ", the PyTorch peer in the same mode"},
      {"sizes", nlohmann::json::array()}};
  if (!o.json_out) {
    std::printf("device: %s (sm_%d%d, %d SMs, %.0f GiB); precision %s (the PyTorch peer in the same mode)\n",
                dev.name.c_str(), dev.compute_major, dev.compute_minor, dev.sm_count, dev.memory_gib, mode_text);
    std::printf("limits measured now: copy bandwidth %.0f GB/s (datasheet %.0f), %s GEMM %.1f TFLOP/s (datasheet fp32 "
                "%.1f),\n  launch floor %.2f us per graph node + %.2f us per graph launch\n",
                bandwidth / 1e9, dev.peak_bandwidth / 1e9, precision_name(precision), sgemm / 1e12,
                dev.peak_fp32_flops / 1e12, floor.per_node_us, floor.per_graph_us);
  }

  for (const LabSize& size : chosen_sizes(o.sizes)) {
    const ModelConfig c = config_of(size, o);
    const ParamCount p = count_params(c);
    nlohmann::json row = {{"size", size.name},
                          {"layers", c.num_layers},
                          {"hidden", c.hidden_size},
                          {"experts", c.num_experts},
                          {"expert_hidden", c.expert_ffn_size},
                          {"top_k", c.top_k},
                          {"total_params", p.total},
                          {"active_params", p.active}};
    {
      Model m = Model::random(c, 1, gpu, 0.05f);
      Rng rng(7);
      std::vector<int32_t> tokens(size_t(o.prefill));
      for (auto& t : tokens) t = int32_t(rng.next_u64() % uint64_t(c.vocab_size));
      const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + o.prompt);

      int64_t nodes = 0;
      const double graph_s = decode_seconds(m, true, prompt, o, &nodes);
      const double direct_s = decode_seconds(m, false, prompt, o, nullptr);
      const double floor_us = double(nodes) * floor.per_node_us + floor.per_graph_us;
      // Bytes a decoded token must read: every active weight once (one embedding row only).
      const double active_bytes =
          weight_bytes * double(p.active - p.active_by[size_t(Component::Embeddings)] + c.hidden_size);
      row["decode_us_per_token"] = graph_s * 1e6;
      row["decode_tokens_per_s"] = 1.0 / graph_s;
      row["decode_direct_us_per_token"] = direct_s * 1e6;
      row["kernels_per_token"] = nodes;
      row["launch_floor_us"] = floor_us;
      row["decode_over_floor"] = graph_s * 1e6 / floor_us;
      row["decode_bandwidth_gb_s"] = active_bytes / graph_s / 1e9;
      row["decode_fraction_of_measured_bandwidth"] = active_bytes / graph_s / bandwidth;

      m.forward_full(tokens);
      double prefill_best = 1e30;
      for (int64_t r = 0; r < o.repeats; ++r) {
        const auto t = Clock::now();
        m.forward_full(tokens);
        prefill_best = std::min(prefill_best, seconds_since(t));
      }
      row["prefill_tokens_per_s"] = double(o.prefill) / prefill_best;

      // Training needs weights, gradients and two Adam moments (and the bf16 copies) plus activations.
      const double need = (16.0 + (precision == Precision::BF16 ? 2.0 : 0.0)) * double(p.total) * 1.25;
      if (need < dev.memory_gib * double(1ull << 30)) {
        const double tps = train_tokens_per_s(m, o);
        const double flops = 3.0 * forward_flops_per_token(c, o.train_seq / 2) * tps;
        row["train_tokens_per_s"] = tps;
        row["train_tflop_s"] = flops / 1e12;
        row["train_fraction_of_gemm"] = flops / sgemm;
        row["train_fraction_of_datasheet_fp32"] = flops / dev.peak_fp32_flops;
      } else {
        row["train_skipped"] = "needs about " + human_bytes(need) + " of GPU memory";
      }
    }  // the model's memory goes back before the peer runs
    gpu->synchronize();
    if (!o.no_peer) {
      const nlohmann::json inf = run_peer_script("", peer_model_args(c, o));
      const nlohmann::json trn = row.contains("train_tokens_per_s")
                                     ? run_peer_script("", peer_model_args(c, o) + " --train --batch " +
                                                               std::to_string(o.train_batch) + " --seq " +
                                                               std::to_string(o.train_seq) + " --train-steps " +
                                                               std::to_string(o.train_steps))
                                     : nlohmann::json();
      if (inf.is_null()) std::fprintf(stderr, "bench: the PyTorch peer did not run on the GPU (%s)\n", size.name);
      row["pytorch"] = {{"inference", inf}, {"train", trn}};
      row["decode_ratio"] = ratio(inf, "decode_tokens_per_s", row["decode_tokens_per_s"].get<double>());
      row["prefill_ratio"] = ratio(inf, "prefill_tokens_per_s", row["prefill_tokens_per_s"].get<double>());
      if (row.contains("train_tokens_per_s"))
        row["train_ratio"] = ratio(trn, "train_tokens_per_s", row["train_tokens_per_s"].get<double>());
    }
    out["sizes"].push_back(row);
    if (o.json_out) continue;
    std::printf("\n%s: %d layers x %d experts of %d, width %d, top-%d (%s params, %s active)\n", size.name,
                int(c.num_layers), int(c.num_experts), int(c.expert_ffn_size), int(c.hidden_size), int(c.top_k),
                human_count(double(p.total)).c_str(), human_count(double(p.active)).c_str());
    std::printf("  decode   %8.1f us/token (%6.0f tokens/s), %lld kernels/token, launch floor %.1f us -> %.2fx the "
                "floor;\n           %.0f%% of measured bandwidth; without the graph %.1f us/token\n",
                row["decode_us_per_token"].get<double>(), row["decode_tokens_per_s"].get<double>(),
                (long long)row["kernels_per_token"].get<int64_t>(), row["launch_floor_us"].get<double>(),
                row["decode_over_floor"].get<double>(), 100 * row["decode_fraction_of_measured_bandwidth"].get<double>(),
                row["decode_direct_us_per_token"].get<double>());
    std::printf("  prefill  %8.0f tokens/s\n", row["prefill_tokens_per_s"].get<double>());
    if (row.contains("train_tokens_per_s"))
      std::printf("  train    %8.0f tokens/s, %.2f TFLOP/s = %.0f%% of the measured %s GEMM\n",
                  row["train_tokens_per_s"].get<double>(), row["train_tflop_s"].get<double>(),
                  100 * row["train_fraction_of_gemm"].get<double>(), precision_name(precision));
    else
      std::printf("  train    skipped: %s\n", row["train_skipped"].get<std::string>().c_str());
    if (row.contains("pytorch"))
      std::printf("  vs PyTorch eager on this GPU: decode %.2fx, prefill %.2fx, train %.2fx (0 = the peer did not run)\n",
                  row["decode_ratio"].get<double>(), row["prefill_ratio"].get<double>(),
                  row.value("train_ratio", 0.0));
  }
  if (o.json_out) std::cout << out.dump(2) << "\n";
}

#endif

}  // namespace moelab::cli
