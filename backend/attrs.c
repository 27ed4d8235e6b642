/* backend/attrs.c: a node's attributes as the kernels see them (mk_attr in
 * kernels/mk.h): one entry per row of the op's schema in ir/attrs.def, in that order,
 * so that attr[MC_A_<OP>_<name>] (ir/attrs.h) is the attribute `name`. Constant data,
 * so inlined kernels fold every read. */
#include "internal.h"

const char *mb_op_id_name(mc_op op) {
    static const char *const names[MC_NUM_OPS] = {
#define OP(id, name, min_in, max_in, min_out, max_out, flags) #id,
#include "ops.def"
#undef OP
    };
    return names[op];
}

/* Index of s among the '|'-separated choices: MC_A_<OP>_<name>_<choice>. */
static int64_t choice_index(const char *choices, const char *s) {
    int i = mc_choice_index(choices, s);
    if (i < 0) mc_die("attribute value '%s' is not among '%s'", s, choices);
    return i;
}

static LLVMValueRef list_global(mb_ctx *c, LLVMTypeRef ty, LLVMValueRef *vals, int n) {
    if (n == 0) return LLVMConstNull(c->ptr);
    return mb_const_global(c, LLVMConstArray2(ty, vals, (uint64_t)n), ".attr.list", 8);
}

static LLVMValueRef one_attr(mb_ctx *c, const mc_attr_schema *s, const mc_attr *a) {
    LLVMValueRef f[6] = {mb_i64(c, a != NULL), mb_i64(c, 0),          LLVMConstReal(c->f64, 0),
                         mb_i64(c, 0),         LLVMConstNull(c->ptr), LLVMConstNull(c->ptr)};
    if (!a) return LLVMConstNamedStruct(c->attr_ty, f, 6);
    LLVMValueRef *vals = mc_arena_alloc(c->g->arena, sizeof(LLVMValueRef) * (size_t)(a->n + 1));
    switch (s->kind) {
    case MC_AK_INT: f[1] = mb_i64(c, a->i); break;
    case MC_AK_FLOAT: f[2] = LLVMConstReal(c->f64, a->f); break;
    case MC_AK_STRING: f[1] = mb_i64(c, choice_index(s->choices, a->s)); break;
    case MC_AK_INTS:
        for (int i = 0; i < a->n; i++)
            vals[i] = mb_i64(c, a->ints[i]);
        f[3] = mb_i64(c, a->n);
        f[4] = list_global(c, c->i64, vals, a->n);
        break;
    case MC_AK_FLOATS:
        for (int i = 0; i < a->n; i++)
            vals[i] = LLVMConstReal(c->f64, a->floats[i]);
        f[3] = mb_i64(c, a->n);
        f[5] = list_global(c, c->f64, vals, a->n);
        break;
    }
    return LLVMConstNamedStruct(c->attr_ty, f, 6);
}

LLVMValueRef mb_node_attrs(mb_ctx *c, const mc_node *n) {
    LLVMValueRef vals[64];
    int k = 0;
    for (int i = 0; i < mc_num_attr_schemas; i++) {
        const mc_attr_schema *s = &mc_attr_schemas[i];
        if (s->op != n->op) continue;
        MC_ASSERT(k < 64);
        vals[k++] = one_attr(c, s, mc_attr_get(n, s->name));
    }
    if (k == 0) return LLVMConstNull(c->ptr); /* an op without attributes */
    return mb_const_global(c, LLVMConstArray2(c->attr_ty, vals, (uint64_t)k),
                           mc_arena_printf(c->g->arena, "%s.attrs", n->name), 8);
}
