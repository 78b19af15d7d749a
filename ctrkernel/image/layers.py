"""Making layers: a layer is a tar of the changes one step made, gzip-compressed.

Three ways to get the changes, all written by the same `LayerWriter`:
- `layer_from_dir(store, root)`: every file of a tree (a base layer);
- `layer_from_diff(store, lower, upper)`: what changed from one tree to another (added and
  changed files in full; a deleted path as an empty `.wh.<name>` file; a directory whose old
  content is all gone as `.wh..wh..opq`, the OCI layer spec's whiteouts);
- `layer_from_upper(store, upper)`: an overlayfs upper directory, as a container leaves it
  (deletions there are 0/0 character devices, opaque directories carry an xattr).

Layers are reproducible: entries are sorted, times are set to one constant (`mtime`, 0 by
default, like SOURCE_DATE_EPOCH), user and group names are dropped, the gzip header carries no
time or file name. The same tree therefore always gives the same digest.

Speed: the tar stream is produced in this thread, while a second thread hashes it (the
diff_id), compresses it with zlib and hashes the compressed bytes (the digest). hashlib and
zlib release the GIL on large buffers, so the two cores work at once, as `tar czf` uses a tar
process and a gzip process. Filesystem entries are written by the C packer (layertar.py) where a
compiler is available, byte for byte what the Python code here writes: per entry, Python costs
several times what GNU tar does. zlib level 1 is the default: 3-4x faster than gzip's default level 6
for a few percent more bytes, which is the trade Docker's own builders make (`--compress` aside).
"""
import hashlib
import os
import stat
import tarfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from ctrkernel.errors import CtrkernelError, InvalidArgument
from ctrkernel.image import layertar
from ctrkernel.image.store import MT_LAYER_GZIP

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
DEFAULT_LEVEL = 1
_BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Layer:
    """A stored layer blob: `digest` names the gzip blob, `diff_id` the uncompressed tar."""
    digest: str
    diff_id: str
    size: int                  # compressed bytes (the blob)
    tar_size: int              # uncompressed bytes
    entries: int
    media_type: str = MT_LAYER_GZIP

    def descriptor(self):
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class _CompressingSink:
    """Takes tar bytes; hashes, compresses and stores them in a worker thread.

    The bytes travel through a pipe, so that the C packer (layertar.c) can write to the same
    stream as the Python entries: in order, since one thread writes both, and without the GIL."""

    def __init__(self, blob, level):
        self.blob = blob
        self.diff = hashlib.sha256()
        self.compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip wrapper, mtime 0
        self.size = 0
        self.pending = []
        self.pending_len = 0
        self.error = None
        self.read_fd, self.fd = layertar.pipe()
        self.worker = threading.Thread(target=self._run, daemon=True,
                                       name="ctrkernel-layer-compress")
        self.worker.start()

    def _run(self):
        try:
            while chunk := os.read(self.read_fd, _CHUNK):
                if self.error:
                    continue             # keep reading: the writer must not block forever
                try:
                    self.diff.update(chunk)
                    self.blob.write(self.compressor.compress(chunk))
                except BaseException as e:   # reported by close()
                    self.error = e
        finally:
            os.close(self.read_fd)

    def write(self, data):
        self.size += len(data)
        self.pending.append(data)
        self.pending_len += len(data)
        if self.pending_len >= _CHUNK:
            self.flush()

    def flush(self):
        """Put what write() holds into the pipe (before anything else writes to it)."""
        if self.pending:
            layertar.write_all(self.fd, b"".join(self.pending))
            self.pending, self.pending_len = [], 0

    def _end(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.worker.join()

    def close(self):
        try:
            self.flush()
        finally:
            self._end()
        if self.error:
            raise self.error
        self.blob.write(self.compressor.flush())
        return "sha256:" + self.diff.hexdigest()

    def abort(self):
        self.pending = []
        self._end()


def _arcname(name):
    name = str(name)
    if not name.startswith(("/", ".")) and not name.endswith("/") and "/." not in name \
            and "//" not in name:
        return name                        # already clean: the common case, kept fast
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"layer path {name!r} contains '..'")
    return "/".join(parts)


_MAX7, _MAX11 = 8 ** 7, 8 ** 11       # the largest numbers 7 and 11 octal digits hold
_NO_DEVICE = b"\0" * 8


def _octal(n, width):
    return b"%0*o\0" % (width - 1, n)


