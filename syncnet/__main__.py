"""`python -m syncnet ...`: the `syncnet` command, for a venv whose scripts are not on PATH."""

import sys

from .cli import main

sys.exit(main())
