/* backend/kernels/k_grad_loss_scratch.h: the scratch layouts of the loss gradients
 * (k_grad_loss.c), for the kernels and for the memory plan (mk.h, "Scratch layouts").
 * Offsets in bytes. */
#ifndef MK_GRAD_LOSS_SCRATCH_H
#define MK_GRAD_LOSS_SCRATCH_H

#include "mk.h"

/* LoadBalanceLossGrad over E experts: cnt[E] f32, per scope instance. */
typedef struct {
    int64_t cnt, bytes;
} mk_load_balance_loss_grad_scratch;

static inline mk_load_balance_loss_grad_scratch mk_load_balance_loss_grad_scratch_of(int64_t E) {
    mk_load_balance_loss_grad_scratch l;
    int64_t end = 0;
    l.cnt = mk_place(&end, 4 * E);
    l.bytes = end;
    return l;
}

#endif
