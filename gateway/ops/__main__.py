"""``python -m gateway.ops``: the review tools (``gateway.ops.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
