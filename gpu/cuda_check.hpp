// Error checks for gpu/: every CUDA runtime call, kernel launch and cuBLAS call goes through one
// of these macros, so a failure becomes one moelab::Error naming the file, the line and the call
// ("gpu/cuda_backend.cu:120: cudaMalloc(&p, bytes) failed: cudaErrorMemoryAllocation: out of
// memory"). Nothing in gpu/ calls exit() or abort(). Only .cu files include this header.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "error.hpp"

namespace moelab::cuda {

[[noreturn]] inline void throw_cuda_error(const char* call, const char* file, int line, const std::string& what) {
  throw Error(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " + what);
}

inline void check(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess) throw_cuda_error(call, file, line, std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e));
}

inline void check_blas(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) throw_cuda_error(call, file, line, cublasGetStatusString(s));
}

}  // namespace moelab::cuda

// A CUDA runtime call: MOELAB_CUDA_CHECK(cudaMalloc(&p, n)).
#define MOELAB_CUDA_CHECK(call) ::moelab::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: reports a bad configuration (grid, shared memory) at the launch site.
#define MOELAB_CUDA_LAUNCHED(kernel) ::moelab::cuda::check(cudaGetLastError(), kernel "<<<...>>>", __FILE__, __LINE__)
// A cuBLAS call.
#define MOELAB_CUBLAS_CHECK(call) ::moelab::cuda::check_blas((call), #call, __FILE__, __LINE__)
