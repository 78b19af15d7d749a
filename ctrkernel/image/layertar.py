"""The C inner loops of layers (layertar.c), loaded with ctypes.

extract.py and layers.py are the reference: what a layer may contain and how a tree becomes
tar bytes is decided and documented there. For layers of many small files their per-entry Python
cost puts them well behind GNU tar, so where a C compiler is available the same work runs in
layertar.c: `unpack` for extract_layer, `Packer` for LayerWriter's filesystem entries. A
ctypes call releases the GIL, and both directions talk through a pipe to a Python thread that
does the compressing or decompressing and the hashing: two cores at work, as in `tar | gzip`.

`available()` is False without a compiler (Binder images often have none): callers then use the
Python paths, which give the same bytes and the same refusals (tests/test_layer_native.py).
Tests set `enabled = False` to run the Python paths on purpose.
"""
import ctypes
import fcntl
import os
import signal
import threading
from pathlib import Path

from ctrkernel import _native, paths
from ctrkernel.errors import CtrkernelError, LayerError

SOURCE = Path(__file__).with_name("layertar.c")
enabled = True
_CHUNK = 1 << 20
_libs = {}

_LAYER, _OS, _CHANGED, _CALLBACK = 1, 2, 3, 4
_ll = ctypes.c_longlong
PAX_HEADER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, _ll, _ll, _ll, _ll,
                              _ll, ctypes.c_char_p, _ll, _ll)


class _Err(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("errnum", ctypes.c_int),
                ("where", ctypes.c_char * 4096), ("msg", ctypes.c_char * 1024)]

    def raise_(self):
        where = os.fsdecode(self.where)
        msg = self.msg.decode("utf-8", "surrogateescape")
        if self.kind == _LAYER:
            raise LayerError(where, msg)
        if self.kind == _OS:
            raise OSError(self.errnum, os.strerror(self.errnum), where)
        raise CtrkernelError(f"{where} {msg}")


def _load():
    home = str(paths.home())
    if home in _libs:
        return _libs[home]
    lib = None
    path = _native.build(SOURCE, "ctrkernel-layertar", shared=True)
    if path:
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:                  # e.g. a home on a noexec mount
            lib = None
    if lib:
        err = ctypes.POINTER(_Err)
        lib.ct_unpack.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_int, ctypes.c_uint, _ll, _ll, ctypes.c_char_p, err]
        lib.ct_unpack.restype = ctypes.c_int
        lib.ct_pack_new.argtypes = [ctypes.c_int, ctypes.c_int, _ll, _ll, ctypes.c_int, _ll,
                                    _ll, _ll, PAX_HEADER]
        lib.ct_pack_new.restype = ctypes.c_void_p
        lib.ct_pack_path.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, err]
        lib.ct_pack_tree.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                     ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, err]
        for fn in (lib.ct_pack_written, lib.ct_pack_entries):
            fn.argtypes, fn.restype = [ctypes.c_void_p], _ll
        lib.ct_pack_free.argtypes = [ctypes.c_void_p]
    _libs[home] = lib
    return lib


def available():
    """Whether the C loops can be used here (compiled and loaded, and not switched off)."""
    return enabled and _load() is not None


def pipe():
    """A pipe with a 1 MiB buffer where the kernel allows (fewer wake-ups per megabyte)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _CHUNK)
    except OSError:
        pass                             # above /proc/sys/fs/pipe-max-size: the default will do
    return r, w


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def unpack(stream, root, overlay, name, umask, owner):
    """Unpack the tar bytes `stream.read(n)` gives into the fresh directory `root`, with the
    checks extract.py documents; directory metadata is set before returning. Reads `stream` to
    its end. Raises LayerError (the layer is refused) or OSError."""
    lib = _load()
    r, w = pipe()
    failed = []

    def feed():              # decompressing and hashing in this thread, on the other core
        # EPIPE, not a SIGPIPE that would kill a host process which does not ignore it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
        try:
            while chunk := stream.read(_CHUNK):
                write_all(w, chunk)
        except BrokenPipeError:
            pass             # the C side stopped at an error of its own, reported below
        except BaseException as e:
            failed.append(e)
        finally:
            os.close(w)

    feeder = threading.Thread(target=feed, daemon=True, name="ctrkernel-layer-feed")
    feeder.start()
    err = _Err()
    try:
        rc = lib.ct_unpack(r, os.fsencode(root), int(overlay), int(os.geteuid() == 0),
                           int(umask is not None), umask or 0, owner[0], owner[1],
                           os.fsencode(name), ctypes.byref(err))
    finally:
        os.close(r)          # a feeder still writing gets EPIPE and stops
        feeder.join()
    if failed:               # a damaged stream: the C side only saw it end early
        raise failed[0]
    if rc:
        err.raise_()


class Packer:
    """Writes filesystem entries as tar bytes to `fd`, as LayerWriter.add_path and add_tree do
    in Python (same bytes). `pax_header(name, type, mode, uid, gid, size, mtime, linkname,
    devmajor, devminor)` writes the header of an entry ustar cannot hold (to the same fd)."""

    def __init__(self, fd, owner, mtime, pax_header):
        self.lib = _load()
        self.failure = None

        def callback(name, type_, mode, uid, gid, size, mtime_, link, major, minor):
            try:
                pax_header(os.fsdecode(name), bytes([type_]), mode, uid, gid, size, mtime_,
                           os.fsdecode(link), major, minor)
                return 0
            except BaseException as e:   # raised again in Python once the C call returns
                self.failure = e
                return -1

        self._callback = PAX_HEADER(callback)        # kept alive as long as the packer
        self.ctx = self.lib.ct_pack_new(fd, owner is not None, *(owner or (0, 0)),
                                        mtime is not None, mtime or 0, os.geteuid(),
                                        os.getegid(), self._callback)
        if not self.ctx:
            raise MemoryError("layer packer")

    def _call(self, fn, *args):
        err = _Err()
        before = self.written, self.entries
        if fn(self.ctx, *args, ctypes.byref(err)):
            if err.kind == _CALLBACK and self.failure:
                raise self.failure
            err.raise_()
        return self.written - before[0], self.entries - before[1]

    def path(self, path, arcname):
        """One object at `path` (not recursing) as the clean relative name `arcname`.
        Returns (bytes written, entries written)."""
        return self._call(self.lib.ct_pack_path, os.fsencode(path), os.fsencode(arcname))

    def tree(self, root, arcname="", upper=False, skip=()):
        """Everything below `root`, sorted by name, as `arcname/...`; upper: an overlayfs upper
        directory (whiteout devices and opaque xattrs become OCI whiteouts), leaving out the
        arcnames in `skip`."""
        blob = b"".join(os.fsencode(s) + b"\0" for s in skip)
        return self._call(self.lib.ct_pack_tree, os.fsencode(root), os.fsencode(arcname),
                          int(upper), blob, len(blob))

    @property
    def written(self):
        return self.lib.ct_pack_written(self.ctx)

    @property
    def entries(self):
        return self.lib.ct_pack_entries(self.ctx)

    def close(self):
        if self.ctx:
            self.lib.ct_pack_free(self.ctx)
            self.ctx = None
