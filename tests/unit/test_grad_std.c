/* tests/unit/test_grad_std.c: gradient ops against central finite differences of their
 * forward ops, in the f64 interpreter (moec_core64). */
#include <criterion/criterion.h>

#include "ir.h"
