"""What a cell is: the five axes of a sweep, which of them are simulated, the seed pit, and the
methods that compute a cell. Every other module takes these names from here."""

AXES = ("T", "steps", "batch_size", "depth", "width")  # the cube's dims, in order
CELL_AXES = ("T", "batch_size", "depth", "width")  # one simulation each; steps is read off it
INT_AXES = ("steps", "batch_size")
SEED_PIT = {"depth": 1.0, "width": 0.1}  # the post's pit: exp(-100 (W - 1)^2)

# name -> (long_name, units, description)
AXIS_ATTRS = {
    "T": ("learning rate", "1", "SGD step size eta: W <- W - T * gradient of the minibatch loss"),
    "steps": ("step budget", "steps", "walkers not escaped within this many steps are censored"),
    "batch_size": ("batch size", "data points", "B points drawn with replacement from the two data points each step"),
    "depth": ("pit depth", "loss", "depth of l1's pit term: depth * exp(-((W - 1) / width)^2)"),
    "width": ("pit width", "W", "width of l1's pit term: depth * exp(-((W - 1) / width)^2)"),
}

METHODS = ("montecarlo", "markov", "both")  # how a cell is computed: sampled, exact solver, both


def samples(method: str) -> bool:
    """The method runs Monte Carlo walkers."""
    return method in ("montecarlo", "both")


def solves(method: str) -> bool:
    """The method runs the exact Markov-chain solver."""
    return method in ("markov", "both")
