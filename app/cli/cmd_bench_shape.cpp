// moelab-cli bench --shape NAME: a real model's shape (OLMoE-1B-7B, Granite-3B-A800M, ...) with
// random bf16 weights, generated once into a cache folder (core/random_checkpoint.hpp), run from
// its memory map as a real checkpoint would be. Measured in one run on this machine:
//   - the read bandwidth (2 threads over a buffer far larger than the caches) and the bytes one
//     decoded token reads (attention, router, the top-k chosen experts, shared experts, lm_head,
//     as stored); bound = bandwidth / bytes, the most tokens/s any decoder could reach;
//   - ours: time to the first token from a warm page cache (load + prompt prefill + first token),
//     decode tokens/s after the prompt, prefill tokens/s, peak resident memory (VmHWM);
//   - eager PyTorch on the same checkpoint in bf16 (tests/reference/bench_shape_peer.py, its own
//     process, the safetensors mapped zero-copy), the same figures;
// then ratios and each decode as a fraction of the bound.
#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench.hpp"
#include "error.hpp"
#include "lowp.hpp"
#include "model.hpp"
#include "random.hpp"
#include "random_checkpoint.hpp"
#include "registry.hpp"

namespace moelab::cli {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Read every byte of the checkpoint's files once so the timed load finds them in the page cache
// (a "warm" start: what a second run of a model sees). Returns the seconds it took.
double warm_page_cache(const std::string& dir) {
  const auto t = Clock::now();
  std::vector<char> buf(size_t(64) << 20);
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    const int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(e.path().string(), std::string("cannot read: ") + std::strerror(errno));
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    while (::read(fd, buf.data(), buf.size()) > 0) {
    }
    ::close(fd);
  }
  return seconds_since(t);
}

// Sustained read bandwidth (bytes/s) of `threads` threads over a 1 GiB buffer (far beyond any
// cache): each sums its contiguous share with 16-wide vector adds; best of 5 passes.
double measure_read_bandwidth(int threads) {
  const size_t n = (size_t(1) << 30) / sizeof(float);
  std::unique_ptr<float[]> a(new float[n]);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; ++i) a[i] = float(i & 1023);
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    float total = 0;
    const auto t = Clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const size_t nt = size_t(omp_get_num_threads()), id = size_t(omp_get_thread_num());
      const size_t chunk = n / nt, begin = id * chunk, len = id + 1 == nt ? n - begin : chunk;
      float acc[16] = {};
      const float* p = a.get() + begin;
      for (size_t i = 0; i + 16 <= len; i += 16)
#pragma omp simd
        for (int j = 0; j < 16; ++j) acc[j] += p[i + size_t(j)];
      for (float v : acc) total += v;
    }
    const double s = seconds_since(t);
    if (total < 0) std::printf("%f", double(total));  // keep the loop
    best = std::max(best, double(n) * sizeof(float) / s);
  }
  return best;
}

// Bytes one decoded token reads from the weights as stored: everything but the embedding table
// (one row, negligible) and the routed experts, of which K of E are read per MoE layer.
double bytes_per_token(const ModelConfig& c, nlohmann::json* parts) {
  double by[kNumComponents] = {};
  for (const TensorSpec& s : tensor_specs(c)) {
    double b = 2.0 * double(s.numel());
    if (s.component == Component::RoutedExperts) b *= double(c.top_k) / double(c.num_experts);
    if (s.component == Component::Embeddings) b = c.tie_word_embeddings ? b : 2.0 * double(c.hidden_size);
    by[int(s.component)] += b;  // a tied lm_head reads the whole embedding table
  }
  double total = 0;
  for (int i = 0; i < kNumComponents; ++i) {
    total += by[i];
    if (by[i] > 0) (*parts)[component_name(Component(i))] = by[i];
  }
  return total;
}

int64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return -1;
}

int32_t argmax_last(const std::vector<float>& logits, int64_t V) {
  const float* last = logits.data() + logits.size() - size_t(V);
  return int32_t(std::max_element(last, last + V) - last);
}

