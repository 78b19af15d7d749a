"""The hand-written tar reader (ctrkernel/image/tarstream.py) against archives Python's tarfile
writes (the reference), and against damaged or hostile input, which must be refused with
LayerError naming the entry rather than a traceback from inside the parser."""
import gzip
import io
import os
import tarfile

import pytest

from ctrkernel.errors import LayerError
from ctrkernel.image.extract import extract_layer
from ctrkernel.image.tarstream import TarReader


def _archive(entries, format=tarfile.PAX_FORMAT):
    """entries: [(TarInfo, data or None)] -> tar bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=format) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name, type_=tarfile.REGTYPE, data=None, **fields):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.size = len(data) if data is not None else 0
    info.mode = fields.pop("mode", 0o644)
    info.mtime = fields.pop("mtime", 1_700_000_000)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def _read_all(blob):
    """[(entry, data)] as a consumer that reads every file's data sees them."""
    reader = TarReader(io.BytesIO(blob), "test")
    return [(e, reader.read()) for e in reader]


def _same_as_tarfile(blob):
    """Every field we parse equals what tarfile parses from the same bytes."""
    ours = _read_all(blob)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        ref = [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]
    assert len(ours) == len(ref)
    for (e, data), (m, ref_data) in zip(ours, ref):
        assert e.name == m.name
        assert e.type == (tarfile.REGTYPE if m.isreg() else m.type)
        assert (e.mode, e.uid, e.gid, e.mtime) == (m.mode, m.uid, m.gid, m.mtime)
        assert e.linkname == m.linkname
        assert (e.devmajor, e.devminor) == ((m.devmajor, m.devminor) if m.isdev() else (0, 0))
        assert data == ref_data
        assert e.size == (m.size if m.isreg() else e.size)
    return ours


EVERY_KIND = [
    _info("etc", tarfile.DIRTYPE, mode=0o755),
    _info("etc/empty", data=b""),
    _info("etc/one-block", data=b"x" * 512),                  # exactly one block, no padding
    _info("etc/crosses", data=bytes(range(256)) * 5 + b"!"),  # 1281 bytes: into a third block
    _info("etc/big", data=os.urandom(3 * (1 << 20) + 7)),     # larger than the read-ahead chunk
    _info("etc/link", tarfile.SYMTYPE, linkname="../usr/lib/x"),
    _info("etc/hard", tarfile.LNKTYPE, linkname="etc/crosses"),
    _info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
    _info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
    _info("run/pipe", tarfile.FIFOTYPE),
    _info("d/" + "n" * 120 + "/" + "m" * 120, data=b"long"),  # needs an extended name
    _info("etc/ünïcødé-名前", data=b"utf8"),
    _info("l/long-target", tarfile.SYMTYPE, linkname="t" * 300),
    _info("owned", data=b"o", uid=3_000_000_000, gid=5, uname="big", gname="g"),
    _info("setuid", data=b"s", mode=0o4755, uid=0, gid=0),
]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_every_entry_kind_reads_as_tarfile_reads_it(fmt):
    entries = EVERY_KIND
    if fmt == tarfile.USTAR_FORMAT:      # ustar cannot hold names > 256, links > 100, big ids
        entries = [(i, d) for i, d in entries if len(i.linkname) <= 100 and i.uid < 0o7777777
                   and len(i.name.encode()) <= 100]
    blob = _archive(entries, fmt)
    ours = _same_as_tarfile(blob)
    names = [e.name for e, _ in ours]
    assert "etc/crosses" in names and "etc/big" in names
    if fmt != tarfile.USTAR_FORMAT:
        by_name = {e.name: (e, d) for e, d in ours}
        assert by_name["owned"][0].uid == 3_000_000_000       # PAX record / GNU base-256
        assert by_name["l/long-target"][0].linkname == "t" * 300
        assert by_name["d/" + "n" * 120 + "/" + "m" * 120][1] == b"long"
        assert by_name["etc/ünïcødé-名前"][1] == b"utf8"


def test_ustar_prefix_splits_long_paths():
    name = "p" * 90 + "/" + "q" * 90                          # fits only as prefix + name
    blob = _archive([_info(name, data=b"x")], tarfile.USTAR_FORMAT)
    assert blob[345:345 + 90] == b"p" * 90                    # really in the prefix field
    assert [e.name for e, _ in _read_all(blob)] == [name]


