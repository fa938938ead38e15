// The Eigen backend, op by op, against the plain reference backend (reference_backend.hpp) over
// backend_ops.hpp's table of shapes: in fp32, in bf16 mode (against the reference's bf16 mode), and
// in fp64. Then expert capacity for K = 2 worked by hand, as literal ids and flags, on both.
#include <cmath>
#include <limits>

#include "backend_ops.hpp"
#include "check.hpp"
#include "reference_backend.hpp"

using namespace moelab;
using backend_ops::Pair;
using backend_ops::Tolerances;

TEST(eigen_fp32_matches_the_reference_over_the_op_table) {
  auto eigen = make_eigen_backend();
  auto ref = make_reference_backend();
  Pair pair{*eigen, *ref, Tolerances{}, {}};
  backend_ops::check_every_op(pair);
  Tensor t = eigen->alloc({3});
  CHECK(eigen->host_f32(t) == t.as<float>());
}

// fp64 against double loops: only the order of the sums differs.
TEST(eigen_fp64_matches_the_reference_over_the_op_table) {
  auto eigen = make_eigen_backend_f64();
  auto ref = make_reference_backend();
  Tolerances tol;
  tol.values = tol.losses = tol.optimizer = tol.experts = 1e-10;
  Pair pair{*eigen, *ref, tol, {}};
  backend_ops::check_every_op(pair);
  Tensor t = eigen->alloc({3});
  CHECK(eigen->host_f32(t) == nullptr);
  CHECK_EQ(eigen->real_bytes(), int64_t(8));
}

// bf16 mode: both round the same operands, so every op whose rounded operands are its inputs
// (linear and its backward) agrees to fp32 noise. The routed experts also round intermediates
// computed by sums in another order (fp32 here, double in the reference): an element that lands
// within that noise of a bf16 boundary rounds one bf16 step apart (see Tolerances::experts).
TEST(eigen_bf16_matches_the_bf16_reference_over_the_op_table) {
  auto eigen = make_eigen_backend();
  auto ref = make_reference_backend();
  eigen->set_precision(Precision::BF16);
  ref->set_precision(Precision::BF16);
  CHECK(ref->precision() == Precision::BF16);
  Tolerances tol;
  tol.experts = 1e-2;  // one bf16 step of one intermediate, summed into a gradient
  tol.experts_share = 0.99;
  Pair pair{*eigen, *ref, tol, {}};
  backend_ops::check_every_op(pair);
}

// The mode is on in both: a product of bf16-rounded operands is not within fp32 noise of the
// unrounded product, on the reference as on Eigen.
TEST(bf16_mode_rounds_the_operands_of_products) {
  auto eigen16 = make_eigen_backend(), ref16 = make_reference_backend(), ref32 = make_reference_backend();
  eigen16->set_precision(Precision::BF16);
  ref16->set_precision(Precision::BF16);
  Rng r(5);
  const std::vector<float> xv = backend_ops::randn(r, 8 * 64), wv = backend_ops::randn(r, 16 * 64);
  std::vector<std::vector<double>> outs;
  for (Backend* b : {eigen16.get(), ref16.get(), ref32.get()}) {
    Tensor x = b->alloc({8, 64}), w = b->alloc({16, 64}), y = b->alloc({8, 16});
    b->upload(x, xv.data());
    b->upload(w, wv.data());
    b->linear(x, w, nullptr, y);
    outs.push_back(backend_ops::values(*b, y));
  }
  CHECK(backend_ops::rel_diff(outs[0], outs[1]) < 1e-5);
  CHECK(backend_ops::rel_diff(outs[1], outs[2]) > 1e-4);
  // the routed experts: two tokens, two experts each, of four
  const int64_t T = 2, H = 64, F = 48, E = 4, K = 2;
  const std::vector<float> gv = backend_ops::randn(r, E * F * H, 0.2f), uv = backend_ops::randn(r, E * F * H, 0.2f),
                           dv = backend_ops::randn(r, E * H * F, 0.2f), wts = {0.7f, 0.3f, 0.6f, 0.4f};
  const std::vector<int32_t> ids = {0, 3, 2, 1};
  outs.clear();
  for (Backend* b : {eigen16.get(), ref16.get(), ref32.get()}) {
    Tensor x = b->alloc({T, H}), id = b->alloc({T, K}, Elem::Int32), w = b->alloc({T, K}), y = b->alloc({T, H});
    ExpertWeights ew{b->alloc({E, F, H}), b->alloc({E, F, H}), b->alloc({E, H, F}), {}, {}, {}};
    b->upload(x, xv.data(), 0, T * H);
    b->upload(id, ids.data());
    b->upload(w, wts.data());
    b->upload(ew.gate, gv.data());
    b->upload(ew.up, uv.data());
    b->upload(ew.down, dv.data());
    b->moe_experts(x, id, w, ew, y);
    outs.push_back(backend_ops::values(*b, y));
  }
  CHECK(backend_ops::rel_diff(outs[0], outs[1]) < 1e-4);
  CHECK(backend_ops::rel_diff(outs[1], outs[2]) > 1e-4);
  CHECK_THROWS_WITH(ref32->set_precision(Precision::TF32), "tf32");
}