nlohmann::json measure_ours(const std::string& dir, const ModelConfig& c, const std::vector<int32_t>& tokens) {
  const BenchOptions& o = bench_options();
  const int64_t P = o.shape_prompt, D = o.decode, N = o.prefill;
  nlohmann::json j;
  // Time to the first token: open the checkpoint (mapped, bf16 as stored), prefill the prompt,
  // pick the first token.
  const auto t0 = Clock::now();
  Model m = Model::load(dir, make_eigen_backend(), false);
  const double load_s = seconds_since(t0);
  KvCache cache = m.new_cache(P + D + 1);
  std::vector<float> logits = m.forward({tokens.begin(), tokens.begin() + P}, cache);
  int32_t next = argmax_last(logits, c.vocab_size);
  const double first_s = seconds_since(t0);
  bool finite = true;
  for (float v : logits) finite = finite && std::isfinite(v);

  // Decode: D tokens one at a time (greedy) after the prompt; the run that follows the first
  // token and a second one from a fresh cache, the better kept.
  double decode_best = 1e30;
  for (int r = 0; r < 2; ++r) {
    if (r > 0) {
      cache = m.new_cache(P + D + 1);
      logits = m.forward({tokens.begin(), tokens.begin() + P}, cache);
      next = argmax_last(logits, c.vocab_size);
    }
    const auto t = Clock::now();
    for (int64_t i = 0; i < D; ++i) {
      logits = m.forward({next}, cache);
      next = argmax_last(logits, c.vocab_size);
    }
    decode_best = std::min(decode_best, seconds_since(t));
  }
  for (float v : logits) finite = finite && std::isfinite(v);

  // Prefill: N tokens in one forward, best of 2.
  double prefill_best = 1e30;
  const std::vector<int32_t> prefill_tokens(tokens.begin(), tokens.begin() + N);
  for (int r = 0; r < 2; ++r) {
    const auto t = Clock::now();
    m.forward_full(prefill_tokens);
    prefill_best = std::min(prefill_best, seconds_since(t));
  }
  j["load_s"] = load_s;
  j["first_token_s"] = first_s;
  j["prompt_prefill_s"] = first_s - load_s;
  j["decode_tokens_per_s"] = double(D) / decode_best;
  j["prefill_tokens_per_s"] = double(N) / prefill_best;
  j["peak_rss_bytes"] = peak_rss_bytes();
  j["stored_weight_bytes"] = m.stored_weight_bytes();
  j["logits_finite"] = finite;
  j["threads"] = omp_get_max_threads();
  j["lowp_path"] = lowp_path();
  return j;
}

nlohmann::json run_peer(const std::string& dir) {
  const BenchOptions& o = bench_options();
  std::error_code ec;
  if (o.no_peer) return nullptr;
  if (!std::filesystem::exists(o.shape_peer, ec)) {
    std::fprintf(stderr, "bench: peer script %s not found, PyTorch comparison skipped\n", o.shape_peer.c_str());
    return nullptr;
  }
  std::string args = " --dir '" + dir + "'";
  args += " --prompt " + std::to_string(o.shape_prompt);
  args += " --decode " + std::to_string(o.decode);
  args += " --prefill " + std::to_string(o.prefill);
  args += " --threads " + std::to_string(omp_get_num_procs());
  BenchOptions& w = bench_options();
  const std::string saved = w.peer;
  w.peer = o.shape_peer;
  nlohmann::json r = run_peer_script("", args);
  w.peer = saved;
  if (r.is_null()) std::fprintf(stderr, "bench: the PyTorch peer did not run (is python3-torch installed?)\n");
  return r;
}

void print_shape(const nlohmann::json& j) {
  const nlohmann::json& u = j["moelab"];
  std::printf("shape %s: %s, %d layers, width %d, %d experts of %d, top-%d; random bf16 weights, %s (%s)\n",
              j["shape"].get<std::string>().c_str(), j["architecture"].get<std::string>().c_str(), j["layers"].get<int>(),
              j["hidden"].get<int>(), j["experts"].get<int>(), j["expert_hidden"].get<int>(), j["top_k"].get<int>(),
              human_bytes(j["checkpoint_bytes"].get<double>()).c_str(), j["checkpoint_dir"].get<std::string>().c_str());
  std::printf("machine (measured now): %.1f GB/s read with %d threads; one token reads %s of weights (top-%d experts)\n"
              "  -> decode bound %.1f tokens/s; page cache warmed first (%.1f s to read the checkpoint)\n",
              j["bandwidth_gb_s"].get<double>(), j["bandwidth_threads"].get<int>(),
              human_bytes(j["bytes_per_token"].get<double>()).c_str(), j["top_k"].get<int>(),
              j["bound_tokens_per_s"].get<double>(), j["warm_read_s"].get<double>());
  const bool peer = j.contains("pytorch");
  const nlohmann::json& p = peer ? j["pytorch"] : j["moelab"];
  std::printf("%-22s %12s %12s %8s\n", "", "moelab", peer ? "pytorch" : "", peer ? "ratio" : "");
  auto row = [&](const char* name, const char* key, double scale, const char* fmt, bool higher_better) {
    const double a = u[key].get<double>() * scale;
    std::printf("%-22s ", name);
    std::printf(fmt, a);
    if (peer) {
      const double b = p[key].get<double>() * scale;
      std::printf(" ");
      std::printf(fmt, b);
      std::printf(" %7.2fx", higher_better ? a / b : b / a);
    }
    std::printf("\n");
  };
  row("decode tokens/s", "decode_tokens_per_s", 1, "%12.2f", true);
  row("prefill tokens/s", "prefill_tokens_per_s", 1, "%12.1f", true);
  row("first token s", "first_token_s", 1, "%12.2f", false);
  row("peak RSS GB", "peak_rss_bytes", 1e-9, "%12.2f", false);
  std::printf("decode: moelab %.0f%% of the bound", 100 * j["decode_fraction_of_bound"].get<double>());
  if (peer) std::printf(", pytorch %.0f%%", 100 * j["pytorch_decode_fraction_of_bound"].get<double>());
  std::printf("; first token = load %.2f s + %d-token prompt %.2f s; peak RSS - checkpoint = %s\n",
              u["load_s"].get<double>(), j["prompt"].get<int>(), u["prompt_prefill_s"].get<double>(),
              human_bytes(u["peak_rss_bytes"].get<double>() - j["checkpoint_bytes"].get<double>()).c_str());
  if (peer)
    std::printf("pytorch %s, %s\n", p.value("torch_version", std::string("?")).c_str(),
                p.value("setting", std::string("")).c_str());
}

}  // namespace

