// The plain reference Backend: every op written as the loops of its definition, in double, for
// reading and for testing the fast backends against (STYLE.md convention 3; after gemma.cpp's
// backprop/forward_scalar.h and llm.c's CPU reference). No pool, no threads, no Eigen, no
// grouping: attention is three loops, the routed experts a loop over (token, slot), capacity the
// literal rule. It shares nothing with core/eigen_backend.cpp but the Tensor type and slice().
//
// Storage is double (real_bytes() == 8), so uploads of fp32 values are exact and the reference's
// own rounding is far below an fp32 backend's.
//
// Precision::BF16 mirrors the fast backends' bf16 mode (backend.hpp, "Precision"): the operands of
// every matrix product (linear and linear_backward; the routed experts' gate/up/down products and
// their backward) are rounded to bfloat16, round to nearest even, and the products summed in
// double. Which operands are rounded is listed at bf16() in reference_backend.cpp.
#pragma once

#include <memory>

#include "backend.hpp"

namespace moelab {

std::shared_ptr<Backend> make_reference_backend();

// x rounded to the nearest bfloat16 (ties to even), from the bit pattern of x as fp32: the fast
// backends' operands are fp32 values, so x goes to fp32 first (itself round to nearest even).
double round_to_bf16(double x);

}  // namespace moelab
