/* backend/version.c: which LLVM moec links, asked of LLVM itself. */
#include "backend.h"

#include <llvm-c/Core.h>
#include <stdio.h>

const char *mc_backend_llvm_version(void) {
    static char buf[32];
    unsigned major, minor, patch;
    LLVMGetVersion(&major, &minor, &patch);
    snprintf(buf, sizeof buf, "%u.%u.%u", major, minor, patch);
    return buf;
}
