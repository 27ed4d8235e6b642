/* tools/commands.c: `moec check`, `moec dump`, `moec init-weights`, and the shared
 * load-then-lower step every command starts with. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

mc_graph *cli_load_and_lower(const cli_args *a, const char *default_passes, mc_diag *d) {
    mc_load_opts lo = {.training = a->training, .weights_path = a->weights};
    mc_graph *g = mc_load_model(a->model, &lo, d);
    if (!g) return NULL;
    mc_pipeline_opts po = a->pipe;
    if (!po.passes) po.passes = default_passes;
    po.training = a->training;
    if (!mc_run_pipeline(g, &po, d)) {
        mc_graph_free(g);
        return NULL;
    }
    return g;
}

static void print_summary(const mc_graph *g, const char *path) {
    int moe_nodes = 0, params = 0;
    int64_t weights = 0, bytes = 0;
    for (int k = 0; k < g->norder; k++)
        moe_nodes += strncmp(mc_op_infos[g->nodes[g->order[k]].op].name, "moe.", 4) == 0;
    for (int i = 0; i < g->nvalues; i++) {
        const mc_value *v = &g->values[i];
        if (v->dead || (v->kind != MC_VK_PARAM && v->kind != MC_VK_CONST)) continue;
        params++;
        weights += mc_shape_numel(&v->shape, NULL);
        bytes += (int64_t)v->nbytes;
    }
    printf("%s: ok: %s (%s), %d input%s, %d output%s, %d nodes (%d MoE), %d initializers "
           "(%lld elements, %lld bytes)",
           path, g->name, g->training ? "train" : "infer", g->ninputs, g->ninputs == 1 ? "" : "s",
           g->noutputs, g->noutputs == 1 ? "" : "s", g->norder, moe_nodes, params,
           (long long)weights, (long long)bytes);
    for (int s = 0; s < g->nsyms; s++)
        printf("%s %s<=%lld", s ? "," : ", symbols", g->syms[s].name, (long long)g->syms[s].max);
    printf("\n");
}

int cmd_check(const cli_args *a) {
    mc_diag d;
    mc_diag_init(&d, a->model);
    mc_graph *g = cli_load_and_lower(a, "infer-shapes,verify", &d);
    if (!g) return cli_fail(&d);
    print_summary(g, a->model);
    mc_graph_free(g);
    return EXIT_OK;
}

int cmd_dump(const cli_args *a) {
    mc_diag d;
    mc_diag_init(&d, a->model);
    mc_graph *g = cli_load_and_lower(a, NULL, &d);
    if (!g) return cli_fail(&d);
    if (!a->pipe.after) {
        if (a->pipe.format == MC_DUMP_DOT)
            mc_print_dot(stdout, g);
        else
            mc_print_graph(stdout, g);
    }
    mc_graph_free(g);
    return EXIT_OK;
}

/* --seed N: each recipe's own seed is mixed with N, so one N gives one reproducible
 * set of weights and different tensors stay independent. */
static void reseed_recipes(mc_graph *g, uint64_t seed) {
    for (int i = 0; i < g->nvalues; i++) {
        mc_value *v = &g->values[i];
        if (v->dead || v->src != MC_SRC_INIT) continue;
        v->init.seed ^= (seed + 1) * 0x9E3779B97F4A7C15ull;
        void *bytes = mc_arena_alloc(g->arena, v->nbytes);
        mc_init_fill(&v->init, v->dt, mc_shape_numel(&v->shape, NULL), bytes);
        v->data = bytes;
    }
}

int cmd_init_weights(const cli_args *a) {
    mc_diag d;
    mc_diag_init(&d, a->model);
    mc_graph *g = cli_load_and_lower(a, "infer-shapes,verify", &d); /* no weights for a bad model */
    if (!g) return cli_fail(&d);
    if (a->has_seed) reseed_recipes(g, a->seed);
    bool ok = mc_st_write_params(a->out_path, g, &d);
    mc_graph_free(g);
    return ok ? EXIT_OK : cli_fail(&d);
}
