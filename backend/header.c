/* backend/header.c: the generated C header (DESIGN.md §7). It compiles cleanly as C11
 * and C++17, documents every tensor's name, dtype and shape and the peak arena, and
 * declares the API. Tensor names become parameter names after replacing characters a C
 * identifier cannot hold; the comment keeps the original name. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *mb_c_ident(const mc_graph *g, const char *name) {
    char *s = mc_arena_printf(g->arena, "%s%s", isdigit((unsigned char)name[0]) ? "t_" : "", name);
    for (char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_') *p = '_';
    return s;
}

/* C11 and C++17 keywords, and names the header itself uses. */
static bool is_reserved(const char *s) {
    static const char *const words[] = {"alignas",
                                        "alignof",
                                        "and",
                                        "and_eq",
                                        "asm",
                                        "auto",
                                        "bitand",
                                        "bitor",
                                        "bool",
                                        "break",
                                        "case",
                                        "catch",
                                        "char",
                                        "char16_t",
                                        "char32_t",
                                        "class",
                                        "compl",
                                        "const",
                                        "const_cast",
                                        "constexpr",
                                        "continue",
                                        "decltype",
                                        "default",
                                        "delete",
                                        "do",
                                        "double",
                                        "dynamic_cast",
                                        "else",
                                        "enum",
                                        "explicit",
                                        "export",
                                        "extern",
                                        "false",
                                        "float",
                                        "for",
                                        "friend",
                                        "goto",
                                        "if",
                                        "inline",
                                        "int",
                                        "long",
                                        "mutable",
                                        "namespace",
                                        "new",
                                        "noexcept",
                                        "not",
                                        "not_eq",
                                        "nullptr",
                                        "operator",
                                        "or",
                                        "or_eq",
                                        "private",
                                        "protected",
                                        "public",
                                        "register",
                                        "reinterpret_cast",
                                        "restrict",
                                        "return",
                                        "short",
                                        "signed",
                                        "sizeof",
                                        "static",
                                        "static_assert",
                                        "static_cast",
                                        "struct",
                                        "switch",
                                        "template",
                                        "this",
                                        "thread_local",
                                        "throw",
                                        "true",
                                        "try",
                                        "typedef",
                                        "typeid",
                                        "typename",
                                        "union",
                                        "unsigned",
                                        "using",
                                        "virtual",
                                        "void",
                                        "volatile",
                                        "wchar_t",
                                        "while",
                                        "xor",
                                        "xor_eq",
                                        "main",
                                        NULL};
    for (const char *const *w = words; *w; w++)
        if (strcmp(s, *w) == 0) return true;
    return s[0] == '_' && (isupper((unsigned char)s[1]) || s[1] == '_');
}

bool mb_check_model_name(const mc_graph *g, mc_diag *d) {
    const char *n = g->name;
    bool ident = isalpha((unsigned char)n[0]) || n[0] == '_';
    for (const char *p = n; *p && ident; p++)
        ident = isalnum((unsigned char)*p) || *p == '_';
    if (!ident || is_reserved(n) || strncmp(n, "moert", 5) == 0 || strncmp(n, "mk_", 3) == 0 ||
        strcmp(n, "mk") == 0)
        return mc_error(d, "/name",
                        "model name '%s' cannot prefix the generated C symbols; expected an "
                        "identifier that is neither a C/C++ keyword nor 'main' and does not start "
                        "with 'moert' or 'mk_'",
                        n);
    return true;
}

/* Parameter names of <name>_run: the tensor names made identifiers, then made distinct
 * from each other, from keywords and from the model parameter `m` by appending '_'. */
static const char **param_names(const mc_graph *g) {
    int n = g->nsyms + g->ninputs + g->noutputs;
    const char **names = mc_arena_alloc(g->arena, sizeof(char *) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) {
        const char *raw = i < g->nsyms ? g->syms[i].name
                          : i < g->nsyms + g->ninputs
                              ? mc_val(g, g->inputs[i - g->nsyms])->name
                              : mc_val(g, g->outputs[i - g->nsyms - g->ninputs])->name;
        const char *s = mb_c_ident(g, raw);
        for (bool clash = true; clash;) {
            clash = is_reserved(s) || strcmp(s, "m") == 0 || strcmp(s, g->name) == 0;
            for (int j = 0; j < i && !clash; j++)
                clash = strcmp(names[j], s) == 0;
            if (clash) s = mc_arena_printf(g->arena, "%s_", s);
        }
        names[i] = s;
    }
    return names;
}

/* The step function: one inference run, or one training step (forward, backward and
 * optimizer update of the weights held by the model object). */
static const char *entry(const mc_graph *g) {
    return g->training ? "train_step" : "run";
}

