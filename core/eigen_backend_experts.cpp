// The CPU backend's routed experts (fp32/fp64 stacked weights): tokens grouped by expert, one
// GEMM per expert group, the forward that keeps each slot's G, U and Y for training, and the
// backward from them (or recomputing them). Parallel across experts; see eigen_backend.cpp.
#include <cmath>

#include "eigen_backend_internal.hpp"

namespace moelab::eigen_cpu {
namespace {

template <class S>
void round_if(bool bf16, Mat<S>& m) {
  if (bf16)
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = bf16_round(m.data()[i]);
}

}  // namespace

Groups group_by_expert(const int32_t* ids, int64_t n, int64_t E) {
  Groups g;
  g.begin.assign(size_t(E + 1), 0);
  g.order.resize(size_t(n));
  for (int64_t s = 0; s < n; ++s)
    if (ids[s] >= 0) ++g.begin[size_t(ids[s]) + 1];
  for (int64_t e = 0; e < E; ++e) g.begin[size_t(e + 1)] += g.begin[size_t(e)];
  std::vector<int64_t> fill(g.begin.begin(), g.begin.end() - 1);
  for (int64_t s = 0; s < n; ++s)
    if (ids[s] >= 0) g.order[size_t(fill[size_t(ids[s])]++)] = s;
  for (int64_t e = 0; e < E; ++e)
    if (g.begin[size_t(e + 1)] > g.begin[size_t(e)]) g.active.push_back(e);
  return g;
}

template <class S>
void combine_slots(const Groups& g, int64_t T, int64_t K, int64_t H, const S* weights, const S* rows, S* out) {
  std::vector<int64_t> pos(static_cast<size_t>(T * K), -1);
  for (int64_t i = 0, used = g.begin.back(); i < used; ++i) pos[size_t(g.order[size_t(i)])] = i;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t i = pos[size_t(t * K + k)];
      if (i < 0) continue;
      const S gw = weights ? weights[t * K + k] : S(1);
      S* o = out + t * H;
      const S* y = rows + i * H;
      for (int64_t c = 0; c < H; ++c) o[c] += gw * y[c];
    }
}

// The forward keeps the scalar std::exp: Eigen's vectorised exp is a little less accurate, and a
// decode step must agree with the full forward to 1e-6 (tests/test_decoder), which the extra error
// exceeded (1.05e-6 against 8.3e-7).
template <class S>
void swiglu_n(const S* g, const S* u, S* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (S(1) + std::exp(-g[i])) * u[i];
}

// The backward (training only) takes Eigen's vectorised exp, in blocks of kBlock values through
// fixed-size (aligned) arrays padded at the end, so that every value takes the same exp whatever
// its position and alignment (Eigen on a plain map takes a scalar exp for an unaligned head and
// the tail).
constexpr int64_t kBlock = 64;

template <class S>
void swiglu_backward_n(const S* g, const S* u, const S* d, S* dg, S* du, int64_t n) {
  using Blk = Eigen::Array<S, kBlock, 1>;
  using Arr = Eigen::Array<S, Eigen::Dynamic, 1>;
  Blk G, U, D, s, dG, dU;
  for (int64_t c = 0; c < n; c += kBlock) {
    const int64_t m = std::min(kBlock, n - c);
    G.setZero();
    U.setZero();
    D.setZero();
    G.head(m) = Eigen::Map<const Arr>(g + c, m);
    U.head(m) = Eigen::Map<const Arr>(u + c, m);
    D.head(m) = Eigen::Map<const Arr>(d + c, m);
    s = S(1) / (S(1) + (-G).exp());
    dU = D * G * s;
    dG = D * U * s * (S(1) + G * (S(1) - s));  // silu'(g) = s(1 + g(1 − s))
    Eigen::Map<Arr>(du + c, m) = dU.head(m);
    Eigen::Map<Arr>(dg + c, m) = dG.head(m);
  }
}

