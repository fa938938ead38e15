// Training behaviour: capacity drops exactly the expected slots, the bias rule moves load toward
// the mean, a resumed run continues exactly, the schedule, and bad input (corpora, NaN losses, a
// full disk) gives clear errors without losing work.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "check.hpp"
#include "corpus.hpp"
#include "params.hpp"
#include "presets.hpp"
#include "runlog.hpp"
#include "test_util.hpp"
#include "trainer.hpp"

using namespace moelab;
using testutil::TempDir;
using testutil::write_file;
namespace fs = std::filesystem;

TEST(capacity_drops_exactly_the_overflow) {
  auto b = make_eigen_backend();
  // 5 tokens, 3 experts, top-1. Expert 0 is everyone's first choice; capacity 2.
  const std::vector<float> probs = {0.7f, 0.2f, 0.1f, 0.6f, 0.1f, 0.3f, 0.5f, 0.4f, 0.1f,
                                    0.8f, 0.05f, 0.15f, 0.1f, 0.2f, 0.7f};
  Tensor p = b->alloc({5, 3}), ids = b->alloc({5, 1}, Elem::Int32), w = b->alloc({5, 1}), dropped = b->alloc({5, 1});
  b->upload(p, probs.data());
  RouterSpec spec;
  spec.top_k = 1;
  spec.renormalize = false;
  for (bool reroute : {false, true}) {
    const std::vector<int32_t> first = {0, 0, 0, 0, 2};
    b->upload(ids, first.data());
    spec.capacity.reroute = reroute;
    b->limit_capacity(p, spec, 2, ids, w, dropped);
    std::vector<int32_t> got(5);
    std::vector<float> gw(5), gd(5);
    b->download(ids, got.data());
    b->download(w, gw.data());
    b->download(dropped, gd.data());
    // First come, first served: tokens 0 and 1 keep expert 0; tokens 2 and 3 overflow.
    const std::vector<int32_t> want = reroute ? std::vector<int32_t>{0, 0, 1, 2, 2} : std::vector<int32_t>{0, 0, -1, -1, 2};
    CHECK(got == want);
    CHECK(gd == (reroute ? std::vector<float>{0, 0, 2, 2, 0} : std::vector<float>{0, 0, 1, 1, 0}));
    if (reroute) {
      CHECK_NEAR(gw[2], 0.4, 1e-6);  // the re-routed slot is weighted by its new expert's probability
      CHECK_NEAR(gw[3], 0.15, 1e-6);
    } else {
      CHECK_EQ(gw[2], 0.0f);
    }
  }
}

// One training step of the collapse lesson's bias-balanced model (bias speed 0.01), with the
// training settings changed by `adjust` first.
template <class Adjust>
StepRecord bias_step(Adjust adjust) {
  Preset p = load_preset("lesson-collapse-bias");
  auto corpus = open_corpus("builtin:domains");
  Model m = Model::random(p.model, 4, make_eigen_backend());
  TrainConfig tc = p.train;
  tc.bias_gamma = 0.01f;
  adjust(tc);
  Trainer t(m, *corpus, tc);
  return t.step();
}

TEST(bias_update_moves_load_toward_the_mean) {
  const StepRecord r = bias_step([](TrainConfig& tc) { tc.eval_every = 0; });
  // After one step: experts loaded above the mean got bias -gamma, below the mean +gamma.
  for (size_t l = 0; l < r.layers.size(); ++l) {
    const double mean = 1.0 / double(r.layers[l].load.size());
    for (size_t e = 0; e < r.layers[l].load.size(); ++e) {
      const double want = r.layers[l].load[e] > mean ? -0.01 : r.layers[l].load[e] < mean ? 0.01 : 0.0;
      CHECK_NEAR(r.bias[l][e], want, 1e-7);
    }
  }
}

