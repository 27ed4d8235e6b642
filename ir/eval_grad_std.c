/* ir/eval_grad_std.c: the interpreter for the gradients of standard ops (docs/autodiff.md). */
#include "eval.h"
