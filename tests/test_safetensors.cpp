// safetensors: dtype conversions against IEEE 754 bit patterns, round trips in three dtypes and
// sharded, and the reader's refusal of hostile files (each with a one-line error naming the file).
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "check.hpp"
#include "model.hpp"
#include "safetensors.hpp"
#include "test_util.hpp"

using namespace moelab;
using testutil::safetensors_bytes;
using testutil::TempDir;
using testutil::write_file;

// First in this file, before anything here has used OpenMP (the child of a fork must not need
// the parent's thread pool). A checkpoint truncated while the model holds it mapped: reading the
// weights raises SIGBUS; the lab says so in one line naming the file and stops (exit 75), never
// a bare crash. Under AddressSanitizer (which owns SIGBUS) the case is skipped.
TEST(truncated_while_mapped_is_reported_not_a_crash) {
#if defined(__SANITIZE_ADDRESS__)
  throw check::Skip{"AddressSanitizer handles SIGBUS itself"};
#else
  TempDir tmp("sigbus");
  const ModelConfig c = testutil::tiny_config();
  Model::random(c, 3, make_eigen_backend()).save(tmp / "m", DType::BF16);
  const std::string file = tmp / "m/model.safetensors";
  int err[2];
  CHECK(::pipe(err) == 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(err[1], 2);
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    set_sigbus_note_file(tmp / "note.txt");
    Model m = Model::load(tmp / "m", make_eigen_backend());
    if (m.stored_weight_bytes() == 0) ::_exit(3);  // the test needs weights kept in the map
    if (::truncate(file.c_str(), 0) != 0) ::_exit(4);
    m.forward_full({1, 2, 3});  // reads the vanished pages
    ::_exit(5);
  }
  ::close(err[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  ::close(err[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 75);
  CHECK(out.find(file + ": the weights file was truncated or replaced while the lab had it open") != std::string::npos);
  CHECK(out.find('\n') == out.size() - 1);  // one line
  // the same line for the GUI's next start, without the "moelab: " prefix
  CHECK_EQ(testutil::read_file(tmp / "note.txt"), out.substr(std::string("moelab: ").size()));
#endif
}

TEST(half_and_bfloat16_bit_patterns) {
  // Known binary16 encodings (IEEE 754-2008 table values).
  CHECK_EQ(float_to_half(1.0f), uint16_t(0x3C00));
  CHECK_EQ(float_to_half(-2.0f), uint16_t(0xC000));
  CHECK_EQ(float_to_half(65504.0f), uint16_t(0x7BFF));       // largest normal
  CHECK_EQ(float_to_half(1e6f), uint16_t(0x7C00));           // overflow -> +inf
  CHECK_EQ(float_to_half(std::ldexp(1.0f, -24)), uint16_t(0x0001));  // smallest subnormal
  CHECK_EQ(float_to_half(std::ldexp(1.0f, -14)), uint16_t(0x0400));  // smallest normal
  CHECK_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), uint16_t(0x3C00));  // tie -> even
  CHECK_EQ(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), uint16_t(0x3C02));  // tie -> even (up)
  CHECK_EQ(half_to_float(0x3555), 0.333251953125f);
  CHECK_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));
  CHECK(std::isinf(half_to_float(0xFC00)) && half_to_float(0xFC00) < 0);
  CHECK_EQ(float_to_bf16(1.0f), uint16_t(0x3F80));
  CHECK_EQ(float_to_bf16(3.140625f), uint16_t(0x4049));
  CHECK_EQ(bf16_to_float(0xC0A0), -5.0f);
  CHECK_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), uint16_t(0x3F80));  // tie -> even
  for (int i = 0; i < 65536; ++i) {  // every finite half round-trips exactly
    const uint16_t h = uint16_t(i);
    if ((h & 0x7C00) == 0x7C00) continue;
    if (float_to_half(half_to_float(h)) != h) {
      check::report(__FILE__, __LINE__, "half round trip fails for " + std::to_string(i));
      break;
    }
  }
}