TEST(resumed_run_continues_exactly) {
  TempDir tmp("resume");
  const Preset p = load_preset("moe-8x-top2");
  auto corpus = open_corpus("builtin:domains");
  TrainConfig tc = p.train;
  tc.steps = 12;
  tc.batch = 4;
  tc.seq_len = 16;
  tc.eval_every = 0;
  tc.z_coef = 0.001f;
  std::vector<double> straight, resumed;
  {
    Model m = Model::random(p.model, 9, make_eigen_backend());
    Trainer t(m, *corpus, tc);
    for (int i = 0; i < 12; ++i) straight.push_back(t.step().loss);
  }
  {
    Model m = Model::random(p.model, 9, make_eigen_backend());
    Trainer t(m, *corpus, tc);
    for (int i = 0; i < 6; ++i) resumed.push_back(t.step().loss);
    t.save_checkpoint(tmp / "ckpt");
  }
  {
    Model m = Model::random(p.model, 123, make_eigen_backend());  // different weights, overwritten
    Trainer t(m, *corpus, tc);
    t.load_checkpoint(tmp / "ckpt");
    CHECK_EQ(t.steps_done(), int64_t(6));
    for (int i = 0; i < 6; ++i) resumed.push_back(t.step().loss);
  }
  CHECK(straight == resumed);  // bit for bit
}

TEST(gradient_accumulation_adds_scaled_micro_batches) {
  const Preset p = load_preset("moe-8x-top2");
  Model m = Model::random(p.model, 3, make_eigen_backend());
  auto corpus = open_corpus("builtin:domains");
  Rng r(2);
  const Batch b = corpus->sample(2, 12, r, false);
  StepKnobs k;
  k.aux_alpha = 0.01f;
  ParamSet once = m.zeros_like(), twice = m.zeros_like();
  Rng n1(0), n2(0);
  forward_backward(m, once, b, k, n1, 1.0f);
  forward_backward(m, twice, b, k, n2, 0.5f);
  forward_backward(m, twice, b, k, n2, 0.5f);
  auto a = trainable_params(m.config(), once), c = trainable_params(m.config(), twice);
  for (size_t i = 0; i < a.size(); ++i) {
    std::vector<float> x(static_cast<size_t>(a[i].tensor->numel())), y(x.size());
    m.backend().download(*a[i].tensor, x.data());
    m.backend().download(*c[i].tensor, y.data());
    for (size_t j = 0; j < x.size(); ++j)
      if (std::fabs(x[j] - y[j]) > 1e-6f * (1 + std::fabs(x[j]))) {
        check::report(__FILE__, __LINE__, a[i].name + " differs under accumulation");
        break;
      }
  }
}

TEST(learning_rate_schedule_warms_up_then_decays) {
  const Preset p = load_preset("moe-4x-top1");
  auto corpus = open_corpus("builtin:domains");
  Model m = Model::random(p.model, 1, make_eigen_backend());
  TrainConfig tc;
  tc.steps = 110;
  tc.warmup = 10;
  tc.lr = 1.0f;
  tc.min_lr_ratio = 0.1f;
  Trainer t(m, *corpus, tc);
  CHECK_NEAR(t.learning_rate(5), 0.5, 1e-9);
  CHECK_NEAR(t.learning_rate(10), 1.0, 1e-9);
  CHECK_NEAR(t.learning_rate(60), 0.55, 1e-7);  // half way down the cosine: 0.1 + 0.9/2
  CHECK_NEAR(t.learning_rate(110), 0.1, 1e-7);
}

TEST(corpus_errors_are_clear) {
  TempDir tmp("corpus");
  write_file(tmp / "empty.txt", "");
  CHECK_THROWS_WITH(open_corpus(tmp / "empty.txt"), "empty");
  write_file(tmp / "binary.bin", std::string("\x7f" "ELF\x02\x01\x01\0\0\0", 10));
  CHECK_THROWS_WITH(open_corpus(tmp / "binary.bin"), "not UTF-8 text");
  write_file(tmp / "latin1.txt", "caf\xe9 au lait");
  CHECK_THROWS_WITH(open_corpus(tmp / "latin1.txt"), "at offset 3");
  CHECK_THROWS_WITH(open_corpus(tmp / "missing.txt"), "no such file");
  CHECK_THROWS_WITH(open_corpus("builtin:nope"), "unknown built-in corpus");
  write_file(tmp / "short.txt", "tiny text");
  auto c = open_corpus(tmp / "short.txt");
  Rng r(1);
  CHECK_THROWS_WITH(c->sample(2, 64, r, false), "too short");
  write_file(tmp / "ok.txt", std::string(5000, 'a') + "\xc3\xa9t\xc3\xa9");
  auto ok = open_corpus(tmp / "ok.txt");
  const Batch b = ok->sample(3, 32, r, false);
  CHECK_EQ(b.inputs.size(), size_t(96));
}