def test_unread_data_is_skipped_and_partial_reads_continue():
    blob = _archive([_info("a", data=b"A" * 1000), _info("b", data=b"B" * 700),
                     _info("c", data=b"C" * 3)])
    reader = TarReader(io.BytesIO(blob))
    got = []
    for e in reader:
        if e.name == "b":
            got.append(reader.read(10) + reader.read(5))      # part of it, then move on
        elif e.name == "c":
            got.append(reader.read() + reader.read())         # b"" after the end
    assert got == [b"B" * 15, b"CCC"]


def test_pax_global_header_applies_to_later_entries():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"mtime": "42", "uid": "77"}) as tar:
        info, data = _info("f", data=b"z")
        tar.addfile(info, io.BytesIO(data))
    (e, data), = _read_all(buf.getvalue())
    # POSIX: extended records, global ones too, override the ustar header's fields
    assert (e.name, data, e.uid, e.mtime) == ("f", b"z", 77, 42)
    _same_as_tarfile(buf.getvalue())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"path": "global-name"}) as tar:
        info, data = _info("x" * 101, data=b"1")
        tar.addfile(info, io.BytesIO(data))                   # its own PAX path wins
    assert [e.name for e, _ in _read_all(buf.getvalue())] == ["x" * 101]


def test_end_of_archive_missing_is_tolerated_and_trailing_data_ignored():
    blob = _archive([_info("a", data=b"1"), _info("b", data=b"2")])
    body = blob[:3 * 512 * 2]                                 # both entries, no end blocks
    assert [e.name for e, _ in _read_all(body)] == ["a", "b"]
    assert [e.name for e, _ in _read_all(blob + b"junk" * 1000)] == ["a", "b"]


def _refused(blob, *words):
    with pytest.raises(LayerError) as err:
        _read_all(blob)
    for w in words:
        assert w in str(err.value)
    return err.value


def test_corrupt_checksum_is_refused():
    blob = bytearray(_archive([_info("good", data=b"1"), _info("victim", data=b"2")]))
    blob[1024 + 5] ^= 0x20                                    # a byte of the second name
    err = _refused(bytes(blob), "checksum")
    assert "good" in str(err)                                 # says where in the stream


def test_truncated_data_and_header_are_refused():
    blob = _archive([_info("f", data=b"x" * 5000)])
    _refused(blob[:512 + 2000], "'f'", "truncated")
    _refused(blob[:300], "truncated")
    # a stream ending inside data the consumer skips is refused too
    reader = TarReader(io.BytesIO(blob[:512 + 2000]))
    with pytest.raises(LayerError, match="truncated"):
        for _ in reader:
            pass


def _with_field(blob, offset, value):
    """Replace a header field and fix the checksum, so only the field is wrong."""
    head = bytearray(blob[:512])
    head[offset:offset + len(value)] = value
    head[148:156] = b" " * 8
    head[148:156] = b"%06o\0 " % sum(head)
    return bytes(head) + blob[512:]


@pytest.mark.parametrize("field", [b"12ab", b"-0000001", b"1_0", b"+17", b"\xff" * 12, b"9999"])
def test_garbage_or_negative_size_is_refused(field):
    blob = _archive([_info("f", data=b"x" * 10)])
    _refused(_with_field(blob, 124, field.ljust(12, b"\0")), "'f'")


def test_absurd_sizes_are_refused_without_reading_them():
    blob = _archive([_info("f", data=b"x")])
    huge = b"\x80" + (1 << 80).to_bytes(11, "big")            # base-256, beyond any file
    _refused(_with_field(blob, 124, huge), "absurd size")
    # an extended header claiming a gigabyte would otherwise be read into memory
    pax = _with_field(_archive([_info("p" * 200, data=b"x")]), 124, b"%011o\0" % (1 << 30))
    _refused(pax, "extended header")


def test_malformed_pax_records_are_refused():
    good = _archive([_info("p" * 200, data=b"x")])
    start = good.index(b" path=")
    bad = good[:start - 3] + b"999" + good[start:]            # length past the record
    _refused(bad, "PAX")
    _refused(good.replace(b"path=", b"path-"), "PAX")


def test_empty_and_non_tar_input_is_refused():
    _refused(b"", "empty")
    _refused(b"this is not a tar stream at all" * 40, "checksum")
    assert _read_all(bytes(1024)) == []                       # an empty archive is fine


def test_base256_numbers_as_gnu_writes_them():
    blob = _archive([_info("f", data=b"x", uid=0o10000000, mtime=-5)], tarfile.GNU_FORMAT)
    assert blob[108] == 0x80 and blob[136] == 0xFF            # really base-256 fields
    (e, _), = _read_all(blob)
    assert (e.uid, e.mtime) == (0o10000000, -5)


