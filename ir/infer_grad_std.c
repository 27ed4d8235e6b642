/* ir/infer_grad_std.c: shape inference of the gradients of standard ops (docs/autodiff.md). */
#include "infer.h"