TEST(preset_errors_are_clear) {
  TempDir tmp("preset");
  write_file(tmp / "bad.json", R"({"model": {"experts": 4, "top_k": 5}})");
  CHECK_THROWS_WITH(load_preset(tmp / "bad.json"), "larger than the number of experts");
  write_file(tmp / "typo.json", R"({"model": {}, "train": {"stpes": 10}})");
  CHECK_THROWS_WITH(load_preset(tmp / "typo.json"), "unknown training setting 'stpes'");
  write_file(tmp / "neg.json", R"({"model": {}, "train": {"lr": -1}})");
  CHECK_THROWS_WITH(load_preset(tmp / "neg.json"), "lr = ");
  CHECK_THROWS_WITH(load_preset("no-such-preset"), "no such preset");
  // Sizes are bounded before experts x fine_grained can overflow; wrong types name the file.
  write_file(tmp / "overflow.json", R"({"model": {"experts": 4611686018427387904, "fine_grained": 64}})");
  CHECK_THROWS_WITH(load_preset(tmp / "overflow.json"), "model.experts = 4611686018427387904 is out of range");
  write_file(tmp / "theta.json", R"({"model": {"rope_theta": "large"}})");
  CHECK_THROWS_WITH(load_preset(tmp / "theta.json"), tmp / "theta.json");
  write_file(tmp / "title.json", R"({"title": 5, "model": {}})");
  CHECK_THROWS_WITH(load_preset(tmp / "title.json"), tmp / "title.json");
  write_file(tmp / "dense.json", R"({"model": {"dense_layers": ["first"]}})");
  CHECK_THROWS_WITH(load_preset(tmp / "dense.json"), "model.dense_layers must be a list of layer numbers");
  // Counts and seeds are whole numbers: 10.5 was truncated to 10 and a seed of -1 wrapped to 2^64-1.
  write_file(tmp / "steps.json", R"({"model": {}, "train": {"steps": 10.5}})");
  CHECK_THROWS_WITH(load_preset(tmp / "steps.json"), "steps = 10.5 is not a whole number");
  write_file(tmp / "seed.json", R"({"model": {}, "train": {"seed": -1}})");
  CHECK_THROWS_WITH(load_preset(tmp / "seed.json"), "seed = -1 is not a non-negative whole number");
  write_file(tmp / "seed2.json", R"({"model": {}, "train": {"seed": 7, "batch": 4}})");
  CHECK_EQ(load_preset(tmp / "seed2.json").train.seed, uint64_t(7));
  write_file(tmp / "probe.json", R"({"model": {}, "train": {"probe_every": -5}})");
  CHECK_THROWS_WITH(load_preset(tmp / "probe.json"), "probe_every = ");
}

TEST(training_that_cannot_fit_is_refused_before_allocating) {
  auto corpus = open_corpus("builtin:domains");
  ModelConfig c = testutil::tiny_config();
  Model m = Model::random(c, 1, make_eigen_backend());
  TrainConfig tc;
  tc.seq_len = 128;  // the model's context is 64
  CHECK_THROWS_WITH(Trainer bad(m, *corpus, tc), "longer than the model's context of 64");
  // 4096 sequences of 8192 tokens through 4096 experts: terabytes of activations per micro-batch.
  c.num_experts = 4096;
  c.expert_ffn_size = 1;
  c.top_k = 1;
  c.max_positions = 8192;
  Model wide = Model::random(c, 1, make_eigen_backend());
  tc.batch = 4096;
  tc.seq_len = 8192;
  CHECK_THROWS_WITH(Trainer bad(wide, *corpus, tc), "lower the batch or the sequence length");
}

