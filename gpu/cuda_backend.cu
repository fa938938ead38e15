// The CUDA backend: every Backend operation on device buffers, enqueued on one stream of the
// backend's own. Dense products go to cuBLAS (fp32, no TF32: the default math mode; TF32 tensor
// cores or bf16 operands with fp32 sums when set_precision asks), the rest to the kernels of
// kernels_*.cu. Memory comes from a cache of cudaMalloc buffers keyed by size, so
// a training step that allocates the same activations every step does not call cudaMalloc.
// Only downloads wait for the device (and the ops that return a number: cross_entropy,
// router_losses, sum_squares, one small copy each). Recording the decode step as a CUDA graph is
// cuda_graph.{cuh,cu}; the device query behind make_cuda_backend is cuda_device.{hpp,cu}.
//
// This file: setup, device memory, uploads and downloads, weights kept as stored and their bf16
// copies, recording. The operations are cuda_backend_ops.cu; the class is cuda_backend_impl.cuh.
#include <vector>

#include "cuda_backend_impl.cuh"
#include "cuda_device.hpp"

namespace moelab {

CudaBackend::CudaBackend(int device) : device_(device) {
  try {
    setup();
  } catch (...) {  // out of memory for the workspace, say: give back what was made so far
    release();
    throw;
  }
}

CudaBackend::~CudaBackend() {
  (void)cudaSetDevice(device_);
  (void)cudaStreamSynchronize(stream_);
  recorder_.abort(stream_);
  release();
}

void CudaBackend::setup() {
  MOELAB_CUDA_CHECK(cudaSetDevice(device_));
  size_t free_b = 0, total_b = 0;
  MOELAB_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  memory_bytes_ = int64_t(total_b);
  MOELAB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  MOELAB_CUBLAS_CHECK(cublasCreate(&blas_));
  MOELAB_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
  // fp32 products in fp32 (no TF32), so the results match the CPU backend to ~1e-6.
  MOELAB_CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
  // A workspace of our own, so cuBLAS never allocates inside a recorded graph (32 MiB is what
  // the cuBLAS documentation recommends for Hopper).
  MOELAB_CUDA_CHECK(cudaMalloc(&blas_workspace_, kBlasWorkspace));
  MOELAB_CUBLAS_CHECK(cublasSetWorkspace(blas_, blas_workspace_, kBlasWorkspace));
  // Table uploads while the main stream is being recorded go through this one.
  MOELAB_CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
  cuda::attention_setup(device_);
}

void CudaBackend::release() {
  if (blas_) (void)cublasDestroy(blas_);
  if (blas_workspace_) (void)cudaFree(blas_workspace_);
  if (side_) (void)cudaStreamDestroy(side_);
  if (stream_) (void)cudaStreamDestroy(stream_);
  blas_ = nullptr, blas_workspace_ = nullptr, side_ = nullptr, stream_ = nullptr;
}

void CudaBackend::set_precision(Precision p) {
  not_recording("changing the precision");
  MOELAB_CUBLAS_CHECK(cublasSetMathMode(blas_, p == Precision::TF32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  precision_ = p;
}

Tensor CudaBackend::alloc_stored(std::vector<int64_t> shape, Elem type) {
  if (!is_stored_lowp(type)) fail("cuda", "alloc_stored takes bf16 or f16 tensors");
  not_recording("allocating stored weights");
  return make_tensor(std::move(shape), type, false);
}

void CudaBackend::upload_stored(Tensor& dst, const void* values, int64_t offset, int64_t count) {
  not_recording("upload");
  MOELAB_ASSERT(is_stored_lowp(dst.type), "upload_stored: a bf16/f16 tensor");
  count = checked_range(dst, offset, count, "upload range");
  if (count == 0) return;
  MOELAB_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst.ptr) + offset * 2, values, size_t(count) * 2,
                                    cudaMemcpyHostToDevice, set_device_get_stream()));
}

Tensor CudaBackend::alloc_uninit(std::vector<int64_t> shape, Elem type) {
  return make_tensor(std::move(shape), type, false);
}

