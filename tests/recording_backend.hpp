// A CPU stand-in for CUDA graph capture, so the recorded-decode logic of core/ (Decoder,
// Model::forward_tensors, DeviceTrace) is tested on machines without a GPU. It wraps the Eigen
// backend: while recording, each op becomes a closure and nothing runs (as under stream
// capture), host transfers and ops that return numbers throw (as they must not happen inside a
// graph), allocations are re-zeroed on every replay, and rope / copy_rows / attention read the
// position from the device scalar at replay time. It checks the recording contract of
// core/backend.hpp, not CUDA itself.
#pragma once

#include <cstring>
#include <functional>
#include <string>
#include <memory>
#include <stdexcept>
#include <vector>

#include "backend.hpp"
#include "error.hpp"

namespace testutil {

class RecordingBackend final : public moelab::Backend {
 public:
  using Tensor = moelab::Tensor;
  using Elem = moelab::Elem;
  explicit RecordingBackend(std::shared_ptr<moelab::Backend> inner) : in_(std::move(inner)) {}

  int recordings = 0, replays = 0;
  bool fail_next_recording = false;  // end_recording throws once, as a failed capture would

  std::string name() const override { return "recording(" + in_->name() + ")"; }
  int64_t real_bytes() const override { return in_->real_bytes(); }

  // ---- recording ----
  class Graph final : public moelab::OpGraph {
   public:
    std::vector<std::function<void()>> ops;
    int* replays = nullptr;
    void replay() override {
      ++*replays;
      for (auto& op : ops) op();
    }
    int64_t nodes() const override { return int64_t(ops.size()); }
  };
  bool can_record() const override { return true; }
  void begin_recording(const Tensor& position, int64_t max_positions) override {
    if (rec_) throw std::logic_error("begin_recording while recording");
    rec_ = std::make_unique<Graph>();
    rec_->replays = &replays;
    pos_ = position;
    max_pos_ = max_positions;
    ++recordings;
  }
  std::unique_ptr<moelab::OpGraph> end_recording() override {
    if (!rec_) throw std::logic_error("end_recording without a recording");
    if (fail_next_recording) {
      fail_next_recording = false;
      rec_.reset();
      throw moelab::Error("recording: simulated capture failure");
    }
    return std::move(rec_);
  }
  void abort_recording() override { rec_.reset(); }

  // ---- memory ----
  Tensor alloc(std::vector<int64_t> shape, Elem type) override {
    Tensor t = in_->alloc(std::move(shape), type);
    if (rec_) {
      const size_t bytes = size_t(t.numel()) * size_t(type == Elem::Int32 ? 4 : in_->real_bytes());
      rec_->ops.push_back([t, bytes] { std::memset(t.ptr, 0, bytes); });
    }
    return t;
  }
  Tensor alloc_uninit(std::vector<int64_t> shape, Elem type) override { return in_->alloc_uninit(std::move(shape), type); }

