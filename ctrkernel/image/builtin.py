"""Built-in base images, made on this machine from what is installed, with no network.

- `busybox` (busybox:latest): one layer with the host's static /bin/busybox, a symlink per
  applet, a minimal /etc/passwd and /etc/group, and the usual empty directories.
- `python` (python:3.11 and python:latest): the busybox layer (the very same blob: shared), then
  the host's Python interpreter with the shared libraries it and its extension modules load
  (found with ldd), then its standard library without test suites, IDLE, tkinter and friends.

Both are reproducible: their times come from the installed files, so making them twice (or on
two machines with the same packages) gives the same digests.
"""
import contextlib
import fcntl
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

from ctrkernel.errors import CtrkernelError, HostLacks, ImageNotFound
from ctrkernel.image import refs
from ctrkernel.image.image import create_image, rfc3339
from ctrkernel.image.layers import LayerWriter

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnobody:x:65534:\n"
EMPTY_DIRS = {"dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555, "root": 0o700,
              "sys": 0o555, "tmp": 0o1777, "var": 0o755, "bin": 0o755, "sbin": 0o755,
              "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755}
# Parts of the standard library a course exercise does not need (about half its size).
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
               "site-packages", "dist-packages", "unittest/test", "ctypes/test", "distutils/tests",
               "sqlite3/test", "tkinter/test", "lib2to3/tests", "turtle.py"}


def builtin_names():
    return {"busybox:latest": make_busybox, f"python:{PY_VERSION}": make_python,
            "python:latest": make_python}


def is_builtin(reference):
    try:
        return refs.normalize(reference) in builtin_names()
    except Exception:
        return False


def ensure(store, reference):
    """Make the builtin image `reference` if it is not in the store yet; return it."""
    name = refs.normalize(reference)
    maker = builtin_names().get(name)
    if maker is None:
        raise ImageNotFound(reference)
    # one maker at a time per store: a second process waits and then finds the image
    with _builtin_lock(store):
        return _ensure_locked(store, name, maker)


def _ensure_locked(store, name, maker):
    try:
        return store.get(name)
    except ImageNotFound:
        maker(store)
        return store.get(name)


@contextlib.contextmanager
def _builtin_lock(store):
    fd = os.open(store.root / "builtin.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def busybox_path():
    """The host's static busybox, or HostLacks naming busybox-static."""
    path = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(path):
        from ctrkernel.host import doctor
        doctor().require("busybox", "the builtin busybox image")
        raise HostLacks("the builtin busybox image", "busybox",
                        "apt-get install busybox-static")
    from ctrkernel._probe import is_static_elf
    if not is_static_elf(os.path.realpath(path)):
        # A dynamic busybox copied into an image finds no libraries there: every command
        # would then fail as "not found" (127), far from the cause. Say it here instead.
        raise HostLacks("the builtin busybox image",
                        f"a statically linked busybox ({path} is dynamically linked)",
                        "apt-get install busybox-static")
    return os.path.realpath(path)


def _applets(busybox):
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True)
    return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})


def _relative_link(applet_path, target="bin/busybox"):
    depth = applet_path.count("/")
    return "busybox" if applet_path.rpartition("/")[0] == "bin" else "../" * depth + target


def busybox_layer(store):
    busybox = busybox_path()
    st = os.stat(busybox)
    entries = {d: ("dir", mode) for d, mode in EMPTY_DIRS.items()}
    entries["bin/busybox"] = ("file", busybox)
    entries["etc/passwd"] = ("bytes", PASSWD)
    entries["etc/group"] = ("bytes", GROUP)
    for applet in _applets(busybox):
        applet = applet.lstrip("/")
        if applet in entries or applet.rpartition("/")[0] not in EMPTY_DIRS:
            continue
        entries[applet] = ("symlink", _relative_link(applet))
    with LayerWriter(store, owner=(0, 0), mtime=int(st.st_mtime)) as w:
        _write_entries(w, entries)
    return w.layer, int(st.st_mtime), _busybox_version(busybox)


def _busybox_version(busybox):
    out = subprocess.run([busybox], capture_output=True, text=True).stdout
    m = re.search(r"BusyBox (v[\w.-]+)", out)
    return m.group(1) if m else "?"