void CudaBackend::upload(Tensor& dst, const float* host, int64_t offset, int64_t count) {
  not_recording("upload");
  if (is_stored_lowp(dst.type)) fail("cuda", "weights kept as stored (bf16/f16) are read-only");
  count = checked_range(dst, offset, count, "upload range");
  if (count == 0) return;
  copies_->touched(f32(dst) + offset, size_t(count) * sizeof(float));
  // From pageable memory, cudaMemcpyAsync returns once the host data has been staged: the
  // caller may free `host` right away.
  MOELAB_CUDA_CHECK(cudaMemcpyAsync(f32(dst) + offset, host, size_t(count) * sizeof(float), cudaMemcpyHostToDevice,
                                    set_device_get_stream()));
}

void CudaBackend::download(const Tensor& src, float* host, int64_t offset, int64_t count) {
  not_recording("download");
  count = checked_range(src, offset, count, "download range");
  if (count == 0) return;
  const cudaStream_t s = set_device_get_stream();
  if (is_stored_lowp(src.type)) {  // weights kept as stored: their 2-byte values, widened here
    std::vector<uint16_t> raw(static_cast<size_t>(count));
    MOELAB_CUDA_CHECK(cudaMemcpyAsync(raw.data(), static_cast<const char*>(src.ptr) + offset * 2, size_t(count) * 2,
                                      cudaMemcpyDeviceToHost, s));
    MOELAB_CUDA_CHECK(cudaStreamSynchronize(s));
    lowp_to_f32(raw.data(), src.type == Elem::BF16 ? LowpType::BF16 : LowpType::F16, host, count);
    return;
  }
  MOELAB_CUDA_CHECK(cudaMemcpyAsync(host, f32(src) + offset, size_t(count) * sizeof(float), cudaMemcpyDeviceToHost, s));
  MOELAB_CUDA_CHECK(cudaStreamSynchronize(s));
}

void CudaBackend::upload(Tensor& dst, const double* host, int64_t offset, int64_t count) {
  count = checked_range(dst, offset, count, "upload range");
  std::vector<float> staging(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) staging[size_t(i)] = float(host[i]);
  upload(dst, staging.data(), offset, count);
}

void CudaBackend::download(const Tensor& src, double* host, int64_t offset, int64_t count) {
  count = checked_range(src, offset, count, "download range");
  std::vector<float> staging(static_cast<size_t>(count));
  download(src, staging.data(), offset, count);
  for (int64_t i = 0; i < count; ++i) host[i] = double(staging[size_t(i)]);
}

void CudaBackend::upload(Tensor& dst, const int32_t* host) {
  not_recording("upload");
  if (dst.numel() == 0) return;
  MOELAB_CUDA_CHECK(cudaMemcpyAsync(dst.ptr, host, size_t(dst.numel()) * 4, cudaMemcpyHostToDevice, set_device_get_stream()));
}

void CudaBackend::download(const Tensor& src, int32_t* host) {
  not_recording("download");
  if (src.numel() == 0) return;
  const cudaStream_t s = set_device_get_stream();
  MOELAB_CUDA_CHECK(cudaMemcpyAsync(host, src.ptr, size_t(src.numel()) * 4, cudaMemcpyDeviceToHost, s));
  MOELAB_CUDA_CHECK(cudaStreamSynchronize(s));
}

void CudaBackend::synchronize() {
  not_recording("synchronize");
  MOELAB_CUDA_CHECK(cudaStreamSynchronize(set_device_get_stream()));
}

void CudaBackend::begin_recording(const Tensor& position, int64_t max_positions) {
  recorder_.begin(set_device_get_stream(), position, max_positions);
}

void CudaBackend::not_recording(const char* what) const {
  if (recorder_.active()) fail("cuda", std::string(what) + " is not possible while a decode step is being recorded");
}

cudaStream_t CudaBackend::set_device_get_stream() const {
  MOELAB_CUDA_CHECK(cudaSetDevice(device_));
  return stream_;
}

