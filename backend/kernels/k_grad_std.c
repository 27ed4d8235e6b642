/* backend/kernels/k_grad_std.c: native kernels for the gradients of standard ops (docs/autodiff.md). */
#include "../../runtime/moert.h"
#include "mk.h"
