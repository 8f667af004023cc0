"""Shared fixtures for the test suite.

`require_method(name)` returns the integrator class registered under `name` (an unregistered
name is an error, never a skip).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

# The tests' own helpers (tests/systems.py) import as a top-level module.
sys.path.insert(0, os.path.dirname(__file__))

# Two cores are shared by several test runs: never let torch spawn a thread pool per run.
torch.set_num_threads(1)

from systems import method_class  # noqa: E402


def require_method_cls(name: str) -> type:
    """The class behind method `name`."""
    return method_class(name)


@pytest.fixture
def require_method():
    return require_method_cls
