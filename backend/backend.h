/* backend/backend.h: the LLVM side of moec. This folder is the only place that
 * includes the llvm-c headers. */
#ifndef MC_BACKEND_H
#define MC_BACKEND_H

/* "19.1.7": the LLVM moec is linked against (shown by `moec --version`). */
const char *mc_backend_llvm_version(void);

#endif