def ustar_header(name, type_, mode, uid, gid, size, mtime, linkname="", devmajor=0, devminor=0):
    """The 512-byte POSIX ustar header of one entry, built directly: 5x faster than tarfile's
    general path, which matters for layers of many small files. The bytes are exactly those
    tarfile writes in PAX format when no extended header is needed; None when one is (a name
    or link target longer than 100 bytes or not ASCII, a number too large for its field), for
    the caller to fall back to tarfile."""
    if type_ == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"                       # as tarfile and GNU tar name directories
    try:
        bname, blink = name.encode("ascii"), linkname.encode("ascii")
    except UnicodeEncodeError:
        return None
    if len(bname) > 100 or len(blink) > 100 or not (
            0 <= uid < _MAX7 and 0 <= gid < _MAX7 and 0 <= size < _MAX11 and 0 <= mtime < _MAX11):
        return None
    device = type_ in (tarfile.CHRTYPE, tarfile.BLKTYPE)
    head = b"".join((bname.ljust(100, b"\0"), _octal(mode & 0o7777, 8), _octal(uid, 8),
                     _octal(gid, 8), _octal(size, 12), _octal(mtime, 12)))
    tail = b"".join((type_, blink.ljust(100, b"\0"), b"ustar\x0000", b"\0" * 64,  # uname, gname
                     _octal(devmajor, 8) if device else _NO_DEVICE,
                     _octal(devminor, 8) if device else _NO_DEVICE, b"\0" * 167))
    # The checksum is the sum of the header's bytes with its own field counted as 8 spaces.
    return head + b"%06o\0 " % (sum(head) + sum(tail) + 8 * 32) + tail


