/* ir/elementwise.h: the instruction set of moe.FusedElementwise's `program` attribute
 * (docs/fusion.md), shared by the IR, the interpreter and the kernels (no includes, so
 * that the freestanding kernel library can use it).
 *
 * A program is a list of triples (opcode, a, b) of ints. Registers 0..nin-1 hold the
 * node's inputs; instruction i writes register nin+i from registers a and b (b is -1
 * for a unary opcode); the last instruction's register is the output. */
#ifndef MC_ELEMENTWISE_H
#define MC_ELEMENTWISE_H

enum {
    MC_EW_ADD,
    MC_EW_SUB,
    MC_EW_MUL,
    MC_EW_DIV,
    MC_EW_NEG, /* the unary ones from here */
    MC_EW_SQRT,
    MC_EW_EXP,
    MC_EW_LOG,
    MC_EW_RELU,
    MC_EW_GELU,
    MC_EW_GELU_TANH,
    MC_EW_SIGMOID,
    MC_EW_TANH,
    MC_EW_SILU,
    MC_EW_NUM_OPCODES
};
#define MC_EW_MAX_STEPS 16 /* instructions in one program */

#endif