// Round to nearest even on the bit pattern: bf16 keeps 7 mantissa bits, so near 1 its step is 2^-7.
TEST(reference_bf16_rounding_is_round_to_nearest_even) {
  const double step = std::ldexp(1.0, -7), half = step / 2, tiny = std::ldexp(1.0, -20);
  CHECK_EQ(round_to_bf16(1.0), 1.0);
  CHECK_EQ(round_to_bf16(1.0 + half), 1.0);                    // a tie, to the even 1.0
  CHECK_EQ(round_to_bf16(1.0 + 3 * half), 1.0 + 2 * step);     // a tie, to the even 1 + 2^-6
  CHECK_EQ(round_to_bf16(1.0 + half + tiny), 1.0 + step);      // just above the tie: up
  CHECK_EQ(round_to_bf16(1.0 + half - tiny), 1.0);             // just below: down
  CHECK_EQ(round_to_bf16(-(1.0 + 3 * half)), -(1.0 + 2 * step));
  CHECK_EQ(round_to_bf16(3.4e38), std::numeric_limits<double>::infinity());  // past bf16's largest finite
  CHECK(std::isnan(round_to_bf16(std::numeric_limits<double>::quiet_NaN())));
  CHECK_EQ(round_to_bf16(-std::numeric_limits<double>::infinity()), -std::numeric_limits<double>::infinity());
}

// ---- capacity, worked by hand (K = 2) ----

// One limit_capacity call on a backend: ids [T,K] in, ids / weights / dropped flags out.
struct CapacityResult {
  std::vector<int32_t> ids;
  std::vector<float> weights, dropped;
};
CapacityResult run_capacity(Backend& b, const std::vector<float>& probs, const std::vector<int32_t>& ids, int64_t E,
                            int64_t K, int64_t capacity, bool reroute, bool renormalize,
                            const std::vector<float>& bias = {}) {
  const int64_t T = int64_t(ids.size()) / K;
  Tensor p = b.alloc({T, E}), id = b.alloc({T, K}, Elem::Int32), w = b.alloc({T, K}), dropped = b.alloc({T, K}),
         sel = b.alloc({E});
  b.upload(p, probs.data());
  b.upload(id, ids.data());
  if (!bias.empty()) b.upload(sel, bias.data());
  const RouterSpec spec = backend_ops::router_spec(K, renormalize, false, bias.empty() ? nullptr : &sel, reroute);
  b.limit_capacity(p, spec, capacity, id, w, dropped);
  return {backend_ops::ids_of(b, id), backend_ops::values_f32(b, w), backend_ops::values_f32(b, dropped)};
}

std::vector<std::shared_ptr<Backend>> capacity_backends() {
  return {make_reference_backend(), make_eigen_backend(), make_eigen_backend_f64()};
}

void expect_weights(Backend& b, const std::vector<float>& got, const std::vector<double>& want) {
  CHECK_EQ(got.size(), want.size());
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i)
    if (!(std::fabs(got[i] - want[i]) <= 1e-6))
      check::report(__FILE__, __LINE__, b.name() + ": weight " + std::to_string(i) + " is " + std::to_string(got[i]) +
                                            ", want " + std::to_string(want[i]));
}

// 4 tokens, 3 experts, top-2, capacity 2 (8 choices for 6 places). Choices (first, second):
//   t0 (0, 1), t1 (1, 0), t2 (0, 2), t3 (0, 1).
// First choices first: t0→0, t1→1, t2→0 fill expert 0 before any second choice, so t3's first
// choice overflows; then the second choices: t0→1 fills expert 1, t1→0 overflows, t2→2 fits,
// t3→1 overflows. (Served token by token instead, t1's second choice would take expert 0's last
// place and t2's first choice would be dropped.)
const std::vector<float> kProbs = {0.5f, 0.3f, 0.2f,   // t0
                                   0.3f, 0.6f, 0.1f,   // t1
                                   0.5f, 0.1f, 0.4f,   // t2
                                   0.6f, 0.3f, 0.1f};  // t3
const std::vector<int32_t> kChoices = {0, 1, 1, 0, 0, 2, 0, 1};

