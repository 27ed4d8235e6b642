/* backend/consts.c: what the module holds besides code. Constants and (unless
 * --weights=external) params become read-only globals aligned for vector loads, GEMM B
 * operands already packed into panels, in the module or (moec build) in a weights
 * object of their own written by a thread alongside; the model info and descriptor of
 * runtime/moert.h become constant structs. */
#include "internal.h"
#include "moert.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

LLVMValueRef mb_cstr(mb_ctx *c, const char *s) {
    LLVMValueRef gv =
        mb_const_global(c, LLVMConstStringInContext2(c->cx, s, strlen(s), 0), ".str", 1);
    LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
    return gv;
}

LLVMValueRef mb_const_global(mb_ctx *c, LLVMValueRef init, const char *name, unsigned align) {
    LLVMValueRef gv = LLVMAddGlobal(c->mod, LLVMTypeOf(init), name);
    LLVMSetInitializer(gv, init);
    LLVMSetGlobalConstant(gv, 1);
    LLVMSetLinkage(gv, LLVMPrivateLinkage);
    LLVMSetAlignment(gv, align);
    return gv;
}

static bool is_used(const mc_graph *g, int v) {
    return !mc_val(g, v)->dead && mc_graph_count_uses(g, v) > 0;
}

/* ---- params ----
 * Each embedded param is one global of raw bytes (DESIGN.md §10), GEMM B operands in
 * the micro-kernel's panels. With c->weights_object the globals are only declared here
 * (hidden, external) and a thread defines them in an object of its own while this
 * thread lowers, optimizes and emits the code: the weights never pass through LLVM's
 * pipeline and the two objects are written at the same time. The thread writes ELF
 * itself; for other object formats it goes through a module in an LLVM context of its
 * own. */

typedef struct {
    const mc_value *v;
    const void *data;
    size_t bytes; /* as stored: packed when nr > 0 */
    int64_t lead, K, N;
    size_t elem;      /* bytes per element */
    int nr;           /* panel width, or 0: the bytes as they are */
    const char *name; /* the global's */
    LLVMValueRef *slot;
} weight;

static weight weight_of(mb_ctx *c, int v, LLVMValueRef *slot) {
    const mc_value *x = mc_val(c->g, v);
    weight w = {.v = x,
                .data = x->data,
                .bytes = x->nbytes,
                .elem = mc_dtype_size(x->dt),
                .nr = c->panel_nr[v],
                .slot = slot};
    w.name = mc_arena_printf(c->g->arena, "%s.w.%s", c->g->name, x->name);
    if (!w.nr) return w;
    const mc_shape *s = &x->shape;
    w.K = s->d[s->rank - 2].c;
    w.N = s->d[s->rank - 1].c;
    w.lead = 1;
    for (int i = 0; i < s->rank - 2; i++)
        w.lead *= s->d[i].c;
    w.bytes = (size_t)(w.lead * moert_panel_elems((moert_dtype)x->dt, w.K, w.N, w.nr)) * w.elem;
    if (mc_dtype_is_quant(x->dt))
        w.bytes = (size_t)(w.lead * moert_quant_layout((moert_dtype)x->dt, w.K, w.N, x->qgroup,
                                                       x->qzero != NULL, w.nr)
                                        .matrix);
    return w;
}

/* One buffer for the largest packed param, reused for each: NULL if none is packed. */
static char *pack_buffer(const weight *ws, int n, bool *ok) {
    size_t most = 0;
    for (int i = 0; i < n; i++)
        if (ws[i].nr && ws[i].bytes > most) most = ws[i].bytes;
    char *buf = most ? malloc(most) : NULL;
    *ok = !most || buf;
    return buf;
}

typedef struct {
    const weight *w;
    char *dst;
} pack_task;

/* Matrices [begin, end) of a quantized w, with their scales and zero points. */
static void pack_quant(const weight *w, char *dst, int64_t begin, int64_t end) {
    const mc_value *v = w->v;
    moert_dtype dt = (moert_dtype)v->dt;
    bool zero = v->qzero != NULL;
    moert_quant_sizes plain = moert_quant_layout(dt, w->K, w->N, v->qgroup, zero, 0);
    moert_quant_sizes packed = moert_quant_layout(dt, w->K, w->N, v->qgroup, zero, w->nr);
    for (int64_t l = begin; l < end; l++)
        moert_pack_quant(dt, (const char *)v->data + l * plain.values,
                         v->qscale + l * plain.scales / 4, zero ? v->qzero + l * plain.zeros : NULL,
                         1, w->K, w->N, v->qgroup, w->nr, dst + l * packed.matrix);
}