  // When keep_stored is set, it also stands in for a GPU that keeps weights as stored
  // (Backend::keeps_stored_weights): bf16/f16 copies in buffers of its own, not the checkpoint's
  // map, checked against a device memory of device_memory bytes (0: the host's). The Eigen
  // backend inside computes with them as with mapped ones.
  bool keep_stored = false;
  int64_t device_memory = 0;
  int64_t stored_allocs = 0;  // alloc_stored calls
  bool keeps_stored_weights() const override { return keep_stored; }
  int64_t device_memory_bytes() const override { return device_memory; }
  Tensor alloc_stored(std::vector<int64_t> shape, Elem type) override {
    if (!keep_stored) return Backend::alloc_stored(std::move(shape), type);
    host("alloc_stored");
    Tensor t;
    t.shape = std::move(shape);
    t.type = type;
    std::shared_ptr<uint16_t[]> buf(new uint16_t[size_t(t.numel())]());
    t.ptr = buf.get();
    t.storage = std::move(buf);
    ++stored_allocs;
    return t;
  }
  void upload_stored(Tensor& d, const void* values, int64_t offset, int64_t count) override {
    if (!keep_stored) return Backend::upload_stored(d, values, offset, count);
    host("upload_stored");
    if (offset < 0 || count < 0 || offset + count > d.numel()) throw std::logic_error("upload_stored out of range");
    std::memcpy(static_cast<char*>(d.ptr) + offset * 2, values, size_t(count) * 2);
  }
  void upload(Tensor& d, const float* h, int64_t o, int64_t c) override { host("upload"), in_->upload(d, h, o, c); }
  void download(const Tensor& s, float* h, int64_t o, int64_t c) override { host("download"), in_->download(s, h, o, c); }
  void upload(Tensor& d, const double* h, int64_t o, int64_t c) override { host("upload"), in_->upload(d, h, o, c); }
  void download(const Tensor& s, double* h, int64_t o, int64_t c) override { host("download"), in_->download(s, h, o, c); }
  void upload(Tensor& d, const int32_t* h) override { host("upload"), in_->upload(d, h); }
  void download(const Tensor& s, int32_t* h) override { host("download"), in_->download(s, h); }
  float* host_f32(Tensor&) override { return nullptr; }  // like a device: loaders go through upload
  void synchronize() override { host("synchronize"); }
  void do_fill(Tensor& t, float value) override { op([=, this]() mutable { in_->fill(t, value); }); }
  void do_copy(const Tensor& s, Tensor& d) override { op([=, this]() mutable { in_->copy(s, d); }); }

