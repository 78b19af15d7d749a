"""A small streaming reader for untrusted tar streams (ustar, POSIX PAX, GNU long names).

Python's `tarfile` spends most of an unpack of many small files parsing headers (generic
field decoding, per-block stream reads and seeks). Layers need far less: one pass over a
decompressed stream, the ustar fields, PAX 'x'/'g' records and GNU 'L'/'K' long names. This
reader parses each 512-byte header with one struct call and C-level byte operations, reads
ahead in large chunks, and hands out each entry's data as exact-size reads. Anything malformed
raises LayerError naming the entry, so a hostile or damaged layer never surfaces as a
traceback from inside the parser. Entry types are tarfile's bytes (b"0", b"5", ...), so
callers can keep using tarfile's constants.
"""
import re
import struct
import zlib

from ctrkernel.errors import LayerError

BLOCK = 512
_CHUNK = 1 << 20
_ZERO = bytes(BLOCK)
_META_MAX = 1 << 20           # PAX records and GNU long names are read into memory: cap them
_SIZE_MAX = 1 << 62           # beyond any real file; larger is a corrupt or hostile header
_ID_MAX = 1 << 32             # uids, gids and device numbers are 32-bit on Linux
_TIME_MAX = 1 << 40           # ~35,000 years either way (Go writes year 1 as -62135596800)
# name, mode..chksum (region 100:156), type, linkname, magic, (version, uname, gname: unused),
# devmajor, devminor, prefix
_HEADER = struct.Struct("100s56sc100s6s2x64x8s8s155s12x")
_NUMS = struct.Struct("8s8s8s12s12s8s")
_NUM_NAMES = ("mode", "uid", "gid", "size", "mtime", "checksum")
_EIGHTS = (8,) * 6
_NUL_TO_SPACE = bytes.maketrans(b"\0", b" ")
_OCTAL_CHARS = b"01234567 \0"
# Types whose size field counts data blocks that follow (as tarfile and GNU tar read them):
# links, directories, devices and fifos carry none whatever their size field says.
_NO_DATA = frozenset((b"1", b"2", b"3", b"4", b"5", b"6"))
_REGULAR = frozenset((b"0", b"\0", b"7"))
_META = frozenset((b"x", b"g", b"L", b"K"))     # PAX records, GNU long name and long link


class TarEntry:
    """One member: the fields an unpacker needs, with PAX/GNU overrides already applied."""
    __slots__ = ("name", "type", "mode", "uid", "gid", "size", "mtime", "linkname",
                 "devmajor", "devminor")

    def __repr__(self):
        return f"<TarEntry {self.name!r} type={self.type!r} size={self.size}>"


def _number(field, what, entry):
    """A numeric field the careful way: octal text up to the first NUL, or base-256."""
    if field[:1] in (b"\x80", b"\xff"):      # GNU base-256 (0xff: negative, two's complement)
        n = int.from_bytes(field[1:], "big")
        return n - (1 << (8 * len(field) - 8)) if field[0] == 0xFF else n
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not text.isdigit() or b"8" in text or b"9" in text:
        raise LayerError(entry, f"invalid {what} field in tar header: {field!r}")
    return int(text, 8)


def _text(raw):
    # Names are bytes on Linux: undecodable ones survive the round trip to os.* calls.
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _signed_checksum_ok(block, stored):
    # Some old tars summed signed chars; tarfile accepts either sum, and so do we.
    return sum(struct.unpack_from("148b8x356b", block)) + 8 * 32 == stored


def _pax_records(data, entry):
    """Parse 'x'/'g' records ("<len> <key>=<value>\n") into a dict of str."""
    out, pos = {}, 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        space = data.find(b" ", pos, pos + 24)
        # digits only (int() would take "+12", " 12" or "1_2"), as layertar.c reads them
        length = int(data[pos:space]) if space > pos and data[pos:space].isdigit() else -1
        record = data[pos:pos + length] if length > space - pos + 2 else b""
        key, eq, value = record[space - pos + 1:-1].partition(b"=")
        # a NUL inside a record would end the name early in any system call: refuse it
        if not record.endswith(b"\n") or not eq or len(record) != length or b"\0" in record:
            raise LayerError(entry, f"malformed PAX extended header at byte {pos}")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


_PAX_INT = re.compile(r"[0-9]+")
_PAX_TIME = re.compile(r"-?[0-9]+(?:\.[0-9]*)?")     # mtime may be negative and fractional


