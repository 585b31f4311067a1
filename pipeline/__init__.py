"""escape-sweep: sweeps of a Monte Carlo model of SGD escaping a local minimum (import name `pipeline`)."""

from importlib.metadata import PackageNotFoundError, version

from .cube import open_cube
from .fits import open_fits
from .landscape import find_pit
from .runner import run_sweep
from .task import simulate

try:
    __version__ = version("escape-sweep")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["simulate", "find_pit", "open_cube", "open_fits", "run_sweep", "__version__"]