TEST(memory_estimate_counts_the_attention_scratch) {
  // Attention recomputes [T,T] probabilities per head: the estimate must grow with T² at a fixed
  // token count, by at least one fp32 [T,T] matrix per thread (what each thread allocates).
  ModelConfig c = testutil::tiny_config();
  c.max_positions = 8192;
  TrainConfig shortseq, longseq;
  shortseq.batch = 8, shortseq.seq_len = 1024, shortseq.eval_batches = 1;
  longseq.batch = 1, longseq.seq_len = 8192, longseq.eval_batches = 1;  // same 8192 tokens
  for (int threads : {1, 2, 16}) {
    const double grow = training_memory_bytes(c, longseq, threads) - training_memory_bytes(c, shortseq, threads);
    CHECK(grow >= 4.0 * (8192.0 * 8192 - 1024.0 * 1024) * threads);
  }
}

TEST(hostile_checkpoints_and_run_logs_are_clear_errors) {
  TempDir tmp("hostile-run");
  const Preset p = load_preset("moe-4x-top1");
  auto corpus = open_corpus("builtin:domains");
  TrainConfig tc = p.train;
  tc.batch = 2;
  tc.seq_len = 8;
  tc.eval_every = 0;
  Model m = Model::random(p.model, 1, make_eigen_backend());
  Trainer t(m, *corpus, tc);
  t.step();
  t.save_checkpoint(tmp / "ckpt");
  const std::string state = testutil::read_file(tmp / "ckpt/trainer.json");
  auto with_state = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = nlohmann::json::parse(state);
    j[key] = value;
    write_file(tmp / "ckpt/trainer.json", j.dump());
  };
  with_state("data_rng", nlohmann::json::array());  // was read past the end of the list
  CHECK_THROWS_WITH(t.load_checkpoint(tmp / "ckpt"), "trainer.json: incomplete trainer state");
  with_state("step", -5);
  CHECK_THROWS_WITH(t.load_checkpoint(tmp / "ckpt"), "'step' must be a whole number");
  with_state("step", 1e300);
  CHECK_THROWS_WITH(t.load_checkpoint(tmp / "ckpt"), "'step' must be a whole number");
  write_file(tmp / "ckpt/trainer.json", state);
  // A checkpoint of another model with the same parameter count (twice the experts at half the
  // width, and fewer vocabulary rows for the extra router rows): refused by its shapes (the equal
  // count let the copies run on mismatched tensors).
  ModelConfig other = p.model;
  other.num_experts *= 2;
  other.expert_ffn_size /= 2;
  other.vocab_size -= other.num_layers * (other.num_experts - p.model.num_experts) / 2;
  CHECK_EQ(count_params(other).total, count_params(p.model).total);
  Model::random(other, 2, make_eigen_backend()).save(tmp / "ckpt");
  CHECK_THROWS_WITH(t.load_checkpoint(tmp / "ckpt"), "the checkpoint's model does not match the run's model");

  // metrics.jsonl: a torn last line is skipped; a bad line before others is an error, and the
  // log is left as it was (it used to be rewritten without every record after the bad line).
  const std::string run = tmp / "run";
  fs::create_directories(run);
  const std::string torn = "{\"step\": 1}\n{\"step\": 2}\n{\"ste";
  write_file(run + "/metrics.jsonl", torn);
  CHECK_EQ(read_metrics(run).size(), size_t(2));
  const std::string bad = "{\"step\": 1}\n[1, 2]\n{\"step\": 2}\n";
  write_file(run + "/metrics.jsonl", bad);
  CHECK_THROWS_WITH(RunLog log(run, nlohmann::json::object(), 5), "metrics.jsonl: line 2 is not a JSON object");
  CHECK_EQ(testutil::read_file(run + "/metrics.jsonl"), bad);
  // A deeply nested record is kept as written on resume (re-dumping it overflowed the stack).
  const std::string deep = "{\"step\": 1, \"x\": " + std::string(1000000, '[') + std::string(1000000, ']') + "}\n";
  write_file(run + "/metrics.jsonl", deep + "{\"step\": 7}\n");
  { RunLog resumed(run, nlohmann::json::object(), 5); }
  CHECK(testutil::read_file(run + "/metrics.jsonl") == deep);
  // A line with no end is not read whole into memory; a FIFO is not opened (it would block).
  write_file(run + "/metrics.jsonl", "{\"step\": 1}\n{\"x\": \"" + std::string(65u << 20, 'a'));
  CHECK_THROWS_WITH(read_metrics(run), "metrics.jsonl: line 2 is over 64 MB");
  fs::remove(run + "/metrics.jsonl");
  CHECK(read_metrics(run).empty());  // a run with no log yet
  CHECK_EQ(::mkfifo((run + "/metrics.jsonl").c_str(), 0600), 0);
  CHECK_THROWS_WITH(read_metrics(run), "metrics.jsonl: not a regular file");
  fs::remove(run + "/metrics.jsonl");
  // CSV export: records of any shape are errors naming the file, or empty cells, never a crash.
  write_file(run + "/metrics.jsonl", "{\"step\": 1}\n{\"step\": 2, \"loss\": null}\n");
  export_metrics_csv(run, run + "/out.csv");
  CHECK_EQ(testutil::read_file(run + "/out.csv").substr(0, 10), std::string("step,loss,"));
  write_file(run + "/metrics.jsonl", "{\"step\": 1, \"loss\": \"low\", \"layers\": []}\n");
  CHECK_THROWS_WITH(export_metrics_csv(run, run + "/out.csv"), "metrics.jsonl: malformed step record");
  write_file(run + "/metrics.jsonl", "{\"step\": 1, \"layers\": [{\"cv\": 1}]}\n");
  CHECK_THROWS_WITH(export_metrics_csv(run, run + "/out.csv"), "metrics.jsonl: malformed step record");

  // The newest checkpoint by number: past step 999999 the folder names grow a digit.
  for (const char* step : {"step-999999", "step-1000000", "step-000010"}) {
    fs::create_directories(run + "/checkpoints/" + step);
    write_file(run + "/checkpoints/" + step + "/trainer.json", "{}");
  }
  CHECK_EQ(RunLog::latest_checkpoint(run), run + "/checkpoints/step-1000000");
}

