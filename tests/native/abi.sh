#!/usr/bin/env bash
# The generated API from C11 and C++17 (-Wall -Wextra -Werror -pedantic), with embedded
# and with external weights, against the interpreter; then run-time misuse; instances
# sharing one weights file.
# usage: abi.sh MOEC LIBMOERT   ($MOEC_LDFLAGS: extra link flags, e.g. sanitizers)
set -euo pipefail
moec=$(realpath "$1")
lib=$(realpath "$2")
src=$(cd "$(dirname "$0")" && pwd)
runtime=$src/../../runtime
read -r -a ldflags <<<"${MOEC_LDFLAGS:-}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cp "$src/abi_model.json" .
/usr/bin/python3 -c "import numpy as np; np.save('x.npy', np.random.default_rng(1).standard_normal((13, 48)).astype(np.float32))"
"$moec" run abi_model.json --interp --input x=x.npy --output y=want_y.npy --output expert=want_e.npy
mkdir emb ext
"$moec" compile abi_model.json -o emb/abi_model.o
"$moec" compile abi_model.json -o ext/abi_model.o --weights=external
test -f emb/abi_model.h && test -f ext/abi_model.h && test -f ext/abi_model.safetensors
test ! -e emb/abi_model.safetensors
sed 's/70/69/g' abi_model.json >bad.json
"$moec" init-weights bad.json -o bad.safetensors

build() { # compiler std dir source out
    "$1" -std="$2" -Wall -Wextra -Werror -pedantic -I"$3" -I"$runtime" "$4" "$3/abi_model.o" "$lib" \
        "${ldflags[@]}" -lpthread -lm -o "$5"
}
build cc c11 emb "$src/abi_c.c" abi_c
build c++ c++17 emb "$src/abi_cpp.cpp" abi_cpp
build cc c11 ext "$src/abi_c.c" abi_c_ext
build cc c11 ext "$src/misuse.c" misuse
./abi_c x.npy want_y.npy want_e.npy
./abi_cpp x.npy want_y.npy want_e.npy
./abi_c_ext x.npy want_y.npy want_e.npy ext/abi_model.safetensors
./misuse x.npy ext/abi_model.safetensors bad.safetensors

# A training model: <name>_train_step and <name>_save_weights from C.
mkdir train
"$moec" compile "$src/train_model.json" --mode=train --lr 0.01 -o train/train_model.o
/usr/bin/python3 -c "
import numpy as np
r = np.random.default_rng(5)
np.save('tx.npy', r.standard_normal((32, 12)).astype(np.float32))
np.save('tl.npy', r.integers(0, 3, 32).astype(np.int64))"
cc -std=c11 -Wall -Wextra -Werror -pedantic -Itrain -I"$runtime" "$src/abi_train.c" train/train_model.o \
    "$lib" "${ldflags[@]}" -lpthread -lm -o abi_train
./abi_train tx.npy tl.npy trained.safetensors

# Instances on one weights file share its packed params (runtime/weights.c).
mkdir shared
"$moec" compile "$src/shared_model.json" --weights=external -o shared/shared_model.o
sed 's/"seed": 1/"seed": 3/' "$src/shared_model.json" >shared/other.json
"$moec" init-weights shared/other.json -o shared/other.safetensors
cp shared/other.safetensors shared/other_copy.safetensors
/usr/bin/python3 -c "import numpy as np; np.save('sx.npy', np.random.default_rng(2).standard_normal((11, 256)).astype(np.float32))"
"$moec" run "$src/shared_model.json" --interp --input x=sx.npy --output y=want_s.npy \
    --weights=shared/shared_model.safetensors
"$moec" run "$src/shared_model.json" --interp --input x=sx.npy --output y=want_o.npy \
    --weights=shared/other.safetensors
cc -std=c11 -Wall -Wextra -Werror -pedantic -Ishared -I"$runtime" "$src/shared_weights.c" \
    shared/shared_model.o "$lib" "${ldflags[@]}" -lpthread -lm -o shared_weights
./shared_weights sx.npy want_s.npy shared/shared_model.safetensors shared/other.safetensors \
    want_o.npy shared/other_copy.safetensors
