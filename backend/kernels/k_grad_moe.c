/* backend/kernels/k_grad_moe.c: native kernels for the gradients of MoE ops (docs/autodiff.md). */
#include "../../runtime/moert.h"
#include "mk.h"