  // ---- forward ----
  void do_embedding(const Tensor& a, const Tensor& ids, Tensor& out) override {
    op([=, this]() mutable { in_->embedding(a, ids, out); });
  }
  void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out, bool acc) override {
    const Tensor b = bias ? *bias : Tensor();
    op([=, this]() mutable { in_->linear(x, w, b.empty() ? nullptr : &b, out, acc); });
  }
  void do_rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    op([=, this]() mutable { in_->rmsnorm(x, w, eps, out); });
  }
  void do_clamp(Tensor& x, float lo, float hi) override { op([=, this]() mutable { in_->clamp(x, lo, hi); }); }
  void do_rope(Tensor& x, int64_t nh, int64_t d, int64_t pos0, int64_t len, const moelab::RopeSpec& rope,
               bool inv) override {
    const bool dyn = bool(rec_);
    op([=, this]() mutable { in_->rope(x, nh, d, dyn ? position() : pos0, len, rope, inv); });
  }
  void do_copy_rows(const Tensor& s, Tensor& d, int64_t row0) override {
    const bool dyn = bool(rec_);
    op([=, this]() mutable { in_->copy_rows(s, d, dyn ? position() : row0); });
  }
  void do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t B, int64_t past, int64_t nh, int64_t nkv,
                    int64_t d, Tensor& out) override {
    const bool dyn = bool(rec_);
    op([=, this]() mutable { in_->attention(q, k, v, B, dyn ? position() : past, nh, nkv, d, out); });
  }
  // The spec is copied into the closure: it holds its selection bias by (shared) value.
  void do_route(const Tensor& logits, const moelab::RouterSpec& spec, Tensor& probs, Tensor& ids, Tensor& w) override {
    op([=, this]() mutable { in_->route(logits, spec, probs, ids, w); });
  }
  void do_limit_capacity(const Tensor& probs, const moelab::RouterSpec& spec, int64_t capacity, Tensor& ids, Tensor& w,
                         Tensor& dropped) override {
    op([=, this]() mutable { in_->limit_capacity(probs, spec, capacity, ids, w, dropped); });
  }
  void do_moe_experts(const Tensor& x, const Tensor& ids, const Tensor& w, const moelab::ExpertWeights& ew,
                      Tensor& out) override {
    op([=, this]() mutable { in_->moe_experts(x, ids, w, ew, out); });
  }
  void do_swiglu(const Tensor& g, const Tensor& u, Tensor& out) override { op([=, this]() mutable { in_->swiglu(g, u, out); }); }
  void do_add(Tensor& y, const Tensor& x) override { op([=, this]() mutable { in_->add(y, x); }); }
  void do_row_norms(const Tensor& x, Tensor& out) override { op([=, this]() mutable { in_->row_norms(x, out); }); }
  void do_add_sigmoid_gated(Tensor& y, const Tensor& x, const Tensor& g) override {
    op([=, this]() mutable { in_->add_sigmoid_gated(y, x, g); });
  }
  void do_noisy_logits(const Tensor& c, const Tensor& r, const Tensor& n, Tensor& out) override {
    op([=, this]() mutable { in_->noisy_logits(c, r, n, out); });
  }

  // ---- training: direct only ----
  double do_cross_entropy(const Tensor& l, const Tensor& t, Tensor& d, float s) override {
    return host("cross_entropy"), in_->cross_entropy(l, t, d, s);
  }
  void do_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool a, Tensor& dw,
                          Tensor* db) override {
    host("linear_backward"), in_->linear_backward(x, w, dy, dx, a, dw, db);
  }
  void do_rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, Tensor& dx, bool a,
                           Tensor& dw) override {
    host("rmsnorm_backward"), in_->rmsnorm_backward(x, w, dy, eps, dx, a, dw);
  }
  void do_embedding_backward(const Tensor& ids, const Tensor& d, Tensor& dt) override {
    host("embedding_backward"), in_->embedding_backward(ids, d, dt);
  }
  void do_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& d, int64_t B, int64_t nh,
                             int64_t nkv, int64_t hd, Tensor& dq, Tensor& dk, Tensor& dv) override {
    host("attention_backward"), in_->attention_backward(q, k, v, d, B, nh, nkv, hd, dq, dk, dv);
  }
  void do_swiglu_backward(const Tensor& g, const Tensor& u, const Tensor& d, Tensor& dg, Tensor& du) override {
    host("swiglu_backward"), in_->swiglu_backward(g, u, d, dg, du);
  }
  void do_route_backward(const Tensor& p, const Tensor& ids, const Tensor& dw, const moelab::RouterSpec& s, Tensor& dl,
                         bool a) override {
    host("route_backward"), in_->route_backward(p, ids, dw, s, dl, a);
  }
  std::pair<double, double> do_router_losses(const Tensor& l, const Tensor& ids, float ac, float zc, Tensor& dl) override {
    return host("router_losses"), in_->router_losses(l, ids, ac, zc, dl);
  }
  void do_moe_experts_backward(const Tensor& x, const Tensor& ids, const Tensor& w, const moelab::ExpertWeights& ew,
                               const Tensor& d, Tensor& dx, Tensor& dw, moelab::ExpertWeights& dew) override {
    host("moe_experts_backward"), in_->moe_experts_backward(x, ids, w, ew, d, dx, dw, dew);
  }
  void do_sigmoid_gated_backward(const Tensor& x, const Tensor& g, const Tensor& dy, Tensor& dx, Tensor& dg) override {
    host("sigmoid_gated_backward"), in_->sigmoid_gated_backward(x, g, dy, dx, dg);
  }
  void do_noisy_logits_backward(const Tensor& r, const Tensor& n, const Tensor& d, Tensor& dr) override {
    host("noisy_logits_backward"), in_->noisy_logits_backward(r, n, d, dr);
  }
  double do_sum_squares(const Tensor& x) override { return host("sum_squares"), in_->sum_squares(x); }
  void do_scale(Tensor& x, float s) override { host("scale"), in_->scale(x, s); }
  void do_adamw(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps, float wd,
                int64_t step) override {
    host("adamw"), in_->adamw(p, g, m, v, lr, b1, b2, eps, wd, step);
  }

 private:
  // Ops that cannot be part of a recording.
  void host(const char* what) const {
    if (rec_) throw std::logic_error(std::string(what) + " while recording");
  }
  void op(std::function<void()> f) {
    if (rec_)
      rec_->ops.push_back(std::move(f));
    else
      f();
  }
  // Recorded ops read the position from the device scalar when they replay.
  int64_t position() const {
    const int64_t p = pos_.i32()[0];
    if (p < 0 || p >= max_pos_) throw std::logic_error("recorded position out of range");
    return p;
  }

  std::shared_ptr<moelab::Backend> in_;
  std::unique_ptr<Graph> rec_;
  Tensor pos_;
  int64_t max_pos_ = 0;
};

}  // namespace testutil