def make_busybox(store):
    layer, mtime, version = busybox_layer(store)
    when = rfc3339(mtime)
    return create_image(
        store, parent=None, created=when, tags=["busybox:latest"],
        config={"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["sh"]},
        steps=[(layer, {"created_by": f"/bin/sh -c #(nop) ADD host /bin/busybox ({version}, "
                                      "busybox-static) and its applets in /",
                        "comment": "ctrkernel builtin"}),
               (None, {"created_by": '/bin/sh -c #(nop)  CMD ["sh"]'})])


# ---- python -------------------------------------------------------------------------------

def _host_python():
    base = Path(sys.base_prefix)
    exe = base / "bin" / f"python{PY_VERSION}"
    stdlib = Path(sysconfig.get_paths(vars={"base": str(base), "installed_base": str(base)})
                  ["stdlib"])
    if not exe.exists() or not (stdlib / "os.py").exists():
        raise HostLacks("the builtin python image", f"a Python installation under {base}",
                        "Install python3 from the distribution (apt-get install python3).")
    return exe, stdlib


def _ldd(paths):
    """Every shared library (absolute path as the loader finds it) the given ELF files load."""
    found = set()
    for chunk in range(0, len(paths), 64):
        out = subprocess.run(["ldd", *map(str, paths[chunk:chunk + 64])], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                found.add(m.group(1))
    return sorted(found)


def _closure(path, out):
    """Add path to `out` (rel -> kind) with every symlink met on the way, as on the host."""
    parts = Path(path).parts[1:]
    cur = Path("/")
    for i, part in enumerate(parts):
        nxt = cur / part
        rel = str(nxt)[1:]
        st = os.lstat(nxt)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(nxt)
            out[rel] = ("symlink", target)
            resolved = Path(os.path.normpath(target if target.startswith("/") else cur / target))
            rest = parts[i + 1:]
            return _closure(str(resolved.joinpath(*rest)) if rest else str(resolved), out)
        if stat.S_ISDIR(st.st_mode):
            out.setdefault(rel, ("dir", stat.S_IMODE(st.st_mode)))
            cur = nxt
        else:
            out[rel] = ("file", str(nxt))
            return


def _write_entries(w, entries, busybox_dirs=()):
    """Write {rel: (kind, value)} sorted: dir (mode), file (host path), bytes, symlink (target).
    A symlink where the busybox layer has a directory is refused (it would hide it)."""
    for rel in sorted(entries):
        kind, value = entries[rel]
        if kind == "symlink" and rel in busybox_dirs:
            raise CtrkernelError(f"the host's /{rel} is a symlink; it would hide the busybox "
                                 "layer's directory")
        if kind == "dir":
            w.add_dir(rel, value)
        elif kind == "file":
            w.add_path(value, rel)
        elif kind == "bytes":
            w.add_bytes(rel, value)
        else:
            w.add_symlink(rel, value)


def _stdlib_files(stdlib):
    """(host path, rel) for the standard library minus STDLIB_SKIP, sorted; .pyc only for
    the plain optimisation level."""
    keep = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        rel_dir = os.path.relpath(dirpath, stdlib)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = sorted(d for d in dirnames
                             if os.path.join(rel_dir, d).lstrip("/") not in STDLIB_SKIP
                             and d not in ("test", "tests", "idle_test"))
        keep.append((dirpath, rel_dir, True))
        for name in sorted(filenames):
            rel = os.path.join(rel_dir, name)
            if rel in STDLIB_SKIP or ".opt-" in name or name.endswith((".exe", ".a")):
                continue
            keep.append((os.path.join(dirpath, name), rel, False))
    return keep


def make_python(store):
    exe, stdlib = _host_python()
    busybox = _ensure_locked(store, "busybox:latest", make_busybox)   # caller holds the lock
    busybox_dirs = set(EMPTY_DIRS) | {"bin", "sbin"}
    dynload = sorted(stdlib.glob("lib-dynload/*.so"))
    libs = {}
    for lib in _ldd([exe, *dynload]):
        _closure(lib, libs)
    mtime = int(os.stat(exe).st_mtime)
    with LayerWriter(store, owner=(0, 0), mtime=mtime) as w:
        _write_entries(w, libs, busybox_dirs)
    libs_layer = w.layer

    stdlib_rel = str(stdlib)[1:]
    exe_rel = str(exe)[1:]
    entries = {}
    _closure(str(exe), entries)
    with LayerWriter(store, owner=(0, 0), mtime=mtime) as w:
        _write_entries(w, {k: v for k, v in entries.items() if k not in busybox_dirs},
                       busybox_dirs)
        bindir = exe_rel.rpartition("/")[0]
        w.add_symlink(f"{bindir}/python", exe.name)
        w.add_symlink(f"{bindir}/python3", exe.name)
        # parents of the stdlib directory (usr/lib), then the stdlib itself
        parent_entries = {}
        _closure(str(stdlib.parent), parent_entries)
        _write_entries(w, {k: v for k, v in parent_entries.items()
                           if k not in busybox_dirs and k not in libs}, busybox_dirs)
        for host_path, rel, is_dir in _stdlib_files(stdlib):
            arc = f"{stdlib_rel}/{rel}" if rel else stdlib_rel
            w.add_path(host_path, arc)
    std_layer = w.layer
    when = rfc3339(mtime)
    version = sys.version.split()[0]
    return create_image(
        store, parent=busybox, created=when, tags=[f"python:{PY_VERSION}", "python:latest"],
        config={"Env": [f"PATH={DEFAULT_PATH}", "LANG=C.UTF-8",
                        f"PYTHON_VERSION={version}"],
                "Cmd": ["python3"]},
        steps=[(libs_layer, {"created_by": f"/bin/sh -c #(nop) COPY host shared libraries of "
                                           f"{exe} (ldd)", "comment": "ctrkernel builtin"}),
               (std_layer, {"created_by": f"/bin/sh -c #(nop) COPY host {exe} and {stdlib} "
                                          "(no test suites)", "comment": "ctrkernel builtin"}),
               (None, {"created_by": f"/bin/sh -c #(nop)  ENV PYTHON_VERSION={version}"}),
               (None, {"created_by": '/bin/sh -c #(nop)  CMD ["python3"]'})])
