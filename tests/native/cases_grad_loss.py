"""Differential cases (tests/native/diff_ops.py) for the gradients of losses, and the optimizers."""


def cases():
    return []
