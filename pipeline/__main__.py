"""`python -m pipeline` is `escape-sweep`."""

import sys

from .cli import main

sys.exit(main())