TEST(capacity_k2_drop_serves_every_first_choice_before_any_second) {
  for (auto& b : capacity_backends()) {
    const CapacityResult got = run_capacity(*b, kProbs, kChoices, 3, 2, 2, /*reroute=*/false, /*renormalize=*/true);
    CHECK(got.ids == (std::vector<int32_t>{0, 1, 1, -1, 0, 2, -1, -1}));
    CHECK(got.dropped == (std::vector<float>{0, 0, 0, 1, 0, 0, 1, 1}));
    // renormalised over the slots that remain; a token with none keeps nothing
    expect_weights(*b, got.weights, {0.5 / 0.8, 0.3 / 0.8, 1, 0, 0.5 / 0.9, 0.4 / 0.9, 0, 0});
    // without renormalisation the kept slots keep their probabilities
    const CapacityResult raw = run_capacity(*b, kProbs, kChoices, 3, 2, 2, false, /*renormalize=*/false);
    CHECK(raw.ids == got.ids);
    expect_weights(*b, raw.weights, {0.5, 0.3, 0.6, 0, 0.5, 0.4, 0, 0});
  }
}

// The same choices, overflow re-routed to the token's best expert that has room and that it does
// not already hold:
//   t3's first choice (0 full): it holds 1 → expert 2 (load 1);
//   t1's second choice (0 full): it holds 1 → expert 2 (load 2);
//   t2's second choice (2 now full): it holds 0, expert 1 is full → dropped;
//   t3's second choice (1 full): it holds 2, expert 0 is full → dropped.
TEST(capacity_k2_reroute_takes_the_next_best_expert_with_room) {
  for (auto& b : capacity_backends()) {
    const CapacityResult got = run_capacity(*b, kProbs, kChoices, 3, 2, 2, /*reroute=*/true, true);
    CHECK(got.ids == (std::vector<int32_t>{0, 1, 1, 2, 0, -1, 2, -1}));
    CHECK(got.dropped == (std::vector<float>{0, 0, 0, 2, 0, 1, 2, 1}));
    expect_weights(*b, got.weights, {0.5 / 0.8, 0.3 / 0.8, 0.6 / 0.7, 0.1 / 0.7, 1, 0, 1, 0});
  }
}

// Expert 2 banned (selection bias −inf): route never picks it, so the choices are
//   t0 (0, 1), t1 (1, 0), t2 (0, 1), t3 (0, 1),
// and though expert 2 stays empty, no overflow is re-routed to it: every overflow is dropped.
TEST(capacity_k2_never_reroutes_to_a_banned_expert) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<int32_t> choices = {0, 1, 1, 0, 0, 1, 0, 1};
  for (auto& b : capacity_backends()) {
    const CapacityResult got =
        run_capacity(*b, kProbs, choices, 3, 2, 2, /*reroute=*/true, true, /*bias=*/{0.0f, 0.0f, -inf});
    CHECK(got.ids == (std::vector<int32_t>{0, 1, 1, -1, 0, -1, -1, -1}));
    CHECK(got.dropped == (std::vector<float>{0, 0, 0, 1, 0, 1, 1, 1}));
  }
}

// Re-routing follows score + bias, and the re-routed slot's weight is the unbiased score. Top-1,
// capacity 1; scores 0.4, 0.3, 0.2, 0.1 for both tokens, bias +0.25 on expert 3 (order 0, 3, 1, 2).
// t1 overflows expert 0 and goes to expert 3, not to expert 1 of the higher score.
TEST(capacity_reroute_follows_score_plus_bias) {
  const std::vector<float> probs = {0.4f, 0.3f, 0.2f, 0.1f, 0.4f, 0.3f, 0.2f, 0.1f};
  for (auto& b : capacity_backends()) {
    const CapacityResult got = run_capacity(*b, probs, {0, 0}, 4, 1, 1, true, /*renormalize=*/false,
                                            /*bias=*/{0.0f, 0.0f, 0.0f, 0.25f});
    CHECK(got.ids == (std::vector<int32_t>{0, 3}));
    CHECK(got.dropped == (std::vector<float>{0, 2}));
    expect_weights(*b, got.weights, {0.4, 0.1});
    const CapacityResult plain = run_capacity(*b, probs, {0, 0}, 4, 1, 1, true, false);
    CHECK(plain.ids == (std::vector<int32_t>{0, 1}));
  }
}

// Capacity 0 means no limit: the routing stands, nothing is flagged.
TEST(capacity_zero_leaves_the_routing_alone) {
  for (auto& b : capacity_backends()) {
    const CapacityResult got = run_capacity(*b, kProbs, kChoices, 3, 2, 0, true, true);
    CHECK(got.ids == kChoices);
    CHECK(got.dropped == std::vector<float>(8, 0.0f));
  }
}

CHECK_MAIN()
