/* backend/scratch.h: the scratch bytes each node's kernel needs, with every symbol at
 * its max, asked of the file that owns the op's kernel. The memory plan
 * (passes/plan_memory.c) reserves that many bytes, 64-byte aligned, and the backend
 * hands them to the kernel as the tensor after its outputs. */
#ifndef MB_SCRATCH_H
#define MB_SCRATCH_H

#include "ir.h"

int64_t mb_scratch_bytes(const mc_graph *g, const mc_node *n);
int64_t mb_scratch_std(const mc_graph *g, const mc_node *n);
int64_t mb_scratch_moe(const mc_graph *g, const mc_node *n);
int64_t mb_scratch_grad_std(const mc_graph *g, const mc_node *n);
int64_t mb_scratch_grad_moe(const mc_graph *g, const mc_node *n);
int64_t mb_scratch_grad_loss(const mc_graph *g, const mc_node *n);

#endif