template <class S>
void experts_forward(const S* x, int64_t H, const Groups& g, int64_t K, const StackedExperts<S>& w, bool bf16,
                     S* G_keep, S* U_keep, S* Y) {
  using MapM = Eigen::Map<Mat<S>>;
  using CMapM = Eigen::Map<const Mat<S>>;
  using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  const int64_t F = w.F;
  const auto gemv_serial = [](const S* W, const S* v, S* y, int64_t N, int64_t C) {
    Eigen::Map<Vec>(y, N).noalias() = CMapM(W, N, C) * Eigen::Map<const Vec>(v, C);
  };
#pragma omp parallel for schedule(dynamic) if (g.active.size() > 1)
  for (size_t ai = 0; ai < g.active.size(); ++ai) {
    const int64_t e = g.active[ai], b = g.begin[size_t(e)], n = g.begin[size_t(e + 1)] - b;
    Mat<S> Xe(n, H);
    for (int64_t i = 0; i < n; ++i) Xe.row(i) = CMapM(x + (g.order[size_t(b + i)] / K) * H, 1, H);
    round_if(bf16, Xe);
    CMapM Wg(w.gate + e * F * H, F, H), Wu(w.up + e * F * H, F, H), Wd(w.down + e * H * F, H, F);
    Mat<S> A(n, F), Ub;  // A: G, then silu(G) ⊙ U
    if (!U_keep) Ub.resize(n, F);
    MapM Gm(G_keep ? G_keep + b * F : A.data(), n, F), Um(U_keep ? U_keep + b * F : Ub.data(), n, F),
        Ye(Y + b * H, n, H);
    if (n == 1) {  // one token: matrix-vector products
      gemv_serial(Wg.data(), Xe.data(), Gm.data(), F, H);
      gemv_serial(Wu.data(), Xe.data(), Um.data(), F, H);
    } else {
      Gm.noalias() = Xe * Wg.transpose();
      Um.noalias() = Xe * Wu.transpose();
    }
    swiglu_n(Gm.data(), Um.data(), A.data(), n * F);
    round_if(bf16, A);
    if (n == 1)
      gemv_serial(Wd.data(), A.data(), Ye.data(), H, F);
    else
      Ye.noalias() = A * Wd.transpose();
  }
}

template <class S>
void experts_backward(const S* x, const S* dout, const S* weights, int64_t H, const Groups& g, int64_t K,
                      const StackedExperts<S>& w, bool bf16, const S* G_kept, const S* U_kept, const S* Y_kept,
                      S* dweights, S* dgate, S* dup, S* ddown, S* slot_dx) {
  using MapM = Eigen::Map<Mat<S>>;
  using CMapM = Eigen::Map<const Mat<S>>;
  const int64_t F = w.F, E = w.E;
#pragma omp parallel for schedule(dynamic) if (g.active.size() > 1)
  for (size_t ai = 0; ai < g.active.size(); ++ai) {
    const int64_t e = g.active[ai], b = g.begin[size_t(e)], n = g.begin[size_t(e + 1)] - b;
    Mat<S> Xe(n, H), dY(n, H);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t slot = g.order[size_t(b + i)], t = slot / K;
      Xe.row(i) = CMapM(x + t * H, 1, H);
      dY.row(i) = CMapM(dout + t * H, 1, H) * weights[slot];
    }
    round_if(bf16, Xe);
    round_if(bf16, dY);
    CMapM Wg(w.gate + e * F * H, F, H), Wu(w.up + e * F * H, F, H), Wd(w.down + e * H * F, H, F);
    Mat<S> Gb, Ub, Yb;  // recomputed G, U, Y when nothing was kept
    if (!G_kept) {
      Gb.noalias() = Xe * Wg.transpose();
      Ub.noalias() = Xe * Wu.transpose();
    }
    const S* G = G_kept ? G_kept + b * F : Gb.data();
    const S* U = G_kept ? U_kept + b * F : Ub.data();
    Mat<S> A(n, F), dG(n, F), dU(n, F);
    swiglu_n(G, U, A.data(), n * F);
    round_if(bf16, A);
    if (!G_kept) Yb.noalias() = A * Wd.transpose();  // unweighted expert output, for dweights
    CMapM Ym(G_kept ? Y_kept + b * H : Yb.data(), n, H);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t slot = g.order[size_t(b + i)], t = slot / K;
      dweights[slot] = CMapM(dout + t * H, 1, H).row(0).dot(Ym.row(i));
    }
    const Mat<S> dA = dY * Wd;
    swiglu_backward_n(G, U, dA.data(), dG.data(), dU.data(), n * F);
    round_if(bf16, dG);
    round_if(bf16, dU);
    MapM(ddown, E * H, F).middleRows(e * H, H).noalias() += dY.transpose() * A;
    MapM(dgate, E * F, H).middleRows(e * F, F).noalias() += dG.transpose() * Xe;
    MapM(dup, E * F, H).middleRows(e * F, F).noalias() += dU.transpose() * Xe;
    MapM(slot_dx + b * H, n, H).noalias() = dG * Wg + dU * Wu;
  }
}

#define MOELAB_EIGEN_EXPERTS(S)                                                                                      \
  template void combine_slots<S>(const Groups&, int64_t, int64_t, int64_t, const S*, const S*, S*);                  \
  template void swiglu_n<S>(const S*, const S*, S*, int64_t);                                                        \
  template void swiglu_backward_n<S>(const S*, const S*, const S*, S*, S*, int64_t);                                 \
  template void experts_forward<S>(const S*, int64_t, const Groups&, int64_t, const StackedExperts<S>&, bool, S*, S*, \
                                   S*);                                                                              \
  template void experts_backward<S>(const S*, const S*, const S*, int64_t, const Groups&, int64_t,                   \
                                    const StackedExperts<S>&, bool, const S*, const S*, const S*, S*, S*, S*, S*,    \
                                    S*);
MOELAB_EIGEN_EXPERTS(float)
MOELAB_EIGEN_EXPERTS(double)
#undef MOELAB_EIGEN_EXPERTS

}  // namespace moelab::eigen_cpu
