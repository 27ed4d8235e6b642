/* passes/pipeline.c: every pass moec has, in the order of the default pipeline, each
 * with what it needs, gives and breaks (docs/ir.md repeats the table), and the two
 * passes that only wrap an ir/ entry point (infer-shapes, verify). Adding a pass is one
 * row here plus its file; the manager (manager.c) parses, checks and runs pipelines. */
#include "passes.h"

#include <string.h>

/* ---- infer-shapes ----
 * infer-shapes: gives every value its dtype and shape by running each node's shape
 * inference in order (mc_infer_shapes in ir/). This is the pass that reports shape errors: a
 * model that loads but does not type-check fails here with the node and the field.
 * It reports a change only when some value's dtype or shape is new or different, so a
 * second run (or a run on an already inferred graph) changes nothing.
 * needs: a loaded graph    gives: shapes    breaks: the memory plan */
typedef struct {
    bool has_shape;
    mc_dtype dt;
    mc_shape shape;
} typing;

static bool same_typing(const typing *t, const mc_value *v) {
    return t->has_shape == v->has_shape &&
           (!v->has_shape || (t->dt == v->dt && mc_shape_eq(&t->shape, &v->shape)));
}

bool mc_pass_infer_shapes(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    typing *before = mc_alloc(sizeof(typing) * (size_t)(g->nvalues + 1));
    if (!before) mc_oom(sizeof(typing) * (size_t)(g->nvalues + 1));
    for (int i = 0; i < g->nvalues; i++)
        before[i] = (typing){g->values[i].has_shape, g->values[i].dt, g->values[i].shape};
    bool ok = mc_infer_shapes(g, cx->d);
    for (int i = 0; ok && i < g->nvalues && !*changed; i++)
        *changed = !same_typing(&before[i], &g->values[i]);
    mc_free(before);
    return ok;
}

/* ---- verify ----
 * verify: checks what every pass must keep true (mc_verify in ir/: ids, producers and
 * use lists consistent, order topological, arity and attributes as the op table says,
 * recorded shapes equal to re-inferred ones). As a pipeline step it lets
 * `--after=verify` show the graph a model really starts from; `--verify-each` runs the
 * same check after every pass instead.
 * needs: shapes    keeps: everything */
bool mc_pass_verify(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    return mc_verify(g, cx->d);
}

/* ---- the table ---- */

enum {
    SHAPES = MC_PROP_SHAPES,
    EXPANDED = MC_PROP_EXPANDED,
    UNFUSED = MC_PROP_UNFUSED,
    GRADS = MC_PROP_GRADS,
    PLAN = MC_PROP_PLAN
};

static const mc_pass_info table[] = {
    {"infer-shapes", mc_pass_infer_shapes, 0, SHAPES, PLAN, false,
     "gives every value a dtype and shape; reports shape errors"},
    {"verify", mc_pass_verify, SHAPES, 0, 0, false,
     "checks ids, uses, order, arity, attributes and shapes; changes nothing"},
    {"expand-moe", mc_pass_expand_moe, SHAPES, EXPANDED, PLAN, false,
     "moe.MoE -> route, dispatch, expert GEMMs, combine, so later passes see one form"},
    {"gw-specialize", mc_pass_gw_specialize, SHAPES, 0, PLAN, false,
     "sets each moe.GWRoute's mode: in inference it becomes its base moe.TopKRoute; in "
     "training the GW Dispatch's rows are not materialised (moe.GatherMatMul of x)"},
    {"canonicalize", mc_pass_canonicalize, SHAPES, 0, PLAN, false,
     "drops no-op Identity/Reshape/Transpose/Cast, merges Transposes"},
    {"fold-constants", mc_pass_fold_constants, SHAPES, 0, PLAN, false,
     "runs nodes of constants (and params, in inference) once, at compile time"},
    {"autodiff", mc_pass_autodiff, SHAPES | EXPANDED | UNFUSED, GRADS, PLAN, true,
     "training: appends the loss's gradient w.r.t. every trained param; before fusion, "
     "which has no gradient rules"},
    {"optimizer", mc_pass_optimizer, SHAPES | GRADS, 0, PLAN, true,
     "training: one SGD/AdamW step per trained param, state as params, updates"},
    {"fuse-gate-dispatch", mc_pass_fuse_gate_dispatch, SHAPES | EXPANDED, 0, UNFUSED | PLAN, false,
     "router MatMul, route and Dispatch -> one moe.Fused*Dispatch; token rows read in place "
     "(GatherMatMul, FusedUp through row_token) instead of copied; after autodiff"},
    {"fuse-expert-ffn", mc_pass_fuse_expert_ffn, SHAPES | EXPANDED, 0, UNFUSED | PLAN, false,
     "an expert FFN's gate/up products, activation and Mul -> moe.FusedUp; its down "
     "product and Combine -> moe.FusedDownCombine; after autodiff"},
    {"fuse-elementwise", mc_pass_fuse_elementwise, SHAPES, 0, UNFUSED | PLAN, false,
     "a residual Add joins moe.FusedDownCombine; elementwise chains -> one "
     "moe.FusedElementwise loop; a norm and the chain after it -> moe.FusedNorm"},
    {"dce", mc_pass_dce, 0, 0, PLAN, false,
     "removes nodes and initializers no output or update depends on; keeps inputs"},
    {"quantize-weights", mc_pass_quantize_weights, SHAPES, 0, PLAN, false,
     "--weight-dtype=f16|bf16: FFN and expert weights stored narrower, routers and norms "
     "f32; after fusion, whose ops show which param is whose weight"},
    {"plan-memory", mc_pass_plan_memory, SHAPES, PLAN, 0, false,
     "last: a byte range in one arena for every temp and kernel scratch, by liveness"},
};
enum { NUM_PASSES = sizeof table / sizeof table[0] };

const char mc_default_pipeline[] =
    "infer-shapes,verify,expand-moe,gw-specialize,"
    "{canonicalize,fold-constants},autodiff,optimizer,"
    "{canonicalize,fuse-gate-dispatch,fuse-expert-ffn,fuse-elementwise},dce,quantize-weights,"
    "plan-memory";

const mc_pass_info *mc_pass_find(const char *name) {
    for (int i = 0; i < NUM_PASSES; i++)
        if (strcmp(table[i].name, name) == 0) return &table[i];
    return NULL;
}

const mc_pass_info *mc_pass_table(int *out_n) {
    *out_n = NUM_PASSES;
    return table;
}

const char *mc_prop_name(unsigned prop) {
    switch (prop) {
    case MC_PROP_SHAPES: return "shapes";
    case MC_PROP_EXPANDED: return "expanded composite ops (expand-moe)";
    case MC_PROP_UNFUSED: return "unfused ops";
    case MC_PROP_GRADS: return "gradients (autodiff)";
    case MC_PROP_PLAN: return "a memory plan (plan-memory)";
    }
    mc_die("mc_prop_name: %u is not one property", prop);
}
