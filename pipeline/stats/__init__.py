"""Statistics of escape counts, a leaf of the package: numpy and scipy only, no I/O, no xarray.

Re-exports every estimator so that `from pipeline import stats; stats.wilson(...)` works.
"""

from .intervals import (censored_rate, clopper_pearson, escape_time, ln_escape_time, log10_escape_time,
                        tau_bounded, wilson)
from .memoryless import EARLY_DEFICIT, VERDICTS, early_deficit, memorylessness
from .regression import wls
from .survival import Survival, grouped_median, kaplan_meier, survival_from_hist, survival_from_steps

__all__ = ["wilson", "clopper_pearson", "censored_rate", "log10_escape_time", "escape_time", "tau_bounded",
           "ln_escape_time", "grouped_median", "Survival", "kaplan_meier", "survival_from_steps",
           "survival_from_hist", "wls", "VERDICTS", "EARLY_DEFICIT", "memorylessness",
           "early_deficit"]