def test_extract_layer_uses_it_with_names_owners_and_modes(tmp_path):
    """End to end through extract_layer: a GNU-format layer with long names and a PAX one."""
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        blob = tmp_path / f"layer-{fmt}.tar.gz"
        blob.write_bytes(gzip.compress(_archive([
            _info("a", tarfile.DIRTYPE, mode=0o750),
            _info("a/" + "L" * 150, data=b"long", mode=0o640, uid=1234, gid=99),
            _info("a/s", tarfile.SYMTYPE, linkname="L" * 150),
            _info("a/ro", data=b"r", mode=0o444),
        ], fmt)))
        dest = tmp_path / f"x-{fmt}"
        extract_layer(blob, dest)
        f = dest / "a" / ("L" * 150)
        assert f.read_bytes() == b"long"
        st = f.stat()
        assert oct(st.st_mode & 0o7777) == oct(0o640) and st.st_mtime == 1_700_000_000
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (1234, 99)
        assert os.readlink(dest / "a" / "s") == "L" * 150
        assert oct((dest / "a" / "ro").stat().st_mode & 0o7777) == oct(0o444)
        assert oct((dest / "a").stat().st_mode & 0o7777) == oct(0o750)


def test_extract_layer_refuses_a_truncated_layer_and_leaves_nothing(tmp_path):
    blob = tmp_path / "cut.tar"
    blob.write_bytes(_archive([_info("f", data=b"x" * 5000)])[:2000])
    with pytest.raises(LayerError, match="truncated"):
        extract_layer(blob, tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("compress", ["gzip-members", "bz2", "xz"])
def test_compressed_layers_in_bounded_steps_extract_whole(tmp_path, compress):
    """A highly compressible layer (a 1 MB read expands a hundredfold) is decompressed in
    bounded steps; members concatenated (as `cat a.gz b.gz`) are all read, in order."""
    import bz2
    import lzma
    big = b"a" * (6 << 20) + os.urandom(3000)
    raw = _archive([_info("zeros", data=big), _info("small", data=b"s" * 700)])
    if compress == "gzip-members":
        cuts = [0, 5000, len(raw) // 2, len(raw)]
        blob = b"".join(gzip.compress(raw[a:b]) for a, b in zip(cuts, cuts[1:]))
    else:
        blob = (bz2.compress if compress == "bz2" else lzma.compress)(raw)
    path = tmp_path / "layer"
    path.write_bytes(blob)
    info = extract_layer(path, tmp_path / "x")
    assert (tmp_path / "x" / "zeros").read_bytes() == big
    assert (tmp_path / "x" / "small").read_bytes() == b"s" * 700
    assert info["tar_size"] == len(raw)


def test_damaged_compression_is_refused_cleanly(tmp_path):
    blob = bytearray(gzip.compress(_archive([_info("f", data=os.urandom(200_000))])))
    blob[len(blob) // 2] ^= 0xFF
    path = tmp_path / "layer"
    path.write_bytes(bytes(blob))
    with pytest.raises(LayerError, match="compressed stream"):
        extract_layer(path, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_out_of_range_owner_and_time_are_refused_before_chown_or_utime():
    _refused(_archive([_info("f", data=b"x", uid=1 << 40)]), "'f'", "out of range")
    _refused(_archive([_info("f", data=b"x", mtime=10 ** 30)]), "'f'", "modification time")


def test_global_records_do_not_change_the_extended_headers_themselves():
    """A global 'size' must size the next real entry, not the PAX header in between."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"size": "3", "mtime": "42"}) as tar:
        info, data = _info("n" * 150, data=b"abc")          # long: has its own 'x' header
        tar.addfile(info, io.BytesIO(data))
    (e, data), = _read_all(buf.getvalue())
    assert (e.name, data, e.mtime) == ("n" * 150, b"abc", 42)
    _same_as_tarfile(buf.getvalue())


def test_digits_after_a_nul_are_not_part_of_a_number():
    """A field's text ends at its first NUL (tarfile and GNU tar read it so; a fast path once
    read `\\0700700\\0` as 0o700700). Found by fuzzing the C unpacker against this reader."""
    blob = _with_field(_archive([_info("f", data=b"x")]), 100, b"\x00700700")
    (e, _), = _same_as_tarfile(blob)
    assert e.mode == 0
