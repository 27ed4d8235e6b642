/* backend/kernlib.h: the embedded kernel library (backend/kernels/, bitcode per
 * architecture, generated into the build by cmake/embed_bitcode.cmake). */
#ifndef MB_KERNLIB_H
#define MB_KERNLIB_H

#include <stddef.h>

typedef struct mb_bitcode {
    const char *name; /* "k_std" */
    const unsigned char *data;
    size_t size;
} mb_bitcode; /* arrays end with a NULL name */

extern const mb_bitcode mb_kernels_x86_64[];
extern const mb_bitcode mb_kernels_aarch64[];

#endif