static void pack_slices(void *ctx, int64_t begin, int64_t end) {
    const pack_task *p = ctx;
    const weight *w = p->w;
    if (mc_dtype_is_quant(w->v->dt)) {
        pack_quant(w, p->dst, begin, end);
        return;
    }
    moert_dtype dt = (moert_dtype)w->v->dt;
    int64_t packed = moert_panel_elems(dt, w->K, w->N, w->nr) * (int64_t)w->elem;
    for (int64_t l = begin; l < end; l++)
        moert_pack_weight(dt, (const char *)w->data + l * w->K * w->N * (int64_t)w->elem, 1, w->K,
                          w->N, w->nr, p->dst + l * packed);
}

/* w's bytes as stored: its own, or packed into buf (the layout _create uses too), the
 * matrices of a batch in parallel unless this is the weights thread (the other cores
 * are busy with the code then). */
static const char *stored_bytes(const weight *w, char *buf, bool parallel) {
    if (!w->nr) return w->data;
    pack_task p = {w, buf};
    if (parallel)
        moert_parallel_for(w->lead, 1, pack_slices, &p);
    else
        pack_slices(&p, 0, w->lead);
    return (const char *)buf;
}

static LLVMValueRef define_weight(LLVMContextRef cx, LLVMModuleRef m, const weight *w,
                                  const char *bytes) {
    LLVMValueRef init = LLVMConstStringInContext2(cx, bytes, w->bytes, 1);
    LLVMValueRef gv = LLVMAddGlobal(m, LLVMTypeOf(init), w->name);
    LLVMSetInitializer(gv, init);
    LLVMSetGlobalConstant(gv, 1);
    LLVMSetAlignment(gv, 64);
    return gv;
}

static bool define_weights(mb_ctx *c, const weight *ws, int n) {
    bool ok;
    char *buf = pack_buffer(ws, n, &ok);
    if (!ok) return mc_error(c->d, "", "cannot allocate memory to pack the weights");
    for (int i = 0; i < n; i++) {
        *ws[i].slot = define_weight(c->cx, c->mod, &ws[i], stored_bytes(&ws[i], buf, true));
        LLVMSetLinkage(*ws[i].slot, LLVMPrivateLinkage);
    }
    free(buf);
    return true;
}

