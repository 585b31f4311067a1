"""escape-sweep: sweeps of a Monte Carlo model of SGD escaping a local minimum (import name `pipeline`).

The public names are loaded on first use (module `__getattr__`), so `import pipeline` -- and a
worker unpickling a task -- pays only for what it touches.
"""

from importlib import import_module

_PUBLIC = {
    "simulate": "pipeline.model.simulate",
    "find_pit": "pipeline.model.landscape",
    "open_cube": "pipeline.sweep.store",
    "run_sweep": "pipeline.sweep.runner",
    "refine": "pipeline.sweep.runner",
    "open_fits": "pipeline.analysis.fits",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("escape-sweep")
        except PackageNotFoundError:  # running from a source tree that was not installed
            value = "0+unknown"
        globals()[name] = value
        return value
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