TEST(round_trip_three_dtypes_and_sharded) {
  TempDir tmp("st");
  std::vector<float> a(6 * 5), b(7);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.37f - 3.0f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = 1.0f / float(i + 1);
  for (DType d : {DType::F32, DType::F16, DType::BF16}) {
    const std::string path = tmp / (std::string(dtype_name(d)) + ".safetensors");
    write_safetensors(path, {{"a", {6, 5}, a.data(), d}, {"b", {7}, b.data(), d}});
    SafetensorsFile f(path);
    CHECK_EQ(f.metadata().at("format"), std::string("pt"));
    const TensorView* ta = f.find("a");
    CHECK(ta && ta->dtype == d && ta->shape == std::vector<int64_t>({6, 5}));
    std::vector<float> back(a.size());
    tensor_to_float(*ta, back.data());
    const double tol = d == DType::F32 ? 0.0 : d == DType::F16 ? 1e-3 : 1e-2;  // relative precision of the dtype
    for (size_t i = 0; i < a.size(); ++i) CHECK_NEAR(back[i], a[i], tol * std::fabs(a[i]) + 1e-7);
    // Header is padded to 8 bytes and the data starts right after it.
    const std::string raw = testutil::read_file(path);
    uint64_t n = 0;
    std::memcpy(&n, raw.data(), 8);
    CHECK_EQ(n % 8, uint64_t(0));
  }
  // A whole model, sharded, loads back identically.
  ModelConfig c = testutil::tiny_config();
  Model m = Model::random(c, 7, make_eigen_backend());
  m.save(tmp / "sharded", DType::F32, 20000);
  CHECK(std::filesystem::exists(tmp / "sharded/model.safetensors.index.json"));
  int shards = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path / "sharded"))
    shards += e.path().filename().string().rfind("model-", 0) == 0;
  CHECK(shards >= 3);
  Model back = Model::load(tmp / "sharded", make_eigen_backend());
  const auto w1 = m.export_weights(), w2 = back.export_weights();
  CHECK_EQ(w1.size(), w2.size());
  for (size_t i = 0; i < w1.size(); ++i) CHECK(w1[i].first == w2[i].first && w1[i].second == w2[i].second);
  const std::vector<int32_t> toks = {1, 5, 9, 2};
  CHECK(m.forward_full(toks) == back.forward_full(toks));
}

static std::string header_for(const std::string& entries) { return "{" + entries + "}"; }

TEST(reader_rejects_hostile_files) {
  TempDir tmp("hostile");
  const std::string data8(8, '\0');  // two F32 values
  auto refuse = [&](const std::string& name, const std::string& bytes, const std::string& needle) {
    const std::string path = tmp / name;
    write_file(path, bytes);
    CHECK_THROWS_WITH(SafetensorsFile f(path), needle);
    CHECK_THROWS_WITH(SafetensorsFile f(path), path);  // the message names the file
  };
  const std::string ok = header_for(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})");
  { write_file(tmp / "ok.safetensors", safetensors_bytes(ok, data8)); SafetensorsFile f(tmp / "ok.safetensors"); CHECK(f.find("a")); }
  refuse("empty", "", "truncated");
  refuse("short_header", safetensors_bytes(ok, data8).substr(0, 20), "truncated");
  refuse("truncated_data", safetensors_bytes(ok, data8.substr(0, 4)), "past the end");
  refuse("trailing", safetensors_bytes(ok, data8 + "xxxx"), "trailing");
  refuse("not_json", safetensors_bytes("{\"a\": [1,", data8), "not valid JSON");
  refuse("huge_header_len", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", "100 MB");
  refuse("overlap", safetensors_bytes(header_for(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]})"), data8), "overlaps");
  // Equal keys: the JSON library would keep the last and silently drop the first (same range, so no hole).
  refuse("named twice", safetensors_bytes(header_for(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), data8), "'a' twice");
  refuse("hole", safetensors_bytes(header_for(R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]})"), data8), "hole");
  refuse("past_end", safetensors_bytes(header_for(R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), data8), "past the end");
  refuse("dtype_size", safetensors_bytes(header_for(R"("a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]})"), data8), "needs 4");
  refuse("bad_dtype", safetensors_bytes(header_for(R"("a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]})"), data8), "unsupported dtype");
  refuse("negative_dim", safetensors_bytes(header_for(R"("a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), data8), "non-negative");
  refuse("overflow", safetensors_bytes(header_for(R"("a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]})"), data8), "overflows");
  refuse("no_offsets", safetensors_bytes(header_for(R"("a":{"dtype":"F32","shape":[2]})"), data8), "data_offsets");
}

// A FIFO named model.safetensors: refused at once, not a wait for a writer that never comes.
TEST(reader_refuses_a_fifo_without_waiting) {
  TempDir tmp("fifo");
  const std::string path = tmp / "model.safetensors";
  CHECK(::mkfifo(path.c_str(), 0644) == 0);
  ::alarm(20);  // without the fix, open() blocks: the alarm ends the test as a failure
  CHECK_THROWS_WITH(SafetensorsFile f(path), "not a regular file");
  CHECK_THROWS_WITH(Checkpoint c(tmp.path.string()), path);
  ::alarm(0);
}

// An index naming 300,000 shards: the first missing one is reported in well under a second (the
// duplicate check was a linear search per name, minutes for such an index).
TEST(shard_index_with_many_names_fails_fast) {
  TempDir tmp("many");
  std::string index = R"({"weight_map": {)";
  for (int i = 0; i < 300000; ++i) {
    const std::string n = std::to_string(i);
    index.append(i ? ",\"t" : "\"t").append(n).append("\": \"s").append(n).append(".safetensors\"");
  }
  write_file(tmp / "model.safetensors.index.json", index + "}}");
  ::alarm(20);
  CHECK_THROWS_WITH(Checkpoint c(tmp.path.string()), "s0.safetensors: cannot open");
  ::alarm(0);
}

CHECK_MAIN()
