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
    "cuda": ".cuda:escape_steps",  # NVIDIA GPU via numba-cuda (pip install 'escape-sweep[cuda]')
}
AUTO = "auto"  # a run option, not a kernel: cuda where the process has a usable GPU, else cpu


def choices() -> list[str]:
    """Values accepted by `--backend`: the registry's names plus "auto"."""
    return [*BACKENDS, AUTO]


def unavailable_reason(name: str) -> str | None:
    """Why backend `name` cannot run in this process (None when it can); InputError if unknown."""
    from ..errors import InputError

    if name == AUTO:
        return None
    if name not in BACKENDS:
        raise InputError(f"backend {name!r}: unknown (choose from {', '.join(choices())})")
    if name == "cuda":
        from . import cuda

        return cuda.unavailable_reason()
    return None


def require(name: str) -> None:
    """Raise InputError (one line, before any compute) unless backend `name` can run here."""
    from ..errors import InputError

    why = unavailable_reason(name)
    if why:
        raise InputError(f"backend {name}: {why}")


def resolve(name: str) -> str:
    """The concrete backend for `name` in this process: "auto" is cuda where a GPU is usable, else cpu."""
    if name != AUTO:
        return name
    try:
        return "cuda" if unavailable_reason("cuda") is None else "cpu"
    except Exception:
        return "cpu"


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
