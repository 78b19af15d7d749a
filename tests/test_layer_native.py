"""The C layer loops (ctrkernel/image/layertar.c) against the Python reference (layers.py,
extract.py with tarstream.py): the same bytes out of the same tree, the same tree out of the
same layer, the same refusals of damaged and hostile layers. Each case runs both ways in one
test, so a difference fails here whichever side has it."""
import gzip
import hashlib
import inspect
import os
import socket
import stat
import subprocess
import sys
import tarfile
import time

import pytest

from ctrkernel.errors import DigestMismatch, LayerError
from ctrkernel.image import Store, layer_from_dir, layer_from_upper, layertar
from ctrkernel.image.extract import extract_layer
from test_image_store import HOSTILE, _tar
from test_tarstream import EVERY_KIND, _archive, _info, _with_field

pytestmark = pytest.mark.skipif(not layertar.available(), reason="no C compiler: nothing to compare")
ROOT = os.geteuid() == 0


def both(fn):
    """fn() with the C loops, then with the Python reference: (C result, Python result)."""
    out = []
    for native in (True, False):
        layertar.enabled = native
        try:
            out.append(fn())
        finally:
            layertar.enabled = True
    return tuple(out)


# ---- making layers: the same bytes ------------------------------------------------------

def _varied_tree(root):
    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "small").write_bytes(b"hello\n")
    (root / "big").write_bytes(os.urandom((3 << 20) + 7))          # beyond one 1 MiB buffer
    (root / "d").mkdir()
    os.chmod(root / "d", 0o750)
    (root / "d" / ("x" * 150)).write_bytes(b"a name ustar cannot hold")
    deep = root / ("p" * 60) / ("q" * 60)
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"a path longer than 100 bytes")
    (root / "ünïcødé-名前").write_bytes(b"utf8")
    with open(os.path.join(os.fsencode(root), b"bad-\xff-name"), "wb") as f:
        f.write(b"not UTF-8")                                       # sorted by bytes both ways
    os.symlink("small", root / "s")
    os.symlink("t" * 300, root / "long-link")
    os.symlink("/etc/passwd", root / "abs")
    os.link(root / "small", root / "d" / "hard")
    os.mkfifo(root / "fifo")
    (root / "suid").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "suid", 0o4755)
    (root / "old").write_bytes(b"before 1970")
    os.utime(root / "old", ns=(0, -1_500_000_000))                 # int(st_mtime) truncates
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))                                  # left out, as GNU tar does
    sock.close()
    if ROOT:
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.chown(root / "small", 1234, 99)
        os.chown(root / "d" / ("x" * 150), 3_000_000_000, 5)       # a PAX record for the uid
    return root


@pytest.mark.parametrize("options", [{}, {"owner": (0, 0), "mtime": 0}, {"level": 6},
                                     {"mtime": None}])
def test_a_tree_gives_the_same_layer_both_ways(tmp_path, options):
    store = Store(tmp_path / "images")
    tree = _varied_tree(tmp_path / "tree")
    c, py = both(lambda: layer_from_dir(store, tree, **options))
    assert (c.digest, c.diff_id, c.size, c.tar_size, c.entries) == \
        (py.digest, py.diff_id, py.size, py.tar_size, py.entries)
    with tarfile.open(store.blob_path(c.digest)) as tar:
        names = tar.getnames()
    assert "sock" not in names and "d/" + "x" * 150 in names and "d/hard" in names
    assert len(names) == c.entries


def test_an_upper_directory_gives_the_same_layer_both_ways(tmp_path):
    store = Store(tmp_path / "images")
    upper = _varied_tree(tmp_path / "upper")
    (upper / "proc").mkdir()
    (upper / "proc" / "leftover").write_bytes(b"skipped")
    if ROOT:                                   # what the kernel's overlayfs leaves as root
        os.mknod(upper / "d" / "gone", stat.S_IFCHR, 0)
        os.mkdir(upper / "opaque")
        os.setxattr(upper / "opaque", "trusted.overlay.opaque", b"y")
        (upper / "opaque" / "new").write_bytes(b"n")
    c, py = both(lambda: layer_from_upper(store, upper, skip=["proc"]))
    assert (c.digest, c.diff_id, c.entries) == (py.digest, py.diff_id, py.entries)
    with tarfile.open(store.blob_path(c.digest)) as tar:
        names = tar.getnames()
    assert not [n for n in names if n.startswith("proc")]
    if ROOT:
        assert "d/.wh.gone" in names and "opaque/.wh..wh..opq" in names