TEST(step_records_read_back_as_written) {
  // A record with every optional part: bias, probe routing, domains, capacity drops.
  const StepRecord r = bias_step([](TrainConfig& tc) {
    tc.eval_every = 1;
    tc.probe_every = 1;
    tc.capacity.factor = 1.0f;
  });
  CHECK(!r.bias.empty() && !r.specialisation.empty() && !r.probe_ids.empty() && !r.domain_names.empty());
  CHECK(!r.drop_by_position.empty() && !std::isnan(r.val_loss));
  // Through the text a run log holds.
  const StepRecord back =
      step_record_from_json(nlohmann::json::parse(step_record_to_json(r).dump()), "metrics.jsonl");
  CHECK_EQ(back.step, r.step);
  for (auto f : {&StepRecord::loss, &StepRecord::lm_loss, &StepRecord::aux_loss, &StepRecord::z_loss, &StepRecord::lr,
                 &StepRecord::grad_norm, &StepRecord::tokens_per_s, &StepRecord::elapsed_s, &StepRecord::val_loss})
    CHECK_EQ(back.*f, r.*f);
  CHECK_EQ(back.layers.size(), r.layers.size());
  for (size_t i = 0; i < r.layers.size(); ++i) {
    const LayerStats &a = back.layers[i], &b = r.layers[i];
    CHECK(a.layer == b.layer && a.load == b.load && a.importance == b.importance && a.dropped == b.dropped);
    CHECK(a.entropy == b.entropy && a.cv == b.cv && a.max_over_mean == b.max_over_mean && a.max_share == b.max_share);
    CHECK(a.collapse == b.collapse && a.dropped_rate == b.dropped_rate && a.dead == b.dead);
  }
  CHECK(back.bias == r.bias);
  CHECK(back.domain_names == r.domain_names && back.domain_matrix == r.domain_matrix);
  CHECK(back.probe_ids == r.probe_ids && back.drop_by_position == r.drop_by_position);
  for (size_t i = 0; i < r.specialisation.size(); ++i)  // NaN when the probe saw one domain
    CHECK(back.specialisation[i] == r.specialisation[i] ||
          (std::isnan(back.specialisation[i]) && std::isnan(r.specialisation[i])));

  // Missing and null numbers are NaN, an empty CSV cell; the CSV has a column per header name.
  StepRecord sparse = step_record_from_json(
      nlohmann::json::parse(R"({"step": 3, "loss": null, "layers": [{"layer": 1, "cv": 0.5, "dead": 2}]})"), "m");
  CHECK(std::isnan(sparse.loss) && std::isnan(sparse.lr) && sparse.layers[0].cv == 0.5 && sparse.layers[0].dead == 2);
  const std::string csv = step_records_csv({sparse});
  const std::string header = csv.substr(0, csv.find('\n')), row = csv.substr(csv.find('\n') + 1);
  CHECK_EQ(header.substr(0, 25), std::string("step,loss,lm_loss,aux_los"));
  CHECK(header.find(",layer1_cv,layer1_collapse,layer1_dead,") != std::string::npos);
  CHECK_EQ(std::count(header.begin(), header.end(), ','), std::count(row.begin(), row.end(), ','));
  CHECK_EQ(row, std::string("3,,,,,,,,,,0.5,,2,,,,\n"));

  // Malformed records name the file and what is wrong.
  const auto refuse = [](const char* text, const char* why) {
    CHECK_THROWS_WITH(step_record_from_json(nlohmann::json::parse(text), "run/metrics.jsonl"), why);
  };
  refuse(R"([1])", "run/metrics.jsonl: malformed step record (not a JSON object)");
  refuse(R"({"loss": 1})", "run/metrics.jsonl: malformed step record (");
  refuse(R"({"step": "one"})", "malformed step record (");
  refuse(R"({"step": 1, "layers": {"layer": 0}})", "\"layers\" is not a list");
  refuse(R"({"step": 1, "layers": [7]})", "a layer is not a JSON object");
  refuse(R"({"step": 1, "layers": [{"cv": 1}]})", "malformed step record (");
  refuse(R"({"step": 1, "layers": [{"layer": 0, "load": "x"}]})", "malformed step record (");
  refuse(R"({"step": 1, "layers": [{"layer": 0}, {"layer": 1, "bias": [0.1]}]})",
         "layer 1 has a bias but an earlier layer has none");
  refuse(R"({"step": 1, "layers": [{"layer": 0, "specialisation": 0.5}]})", "malformed step record (");
}

