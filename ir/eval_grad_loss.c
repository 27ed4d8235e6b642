/* ir/eval_grad_loss.c: the interpreter for the gradients of losses, and the optimizers (docs/autodiff.md). */
#include "eval.h"
