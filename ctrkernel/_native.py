"""Compiling the package's C sources on first use (the shim, the layer loops).

Each source ships with the package and is compiled with the host's C compiler into
`$CTRKERNEL_HOME/bin/<name>-<hash of the source><suffix>`: a changed source gets a new file, and
a build goes to a temporary name renamed into place, so two processes building at once never
see half a file. Without a compiler (or a writable home), `build` returns None and the caller
uses its Python equivalent, saying so where the difference shows.
"""
import hashlib
import os
import shutil
import subprocess
import tempfile

from ctrkernel import paths


def build(source, name, shared=False):
    """Path of the compiled `source` (an executable, or a shared library with shared=True),
    or None if it cannot be built here."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    try:
        target = paths.subdir("bin") / f"{name}-{digest}{'.so' if shared else ''}"
    except OSError:
        return None
    if target.exists():
        return target
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}-")
    except OSError:
        return None
    os.close(fd)
    # Executables static first: no dynamic loader, no shared-library relocations, so fewer
    # private pages per idle container. Dynamic if the static C library is not installed.
    variants = [["-shared", "-fPIC"]] if shared else [["-static"], []]
    for extra in variants:
        done = subprocess.run([cc, "-O2", *extra, "-o", tmp, str(source)],
                              capture_output=True, text=True)
        if done.returncode == 0:
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)  # atomic: a concurrent builder sees the old or the new file
            return target
    os.unlink(tmp)
    return None