# ---- unpacking: the same tree ------------------------------------------------------------

def _snapshot(root):
    """What a user could see of an unpacked tree: names, kinds, modes, owners, times of what
    the layer set, contents, link targets, device numbers, hard-link counts, overlay xattrs."""
    root = os.fsencode(root)
    now = time.time()
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [b"."] * (dirpath == root) + dirs + files:
            path = os.path.normpath(os.path.join(dirpath, name))
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            item = [kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid]
            if kind == stat.S_IFREG:
                with open(path, "rb") as f:
                    item += [hashlib.sha256(f.read()).hexdigest(), st.st_nlink]
            elif kind == stat.S_IFLNK:
                item.append(os.readlink(path))
            elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                item.append(st.st_rdev)
            if kind != stat.S_IFLNK and abs(st.st_mtime - now) > 3600:   # set from the layer
                item.append(st.st_mtime_ns)
            if kind != stat.S_IFLNK:
                item.append(sorted((x, os.getxattr(path, x)) for x in os.listxattr(path)
                                   if "overlay" in x))
            out[os.path.relpath(path, root)] = item
    return out


def _gz(tmp_path, name, tar_bytes):
    path = tmp_path / name
    path.write_bytes(gzip.compress(tar_bytes, mtime=0))
    return path


def _pax_global(records, entries):
    import io
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers=records) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


D, F, L, H = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
VALID = {
    "every-kind-pax": _archive(EVERY_KIND if ROOT else [e for e in EVERY_KIND
                                                         if not e[0].isdev()]),
    "every-kind-gnu": _archive(EVERY_KIND if ROOT else [e for e in EVERY_KIND
                                                         if not e[0].isdev()], tarfile.GNU_FORMAT),
    "whiteouts": _archive([
        _info("d", D, mode=0o755), _info("d/.wh.gone", data=b""), _info(".wh.top", data=b""),
        _info("o", D, mode=0o711), _info("o/.wh..wh..opq", data=b""), _info("o/kept", data=b"k"),
        _info("implicit/parent/.wh.x", data=b"")]),
    "replacements": _archive([
        _info("a", data=b"file first"), _info("a", D, mode=0o755), _info("a/f", data=b"in a"),
        _info("b", D, mode=0o755), _info("b/c", data=b"c"), _info("b", data=b"then a file"),
        _info("c", L, linkname="a"), _info("c", data=b"file over a symlink"),
        _info("e", data=b"e"), _info("h", H, linkname="e"), _info("h", data=b"own data now"),
        _info("s", D, mode=0o755), _info("s", L, linkname="b")]),
    "root-entry-and-read-only": _archive([
        _info("./", D, mode=0o711, mtime=1_600_000_000), _info("ro", D, mode=0o555),
        _info("ro/inner", D, mode=0o500), _info("ro/inner/f", data=b"deep", mode=0o400),
        _info("late/child", data=b"parent comes later"), _info("late", D, mode=0o700)]),
    "pax-global-and-times": _pax_global({"mtime": "1234567890.25", "uid": "4242"}, [
        _info("g1", data=b"global mtime"), _info("g2", data=b"x", mtime=5),
        _info("neg", data=b"n", pax_headers={"mtime": "-1.5"})]),
}


@pytest.mark.parametrize("whiteouts", ["overlay", "oci"])
@pytest.mark.parametrize("case", sorted(VALID))
def test_a_layer_unpacks_to_the_same_tree_both_ways(tmp_path, case, whiteouts):
    blob = _gz(tmp_path, "layer.tar.gz", VALID[case])
    n = iter(range(2))

    def unpack():
        dest = tmp_path / f"x{next(n)}"
        info = extract_layer(blob, dest, whiteouts=whiteouts)
        return info, _snapshot(dest)

    (c_info, c_tree), (py_info, py_tree) = both(unpack)
    assert c_info == py_info
    assert c_tree == py_tree
    assert len(c_tree) > 2


def test_the_varied_tree_round_trips(tmp_path):
    store = Store(tmp_path / "images")
    tree = _varied_tree(tmp_path / "tree")
    layer = layer_from_dir(store, tree, mtime=None)
    blob = store.blob_path(layer.digest)
    n = iter(range(2))
    c, py = both(lambda: _extract_snapshot(blob, layer, tmp_path, n))
    assert c == py
    original = _snapshot(tree)
    del original[b"sock"]
    assert set(c) == set(original)
    assert c[b"d/hard"][5] == 2                                   # the hard link is one


