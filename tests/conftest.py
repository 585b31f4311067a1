import math

import numpy as np


def prob_se(p1, n1, p2, n2):
    """Standard error of the difference of two independent binomial proportions (pooled p,
    floored at 1/n so that p = 0 or 1 on both sides still gives a non-zero tolerance)."""
    p = (p1 * n1 + p2 * n2) / (n1 + n2)
    p = min(max(p, 1.0 / (n1 + n2)), 1.0 - 1.0 / (n1 + n2))
    return math.sqrt(p * (1 - p) * (1.0 / n1 + 1.0 / n2))


def escaped_within(esc, steps):
    esc = np.asarray(esc)
    return float(((esc > 0) & (esc <= steps)).mean())
