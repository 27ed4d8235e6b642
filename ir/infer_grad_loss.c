/* ir/infer_grad_loss.c: shape inference of the gradients of losses, and the optimizers (docs/autodiff.md). */
#include "infer.h"
