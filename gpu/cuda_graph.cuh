// Recording the CUDA backend's decode step as a CUDA graph (Backend::begin_recording /
// end_recording / abort_recording): the state of one recording, and the graph it produces.
// Included by cuda_backend_impl.cuh only.
//
// Stream capture in relaxed mode: the pool may still call cudaMalloc and the rope table may be
// uploaded on the side stream while the main stream is captured. Every buffer allocated while
// capturing is kept with the graph, so nothing the graph touches returns to the pool.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "backend.hpp"
#include "device_memory.cuh"

namespace moelab {

// A bf16 weight copy a recorded graph reads without converting it (it was fresh when recorded).
struct RecordedCopy {
  const float* src = nullptr;
  int64_t n = 0;
  std::shared_ptr<void> buf;
};

// One recording of the backend's stream, from begin() to end() or abort().
class GraphRecorder {
 public:
  bool active() const { return active_; }
  // The device position the recorded step reads at replay (nullptr when not recording).
  const int32_t* position() const { return active_ ? position_ : nullptr; }
  // Positions the recorded step may reach: tables it reads must cover them all.
  int64_t max_positions() const { return max_positions_; }

  // While recording, buf stays alive with the graph (it holds memory the graph reads or writes).
  void keep(const std::shared_ptr<void>& buf) {
    if (active_) keep_.push_back(buf);
  }
  // While recording, a bf16 copy the graph reads as it was: the graph refreshes it before each
  // replay when its weights were written since.
  void keep_copy(RecordedCopy copy) {
    if (active_) copies_.push_back(std::move(copy));
  }

  // Waits for `stream` (its recycled buffers are idle from here on), then captures it. position:
  // one I32 on the device, the decode position at replay.
  void begin(cudaStream_t stream, const Tensor& position, int64_t max_positions);
  // Ends the capture and instantiates the graph; it replays on `stream` and refreshes the stale
  // bf16 copies of `table` it reads. Throws when the capture failed.
  std::unique_ptr<OpGraph> end(cudaStream_t stream, std::weak_ptr<Bf16Copies> table);
  // Drops the recording after an error (nothing when none is active); never throws.
  void abort(cudaStream_t stream);

 private:
  bool active_ = false;
  const int32_t* position_ = nullptr;
  int64_t max_positions_ = 0;
  std::vector<std::shared_ptr<void>> keep_;
  std::vector<RecordedCopy> copies_;
};

}  // namespace moelab
