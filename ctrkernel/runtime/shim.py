"""Build (once) and locate the C shim that waits for each container.

The shim's source ships with the package (`shim.c`); it is compiled on first use with the
host's C compiler into `$CTRKERNEL_HOME/bin/ctrkernel-shim-<hash of the source>`, so a changed
source gets a new binary and two processes building at once never see half a file. Without a
compiler, `path()` returns None and the runtime falls back to a Python waiter, which costs a
Python process per container and says so in `container.isolation`.
"""
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ctrkernel import paths

SOURCE = Path(__file__).with_name("shim.c")
_cached = {}


def path():
    """The compiled shim's path, or None if no C compiler can build it."""
    home = str(paths.home())
    if home in _cached:
        return _cached[home]
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = paths.subdir("bin") / f"ctrkernel-shim-{digest}"
    if not target.exists():
        target = _compile(target)
    _cached[home] = target
    return target


def _compile(target):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".shim-")
    os.close(fd)
    # Static first: no dynamic loader, no shared-library relocations, so fewer private pages
    # per idle container. Dynamic if the static C library is not installed.
    for extra in (["-static"], []):
        done = subprocess.run([cc, "-O2", *extra, "-o", tmp, str(SOURCE)],
                              capture_output=True, text=True)
        if done.returncode == 0:
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)  # atomic: a concurrent builder sees the old or the new file
            return target
    os.unlink(tmp)
    return None
