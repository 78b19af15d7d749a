"""Unpacking layers, which are untrusted input.

A layer tar comes from anywhere (a `docker save` file, a registry mirror, a learner's
experiment), so every entry is checked before anything is written:

- its name must stay inside the root: no absolute path, no `..` component;
- no entry is written *through* a symlink: every parent directory of an entry must be a real
  directory (we remember what this extraction created, and lstat what was there before), so a
  layer cannot plant `etc -> /etc` and then write `etc/passwd`;
- a symlink may not point above the root by `..` components (an absolute target is fine: it is
  resolved inside the container's root, and we never follow links while unpacking);
- a hard link must name a file this layer already unpacked, inside the root;
- device nodes only when we are root (an unprivileged user cannot make them anyway);
- the blob must hash to its digest and the tar to its diff_id.

Anything else raises LayerError naming the entry. `extract_layer` unpacks into a fresh
directory, so a refused layer is simply thrown away.

Whiteouts have two forms on disk. The OCI form (empty `.wh.<name>` files, `.wh..wh..opq`) is
what a tar carries; the kernel's overlayfs wants its own form (a 0/0 character device for a
deleted path, the `trusted.overlay.opaque=y` xattr for an opaque directory). Layers extracted
for overlay lowerdirs use the overlay form. Unprivileged, the whiteout device can still be made
(Linux 5.8+ allows 0/0 to anyone) and the opaque mark goes to `user.overlay.opaque` (what a
rootless overlay mounted with `userxattr` reads; `user.fuseoverlayfs.opaque` for fuse-overlayfs);
where the kernel refuses either, that entry keeps the OCI form, which the copy fallback
understands. `apply_layer` instead applies a layer on top of a tree: whiteouts delete.

This module is the reference for all of the above. Unpacking into a fresh directory (what
`extract_layer` does for the store) runs the same rules in C where a compiler is available
(layertar.c, through layertar.py): per entry, Python costs more than GNU tar does in all.
tests/test_layer_native.py holds the two to the same trees and the same refusals.
"""
import bz2
import hashlib
import lzma
import os
import queue
import shutil
import stat
import tarfile
import threading
import zlib
from pathlib import Path

from ctrkernel.errors import DigestMismatch, LayerError
from ctrkernel.image import layertar
from ctrkernel.image.layers import OPAQUE, WHITEOUT_PREFIX
from ctrkernel.image.tarstream import TarReader

_CHUNK = 1 << 20


class _HashingReader:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, raw):
        self.raw, self.hash, self.size = raw, hashlib.sha256(), 0

    def read(self, n=-1):
        data = self.raw.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def drain(self):
        while self.read(_CHUNK):
            pass

    @property
    def digest(self):
        return "sha256:" + self.hash.hexdigest()


# Layers are gzip (or plain) tars; bzip2 and xz also come in for Dockerfile ADD.
_DECOMPRESSORS = {b"\x1f\x8b": lambda: zlib.decompressobj(31), b"BZ": bz2.BZ2Decompressor,
                  b"\xfd7": lzma.LZMADecompressor}


class _CorruptStream(Exception):
    """The compressed data is damaged (reported as a LayerError naming the layer)."""


class _DecompressReader:
    """Decompress a stream (several concatenated members allowed) on read().

    Output is produced in bounded steps (max_length): a highly compressible layer can expand
    a 1 MB read a hundredfold, and a consumer waiting for its first bytes should not wait for
    all of it (nor hold it all in memory)."""

    def __init__(self, raw, make):
        self.raw, self.buf, self.make = raw, b"", make
        self.pos = 0                         # buf[:pos] was already returned
        self.d = make()
        self.pending = b""                   # compressed input not yet given to self.d
        self.eof = False

    def _step(self, limit):
        """Decompress up to `limit` more bytes into buf (reading input when the decompressor
        needs it); False once the compressed stream is exhausted."""
        d = self.d
        tail = hasattr(d, "unconsumed_tail")                  # zlib keeps unread input outside
        if not self.pending and (tail or d.needs_input or d.eof):
            self.pending = self.raw.read(_CHUNK)
            if not self.pending:
                self.eof = True
                if tail and not d.eof:
                    self.buf += d.flush()
                return False
        if d.eof:                            # a second member follows the first
            self.d = d = self.make()
        try:
            self.buf += d.decompress(self.pending, limit)
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as e:
            raise _CorruptStream(str(e)) from None
        if d.eof:        # what follows the member (zlib's unconsumed_tail is stale then)
            self.pending = d.unused_data
        else:
            self.pending = d.unconsumed_tail if tail else b""
        return True

    def read(self, n=-1):
        while not self.eof and (n < 0 or len(self.buf) - self.pos < n):
            if self.pos:                     # drop what was returned before the buffer grows
                self.buf, self.pos = self.buf[self.pos:], 0
            self._step(_CHUNK if n < 0 else max(n - len(self.buf), 1 << 16))
        if n < 0:
            data, self.buf, self.pos = self.buf[self.pos:], b"", 0
        else:
            # an offset, not `self.buf = self.buf[n:]`: re-slicing a large buffer on each small
            # read made unpacking a highly compressible layer quadratic (minutes, not seconds)
            data = self.buf[self.pos:self.pos + n]
            self.pos += len(data)
        return data