def _pax_number(value, key, entry):
    if not (_PAX_TIME if key == "mtime" else _PAX_INT).fullmatch(value) or len(value) > 40:
        raise LayerError(entry, f"invalid PAX {key} value {value!r}")
    if key != "mtime":
        return int(value)
    n = float(value)
    if not -_TIME_MAX < n < _TIME_MAX:       # named as written (a float would round it)
        raise LayerError(entry, f"absurd modification time {value} in tar header")
    return int(n) if n == int(n) else n


class TarReader:
    """Iterate a tar stream's entries; read() gives the current entry's data.

        reader = TarReader(stream, name="layer sha256:...")
        for entry in reader:
            data = reader.read(entry.size)     # optional: unread data is skipped

    `stream` needs only read(n). It is read ahead in large chunks, so it may be consumed
    beyond the end-of-archive blocks (callers that hash it drain the rest anyway)."""

    def __init__(self, stream, name="layer"):
        self._stream, self._name = stream, name
        self._buf, self._pos = b"", 0
        self._left = 0               # unread data bytes of the current entry
        self._pad = 0                # zero padding after them, to the next block
        self._current = name
        self._globals = {}           # PAX 'g' records: apply to every later entry

    # -- the buffer ------------------------------------------------------------------------
    def _fill(self, n):
        """Make n bytes available at _pos if the stream has them; False at end of stream."""
        have = len(self._buf) - self._pos
        if have >= n:
            return True
        parts = [self._buf[self._pos:]]
        while have < n:
            chunk = self._stream.read(max(n - have, _CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        self._buf, self._pos = b"".join(parts), 0
        return have >= n

    def read(self, n=-1):
        """Up to n bytes (all when n < 0) of the current entry's data; b"" once it is read.
        A stream ending inside the data raises LayerError (truncated)."""
        if n < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        n = min(n, self._left)
        if not n:
            return b""
        have = len(self._buf) - self._pos
        if have == 0 and n >= _CHUNK:        # large data: straight from the stream, no copy
            data = self._stream.read(n)
        else:
            if have < n:
                self._fill(min(n, _CHUNK))
                have = len(self._buf) - self._pos
            data = self._buf[self._pos:self._pos + n]
            self._pos += len(data)
        if not data:
            raise LayerError(self._current, "truncated tar: the stream ends inside the data")
        self._left -= len(data)
        return data

    def _skip(self):
        """Pass over what the consumer left unread of the current entry, and its padding."""
        n, self._left, pad, self._pad = self._left, 0, self._pad, 0
        n += pad
        have = len(self._buf) - self._pos
        if n <= have:
            self._pos += n
            return
        n -= have
        self._buf, self._pos = b"", 0
        while n:
            chunk = self._stream.read(min(n, _CHUNK))
            if not chunk:
                raise LayerError(self._current, "truncated tar: the stream ends inside the data")
            n -= len(chunk)

    def _payload(self, size, entry):
        """Read a whole meta entry's data (PAX records, a GNU long name) into memory."""
        if size > _META_MAX:
            raise LayerError(entry, f"extended header of {size} bytes (limit {_META_MAX})")
        self._left, self._pad = size, -size % BLOCK
        data = self.read()
        self._skip()
        return data

    # -- headers ---------------------------------------------------------------------------
    def __iter__(self):
        seen_any = False
        pax, long_name, long_link = {}, None, None
        while True:
            # the common case, inline: the next header is already in the read-ahead buffer
            pos = self._pos + self._left + self._pad
            if pos + BLOCK <= len(self._buf):
                self._pos, self._left, self._pad = pos, 0, 0
            else:
                self._skip()
            if len(self._buf) - self._pos < BLOCK and not self._fill(BLOCK):
                if len(self._buf) - self._pos:
                    raise LayerError(self._current, "truncated tar: partial header at the end")
                if not seen_any:
                    raise LayerError(self._name, "not a tar stream: it is empty")
                if pax or long_name is not None or long_link is not None:
                    raise LayerError(self._current, "truncated tar: extended header without "
                                                    "the entry it describes")
                return                               # EOF without end blocks: tolerated
            block = self._buf[self._pos:self._pos + BLOCK]
            self._pos += BLOCK
            if block == _ZERO:
                return                               # end of archive
            seen_any = True
            entry = self._header(block, pax, long_name, long_link)
            kind = entry.type
            if kind in _META:
                data = self._payload(entry.size, entry.name)
                if kind == b"x":
                    pax = _pax_records(data, entry.name)
                elif kind == b"g":
                    self._globals.update(_pax_records(data, entry.name))
                elif kind == b"L":
                    long_name = _text(data)
                else:
                    long_link = _text(data)
                continue
            pax, long_name, long_link = {}, None, None
            self._current = entry.name
            self._left = 0 if kind in _NO_DATA else entry.size
            self._pad = -self._left % BLOCK
            yield entry

    def _header(self, block, pax, long_name, long_link):
        name, nums, kind, link, magic, major, minor, prefix = _HEADER.unpack(block)
        e = TarEntry()
        name = name.split(b"\0", 1)[0]
        if magic == b"ustar\0" and prefix[0]:   # POSIX: long paths split into prefix/name
            name = prefix.split(b"\0", 1)[0] + b"/" + name
        # Names are bytes on Linux: undecodable ones survive the round trip to os.* calls.
        e.name = name.decode("utf-8", "surrogateescape")
        where = e.name if long_name is None else long_name
        # Fast path: the usual zero-padded octal text, checked by one C call; anything else
        # (base-256, stray bytes, blank fields) goes through the careful per-field parse.
        values = None
        # (a digit after a NUL ends the text there, as tarfile reads it: careful path)
        if not nums.translate(None, _OCTAL_CHARS) and not any(
                b"\0" in f.rstrip(b"\0 ") for f in _NUMS.unpack(nums)):
            try:
                values = list(map(int, _NUMS.unpack(nums.translate(_NUL_TO_SPACE)), _EIGHTS))
            except ValueError:
                pass
        if values is None:
            fields = _NUMS.unpack(nums)
            try:
                checksum = _number(fields[5], "checksum", where)
            except LayerError:
                checksum = -1
        else:
            checksum = values[5]
        # The checksum: the sum of all bytes with its own field counted as spaces. adler32's
        # low half is 1 + the byte sum modulo 65521, exact for 256 bytes (at most 65280):
        # two C calls instead of a Python-level sum over 512 ints, which showed in the profile.
        if ((zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2
                - sum(block[148:156]) + 256 != checksum and not _signed_checksum_ok(block,
                                                                                     checksum)):
            # checked before the other fields, so that garbage reads as "not a tar header"
            raise LayerError(where, "bad tar header checksum (corrupt or not a tar stream; "
                                    f"previous entry {self._current!r})")
        if values is None:
            values = [_number(f, what, where) for f, what in zip(fields, _NUM_NAMES)]
        e.mode, e.uid, e.gid, e.size, e.mtime, checksum = values
        if kind in _REGULAR:
            kind = b"5" if kind == b"\0" and e.name.endswith("/") else b"0"
        e.type = kind
        e.linkname = _text(link) if link[0] else ""
        if kind in (b"3", b"4"):
            e.devmajor, e.devminor = _number(major, "devmajor", where), _number(minor,
                                                                                 "devminor", where)
        else:
            e.devmajor = e.devminor = 0
        if kind in _META:
            pass          # extended data describe the next real entry, not a meta header
        else:
            if long_name is not None:
                e.name = long_name
            if long_link is not None:
                e.linkname = long_link
            if pax or self._globals:
                self._apply_pax({**self._globals, **pax}, e)
        if kind == b"5":
            e.name = e.name.rstrip("/")          # as tarfile: "./" and "/" mean the root itself
        if e.size < 0 or e.size > _SIZE_MAX:
            raise LayerError(e.name, f"absurd size {e.size} in tar header")
        # Out-of-range values would otherwise fail deep inside chown/utime/makedev.
        if not (0 <= e.uid < _ID_MAX and 0 <= e.gid < _ID_MAX and 0 <= e.devmajor < _ID_MAX
                and 0 <= e.devminor < _ID_MAX):
            raise LayerError(e.name, f"owner or device number out of range in tar header "
                                     f"({e.uid}:{e.gid}, {e.devmajor},{e.devminor})")
        if not -_TIME_MAX < e.mtime < _TIME_MAX:
            raise LayerError(e.name, f"absurd modification time {e.mtime} in tar header")
        return e

    @staticmethod
    def _apply_pax(records, e):
        for key, value in records.items():
            if not value:
                continue              # an empty value cancels a global one: keep the header's
            if key == "path":
                e.name = value
            elif key == "linkpath":
                e.linkname = value
            elif key in ("size", "uid", "gid", "mtime"):
                setattr(e, key, _pax_number(value, key, e.name))
            elif key.startswith("GNU.sparse."):
                # the data blocks would be a sparse map, not the file: refuse, not mis-write
                raise LayerError(e.name, "GNU sparse file (not supported in layers)")
