/* ir/attrs.h: names for the rows and string choices of ir/attrs.def, so that every layer
 * reads attributes by name, never by a position or a string's characters.
 *
 * For every row ATTR(OP, name, ...) of the schema:
 *   MC_A_<OP>_<name>           the row's position among its op's rows: where the kernels
 *                              find the attribute (attr[MC_A_GEMM_alpha], mk_attr in
 *                              backend/kernels/mk.h)
 * and for every STRING row with CHOICES(a, b, ...):
 *   MC_A_<OP>_<name>_<a> = 0, MC_A_<OP>_<name>_<b> = 1, ...
 *                              the index of a value among the choices: what
 *                              mc_attr_choice() returns and a kernel's attr[...].i holds;
 *                              the enum's tag is MC_A_<OP>_<name>_choices, so a switch
 *                              over it names a forgotten choice (-Wswitch).
 * <name> and the choices keep their spelling in the model file (the preprocessor cannot
 * change case): MC_A_MOE_DISPATCH_source_expert_choice, MC_A_GEMM_transA.
 *
 * Rows shared through a *_ROWS(OP) group of attrs.def sit at the same positions in every
 * op that takes the group (TopKRoute, GWRoute and both gradients start with the eight
 * TopKRoute rows), so code shared by those ops may use one op's names for all of them.
 *
 * Enum constants only and no includes: the freestanding kernels include this too. */
#ifndef MC_ATTRS_H
#define MC_ATTRS_H

/* clang-format off */

/* MC_PP_MAP(m, p, a, b, ...) is m(p, a) m(p, b) ... for 1 to 12 items. */
#define MC_PP_CAT(a, b) MC_PP_CAT_(a, b)
#define MC_PP_CAT_(a, b) a##b
#define MC_PP_CALL(m, ...) m(__VA_ARGS__)
#define MC_PP_UNPAREN(...) __VA_ARGS__
#define MC_PP_COUNT(...) MC_PP_COUNT_(__VA_ARGS__, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define MC_PP_COUNT_(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, n, ...) n
#define MC_PP_MAP(m, p, ...) MC_PP_CAT(MC_PP_MAP_, MC_PP_COUNT(__VA_ARGS__))(m, p, __VA_ARGS__)
#define MC_PP_MAP_1(m, p, a)       m(p, a)
#define MC_PP_MAP_2(m, p, a, ...)  m(p, a) MC_PP_MAP_1(m, p, __VA_ARGS__)
#define MC_PP_MAP_3(m, p, a, ...)  m(p, a) MC_PP_MAP_2(m, p, __VA_ARGS__)
#define MC_PP_MAP_4(m, p, a, ...)  m(p, a) MC_PP_MAP_3(m, p, __VA_ARGS__)
#define MC_PP_MAP_5(m, p, a, ...)  m(p, a) MC_PP_MAP_4(m, p, __VA_ARGS__)
#define MC_PP_MAP_6(m, p, a, ...)  m(p, a) MC_PP_MAP_5(m, p, __VA_ARGS__)
#define MC_PP_MAP_7(m, p, a, ...)  m(p, a) MC_PP_MAP_6(m, p, __VA_ARGS__)
#define MC_PP_MAP_8(m, p, a, ...)  m(p, a) MC_PP_MAP_7(m, p, __VA_ARGS__)
#define MC_PP_MAP_9(m, p, a, ...)  m(p, a) MC_PP_MAP_8(m, p, __VA_ARGS__)
#define MC_PP_MAP_10(m, p, a, ...) m(p, a) MC_PP_MAP_9(m, p, __VA_ARGS__)
#define MC_PP_MAP_11(m, p, a, ...) m(p, a) MC_PP_MAP_10(m, p, __VA_ARGS__)
#define MC_PP_MAP_12(m, p, a, ...) m(p, a) MC_PP_MAP_11(m, p, __VA_ARGS__)

/* Row positions: one enum per op, which ATTRS(OP) closes and the next ATTRS opens. */
#define ATTRS(op) }; enum {
#define ATTR(op, name, kind, presence, dflt, choices) MC_A_##op##_##name,
enum { MC_A_NONE_ /* the enum before the first ATTRS */
#include "attrs.def"
};
#undef ATTRS
#undef ATTR

/* Choices: one enum per STRING row. */
#define ATTRS(op)
#define CHOICES(...) (__VA_ARGS__)
#define ATTR(op, name, kind, presence, dflt, choices) \
    MC_A_CHOICES_##kind(MC_A_##op##_##name, choices)
#define MC_A_CHOICES_INT(row, choices)
#define MC_A_CHOICES_FLOAT(row, choices)
#define MC_A_CHOICES_INTS(row, choices)
#define MC_A_CHOICES_FLOATS(row, choices)
#define MC_A_CHOICES_STRING(row, choices) \
    enum row##_choices { MC_PP_CALL(MC_PP_MAP, MC_A_CHOICE, row, MC_PP_UNPAREN choices) };
#define MC_A_CHOICE(row, choice) row##_##choice,
#include "attrs.def"
#undef ATTRS
#undef CHOICES
#undef ATTR

/* clang-format on */
#endif