TEST(nan_loss_stops_before_the_update) {
  const Preset p = load_preset("moe-4x-top1");
  auto corpus = open_corpus("builtin:domains");
  Model m = Model::random(p.model, 1, make_eigen_backend());
  TrainConfig tc = p.train;
  tc.lr = 1e30f;  // the first update blows the weights up
  tc.warmup = 0;
  tc.clip = 0;
  tc.eval_every = 0;
  Trainer t(m, *corpus, tc);
  std::string msg;
  for (int i = 0; i < 5 && msg.empty(); ++i) msg = check::error_of([&] { t.step(); });
  CHECK(msg.find("not finite") != std::string::npos || msg.find("NaN") != std::string::npos ||
        msg.find("infinite") != std::string::npos);
  CHECK(msg.find("step ") == 0);
}

TEST(full_disk_keeps_the_previous_checkpoint) {
  TempDir tmp("disk");
  const Preset p = load_preset("moe-4x-top1");
  auto corpus = open_corpus("builtin:domains");
  Model m = Model::random(p.model, 1, make_eigen_backend());
  TrainConfig tc = p.train;
  tc.batch = 2;
  tc.seq_len = 8;
  tc.eval_every = 0;
  Trainer t(m, *corpus, tc);
  t.step();
  t.save_checkpoint(tmp / "ckpt");
  t.step();
  // Simulate a full disk: files may not grow past 4 KiB (writes fail with EFBIG).
  signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = old;
  small.rlim_cur = 4096;
  setrlimit(RLIMIT_FSIZE, &small);
  const std::string msg = check::error_of([&] { t.save_checkpoint(tmp / "ckpt"); });
  setrlimit(RLIMIT_FSIZE, &old);
  CHECK(msg.find("write failed") != std::string::npos);
  CHECK(msg.find(tmp.path.string()) != std::string::npos);
  // The previous checkpoint is intact and loads.
  Model again = Model::random(p.model, 2, make_eigen_backend());
  Trainer t2(again, *corpus, tc);
  t2.load_checkpoint(tmp / "ckpt");
  CHECK_EQ(t2.steps_done(), int64_t(1));
}

CHECK_MAIN()
