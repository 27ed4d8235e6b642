#include "backend.h"
#include <stdio.h>
int main(void) { printf("moec (LLVM %s)\n", mc_backend_llvm_version()); return 0; }
