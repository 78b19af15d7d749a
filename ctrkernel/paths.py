"""Where ctrkernel keeps its state.

One home directory holds everything (images, extracted layers, containers, built helpers), so a
second process (`ctrkernel ps` in a terminal while a notebook runs) sees the same state, and so
removing one directory removes every trace. `CTRKERNEL_HOME` overrides the default; the tests set
it to a temporary directory.
"""
import os
from pathlib import Path


def home() -> Path:
    """The state directory: $CTRKERNEL_HOME, else /var/lib/ctrkernel for root, else XDG data."""
    explicit = os.environ.get("CTRKERNEL_HOME")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/ctrkernel")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "ctrkernel"


def subdir(*parts) -> Path:
    """A directory under home(), created on first use."""
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
