"""Lets every test import the shared fixtures as `from synthetic import ...`."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def trained_tiny_model(tmp_path_factory):
    """A tiny SyncNet trained on synthetic clips (tests/trained_model.py), once per test session."""
    from trained_model import trained_tiny_model as train

    return train(tmp_path_factory.mktemp("trained_tiny_model"))
