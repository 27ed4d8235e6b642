"""Differential cases (tests/native/diff_ops.py) for the gradients of MoE ops."""


def cases():
    return []
