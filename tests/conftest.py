"""Shared settings for the unit tests in tests/."""

import pytest
import torch
from browser import browser_page, chromium_browser  # noqa: F401  (headless-Chromium fixtures)
from hypothesis import settings

# The machines that run the tests (laptops, 2-core CI) are often busy; a property test should
# fail for a wrong answer, never for a slow example.
settings.register_profile("gptlib", deadline=None)
settings.load_profile("gptlib")


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Start every test from the same global random state, so a failure reproduces."""
    torch.manual_seed(0)