static const char *c_type(mc_dtype t) {
    switch (t) {
    case MC_DT_F32: return "float";
    case MC_DT_F16:
    case MC_DT_BF16: return "uint16_t";
    case MC_DT_I32: return "int32_t";
    case MC_DT_I64: return "int64_t";
    case MC_DT_BOOL:
    case MC_DT_Q8:
    case MC_DT_Q4: return "uint8_t"; /* (quantized: params only, never in the API) */
    }
    return "void";
}

static void describe(FILE *f, const mc_graph *g, const char *role, int v) {
    const mc_value *x = mc_val(g, v);
    char shape[256];
    fprintf(f, " *   %-7s %-24s %-5s %s\n", role, x->name, mc_dtype_name(x->dt),
            mc_shape_str(g, &x->shape, shape, sizeof shape));
}

static void write_doc(FILE *f, const mc_graph *g, const mb_options *o, int64_t peak) {
    fprintf(f, "/* %s.h: generated by moec from %s. Do not edit.\n *\n", g->name,
            g->file ? g->file : "a model");
    fprintf(f, " * Tensors (C order; f16/bf16 as uint16_t bits, bool as one byte 0/1):\n");
    for (int i = 0; i < g->ninputs; i++)
        describe(f, g, "input", g->inputs[i]);
    for (int i = 0; i < g->noutputs; i++)
        describe(f, g, "output", g->outputs[i]);
    for (int i = 0; i < g->nsyms; i++)
        fprintf(f, " * Symbol %s: 1 <= %s <= %lld, passed to %s_%s.\n", g->syms[i].name,
                g->syms[i].name, (long long)g->syms[i].max, g->name, entry(g));
    fprintf(f, " * Peak arena: %lld bytes, allocated once by %s_create.\n", (long long)peak,
            g->name);
    fprintf(f, " * Weights: %s.\n",
            o->external_weights ? "external: pass the .safetensors file to _create"
                                : "embedded: pass NULL to _create");
    fprintf(f, " * A model object runs one call at a time; create one per thread for more.\n");
    fprintf(f, " * Link with libmoert, -lpthread and -lm. Every function returns a moert_status;\n"
               " * on failure moert_last_error() tells why. */\n");
}

static void write_run_decl(FILE *f, const mc_graph *g) {
    const char **names = param_names(g);
    fprintf(f, "moert_status %s_%s(%s *m", g->name, entry(g), g->name);
    for (int i = 0; i < g->nsyms; i++)
        fprintf(f, ", int64_t %s", names[i]);
    for (int i = 0; i < g->ninputs; i++)
        fprintf(f, ",\n    const %s *%s", c_type(mc_val(g, g->inputs[i])->dt), names[g->nsyms + i]);
    for (int i = 0; i < g->noutputs; i++)
        fprintf(f, ",\n    %s *%s", c_type(mc_val(g, g->outputs[i])->dt),
                names[g->nsyms + g->ninputs + i]);
    fprintf(f, ");\n");
}

bool mb_write_header(const mc_graph *g, const mb_options *o, int64_t peak, const char *path,
                     const char *shown, mc_diag *d) {
    FILE *f = fopen(path, "w");
    if (!f) return mc_error(d, "", "cannot write %s: %s", shown, strerror(errno));
    char *upper = mc_arena_strdup(g->arena, g->name);
    for (char *p = upper; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    const char *guard = mc_arena_printf(g->arena, "%s_H", upper);
    write_doc(f, g, o, peak);
    fprintf(f, "#ifndef %s\n#define %s\n\n#include <stdint.h>\n\n#include \"moert.h\"\n\n", guard,
            guard);
    fprintf(f, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    fprintf(f, "#define %s_ARENA_BYTES %lldLL\n", upper, (long long)peak);
    for (int i = 0; i < g->nsyms; i++)
        fprintf(f, "#define %s_%s_MAX %lldLL\n", upper, mb_c_ident(g, g->syms[i].name),
                (long long)g->syms[i].max);
    fprintf(f, "\ntypedef struct %s %s;\n\n", g->name, g->name);
    fprintf(f, "moert_status %s_create(%s **m, const char *weights_path);\n", g->name, g->name);
    write_run_decl(f, g);
    if (g->training)
        fprintf(f,
                "/* Writes every param (weights and optimizer state) as safetensors. */\n"
                "moert_status %s_save_weights(%s *m, const char *path);\n",
                g->name, g->name);
    fprintf(f, "void %s_destroy(%s *m);\n", g->name, g->name);
    fprintf(f, "const moert_model_info *%s_info(void);\n", g->name);
    fprintf(f, "\n#ifdef __cplusplus\n}\n#endif\n#endif\n");
    bool ok = !ferror(f);
    ok = (fclose(f) == 0) && ok;
    return ok ? true : mc_error(d, "", "cannot write %s", shown);
}