class _ReadAhead:
    """Reads a stream ahead in a second thread: reading the blob, hashing it, decompressing
    and hashing the tar are C calls that release the GIL, so they overlap with the unpacking
    (as GNU tar's separate gzip process does), which otherwise waits for them on every chunk.
    Errors raised by the stream come out of read(), in order."""

    _AHEAD = 4                               # chunks in flight: bounds the memory used

    def __init__(self, stream):
        self.queue = queue.Queue(self._AHEAD)
        self.stopping = threading.Event()
        self.chunk, self.pos, self.done = b"", 0, False
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True,
                                       name="ctrkernel-layer-readahead")
        self.thread.start()

    def _run(self, stream):
        try:
            while True:
                data = stream.read(_CHUNK)
                if not self._put(data) or not data:
                    return
        except BaseException as e:          # handed to the reader, raised there
            self._put(e)

    def _put(self, item):
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def read(self, n=-1):
        if n < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        if self.pos >= len(self.chunk):
            if self.done:
                return b""
            item = self.queue.get()
            if isinstance(item, BaseException):
                self.done = True
                raise item
            self.chunk, self.pos = item, 0
            if not item:
                self.done = True
                return b""
        data = self.chunk[self.pos:self.pos + n]
        self.pos += len(data)
        return data

    def close(self):
        """Stop the thread (it finishes the read it is in) and wait for it: nothing is left."""
        self.stopping.set()
        self.thread.join()


def open_layer_stream(raw):
    """(tar stream, compressed-hash reader, tar-hash reader) for a blob file object."""
    outer = _HashingReader(raw)
    head = outer.read(2)

    class _Prefixed:
        """Gives back the two bytes we peeked at, then the rest of the stream."""
        def __init__(self):
            self.head = head

        def read(self, n=-1):
            if not self.head:
                return outer.read(n)
            if 0 <= n <= len(self.head):
                data, self.head = self.head[:n], self.head[n:]
                return data
            data, self.head = self.head, b""
            return data + outer.read(-1 if n < 0 else n - len(data))

    source = _Prefixed()
    make = _DECOMPRESSORS.get(head)
    inner_raw = _DecompressReader(source, make) if make else source
    inner = _HashingReader(inner_raw)
    return inner, outer, inner


def _am_root():
    return os.geteuid() == 0


