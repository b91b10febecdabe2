"""Lets every test import the shared fixtures as `from synthetic import ...`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