struct mb_weights {
    pthread_t thread;
    bool threaded;
    const weight *ws;
    int n;
    int elf_machine; /* the ELF e_machine written directly, or 0: through LLVM */
    bool large;      /* x86-64: the section is .lrodata (the medium model's large data) */
    mb_target t;     /* LLVM's way: target machines are not shared across threads */
    const char *module, *path;
    int errnum;            /* what went wrong, or 0 */
    char *llvm_error;      /* or what LLVM said went wrong (malloc'd), or NULL */
    double pack_s, emit_s; /* wall times */
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the weights object as ELF, written here ----
 * On little-endian ELF targets the weights thread writes the object itself: one
 * section of the weights' bytes, 64-byte aligned, and one hidden global symbol per
 * weight. Each weight is packed into one buffer and written once; through LLVM its
 * bytes would be copied into a constant, then into the assembler's fragments, then
 * into the file. Fields are written byte by byte, little-endian, whatever the host. */

enum { EHDR = 64, SHDR = 64, SYM = 24, NUM_SECTIONS = 6 };
enum { SEC_DATA = 1, SEC_SYMTAB, SEC_STRTAB, SEC_SHSTRTAB, SEC_NOTE };
static const char shstrtab[] = "\0.rodata\0.lrodata\0.symtab\0.strtab\0.shstrtab\0.note.GNU-stack";

/* Where `name` is in shstrtab. */
static uint32_t section_name(const char *name) {
    for (size_t i = 1; i < sizeof shstrtab; i += strlen(shstrtab + i) + 1)
        if (strcmp(shstrtab + i, name) == 0) return (uint32_t)i;
    mc_die("no section name %s", name);
}

static unsigned char *put(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    return p + bytes;
}

static uint64_t align_up(uint64_t x, uint64_t a) {
    return (x + a - 1) / a * a;
}

typedef struct {
    const char *name;
    uint32_t type;
    uint64_t flags, offset, size;
    uint32_t link, info;
    uint64_t align, entsize;
} section;

static unsigned char *put_section(unsigned char *p, const section *s) {
    p = put(put(p, s->name ? section_name(s->name) : 0, 4), s->type, 4);
    p = put(put(put(p, s->flags, 8), 0, 8), s->offset, 8); /* sh_addr 0 */
    p = put(put(put(p, s->size, 8), s->link, 4), s->info, 4);
    return put(put(p, s->align, 8), s->entsize, 8);
}

/* The file after the weights' bytes (which end at `start`): padding, the symbols, their
 * names, the section names, the section headers. Sets *shoff. */
static unsigned char *elf_tail(const struct mb_weights *j, uint64_t start, size_t *len,
                               uint64_t *shoff) {
    uint64_t names = 1;
    for (int i = 0; i < j->n; i++)
        names += strlen(j->ws[i].name) + 1;
    uint64_t nsyms = (uint64_t)j->n + 1, symtab = align_up(start, 8);
    uint64_t strtab = symtab + nsyms * SYM, shstr = strtab + names;
    *shoff = align_up(shstr + sizeof shstrtab, 8);
    *len = (size_t)(*shoff + NUM_SECTIONS * SHDR - start);
    unsigned char *tail = calloc(1, *len);
    if (!tail) return NULL;
    unsigned char *sym = tail + (symtab - start) + SYM; /* entry 0 stays null */
    uint64_t off = 0, name = 1;
    for (int i = 0; i < j->n; i++) {
        const weight *w = &j->ws[i];
        off = align_up(off, 64);
        sym = put(put(put(sym, name, 4), 0x11, 1), 2, 1); /* STB_GLOBAL STT_OBJECT, STV_HIDDEN */
        sym = put(put(put(sym, SEC_DATA, 2), off, 8), w->bytes, 8);
        memcpy(tail + (strtab - start) + name, w->name, strlen(w->name));
        name += strlen(w->name) + 1;
        off += w->bytes;
    }
    memcpy(tail + (shstr - start), shstrtab, sizeof shstrtab);
    const uint64_t alloc = 0x2, x86_64_large = 0x10000000;
    section sec[NUM_SECTIONS] = {
        {0},
        {j->large ? ".lrodata" : ".rodata", 1, alloc | (j->large ? x86_64_large : 0), EHDR,
         start - EHDR, 0, 0, 64, 0},
        {".symtab", 2, 0, symtab, nsyms * SYM, SEC_STRTAB, 1, 8, SYM}, /* info: first global */
        {".strtab", 3, 0, strtab, names, 0, 0, 1, 0},
        {".shstrtab", 3, 0, shstr, sizeof shstrtab, 0, 0, 1, 0},
        {".note.GNU-stack", 1, 0, *shoff, 0, 0, 0, 1, 0}, /* the stack is not executable */
    };
    unsigned char *p = tail + (*shoff - start);
    for (int i = 0; i < NUM_SECTIONS; i++)
        p = put_section(p, &sec[i]);
    return tail;
}

static void elf_header(unsigned char *h, int machine, uint64_t shoff) {
    memset(h, 0, EHDR);
    memcpy(h,
           "\x7f"
           "ELF\x02\x01\x01",
           7); /* 64-bit, little-endian, version 1 */
    unsigned char *p = put(put(put(h + 16, 1, 2), (uint64_t)machine, 2), 1, 4); /* ET_REL */
    p = put(put(put(put(p, 0, 8), 0, 8), shoff, 8), 0, 4); /* entry, phoff, shoff, flags */
    p = put(put(put(p, EHDR, 2), 0, 2), 0, 2);             /* ehsize, phentsize, phnum */
    put(put(put(p, SHDR, 2), NUM_SECTIONS, 2), SEC_SHSTRTAB, 2);
}

/* The header, each weight (packed as it goes), the tail; 0 or an errno. */
static int write_elf(struct mb_weights *j, FILE *f) {
    uint64_t end = EHDR, shoff;
    for (int i = 0; i < j->n; i++)
        end = align_up(end, 64) + j->ws[i].bytes;
    size_t tail_len;
    unsigned char *tail = elf_tail(j, end, &tail_len, &shoff), h[EHDR];
    bool ok;
    char *buf = pack_buffer(j->ws, j->n, &ok);
    if (!tail || !ok) {
        free(tail);
        free(buf);
        return ENOMEM;
    }
    elf_header(h, j->elf_machine, shoff);
    static const char zeros[64];
    uint64_t at = EHDR;
    bool wrote = fwrite(h, EHDR, 1, f) == 1;
    for (int i = 0; wrote && i < j->n; i++) {
        const weight *w = &j->ws[i];
        double t = now();
        const char *bytes = stored_bytes(w, buf, false);
        j->pack_s += now() - t;
        size_t pad = (size_t)(align_up(at, 64) - at);
        wrote = fwrite(zeros, 1, pad, f) == pad && fwrite(bytes, 1, w->bytes, f) == w->bytes;
        at += pad + w->bytes;
    }
    wrote = wrote && fwrite(tail, 1, tail_len, f) == tail_len;
    free(tail);
    free(buf);
    return wrote ? 0 : errno ? errno : EIO;
}

/* The weights thread: no arena, no diagnostics, nothing shared but read-only bytes. */
static void *write_weights(void *arg) {
    struct mb_weights *j = arg;
    double t0 = now();
    if (j->elf_machine) {
        FILE *f = fopen(j->path, "wb");
        j->errnum = f ? write_elf(j, f) : errno;
        if (f && fclose(f) != 0 && !j->errnum) j->errnum = errno ? errno : EIO;
        j->emit_s = now() - t0 - j->pack_s;
        return NULL;
    }
    LLVMContextRef cx = LLVMContextCreate();
    LLVMModuleRef m = LLVMModuleCreateWithNameInContext(j->module, cx);
    LLVMSetTarget(m, j->t.triple);
    LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(j->t.tm);
    LLVMSetModuleDataLayout(m, dl);
    LLVMDisposeTargetData(dl);
    bool ok;
    char *buf = pack_buffer(j->ws, j->n, &ok);
    for (int i = 0; ok && i < j->n; i++)
        LLVMSetVisibility(define_weight(cx, m, &j->ws[i], stored_bytes(&j->ws[i], buf, false)),
                          LLVMHiddenVisibility);
    free(buf);
    double t1 = now();
    char *err = NULL;
    if (!ok)
        j->errnum = ENOMEM;
    else if (LLVMTargetMachineEmitToFile(j->t.tm, m, (char *)j->path, LLVMObjectFile, &err)) {
        j->llvm_error = strdup(err ? err : "unknown error");
        if (!j->llvm_error) j->errnum = ENOMEM;
    }
    LLVMDisposeMessage(err);
    LLVMDisposeModule(m);
    LLVMContextDispose(cx);
    j->pack_s = t1 - t0;
    j->emit_s = now() - t1;
    return NULL;
}

/* ELF's e_machine for the little-endian ELF targets, whose weights object is written
 * here; 0 for the others (Mach-O, COFF, big-endian), whose weights object LLVM writes. */
static int elf_machine(const char *triple) {
    static const char *const not_elf[] = {"apple", "darwin", "macos",  "ios",  "windows",
                                          "win32", "mingw",  "cygwin", "uefi", NULL};
    for (const char *const *p = not_elf; *p; p++)
        if (strstr(triple, *p)) return 0;
    if (strncmp(triple, "x86_64-", 7) == 0) return 62;   /* EM_X86_64 */
    if (strncmp(triple, "aarch64-", 8) == 0) return 183; /* EM_AARCH64 */
    return 0;
}

/* Declares the weights in the code's module and starts the thread that defines them. */
static bool start_weights(mb_ctx *c, weight *ws, int n) {
    struct mb_weights *j = mc_arena_alloc(c->g->arena, sizeof *j);
    *j = (struct mb_weights){.ws = ws, .n = n, .path = c->weights_object};
    j->elf_machine = elf_machine(c->t->triple);
    j->large = j->elf_machine == 62;
    for (int i = 0; i < n; i++) {
        LLVMValueRef gv = LLVMAddGlobal(c->mod, LLVMArrayType2(c->i8, ws[i].bytes), ws[i].name);
        LLVMSetGlobalConstant(gv, 1);
        LLVMSetAlignment(gv, 64);
        LLVMSetVisibility(gv, LLVMHiddenVisibility);
        /* Where the object puts it: the code addresses .lrodata with 64-bit relocations. */
        if (j->large) LLVMSetSection(gv, ".lrodata");
        size_t len;
        ws[i].name = mc_arena_strdup(c->g->arena, LLVMGetValueName2(gv, &len)); /* as uniqued */
        *ws[i].slot = gv;
    }
    j->module = mc_arena_printf(c->g->arena, "%s.weights", c->g->name);
    /* LLVM's way: the same triple and code model; data needs no CPU features (and no
     * probe of them). */
    mb_options wo = *c->o;
    wo.cpu = wo.features = NULL;
    if (!j->elf_machine && !mb_target_init(&j->t, &wo, c->d)) {
        mb_target_free(&j->t);
        return false;
    }
    c->weights = j;
    j->threaded = pthread_create(&j->thread, NULL, write_weights, j) == 0;
    if (!j->threaded) write_weights(j); /* no thread: the same work, in turn */
    return true;
}

bool mb_weights_join(mb_ctx *c) {
    struct mb_weights *j = c->weights;
    if (!j) return true;
    if (j->threaded) pthread_join(j->thread, NULL);
    c->weights = NULL;
    mb_target_free(&j->t);
    const mb_progress *p = &c->o->progress;
    if (p->aside) {
        p->aside(p->user, "pack", j->pack_s);
        p->aside(p->user, "emit-weights", j->emit_s);
    }
    if (!j->errnum && !j->llvm_error) return true;
    mc_error(c->d, "", "cannot write the weights object %s: %s", j->path,
             j->llvm_error ? j->llvm_error : strerror(j->errnum));
    free(j->llvm_error);
    return false;
}

bool mb_emit_params(mb_ctx *c) {
    const mc_graph *g = c->g;
    c->param_global = mc_arena_alloc(g->arena, sizeof(LLVMValueRef) * (size_t)g->nvalues);
    c->param_index = mc_arena_alloc(g->arena, sizeof(int) * (size_t)g->nvalues);
    c->initial_global = mc_arena_alloc(g->arena, sizeof(LLVMValueRef) * (size_t)g->nvalues);
    c->panel_nr = mc_arena_alloc(g->arena, sizeof(int) * (size_t)g->nvalues);
    weight *ws = mc_arena_alloc(g->arena, sizeof(weight) * (size_t)(g->nvalues + 1));
    int n = 0;
    for (int v = 0; v < g->nvalues; v++) {
        const mc_value *x = mc_val(g, v);
        c->param_index[v] = -1;
        if (!is_used(g, v) || (x->kind != MC_VK_PARAM && x->kind != MC_VK_CONST)) continue;
        if (!x->data)
            return mc_error(c->d, "", "internal error: initializer '%s' has no data", x->name);
        if (x->kind == MC_VK_PARAM) c->param_index[v] = c->nparams++;
        c->panel_nr[v] = mb_param_panel_nr(g, v, c->t);
        if (mc_dtype_is_quant(x->dt) && !c->panel_nr[v])
            return mc_error(c->d, "",
                            "internal error: %s param '%s' is read where only a GEMM weight "
                            "can be",
                            mc_dtype_name(x->dt), x->name);
        bool embedded = x->kind == MC_VK_CONST || !c->o->external_weights;
        /* Training reads params through the model's writable copies; the embedded
         * bytes only start them (moert_model_desc.initial). */
        if (!embedded) continue;
        bool initial = x->kind == MC_VK_PARAM && c->g->training;
        ws[n++] = weight_of(c, v, initial ? &c->initial_global[v] : &c->param_global[v]);
    }
    return c->weights_object ? start_weights(c, ws, n) : define_weights(c, ws, n);
}

/* ---- the model info (moert_model_info and friends) ---- */

static LLVMValueRef dims_array(mb_ctx *c, const mc_shape *s) {
    LLVMValueRef dims[MC_MAX_RANK];
    for (int i = 0; i < s->rank; i++) {
        LLVMValueRef f[2] = {mb_i64(c, s->d[i].c), mb_i64(c, s->d[i].sym)};
        dims[i] = LLVMConstNamedStruct(c->dim_ty, f, 2);
    }
    if (s->rank == 0) return LLVMConstNull(c->ptr);
    return mb_const_global(c, LLVMConstArray2(c->dim_ty, dims, (uint64_t)s->rank), ".dims", 8);
}

static LLVMValueRef tensor_info(mb_ctx *c, int v) {
    const mc_value *x = mc_val(c->g, v);
    LLVMValueRef f[4] = {mb_cstr(c, x->name), mb_i64(c, x->dt), mb_i64(c, x->shape.rank),
                         dims_array(c, &x->shape)};
    return LLVMConstNamedStruct(c->tinfo_ty, f, 4);
}

static LLVMValueRef tensor_infos(mb_ctx *c, const int *ids, int n) {
    if (n == 0) return LLVMConstNull(c->ptr);
    LLVMValueRef *e = mc_arena_alloc(c->g->arena, sizeof(LLVMValueRef) * (size_t)n);
    for (int i = 0; i < n; i++)
        e[i] = tensor_info(c, ids[i]);
    return mb_const_global(c, LLVMConstArray2(c->tinfo_ty, e, (uint64_t)n), ".tensors", 8);
}

static LLVMValueRef symbol_infos(mb_ctx *c) {
    const mc_graph *g = c->g;
    if (g->nsyms == 0) return LLVMConstNull(c->ptr);
    LLVMValueRef e[MC_MAX_SYMS];
    for (int i = 0; i < g->nsyms; i++) {
        LLVMValueRef f[2] = {mb_cstr(c, g->syms[i].name), mb_i64(c, g->syms[i].max)};
        e[i] = LLVMConstNamedStruct(c->sinfo_ty, f, 2);
    }
    return mb_const_global(c, LLVMConstArray2(c->sinfo_ty, e, (uint64_t)g->nsyms), ".syms", 8);
}

/* Params in info order, and the panel width each is stored with. */
static int *param_ids(mb_ctx *c) {
    int *ids = mc_arena_alloc(c->g->arena, sizeof(int) * (size_t)(c->nparams + 1));
    for (int v = 0; v < c->g->nvalues; v++)
        if (c->param_index[v] >= 0) ids[c->param_index[v]] = v;
    return ids;
}

static LLVMValueRef param_descs(mb_ctx *c, const int *ids) {
    if (c->nparams == 0) return LLVMConstNull(c->ptr);
    /* moert_param_desc: panel_nr, group, zero */
    LLVMValueRef *e = mc_arena_alloc(c->g->arena, sizeof(LLVMValueRef) * (size_t)c->nparams * 3);
    for (int i = 0; i < c->nparams; i++) {
        const mc_value *x = mc_val(c->g, ids[i]);
        e[3 * i] = mb_i64(c, c->panel_nr[ids[i]]);
        e[3 * i + 1] = mb_i64(c, x->qgroup);
        e[3 * i + 2] = mb_i64(c, x->qzero != NULL);
    }
    return mb_const_global(c, LLVMConstArray2(c->i64, e, (uint64_t)c->nparams * 3), ".pdesc", 8);
}

/* Training with embedded weights: where each param's starting bytes are. */
static LLVMValueRef initial_table(mb_ctx *c, const int *ids) {
    if (!c->g->training || c->o->external_weights || c->nparams == 0) return LLVMConstNull(c->ptr);
    LLVMValueRef *e = mc_arena_alloc(c->g->arena, sizeof(LLVMValueRef) * (size_t)c->nparams);
    for (int i = 0; i < c->nparams; i++)
        e[i] = c->initial_global[ids[i]];
    return mb_const_global(c, LLVMConstArray2(c->ptr, e, (uint64_t)c->nparams), ".initial", 8);
}

void mb_emit_info(mb_ctx *c) {
    const mc_graph *g = c->g;
    int *pids = param_ids(c);
    LLVMValueRef f[12] = {mb_cstr(c, g->name),
                          mb_i64(c, g->nsyms),
                          symbol_infos(c),
                          mb_i64(c, g->ninputs),
                          tensor_infos(c, g->inputs, g->ninputs),
                          mb_i64(c, g->noutputs),
                          tensor_infos(c, g->outputs, g->noutputs),
                          mb_i64(c, c->nparams),
                          tensor_infos(c, pids, c->nparams),
                          mb_i64(c, c->g->plan.peak),
                          mb_i64(c, c->o->external_weights),
                          mb_i64(c, g->training)};
    LLVMValueRef info = mb_const_global(c, LLVMConstNamedStruct(c->info_ty, f, 12),
                                        mc_arena_printf(g->arena, "%s.info", g->name), 8);
    c->info = info;
    LLVMValueRef d[4] = {info, param_descs(c, pids), c->run_args, initial_table(c, pids)};
    c->desc = mb_const_global(c, LLVMConstNamedStruct(c->desc_ty, d, 4),
                              mc_arena_printf(g->arena, "%s.desc", g->name), 8);
}
