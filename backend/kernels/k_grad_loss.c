/* backend/kernels/k_grad_loss.c: native kernels for the gradients of losses, and the optimizers (docs/autodiff.md). */
#include "../../runtime/moert.h"
#include "mk.h"
