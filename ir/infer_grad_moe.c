/* ir/infer_grad_moe.c: shape inference of the gradients of MoE ops (docs/autodiff.md). */
#include "infer.h"