_DIR, _REG, _LNK, _SYM = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE
_CHR, _BLK, _FIFO = tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE
_DEVICES = (_CHR, _BLK)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Unpacker:
    """Unpack one tar stream into `root`, entry by entry, refusing anything unsafe.

    Paths here are plain strings joined with "/": for layers of many small files, pathlib's
    parsing on every entry showed in the profile."""

    def __init__(self, root, whiteouts):
        self.root = os.fspath(root)
        self.whiteouts = whiteouts           # "overlay" | "oci" | "apply"
        self.dirs = {""}                     # relative paths known to be real directories
        self.added = set()                   # paths this layer created (kept by opaque dirs)
        self.deferred = []                   # directory metadata, set last (children first)
        self.root_user = _am_root()
        # Regular files are created relative to the root's descriptor: a shorter path walk
        # per file than the absolute path (what GNU tar does too).
        self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # Syscalls we can skip per file, when they would change nothing: fchmod when the
        # mode given to open() survives the umask; fchown when the entry's owner is who we are
        # and no setgid directory (which hands its group down) is in play: a fresh tree only.
        self.umask = _umask()
        self.owner = _owner_of_new_files(self.fd, whiteouts)

    def close(self):
        os.close(self.fd)

    def path(self, rel):
        return f"{self.root}/{rel}" if rel else self.root

    # -- checks ---------------------------------------------------------------------------
    @staticmethod
    def clean_name(name):
        if name.startswith("/"):
            raise LayerError(name, "absolute path")
        parts = name.split("/")
        if "" in parts or "." in parts or ".." in parts:   # rare: "./x", "d/", "a//b", ".."
            parts = [p for p in parts if p not in ("", ".")]
            if ".." in parts:
                raise LayerError(name, "path contains '..'")
            return "/".join(parts)
        return name

    def safe_parent(self, rel, entry):
        """Make sure every parent of rel is a real directory inside root (create missing ones)."""
        parent = rel.rpartition("/")[0]
        if parent in self.dirs:
            return
        sofar = ""
        for part in parent.split("/"):
            sofar = f"{sofar}/{part}" if sofar else part
            if sofar in self.dirs:
                continue
            path = self.path(sofar)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)
                self.dirs.add(sofar)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise LayerError(entry, f"parent {sofar!r} is a symlink (writing through it "
                                        "could escape the root)")
            if not stat.S_ISDIR(st.st_mode):
                raise LayerError(entry, f"parent {sofar!r} is not a directory")
            self.dirs.add(sofar)

    def forget(self, rel):
        """rel is no longer a directory: forget it and everything we knew below it."""
        self.dirs = {d for d in self.dirs if d != rel and not d.startswith(rel + "/")}

    def remove_existing(self, rel):
        path = self.path(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            _rmtree(path)
            self.forget(rel)
        else:
            os.unlink(path)
        return st

    # -- entries --------------------------------------------------------------------------
    def entry(self, member, tar):
        """One TarEntry (tarstream.py); `tar` is its TarReader, to read a file's data."""
        rel = self.clean_name(member.name)
        kind = member.type
        if not rel:                           # "./": the root directory's own metadata
            if kind == _DIR:
                self.deferred.append(("", member))
            return
        parent, _, base = rel.rpartition("/")
        if parent not in self.dirs:
            self.safe_parent(rel, member.name)
        if base.startswith(WHITEOUT_PREFIX) and self.whiteout(rel, parent, base, member):
            return
        if kind == _REG:
            self.added.add(rel)
            self.write_file(rel, member, tar)
            return
        path = self.path(rel)
        if kind == _DIR:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):
                if st is not None:
                    os.unlink(path)
                os.mkdir(path, 0o700)
            self.dirs.add(rel)
            self.added.add(rel)
            self.deferred.append((rel, member))
            return
        if kind == _LNK:
            target = self.hardlink_target(member)
        elif kind == _SYM:
            self.check_symlink(rel, member)
        elif kind in _DEVICES:
            if not self.root_user:
                raise LayerError(member.name, "device node, and we are not root")
        elif kind != _FIFO:
            raise LayerError(member.name, f"unsupported entry type {kind!r}")
        self.remove_existing(rel)
        self.added.add(rel)
        if kind == _LNK:
            os.link(target, path, follow_symlinks=False)
            return
        if kind == _SYM:
            os.symlink(member.linkname, path)
            if self.root_user:
                os.lchown(path, member.uid, member.gid)
            return
        if kind == _FIFO:
            os.mkfifo(path, 0o600)
        else:
            dev = stat.S_IFCHR if kind == _CHR else stat.S_IFBLK
            os.mknod(path, dev | 0o600, os.makedev(member.devmajor, member.devminor))
        if self.root_user:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
        os.chmod(path, member.mode & 0o7777, follow_symlinks=False)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    def whiteout(self, rel, parent, base, member):
        """Handle a .wh. entry; True when it was one."""
        if base == OPAQUE:
            pdir = self.path(parent)
            if self.whiteouts == "apply":
                for child in os.listdir(pdir):
                    crel = f"{parent}/{child}" if parent else child
                    if crel not in self.added:
                        self.remove_existing(crel)
            elif self.whiteouts == "overlay":
                self.opaque_xattr(pdir, rel)
            else:
                self.plain_marker(rel)
            return True
        gone = base[len(WHITEOUT_PREFIX):]
        if gone in ("", ".", ".."):
            raise LayerError(member.name, "malformed whiteout")
        grel = f"{parent}/{gone}" if parent else gone
        if self.whiteouts == "apply":
            self.remove_existing(grel)
        elif self.whiteouts == "overlay":
            self.remove_existing(grel)
            try:
                os.mknod(self.path(grel), stat.S_IFCHR | 0o000, 0)
            except PermissionError:        # a kernel older than 5.8, unprivileged
                self.plain_marker(rel)
        else:
            self.plain_marker(rel)
        return True

    def opaque_xattr(self, pdir, rel):
        names = (("trusted.overlay.opaque",) if self.root_user else
                 ("user.overlay.opaque", "user.fuseoverlayfs.opaque"))
        try:
            for name in names:
                os.setxattr(pdir, name, b"y", follow_symlinks=False)
        except OSError:                    # no xattrs on this filesystem
            self.plain_marker(rel)

    def plain_marker(self, rel):
        self.remove_existing(rel)
        fd = os.open(self.path(rel), _NEW_FILE, 0o600)
        os.close(fd)

    def hardlink_target(self, member):
        target = self.clean_name(member.linkname)
        if target not in self.added:
            raise LayerError(member.name, f"hard link to {member.linkname!r}, which this layer "
                                          "did not unpack (possibly outside the root)")
        self.safe_parent(target, member.name)
        st = os.lstat(self.path(target))
        if stat.S_ISDIR(st.st_mode):
            raise LayerError(member.name, "hard link to a directory")
        return self.path(target)

    def check_symlink(self, rel, member):
        target = member.linkname
        if not target:
            raise LayerError(member.name, "empty symlink target")
        if target.startswith("/"):
            return        # resolved inside the container's root; never followed here
        depth = rel.count("/")               # directories above the link inside the root
        for part in target.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    raise LayerError(member.name, f"symlink to {target!r} points outside "
                                                  "the root")
            elif part not in ("", "."):
                depth += 1

    def write_file(self, rel, member, tar):
        mode = member.mode & 0o7777
        # open() can give the final mode when the umask leaves it whole (no fchmod then)
        direct = self.umask is not None and not mode & (0o7000 | self.umask)
        create = mode if direct else 0o600
        try:
            fd = os.open(rel, _NEW_FILE, create, dir_fd=self.fd)
        except FileExistsError:
            # replacing something (an earlier entry, or the tree apply_layer writes onto):
            # trying first spares the common case, a new file, an lstat per entry.
            # O_EXCL never follows a symlink there, and the new file replaces it.
            self.remove_existing(rel)
            fd = os.open(rel, _NEW_FILE, create, dir_fd=self.fd)
        try:
            size = member.size
            if size:
                if size <= _CHUNK:                       # the usual case: one read, one write
                    data = tar.read(size)
                    os.write(fd, data) if len(data) < 65536 else _write_all(fd, data)
                    size -= len(data)
                while size:
                    chunk = tar.read(min(_CHUNK, size))  # raises LayerError if truncated
                    _write_all(fd, chunk)
                    size -= len(chunk)
            if self.root_user and (member.uid != self.owner[0] or member.gid != self.owner[1]):
                os.fchown(fd, member.uid, member.gid)
            if not direct:
                os.fchmod(fd, mode)
            # through the descriptor: one path lookup fewer per file
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def finish(self):
        # deepest first, so a read-only directory is closed only after its children are in
        for rel, member in sorted(self.deferred, key=lambda d: d[0].count("/"), reverse=True):
            path = self.path(rel)
            if rel not in self.dirs and rel != "":
                continue                                     # later replaced by a non-dir
            if self.root_user:
                os.chown(path, member.uid, member.gid, follow_symlinks=False)
            os.chmod(path, member.mode & 0o7777)
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
        for rel in self.dirs - {d for d, _ in self.deferred}:
            if rel:                                          # implicit parents: 0755
                os.chmod(self.path(rel), 0o755)


