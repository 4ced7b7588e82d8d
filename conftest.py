"""Repository-wide pytest hooks: how nbval runs and compares the chapters in notebooks/.

They live at the repository root (not in tests/) so that they also apply when one chapter is
run on its own, e.g. `python -m pytest notebooks/01_history.ipynb`.
"""

from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Find the nbval sanitize file from any working folder, not only the repository root."""
    sanitize = getattr(config.option, "nbval_sanitize_with", None)
    if sanitize and not Path(sanitize).exists():
        config.option.nbval_sanitize_with = str(config.rootpath / sanitize)


def pytest_collectstart(collector: pytest.Collector) -> None:
    """Leave stderr out of nbval's output comparison.

    Warnings and progress bars go to stderr; their text changes with library versions and
    timing, while what a chapter teaches is on stdout and in its displayed results. This is the
    hook nbval's documentation describes for skipping an output type.
    """
    if collector.path.suffix == ".ipynb" and hasattr(collector, "skip_compare"):
        collector.skip_compare = (*collector.skip_compare, "stderr")
