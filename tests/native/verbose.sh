#!/usr/bin/env bash
# `-v` (docs/cli.md): `moec build`, `compile` and `run` print each phase's wall time to
# stderr, in the order the phases run, then the total; the built model still works; no
# progress line (no \r) when stderr is not a terminal; other commands refuse -v.
# usage: verbose.sh MOEC EXAMPLES_DIR
set -euo pipefail
moec=$(realpath "$1")
model=$(realpath "$2")/mixtral_block/model.json
x=$(dirname "$model")/x.npy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
fail() {
    echo "FAIL $*"
    failed=$((failed + 1))
}

# The phase names of a -v report, one per line, "name" or "name+" for work done alongside;
# the passes (one phase each, docs/ir.md) collapse into one "passes".
PASSES='infer-shapes|verify|expand-moe|gw-specialize|canonicalize|fold-constants|autodiff|optimizer|fuse-[a-z-]*|dce|quantize-weights|plan-memory'
phases() {
    sed -n 's/^moec: \([a-z-]*\) *[0-9][0-9]*\.[0-9][0-9][0-9] s\( alongside\)\{0,1\}$/\1\2/p' "$1" |
        sed 's/ alongside$/+/' | sed -E "s/^($PASSES)$/passes/" | uniq | tr '\n' ' '
}

# Every line of the report must be a phase line: nothing else on stderr, no \r.
check_report() { # what stderr.txt expected-phases
    local what=$1 err=$2 want=$3 got
    got=$(phases "$err")
    [ "$got" = "$want" ] || fail "$what: phases '$got', expected '$want'"
    if grep -qv '^moec: [a-z-]* *[0-9]*\.[0-9][0-9][0-9] s\( alongside\)\{0,1\}$' "$err"; then
        fail "$what: stderr has other lines:"
        cat "$err"
    fi
    if grep -q $'\r' "$err"; then fail "$what: a progress line although stderr is a file"; fi
}

"$moec" build "$model" -o "$work/m" -v >"$work/out.txt" 2>"$work/err.txt"
check_report build "$work/err.txt" \
    "load passes lower optimize emit wait pack+ emit-weights+ link total "
for pass in infer-shapes fuse-expert-ffn plan-memory; do
    grep -q "^moec: $pass " "$work/err.txt" || fail "build -v does not time pass $pass"
done
[ ! -s "$work/out.txt" ] || fail "build -v wrote to stdout"
"$work/m" --input x="$x" --output y="$work/y.npy" >/dev/null || fail "the -v build does not run"

"$moec" compile "$model" -o "$work/m.o" --verbose 2>"$work/err.txt"
check_report compile "$work/err.txt" "load passes pack lower optimize emit header total "

"$moec" compile "$model" -o "$work/e.o" --weights=external -v 2>"$work/err.txt"
check_report "compile --weights=external" "$work/err.txt" \
    "load passes pack lower optimize emit header weights total "

"$moec" run "$model" --input x="$x" -v >"$work/out.txt" 2>"$work/err.txt"
check_report run "$work/err.txt" \
    "load passes inputs lower optimize emit wait pack+ emit-weights+ link run total "
grep -q '^y: f32\[' "$work/out.txt" || fail "run -v lost the summary of y"

"$moec" run "$model" --input x="$x" --interp -v >/dev/null 2>"$work/err.txt"
check_report "run --interp" "$work/err.txt" "load passes inputs run total "

# Without -v: nothing on stderr.
"$moec" build "$model" -o "$work/m" 2>"$work/err.txt"
[ ! -s "$work/err.txt" ] || fail "build without -v wrote to stderr: $(cat "$work/err.txt")"

# -v belongs to the commands that compile or run.
for cmd in check dump; do
    st=0
    "$moec" "$cmd" "$model" -v >/dev/null 2>"$work/err.txt" || st=$?
    [ "$st" -eq 2 ] || fail "$cmd -v: exit status $st, expected 2 (misuse)"
    grep -q "^moec: -v belongs to 'moec run', 'moec compile' and 'moec build'$" "$work/err.txt" ||
        fail "$cmd -v: message $(cat "$work/err.txt")"
done

# A failing build still reports the phases it went through.
st=0
"$moec" build "$model" -o "$work/no/such/dir/m" -v 2>"$work/err.txt" || st=$?
[ "$st" -eq 1 ] || fail "build into a missing directory: exit status $st, expected 1"
grep -q '^moec: total ' "$work/err.txt" || fail "a failed build -v has no total"

[ "$failed" -eq 0 ] && echo "ok verbose"
