"""Kernel backends: a registry from a name to a kernel with `kernels.escape_steps`'s signature.

    escape_steps(T, steps, batch_size, depth, width, start, barrier, key, first, count) -> int64[count]

A backend is a run option, never part of the spec: every backend must give the same escape step
for every walker (tests check it), so the choice changes speed, not numbers. Entries are loaded
on first use, so naming a backend whose library is missing fails only when it is used.
"""

from __future__ import annotations

from importlib import import_module

# name -> "module:function" (relative to this package)
BACKENDS = {
    "cpu": ".kernels:escape_steps",
}


def backend_names() -> list[str]:
    """Names accepted by `--backend`, in registry order ("cpu" first)."""
    return list(BACKENDS)


def get_kernel(name: str):
    """The kernel function of backend `name` (ValueError naming the choices for an unknown one)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"backend {name!r}: unknown (backends: {', '.join(BACKENDS)})") from None
    module, _, func = target.partition(":")
    return getattr(import_module(module, __package__), func)