def _pax_header(name, type_, mode, uid, gid, size, mtime, linkname, device):
    """A long or non-ASCII name, or a number too large for ustar: tarfile's PAX header."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = type_, mode, size, mtime
    info.uid, info.gid, info.linkname = uid, gid, linkname
    info.uname = info.gname = ""
    info.devmajor, info.devminor = device
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class LayerWriter:
    """Write one reproducible layer into a store, entry by entry.

        with LayerWriter(store) as w:
            w.add_tree("/some/dir")
            w.add_whiteout("etc/motd")
        layer = w.layer
    """

    def __init__(self, store, level=DEFAULT_LEVEL, mtime=0, owner=None):
        self.store, self.mtime, self.owner = store, mtime, owner
        self.blob = store.blob_writer()
        self.sink = _CompressingSink(self.blob, level)
        self.entries = 0
        self.layer = None
        self._inodes = {}        # (dev, ino) -> first arcname, to write hard links as links
        # Filesystem entries go through the C packer where it can be built (same bytes)
        self._packer = layertar.Packer(self.sink.fd, owner, mtime, self._pax_entry) \
            if layertar.available() else None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.finish()
        except BaseException:
            self._abort()
            raise
        else:
            if exc_type is not None:
                self._abort()
        finally:
            if self._packer:
                self._packer.close()

    def _abort(self):
        self.sink.abort()
        self.blob.abort()

    # ---- raw entries -------------------------------------------------------------------
    def _entry(self, arcname, type_, mode, uid=0, gid=0, size=0, mtime=None, linkname="",
               device=(0, 0)):
        name = _arcname(arcname)
        if not name:
            return                # the root directory itself is never an entry
        uid, gid = (uid, gid) if self.owner is None else self.owner
        mtime = self.mtime if self.mtime is not None else (mtime or 0)
        header = ustar_header(name, type_, mode, uid, gid, size, mtime, linkname, *device)
        self.sink.write(header or _pax_header(name, type_, mode, uid, gid, size, mtime,
                                              linkname, device))
        self.entries += 1

    def _pax_entry(self, name, type_, mode, uid, gid, size, mtime, linkname, major, minor):
        """The C packer's way out for an entry ustar cannot hold: into the stream at once."""
        self.sink.write(_pax_header(name, type_, mode, uid, gid, size, mtime, linkname,
                                    (major, minor)))
        self.sink.flush()

    def add_bytes(self, arcname, data: bytes, mode=0o644, uid=0, gid=0):
        self._entry(arcname, tarfile.REGTYPE, mode, uid, gid, len(data))
        self.sink.write(data)
        self._pad(len(data))

    def add_dir(self, arcname, mode=0o755, uid=0, gid=0):
        self._entry(arcname, tarfile.DIRTYPE, mode, uid, gid)

    def add_symlink(self, arcname, target, uid=0, gid=0):
        self._entry(arcname, tarfile.SYMTYPE, 0o777, uid, gid, linkname=target)

    def add_whiteout(self, arcname):
        """Record that `arcname` (a file or a whole directory) was deleted."""
        path = Path(_arcname(arcname))
        self._entry(str(path.parent / (WHITEOUT_PREFIX + path.name)), tarfile.REGTYPE, 0o600)

    def add_opaque(self, dir_arcname):
        """Record that the lower layers' content of this directory is hidden."""
        self._entry(f"{_arcname(dir_arcname)}/{OPAQUE}".lstrip("/"), tarfile.REGTYPE, 0o600)

    def _pad(self, size):
        if size % _BLOCK:
            self.sink.write(b"\0" * (_BLOCK - size % _BLOCK))

    # ---- from the filesystem -------------------------------------------------------------
    def _packed(self, done):
        """Count what the C packer wrote (it writes to the sink's pipe directly)."""
        self.sink.size += done[0]
        self.entries += done[1]

    def add_path(self, path, arcname, st=None):
        """One filesystem object (not recursing into directories) as `arcname`."""
        if self._packer:
            name = _arcname(arcname)
            if name:
                self.sink.flush()
                self._packed(self._packer.path(path, name))
            return
        st = st or os.lstat(path)
        mode = stat.S_IMODE(st.st_mode)
        kind = stat.S_IFMT(st.st_mode)
        owner = dict(uid=_as_root(st.st_uid, os.geteuid()), gid=_as_root(st.st_gid, os.getegid()),
                     mtime=int(st.st_mtime))
        if kind == stat.S_IFDIR:
            self._entry(arcname, tarfile.DIRTYPE, mode, **owner)
        elif kind == stat.S_IFLNK:
            self._entry(arcname, tarfile.SYMTYPE, 0o777, linkname=os.readlink(path), **owner)
        elif kind == stat.S_IFREG:
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self._inodes:
                self._entry(arcname, tarfile.LNKTYPE, mode, linkname=self._inodes[key], **owner)
                return
            if st.st_nlink > 1:
                self._inodes[key] = _arcname(arcname)
            self._add_file(path, arcname, mode, st.st_size, owner)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            type_ = {stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE,
                     stat.S_IFIFO: tarfile.FIFOTYPE}[kind]
            device = (0, 0) if kind == stat.S_IFIFO else (os.major(st.st_rdev), os.minor(st.st_rdev))
            self._entry(arcname, type_, mode, device=device, **owner)
        # sockets cannot be stored in tar; like GNU tar we leave them out

    def _add_file(self, path, arcname, mode, size, owner):
        self._entry(arcname, tarfile.REGTYPE, mode, size=size, **owner)
        written = 0
        # os.open/os.read rather than open(): no buffered file object per file, which is a
        # third of the time for a tree of many small files.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            while written < size and (chunk := os.read(fd, min(_CHUNK, size - written))):
                written += len(chunk)
                self.sink.write(chunk)
        finally:
            os.close(fd)
        if written != size:   # the file shrank while we read it: the header would lie
            raise CtrkernelError(f"{path} changed size while it was being archived")
        self._pad(size)

    def add_tree(self, root, prefix=""):
        """Everything under `root` (not root itself unless prefix is set), sorted by name."""
        root = Path(root)
        if prefix:
            self.add_path(root, prefix)
        if self._packer:
            self.sink.flush()
            self._packed(self._packer.tree(root, _arcname(prefix)))
            return
        self._walk(root, _arcname(prefix))

    def add_upper(self, upper, skip=()):
        """An overlayfs upper directory (see layer_from_upper); `skip`: arcnames left out."""
        if self._packer:
            self.sink.flush()
            self._packed(self._packer.tree(upper, "", upper=True, skip=skip))
            return
        from ctrkernel.runtime.diff import is_opaque

        def walk(dirpath, rel):
            for entry in _sorted_scandir(dirpath):
                arc = f"{rel}/{entry.name}" if rel else entry.name
                if arc in skip:
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    self.add_whiteout(arc)
                    continue
                self.add_path(entry.path, arc, st)
                if stat.S_ISDIR(st.st_mode):
                    if is_opaque(entry.path):
                        self.add_opaque(arc)
                    walk(entry.path, arc)
        walk(Path(upper), "")

    def _walk(self, dirpath, arc):
        for entry in _sorted_scandir(dirpath):
            child = f"{arc}/{entry.name}" if arc else entry.name
            st = entry.stat(follow_symlinks=False)
            self.add_path(entry.path, child, st)
            if stat.S_ISDIR(st.st_mode):
                self._walk(entry.path, child)

    def finish(self) -> Layer:
        if self.layer:
            return self.layer
        self.sink.write(b"\0" * (2 * _BLOCK))          # end-of-archive marker
        # GNU tar pads to a 10 KiB record; the spec does not need it, so neither do we
        if self._packer:                   # no more entries: its buffer goes now, not at exit
            self._packer.close()
        diff_id = self.sink.close()
        digest = self.blob.commit()
        self.layer = Layer(digest, diff_id, self.blob.size, self.sink.size, self.entries)
        return self.layer


