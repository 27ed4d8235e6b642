#!/usr/bin/python3
"""The machine's ceilings, measured in the same run as the benches: builds bench/probe.c
with the system C compiler (cc -O2 -march=native -fopenmp, or $CC) into a temporary
directory and runs it. See the header of probe.c for the method.

usage: bench/probe.py [--threads 2] [--buffer-mib 512]   prints the line the benches print."""
import argparse
import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def probe(work, threads=2, buffer_mib=512):
    """{'isa', 'chains', 'buffer_mib', 'threads', 'fma_gflops_1', 'fma_gflops_n',
    'read_gbs_1', 'read_gbs_n', ...} plus 'read_gbs': the better read bandwidth of the
    two thread counts, taken as the machine's."""
    exe = os.path.join(work, "probe")
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-march=native", "-fopenmp", os.path.join(HERE, "probe.c"), "-o", exe],
                   check=True)
    out = subprocess.run([exe, str(buffer_mib), str(threads)], check=True, capture_output=True,
                         text=True).stdout
    m = {}
    for kv in out.split():
        k, v = kv.split("=", 1)
        m[k] = v if k == "isa" else float(v)
    m["read_gbs"] = max(m["read_gbs_1"], m["read_gbs_n"])
    return m


def best(a, b):
    """Two probes of one run taken together: each figure at its best, so that a probe
    slowed by other work on the machine does not make the ceilings look low."""
    m = dict(a)
    for k in ("fma_gflops_1", "fma_gflops_n", "read_gbs_1", "read_gbs_n", "read_gbs"):
        m[k] = max(a[k], b[k])
    return m


def describe(m):
    return ("machine: FP32 FMA peak %.1f GFLOP/s at 1 thread, %.1f at %d; read bandwidth %.1f GB/s "
            "(1 thread %.1f, %d threads %.1f)  [bench/probe.c: %s, %d FMA chains, %d MiB buffer]"
            % (m["fma_gflops_1"], m["fma_gflops_n"], m["threads"], m["read_gbs"], m["read_gbs_1"],
               m["threads"], m["read_gbs_n"], m["isa"], m["chains"], m["buffer_mib"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--buffer-mib", type=int, default=512)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        print(describe(probe(work, a.threads, a.buffer_mib)))


if __name__ == "__main__":
    main()