void run_shape_bench() {
  BenchOptions& o = bench_options();
  const ModelConfig c = shape_config(o.shape);
  RandomCheckpointOptions ro;
  ro.cache_dir = o.cache;
  ro.seed = o.seed;
  const RandomCheckpoint ck = ensure_random_checkpoint(o.shape, ro);
  if (ck.generated)
    std::fprintf(stderr, "bench: wrote the random %s checkpoint (%s) to %s in %.1f s\n", o.shape.c_str(),
                 human_bytes(double(ck.bytes)).c_str(), ck.dir.c_str(), ck.seconds);
  else
    std::fprintf(stderr, "bench: reusing the %s checkpoint in %s\n", o.shape.c_str(), ck.dir.c_str());

  const int threads = omp_get_num_procs();  // the machine's cores (2 here), for the bandwidth and the peer
  nlohmann::json parts = nlohmann::json::object();
  const double bytes = bytes_per_token(c, &parts);
  const double bandwidth = measure_read_bandwidth(threads);
  const double warm_s = warm_page_cache(ck.dir);
  // The bandwidth buffer (1 GiB) is freed: start the peak-RSS count afresh (Linux ≥ 4.0: "5"
  // resets VmHWM to the current RSS), so the peak is the model's own.
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }

  Rng rng(7);
  std::vector<int32_t> tokens(size_t(std::max(o.prefill, o.shape_prompt)));
  for (auto& t : tokens) t = int32_t(rng.next_u64() % uint64_t(c.vocab_size));
  const nlohmann::json ours = measure_ours(ck.dir, c, tokens);  // the model is closed again here
  const double bound = bandwidth / bytes;

  nlohmann::json j = {{"shape", o.shape},
                      {"architecture", c.architecture},
                      {"layers", c.num_layers},
                      {"hidden", c.hidden_size},
                      {"experts", c.num_experts},
                      {"expert_hidden", c.expert_ffn_size},
                      {"top_k", c.top_k},
                      {"checkpoint_dir", ck.dir},
                      {"checkpoint_bytes", ck.bytes},
                      {"checkpoint_generated", ck.generated},
                      {"prompt", o.shape_prompt},
                      {"decode", o.decode},
                      {"prefill", o.prefill},
                      {"bandwidth_gb_s", bandwidth / 1e9},
                      {"bandwidth_threads", threads},
                      {"warm_read_s", warm_s},
                      {"bytes_per_token", bytes},
                      {"bytes_per_token_by_component", parts},
                      {"bound_tokens_per_s", bound},
                      {"moelab", ours},
                      {"decode_fraction_of_bound", ours["decode_tokens_per_s"].get<double>() / bound}};
  const nlohmann::json peer = run_peer(ck.dir);
  if (!peer.is_null() && peer.contains("decode_tokens_per_s")) {
    j["pytorch"] = peer;
    j["pytorch_decode_fraction_of_bound"] = peer["decode_tokens_per_s"].get<double>() / bound;
    j["decode_ratio"] = ours["decode_tokens_per_s"].get<double>() / peer["decode_tokens_per_s"].get<double>();
    j["prefill_ratio"] = ours["prefill_tokens_per_s"].get<double>() / peer["prefill_tokens_per_s"].get<double>();
    j["first_token_ratio"] = peer["first_token_s"].get<double>() / ours["first_token_s"].get<double>();
  }
  if (o.json_out)
    std::cout << j.dump() << "\n";
  else
    print_shape(j);
}

}  // namespace moelab::cli
