#include <string>

#include "cuda_check.hpp"
#include "cuda_graph.cuh"
#include "error.hpp"
#include "kernels.hpp"

namespace moelab {
namespace {

// An instantiated graph and the buffers it reads and writes.
class CudaGraph final : public OpGraph {
 public:
  CudaGraph(cudaGraph_t graph, cudaStream_t stream, std::vector<std::shared_ptr<void>> keep,
            std::vector<RecordedCopy> copies, std::weak_ptr<Bf16Copies> table)
      : graph_(graph), stream_(stream), keep_(std::move(keep)), copies_(std::move(copies)), table_(std::move(table)) {
    size_t n = 0;
    const cudaError_t e = cudaGraphGetNodes(graph_, nullptr, &n);
    nodes_ = e == cudaSuccess ? int64_t(n) : 0;
    const cudaError_t err = cudaGraphInstantiate(&exec_, graph_, 0);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      (void)cudaGraphDestroy(graph_);
      fail("cuda", std::string("cannot instantiate the recorded graph: ") + cudaGetErrorString(err));
    }
  }
  ~CudaGraph() override {
    (void)cudaStreamSynchronize(stream_);  // no replay may be running when its buffers go back
    (void)cudaGraphExecDestroy(exec_);
    (void)cudaGraphDestroy(graph_);
  }
  void replay() override {
    // Weights written since the recording (upload, copy, AdamW outside the graph) left their
    // bf16 copies stale: refresh them first, on the same stream, as an eager product would.
    if (auto table = table_.lock())
      for (const RecordedCopy& c : copies_) {
        Bf16Copies::Entry e;
        if (!table->find(c.src, c.n, &e) || e.buf != c.buf) continue;  // freed or replaced: not ours to fix
        if (e.fresh) continue;
        cuda::to_bf16(c.src, c.n, static_cast<cuda::bf16*>(c.buf.get()), stream_);
        table->set_fresh(c.src, true);
      }
    MOELAB_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
  }
  int64_t nodes() const override { return nodes_; }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::vector<std::shared_ptr<void>> keep_;
  std::vector<RecordedCopy> copies_;
  std::weak_ptr<Bf16Copies> table_;
  int64_t nodes_ = 0;
};

}  // namespace

void GraphRecorder::begin(cudaStream_t stream, const Tensor& position, int64_t max_positions) {
  if (active_) fail("cuda", "begin_recording while already recording");
  MOELAB_ASSERT(position.type == Elem::Int32 && position.numel() == 1 && max_positions > 0, "recording position");
  MOELAB_CUDA_CHECK(cudaStreamSynchronize(stream));  // recycled buffers are idle from here on
  MOELAB_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  active_ = true;
  position_ = static_cast<const int32_t*>(position.ptr);
  max_positions_ = max_positions;
  keep_.assign(1, position.storage);
  copies_.clear();
}

std::unique_ptr<OpGraph> GraphRecorder::end(cudaStream_t stream, std::weak_ptr<Bf16Copies> table) {
  if (!active_) fail("cuda", "end_recording without a recording");
  active_ = false;
  cudaGraph_t graph = nullptr;
  const cudaError_t err = cudaStreamEndCapture(stream, &graph);
  std::vector<std::shared_ptr<void>> keep = std::move(keep_);
  keep_.clear();
  if (err != cudaSuccess || !graph) {
    (void)cudaGetLastError();
    if (graph) (void)cudaGraphDestroy(graph);
    fail("cuda", std::string("recording the decode step failed: ") + cudaGetErrorString(err));
  }
  return std::make_unique<CudaGraph>(graph, stream, std::move(keep), std::move(copies_), std::move(table));
}

void GraphRecorder::abort(cudaStream_t stream) {
  if (!active_) return;
  active_ = false;
  cudaGraph_t graph = nullptr;
  (void)cudaStreamEndCapture(stream, &graph);
  if (graph) (void)cudaGraphDestroy(graph);
  (void)cudaGetLastError();
  keep_.clear();
  copies_.clear();
}

}  // namespace moelab