def _owner_of_new_files(root_fd, whiteouts):
    """Who a file created here belongs to without a chown: us, in a fresh tree without a
    setgid root (which hands its group down); (-1, -1), unknown, otherwise."""
    fresh = whiteouts != "apply" and not os.fstat(root_fd).st_mode & stat.S_ISGID
    return (os.geteuid(), os.getegid()) if fresh else (-1, -1)


def _umask():
    """The process umask, read without changing it (os.umask would, for every thread);
    None where /proc does not say."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _rmtree(path):
    def onerror(func, p, exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
        except OSError:
            pass
        func(p)
    shutil.rmtree(path, onerror=onerror)


def _unpack(fileobj, root, whiteouts, digest=None, diff_id=None, name="layer"):
    tar_stream, outer, inner = open_layer_stream(fileobj)
    try:
        if whiteouts != "apply" and layertar.available():
            # the same checks in C (layertar.c): a fresh tree only, so nothing to merge with
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                owner = _owner_of_new_files(fd, whiteouts)
            finally:
                os.close(fd)
            layertar.unpack(tar_stream, root, whiteouts == "overlay", name, _umask(), owner)
            unpacker = None
        else:
            unpacker = _unpack_in_python(tar_stream, root, whiteouts, name)
    except _CorruptStream as e:
        raise LayerError(name, f"not a valid compressed stream ({e})") from None
    inner.drain()
    outer.drain()
    if digest and outer.digest != digest:
        raise DigestMismatch(f"layer {name}", digest, outer.digest)
    if diff_id and inner.digest != diff_id:
        raise DigestMismatch(f"layer {name} (uncompressed)", diff_id, inner.digest)
    if unpacker:
        unpacker.finish()
    return {"digest": outer.digest, "diff_id": inner.digest, "size": outer.size,
            "tar_size": inner.size}


def _unpack_in_python(tar_stream, root, whiteouts, name):
    """The reference unpacker; the caller verifies digests, then calls finish()."""
    ahead = _ReadAhead(tar_stream)
    try:
        unpacker = _Unpacker(root, whiteouts)
        try:
            tar = TarReader(ahead, name)
            for member in tar:
                unpacker.entry(member, tar)
            ahead.read()                         # the rest (after the end blocks) is hashed too
        finally:
            unpacker.close()
    finally:
        ahead.close()
    return unpacker


def extract_layer(blob_path, dest, digest=None, diff_id=None, whiteouts=None):
    """Unpack a layer blob into the new directory `dest` (must not exist), verifying digests.
    On any error the partly written `dest` is removed and the error re-raised."""
    if whiteouts is None:
        whiteouts = "overlay"
    dest = Path(dest)
    os.mkdir(dest, 0o755)
    try:
        with open(blob_path, "rb") as f:
            return _unpack(f, dest, whiteouts, digest, diff_id, name=(digest or str(blob_path)))
    except BaseException:
        _rmtree(dest)
        raise


def apply_layer(blob_path, root, digest=None):
    """Apply a layer on top of the tree at `root` (as `docker load`'s unpacker does): whiteouts
    delete, opaque directories drop lower content. The blob is verified *before* anything is
    written, since an existing tree cannot be thrown away on failure."""
    if digest:
        h = hashlib.sha256()
        with open(blob_path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        if "sha256:" + h.hexdigest() != digest:
            raise DigestMismatch(f"layer {digest}", digest, "sha256:" + h.hexdigest())
    with open(blob_path, "rb") as f:
        return _unpack(f, Path(root), "apply", name=digest or str(blob_path))


def union_view(layer_dirs, dest):
    """Merge extracted layer directories (lowest first) into one tree at `dest`: the union a
    container sees, made by copying (for display, or where no overlay mount is possible).
    Understands both whiteout forms."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for layer in layer_dirs:
        _merge_dir(Path(layer), dest)
    return dest


def _is_whiteout_dev(st):
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _merge_dir(src, dst):
    from ctrkernel.runtime.diff import is_opaque
    entries = sorted(os.scandir(src), key=lambda e: e.name)
    if any(e.name == OPAQUE for e in entries) or is_opaque(src):
        for child in os.listdir(dst):
            _remove(dst / child)
    for e in entries:
        st = e.stat(follow_symlinks=False)
        if e.name == OPAQUE:
            continue
        if e.name.startswith(WHITEOUT_PREFIX):
            _remove(dst / e.name[len(WHITEOUT_PREFIX):])
            continue
        if _is_whiteout_dev(st):
            _remove(dst / e.name)
            continue
        target = dst / e.name
        if stat.S_ISDIR(st.st_mode):
            if not target.is_dir() or target.is_symlink():
                _remove(target)
                target.mkdir()
            _merge_dir(Path(e.path), target)
            shutil.copystat(e.path, target, follow_symlinks=False)
            if _am_root():
                os.lchown(target, st.st_uid, st.st_gid)
            continue
        _remove(target)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(e.path), target)
        elif stat.S_ISREG(st.st_mode):
            shutil.copy2(e.path, target, follow_symlinks=False)
        elif _am_root():
            os.mknod(target, st.st_mode, st.st_rdev)
        else:
            continue
        if _am_root():
            os.lchown(target, st.st_uid, st.st_gid)


def _remove(path):
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        _rmtree(path)
