"""``python -m transferkit`` (and ``torchrun ... -m transferkit fit CONFIG`` for several processes) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