def _as_root(owner, mine):
    """Unprivileged, our own files stand for root's: a rootless container's root is our uid
    outside it (what its user namespace maps), so a layer records them as 0, as podman does."""
    return 0 if mine != 0 and owner == mine else owner


def _sorted_scandir(path):
    # by the bytes of the name (as the C packer sorts): str order differs for undecodable names
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: os.fsencode(e.name))


# ---- the three sources of changes --------------------------------------------------------

def layer_from_dir(store, root, **kw) -> Layer:
    """A layer holding every file under `root` (paths relative to it)."""
    with LayerWriter(store, **kw) as w:
        w.add_tree(root)
    return w.layer


def changes(lower, upper):
    """What turned tree `lower` into tree `upper`, as `docker diff` shows it: a sorted list of
    (kind, path) with kind "A" added, "C" changed, "D" deleted; a directory whose old content is
    all gone is also reported as ("O", path), opaque."""
    out = []
    _diff(Path(lower), Path(upper), "", out)
    return out


def _same_file(a, b, sa, sb):
    if (sa.st_size, stat.S_IMODE(sa.st_mode), sa.st_uid, sa.st_gid) != \
            (sb.st_size, stat.S_IMODE(sb.st_mode), sb.st_uid, sb.st_gid):
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(_CHUNK), fb.read(_CHUNK)
            if x != y:
                return False
            if not x:
                return True


def _diff(lower, upper, rel, out):
    try:
        old = {e.name: e.stat(follow_symlinks=False) for e in os.scandir(lower)}
    except (FileNotFoundError, NotADirectoryError):
        old = {}
    new = {e.name: e.stat(follow_symlinks=False) for e in os.scandir(upper)}
    if len(old) >= 2 and not (old.keys() & new.keys()):
        out.append(("O", rel or "."))
        old = {}
    for name in sorted(old.keys() | new.keys()):
        path = f"{rel}/{name}" if rel else name
        a, b = lower / name, upper / name
        if name not in new:
            out.append(("D", path))
            continue
        sb = new[name]
        if name not in old:
            out.append(("A", path))
            if stat.S_ISDIR(sb.st_mode):
                _diff(Path("/nonexistent-ctrkernel"), b, path, out)
            continue
        sa = old[name]
        if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
            out.append(("C", path))
            if stat.S_ISDIR(sb.st_mode):
                _diff(Path("/nonexistent-ctrkernel"), b, path, out)
        elif stat.S_ISDIR(sb.st_mode):
            if (stat.S_IMODE(sa.st_mode), sa.st_uid, sa.st_gid) != \
                    (stat.S_IMODE(sb.st_mode), sb.st_uid, sb.st_gid):
                out.append(("C", path))
            _diff(a, b, path, out)
        elif stat.S_ISLNK(sb.st_mode):
            if os.readlink(a) != os.readlink(b) or (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid):
                out.append(("C", path))
        elif stat.S_ISREG(sb.st_mode):
            if not _same_file(a, b, sa, sb):
                out.append(("C", path))
        elif (sa.st_rdev, sa.st_mode, sa.st_uid, sa.st_gid) != \
                (sb.st_rdev, sb.st_mode, sb.st_uid, sb.st_gid):
            out.append(("C", path))
    return out


def layer_from_diff(store, lower, upper, skip=(), **kw) -> Layer:
    """The layer that turns tree `lower` into tree `upper` (see `changes`); paths in `skip`
    (and what is below them) are left out. None when nothing changed."""
    upper = Path(upper)
    found = [(kind, path) for kind, path in changes(lower, upper)
             if not any(path == s or path.startswith(s + "/") for s in skip)]
    if not found:
        return None
    with LayerWriter(store, **kw) as w:
        for kind, path in found:
            if kind == "D":
                w.add_whiteout(path)
            elif kind == "O":
                if path == ".":
                    raise CtrkernelError("every file of the lower tree was deleted; "
                                         "use a new base (FROM scratch) instead of a diff")
                w.add_opaque(path)
            else:
                w.add_path(upper / path, path)
    return w.layer


def layer_from_upper(store, upper, skip=(), **kw) -> Layer:
    """A layer from an overlayfs upper directory: a 0/0 character device is a deleted path, an
    opaque xattr an opaque directory (trusted.overlay.* as root, user.* for rootless overlay and
    fuse-overlayfs); `.wh.` files already in OCI form pass through. Top-level names in `skip`
    are left out (the runtime's own mount points)."""
    with LayerWriter(store, **kw) as w:
        w.add_upper(upper, skip)
    return w.layer
