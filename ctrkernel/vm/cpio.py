"""A writer for the Linux initramfs format: the "newc" cpio archive, in plain Python.

The kernel unpacks an initramfs from one or more concatenated newc archives (see the kernel's
Documentation/driver-api/early-userspace/buffer-format.rst). Each entry is a 110-byte ASCII
header (magic "070701" and thirteen 8-digit hex fields), the NUL-terminated name padded to a
multiple of 4 bytes, then the data, padded likewise; the archive ends with "TRAILER!!!".

Writing it ourselves (rather than running cpio(1)) means an unprivileged user can put device
nodes such as /dev/console into the archive: nothing is created on the host's filesystem.
"""
import stat
from pathlib import Path

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


def _pad4(n):
    return (4 - n % 4) % 4


class CpioWriter:
    """Build a newc archive in memory: add entries, then `bytes()` or `write(path)`.

    Parents are not created implicitly, because the kernel needs them in order: add directories
    before what they hold (`add_dir` is idempotent, `add_parents` helps).
    """

    def __init__(self):
        self._chunks = []
        self._ino = 1
        self._dirs = set()
        self.names = []

    def _entry(self, name, mode, data=b"", rdev=(0, 0), nlink=1, mtime=0):
        name = name.lstrip("/")
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0]
        header = MAGIC + b"".join(b"%08X" % f for f in fields)
        self._chunks += [header, encoded, b"\0" * _pad4(len(header) + len(encoded)),
                         data, b"\0" * _pad4(len(data))]
        self._ino += 1
        if name != TRAILER:
            self.names.append(name)

    def add_parents(self, name):
        parts = name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.add_dir("/".join(parts[:i]))

    def add_dir(self, name, mode=0o755):
        name = name.strip("/")
        if name and name not in self._dirs:
            self.add_parents(name)
            self._dirs.add(name)
            self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def add_file(self, name, data, mode=0o644):
        """A regular file from bytes (or a str, encoded as UTF-8)."""
        if isinstance(data, str):
            data = data.encode()
        self.add_parents(name)
        self._entry(name, stat.S_IFREG | mode, bytes(data))

    def add_host_file(self, name, source, mode=None):
        """A copy of a file from the host (its permission bits unless `mode` is given)."""
        source = Path(source)
        self.add_file(name, source.read_bytes(), mode if mode is not None else
                      stat.S_IMODE(source.stat().st_mode))

    def add_symlink(self, name, target):
        self.add_parents(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, name, major, minor, mode=0o600):
        self.add_parents(name)
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def bytes(self):
        """The archive, trailer included (the writer can keep adding and call this again)."""
        trailer = CpioWriter()
        trailer._ino = self._ino
        trailer._entry(TRAILER, 0)
        return b"".join(self._chunks + trailer._chunks)

    def write(self, path):
        Path(path).write_bytes(self.bytes())
        return Path(path)


def read_names(data):
    """The entry names of a newc archive (or several concatenated): for tests and teaching."""
    names, offset = [], 0
    while offset + 110 <= len(data):
        if data[offset:offset + 6] != MAGIC:
            offset += 1  # padding between concatenated archives
            continue
        fields = [int(data[offset + 6 + 8 * i: offset + 14 + 8 * i], 16) for i in range(13)]
        size, namesize = fields[6], fields[11]
        start = offset + 110
        name = data[start:start + namesize - 1].decode()
        start += namesize + _pad4(110 + namesize)
        offset = start + size + _pad4(size)
        if name != TRAILER:
            names.append(name)
    return names
