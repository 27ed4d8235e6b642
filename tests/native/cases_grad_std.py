"""Differential cases (tests/native/diff_ops.py) for the gradients of standard ops."""


def cases():
    return []