const cuda::bf16* CudaBackend::bf16_weight(const Tensor& w) {
  const int64_t n = w.numel();
  Bf16Copies::Entry e;
  bool convert = false;
  if (!copies_->find(w.ptr, n, &e)) {
    e.n = n;
    e.buf = make_tensor({(n + 1) / 2}, Elem::Int32, false).storage;
    copies_->put(w.ptr, e);
    convert = true;
  } else {
    convert = !e.fresh;
  }
  if (convert) cuda::to_bf16(f32(w), n, static_cast<cuda::bf16*>(e.buf.get()), set_device_get_stream());
  // A conversion recorded into a graph has not run yet: the copy becomes fresh only eagerly
  // (a recorded step whose weights were stale converts them at every replay: right, if slower).
  if (convert && !recorder_.active()) copies_->set_fresh(w.ptr, true);
  recorder_.keep(e.buf);
  if (!convert && recorder_.active()) recorder_.keep_copy({f32(w), n, e.buf});  // replay() refreshes it when stale
  return static_cast<const cuda::bf16*>(e.buf.get());
}

CudaBackend::Operand CudaBackend::weight_operand(const Tensor& w) {
  Operand o;
  o.f32 = f32(w);
  if (precision_ == Precision::BF16) o.b16 = bf16_weight(w);
  return o;
}

cuda::ExpertMatrix CudaBackend::expert_matrix(const Tensor& w) {
  const Operand o = weight_operand(w);
  return {o.f32, o.b16, nullptr, o.b16 != nullptr};
}

cuda::ExpertMatrix CudaBackend::expert_matrix(const ExpertWeights& w, const Tensor& stack,
                                              const std::vector<Tensor>& views) {
  if (!w.per_expert()) return expert_matrix(stack);
  const int64_t per = stack.numel() / stack.shape[0];
  for (size_t e = 0; e < views.size(); ++e)
    if (views[e].ptr != static_cast<const char*>(stack.ptr) + int64_t(e) * per * 2)
      fail("cuda", "experts kept as stored must be one device stack per matrix (load the model on this backend)");
  cuda::ExpertMatrix m;
  if (stack.type == Elem::F16) m.h16 = static_cast<const cuda::f16*>(stack.ptr);
  else m.b16 = static_cast<const cuda::bf16*>(stack.ptr);
  m.round_bf16 = precision_ == Precision::BF16;
  return m;
}

cuda::StoredMatrix CudaBackend::stored_matrix(const Tensor& w) const {
  return {w.ptr, w.type == Elem::F16, precision_ == Precision::BF16};
}

CudaBackend::Operand CudaBackend::activation_operand(const Tensor& x) {
  Operand o;
  o.f32 = f32(x);
  if (precision_ == Precision::BF16) {
    o.rounded = make_tensor({(x.numel() + 1) / 2}, Elem::Int32, false);
    o.b16 = b16(o.rounded);
    cuda::to_bf16(f32(x), x.numel(), b16(o.rounded), set_device_get_stream());
  }
  return o;
}

Tensor CudaBackend::make_tensor(std::vector<int64_t> shape, Elem type, bool zero) {
  Tensor t;
  t.shape = std::move(shape);
  t.type = type;
  for (int64_t d : t.shape) MOELAB_ASSERT(d >= 0, "negative tensor dimension");
  const size_t bytes = DevicePool::round_bytes(size_t(t.numel()) * elem_bytes(type));
  const cudaStream_t s = set_device_get_stream();
  t.storage = pooled_buffer(pool_, copies_, bytes);
  t.ptr = t.storage.get();
  if (zero) MOELAB_CUDA_CHECK(cudaMemsetAsync(t.ptr, 0, bytes, s));
  recorder_.keep(t.storage);
  return t;
}

int64_t CudaBackend::checked_range(const Tensor& t, int64_t offset, int64_t count, const char* what) {
  if (count < 0) count = t.numel() - offset;
  MOELAB_ASSERT(offset >= 0 && count >= 0 && offset + count <= t.numel(), what);
  return count;
}

std::vector<double> CudaBackend::download_doubles(const double* dev, size_t n) {
  not_recording("reading a result back");
  std::vector<double> host(n);
  const cudaStream_t s = set_device_get_stream();
  MOELAB_CUDA_CHECK(cudaMemcpyAsync(host.data(), dev, n * sizeof(double), cudaMemcpyDeviceToHost, s));
  MOELAB_CUDA_CHECK(cudaStreamSynchronize(s));
  return host;
}

std::shared_ptr<Backend> make_cuda_backend(int device) {
  std::string why;
  if (!cuda_device_available(&why, device)) fail("cuda", why);
  return std::make_shared<CudaBackend>(device);
}

}  // namespace moelab