def _extract_snapshot(blob, layer, tmp_path, n):
    dest = tmp_path / f"x{next(n)}"
    extract_layer(blob, dest, digest=layer.digest, diff_id=layer.diff_id)
    return _snapshot(dest)


# ---- refusing: the same errors -----------------------------------------------------------

def _refusals():
    good = _archive([_info("p" * 200, data=b"x")])
    one = _archive([_info("f", data=b"x" * 5000)])
    cases = {f"hostile-{k}": _tar(v) for k, v in HOSTILE.items()}
    checksum = bytearray(_archive([_info("good", data=b"1"), _info("victim", data=b"2")]))
    checksum[1024 + 5] ^= 0x20
    start = good.index(b" path=")
    cases.update({
        "checksum": bytes(checksum),
        "truncated-data": one[:512 + 2000],
        "truncated-header": one[:300],
        "empty": b"",
        "not-tar": b"this is not a tar stream at all" * 40,
        "size-garbage": _with_field(one, 124, b"12ab".ljust(12, b"\0")),
        "size-negative": _with_field(one, 124, b"\xff" * 12),
        "size-absurd": _with_field(one, 124, b"\x80" + (1 << 80).to_bytes(11, "big")),
        "pax-huge": _with_field(good, 124, b"%011o\0" % (1 << 30)),
        "pax-length-past": good[:start - 3] + b"999" + good[start:],
        "pax-no-equals": good.replace(b"path=", b"path-"),
        "pax-nul": _pax_with_record(b"path", b"a\0b"),
        "pax-bad-size": _pax_with_record(b"size", b"12a"),
        "pax-huge-size": _pax_with_record(b"size", b"9" * 39),
        "pax-huge-mtime": _pax_with_record(b"mtime", b"9" * 30),
        "pax-sparse": _pax_with_record(b"GNU.sparse.major", b"1"),
        "pax-without-entry": _archive([_info("p" * 200, data=b"x")])[:1024],
        "unknown-type": _archive([_info("weird", b"S", data=b"")]),
        "dir-dotdot": _archive([_info("a/../..", D)]),
        "whiteout-dotdot": _archive([_info("d/.wh...", data=b"")]),
        "hardlink-to-dir": _archive([_info("d", D), _info("h", H, linkname="d")]),
        "hardlink-unknown": _archive([_info("h", H, linkname="never-unpacked")]),
        "symlink-empty": _archive([_info("s", L, linkname="")]),
        "parent-is-file": _archive([_info("a", data=b"x"), _info("a/b", data=b"y")]),
        "gzip-damaged": None,
    })
    return cases


def _pax_with_record(key, value):
    """A PAX header with one record (its length right), before a one-byte file 'f'."""
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 2
    n = len(body) + len(str(n))
    record = str(n).encode() + body
    head = tarfile.TarInfo("././@PaxHeader")
    head.type, head.size = tarfile.XHDTYPE, len(record)
    blob = head.tobuf(tarfile.USTAR_FORMAT) + record.ljust(512, b"\0")
    return blob + _archive([_info("f", data=b"x")], tarfile.USTAR_FORMAT)


