/* backend/scratch.h: the scratch bytes each node's kernel needs, with every symbol at
 * its max. The memory plan (passes/plan_memory.c) reserves that many bytes, 64-byte
 * aligned, and the backend hands them to the kernel as the tensor after its outputs.
 *
 * Only ops marked MC_OPF_SCRATCH in ir/ops.def have scratch. Each has a function
 * mb_scratch_<ID> (backend/scratch_moe.c, scratch_grad.c) that reads the sizes off the
 * node and asks the kernel's own layout (backend/kernels/k_*_scratch.h) for the bytes;
 * mb_scratch_bytes reaches them through a table generated from ops.def, so an op with
 * the flag and no function fails to link. */
#ifndef MB_SCRATCH_H
#define MB_SCRATCH_H

#include "ir.h"

/* 0 exactly for ops without MC_OPF_SCRATCH; for the others what their layout says. */
int64_t mb_scratch_bytes(const mc_graph *g, const mc_node *n);

/* Declared for every op so that each definition is checked against this signature;
 * only those of flagged ops are defined and used. */
#define OP(id, name, min_in, max_in, min_out, max_out, flags)                                      \
    int64_t mb_scratch_##id(const mc_graph *g, const mc_node *n);
#include "ops.def"
#undef OP

/* Dim i of value v (a node input or output id) with its symbol at the max. */
int64_t mb_dim_max(const mc_graph *g, int v, int i);

#endif
