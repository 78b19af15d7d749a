"""Build (once) and locate the C shim that waits for each container.

The shim's source ships with the package (`shim.c`) and is compiled on first use (see
ctrkernel/_native.py). Without a compiler, `path()` returns None and the runtime falls back to a
Python waiter, which costs a Python process per container and says so in `container.isolation`.
"""
from pathlib import Path

from ctrkernel import _native, paths

SOURCE = Path(__file__).with_name("shim.c")
_cached = {}


def path():
    """The compiled shim's path, or None if no C compiler can build it."""
    home = str(paths.home())
    if home not in _cached:
        _cached[home] = _native.build(SOURCE, "ctrkernel-shim")
    return _cached[home]