REFUSALS = _refusals()


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_bad_layer_is_refused_the_same_way_both_ways(tmp_path, case):
    if case == "gzip-damaged":
        data = bytearray(gzip.compress(_archive([_info("f", data=os.urandom(200_000))])))
        data[len(data) // 2] ^= 0xFF
        blob = tmp_path / "layer"
        blob.write_bytes(bytes(data))
    else:
        blob = _gz(tmp_path, "layer", REFUSALS[case])
    before = set(os.listdir(tmp_path))

    def refuse():
        with pytest.raises(LayerError) as err:
            extract_layer(blob, tmp_path / "dest")
        assert set(os.listdir(tmp_path)) == before                  # nothing left behind
        return err.value

    c, py = both(refuse)
    assert c.entry == py.entry
    # the same reason; quoting of names inside it may differ (repr vs C)
    assert c.reason.split("'")[0] == py.reason.split("'")[0], (c.reason, py.reason)


def test_a_digest_mismatch_is_refused_both_ways(tmp_path):
    blob = _gz(tmp_path, "layer", _archive([_info("f", data=b"x")]))

    def refuse():
        with pytest.raises(DigestMismatch):
            extract_layer(blob, tmp_path / "dest", diff_id="sha256:" + "0" * 64)
        return (tmp_path / "dest").exists()

    assert both(refuse) == (False, False)


def test_without_a_compiler_the_python_path_gives_the_same_layer(tmp_path):
    """A Binder-like host without cc: nothing is compiled, and layers are still the same."""
    store = Store(tmp_path / "images")
    tree = _varied_tree(tmp_path / "tree")
    expected = layer_from_dir(store, tree).digest
    code = ("import sys; from ctrkernel.image import Store, layer_from_dir, layertar\n"
            "from ctrkernel.image.extract import extract_layer\n"
            "layer = layer_from_dir(Store(sys.argv[1]), sys.argv[2])\n"
            "info = extract_layer(Store(sys.argv[1]).blob_path(layer.digest), sys.argv[3])\n"
            "print(layertar.available(), layer.digest, info['digest'])\n")
    env = dict(os.environ, PATH="/nonexistent", CTRKERNEL_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "images2"), str(tree),
                          str(tmp_path / "x")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", expected, expected]
    assert not list((tmp_path / "home").glob("bin/*layertar*"))


def test_a_refused_layer_does_not_kill_a_process_that_takes_sigpipe(tmp_path):
    """The C side stops reading at the first bad entry while the feeding thread still writes:
    that thread must get EPIPE, not a SIGPIPE, in a host program that does not ignore it."""
    big = [_info(f"f{n}", data=os.urandom(1 << 20)) for n in range(40)]   # > the pipe's buffer
    blob = tmp_path / "layer.tar"
    blob.write_bytes(_archive([_info("../escape", data=b"x")] + big))
    code = ("import signal, sys; signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"
            "from ctrkernel.errors import LayerError\n"
            "from ctrkernel.image.extract import extract_layer\n"
            "try: extract_layer(sys.argv[1], sys.argv[2])\n"
            "except LayerError as e: print('refused:', e.reason)\n")
    out = subprocess.run([sys.executable, "-c", code, str(blob), str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "refused: path contains '..'" in out.stdout, out
    assert not (tmp_path / "x").exists()


FUZZ = r'''
import hashlib, os, random, shutil, stat, sys, tempfile, time
from ctrkernel.errors import CtrkernelError, LayerError
from ctrkernel.image import layertar
from ctrkernel.image.extract import _rmtree, extract_layer
%s
corpus = sys.argv[1]
bases = [open(os.path.join(corpus, n), "rb").read() for n in sorted(os.listdir(corpus))]
rng = random.Random(int(sys.argv[2]))
work = tempfile.mkdtemp(prefix="ctrkernel-test-fuzz-")
differ = []
try:
    for case in range(int(sys.argv[3])):
        blob = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            pos, k = rng.randrange(len(blob)), rng.random()
            if k < 0.5:
                blob[pos] = rng.randrange(256)
            elif k < 0.7:
                blob[pos:pos + 8] = bytes(rng.choice(b"07\0 /.\xff\x80") for _ in range(8))
            elif k < 0.85:
                del blob[pos:pos + rng.randrange(1, 600)]
            else:
                blob[pos:pos] = os.urandom(rng.randrange(1, 600))
        if rng.random() < 0.7:                # right checksums: the mutation reaches the fields
            for off in range(0, len(blob) - 511, 512):
                if blob[off + 257:off + 262] == b"ustar":
                    blob[off + 148:off + 156] = b" " * 8
                    blob[off + 148:off + 156] = b"%%06o\0 " %% sum(blob[off:off + 512])
        path = os.path.join(work, "layer.tar")
        with open(path, "wb") as f:
            f.write(blob)
        seen = []
        for native in (True, False):
            layertar.enabled = native
            dest = os.path.join(work, "x")
            try:
                extract_layer(path, dest)
                seen.append(("unpacked", _snapshot(dest)))
            except LayerError as e:
                seen.append(("refused", e.entry, e.reason.replace('"', "'").split("'")[0]))
            except (OSError, CtrkernelError) as e:
                seen.append(("error", type(e).__name__))
            _rmtree(dest) if os.path.lexists(dest) else None
        if seen[0] != seen[1]:
            differ.append((case, str(seen)[:300]))
finally:
    shutil.rmtree(work)
print("differ:", differ)
'''


def test_mutated_layers_get_the_same_outcome_both_ways_and_never_crash(tmp_path):
    """Random damage to valid layers (fixed seed): each one is unpacked to the same tree or
    refused for the same reason both ways. In a child process, so that a crash in C would
    show here as a failure, not take the test session down."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, blob in VALID.items():
        if len(blob) < 400_000:
            (corpus / name).write_bytes(blob)
    # the child imports no test module (conftest would make a session home of its own)
    script = FUZZ % inspect.getsource(_snapshot)
    out = subprocess.run([sys.executable, "-c", script, str(corpus), "20261129", "300"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "differ: []"
