"""Repository-wide pytest hooks: how nbval runs and compares the chapters in notebooks/.

They live at the repository root (not in tests/) so that they also apply when one chapter is
run on its own, e.g. `python -m pytest notebooks/01_history.ipynb`.
"""

from collections.abc import Generator
from pathlib import Path

import pytest

# nbval waits this long for a cell's last messages after the kernel says the cell finished.
# Its default of 5 s is too short on a busy machine (a shared 2-core CI runner).
OUTPUT_WAIT_SECONDS = 60


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


def pytest_itemcollected(item: pytest.Item) -> None:
    """Give a notebook cell's output messages time to arrive on a busy machine."""
    if item.path.suffix == ".ipynb" and hasattr(item, "output_timeout"):
        item.output_timeout = OUTPUT_WAIT_SECONDS


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Fail a notebook cell that ran past --nbval-cell-timeout, even if it then ended cleanly.

    On a timeout nbval interrupts the kernel. Code that handles Ctrl-C gracefully (a training
    loop that saves and stops) then finishes without an error, and nbval would pass the cell.
    """
    notebook = item.parent
    timed_out_before = getattr(notebook, "timed_out", None)
    result = yield
    if timed_out_before is False and getattr(notebook, "timed_out", False):
        limit = item.config.getoption("nbval_cell_timeout", default=None)
        pytest.fail(
            f"{item.name} ran longer than --nbval-cell-timeout={limit} s and was interrupted. "
            "Make the cell faster (fewer steps, a smaller model, a checkpoint from data/)."
        )
    return result
