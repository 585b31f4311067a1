"""`python -m pipeline` is `escape-sweep`."""

import sys

from .cli import entry

sys.exit(entry())
