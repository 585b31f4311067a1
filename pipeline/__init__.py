"""escape-sweep: sweeps of a Monte Carlo model of SGD escaping a local minimum (import name `pipeline`).

The public names are loaded on first use (module `__getattr__`), so `import pipeline` -- and a
worker unpickling a task -- pays only for what it touches.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("escape-sweep")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

_PUBLIC = {
    "simulate": "pipeline.model.simulate",
    "find_pit": "pipeline.model.landscape",
    "open_cube": "pipeline.sweep.store",
    "run_sweep": "pipeline.sweep.runner",
    "open_fits": "pipeline.analysis.fits",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
