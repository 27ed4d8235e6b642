/* ir/eval_grad_moe.c: the interpreter for the gradients of MoE ops (docs/autodiff.md). */
#include "eval.h"
