"""The image store: builtin images, layers with whiteouts, reproducibility, hostile layers, fsck."""
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from conftest import requires_isolation
from ctrkernel.errors import DigestMismatch, ImageNotFound, LayerError
from ctrkernel.image import (LayerWriter, Store, changes, create_image, get_image,
                             layer_from_diff, layer_from_dir)
from ctrkernel.image.extract import apply_layer, extract_layer, union_view


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "images")


def test_busybox_builtin_is_made_once_without_network(store):
    img = get_image("busybox", store=store)
    assert img.id.startswith("sha256:") and img.tags == ["busybox:latest"]
    assert img.config["config"]["Cmd"] == ["sh"]
    assert get_image("busybox:latest", store=store).id == img.id
    (layer,) = img.layer_dirs()
    assert (layer / "bin" / "busybox").is_file()
    assert os.readlink(layer / "bin" / "sh") == "busybox"
    assert "nobody:x:65534" in (layer / "etc" / "passwd").read_text()
    assert oct((layer / "tmp").stat().st_mode & 0o7777) == "0o1777"
    assert img.layer_dirs() == [layer]
    assert [row["created_by"] for row in img.history()][0].endswith('CMD ["sh"]')
    skopeo = subprocess.run(["skopeo", "inspect", f"oci:{store.layout}:busybox:latest"],
                            capture_output=True, text=True)
    if skopeo.returncode != 127:
        assert skopeo.returncode == 0, skopeo.stderr


def test_unknown_image_is_not_found(store):
    with pytest.raises(ImageNotFound):
        get_image("nosuchimage:1", store=store)


def _tree(root, files):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def test_diff_layer_with_whiteouts_and_opaque_dir_applies_in_order(store, tmp_path):
    lower = _tree(tmp_path / "lower", {"keep": "k", "gone": "g", "edit": "1",
                                       "cache/a": "a", "cache/b": "b", "d/x": "x"})
    upper = _tree(tmp_path / "upper", {"keep": "k", "edit": "2", "new": "n", "cache/c": "c",
                                       "d/x": "x"})
    assert changes(lower, upper) == [("O", "cache"), ("A", "cache/c"), ("C", "edit"),
                                     ("D", "gone"), ("A", "new")]
    base, top = layer_from_dir(store, lower), layer_from_diff(store, lower, upper)
    with tarfile.open(store.blob_path(top.digest)) as tar:
        names = tar.getnames()
    assert ".wh.gone" in names and "cache/.wh..wh..opq" in names
    merged = tmp_path / "merged"
    merged.mkdir()
    apply_layer(store.blob_path(base.digest), merged, base.digest)
    apply_layer(store.blob_path(top.digest), merged, top.digest)
    result = {str(p.relative_to(merged)): p.read_text() for p in merged.rglob("*") if p.is_file()}
    assert result == {"keep": "k", "edit": "2", "new": "n", "cache/c": "c", "d/x": "x"}
    # the same union from per-layer extractions (overlay or OCI whiteout form)
    dirs = []
    for n, layer in enumerate((base, top)):
        extract_layer(store.blob_path(layer.digest), tmp_path / f"l{n}", layer.digest,
                      layer.diff_id)
        dirs.append(tmp_path / f"l{n}")
    view = union_view(dirs, tmp_path / "view")
    assert {str(p.relative_to(view)): p.read_text()
            for p in view.rglob("*") if p.is_file()} == result


def test_same_tree_gives_same_digest(store, tmp_path):
    a = _tree(tmp_path / "a", {"x/y": "1", "z": "2"})
    first = layer_from_dir(store, a)
    os.utime(a / "z", (1, 1))
    assert layer_from_dir(store, a) == first


@pytest.mark.parametrize("name,type_,mode,uid,size,link", [
    ("etc/passwd", tarfile.REGTYPE, 0o644, 0, 123, ""),
    ("usr/bin", tarfile.DIRTYPE, 0o1777, 5, 0, ""),
    ("bin/sh", tarfile.SYMTYPE, 0o777, 1000, 0, "busybox"),
    ("x" * 150, tarfile.REGTYPE, 0o4755, 0, 1, ""),            # tarfile adds a PAX header
    ("café", tarfile.REGTYPE, 0o644, 0, 1, "")])                # tarfile adds a PAX header
def test_layer_headers_are_exactly_what_tarfile_writes(store, name, type_, mode, uid, size, link):
    """Headers are built by hand for speed: the bytes must stay those of tarfile's PAX format."""
    with LayerWriter(store, mtime=1700000000) as w:
        if type_ == tarfile.DIRTYPE:
            w.add_dir(name, mode, uid, uid)
        elif type_ == tarfile.SYMTYPE:
            w.add_symlink(name, link, uid, uid)
        else:
            w.add_bytes(name, b"a" * size, mode, uid, uid)
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.size = type_, mode, uid, uid, size
        info.mtime, info.linkname, info.uname, info.gname = 1700000000, link, "", ""
        tar.addfile(info, io.BytesIO(b"a" * size))
    ours = subprocess.run(["gzip", "-dc", str(store.blob_path(w.layer.digest))],
                          capture_output=True, check=True).stdout
    body = len(ours) - 1024                          # before the end-of-archive blocks
    assert ours[:body] == expected.getvalue()[:body] and not ours[body:].strip(b"\0")


def test_image_shares_parent_layers_and_rmi_gc(store, tmp_path):
    base = get_image("busybox", store=store)
    layer = layer_from_dir(store, _tree(tmp_path / "app", {"app/hello": "hi"}))
    img = create_image(store, parent=base, steps=[(layer, {"created_by": "COPY app /app"})],
                       config={"Cmd": ["cat", "/app/hello"]}, tags=["app:1"])
    assert img.layers[0] == base.layers[0] and len(img.layers) == 2
    assert [r["size"] > 0 for r in img.history()] == [True, False, True]
    store.tag("app:1", "app:latest")
    assert sorted(get_image("app", store=store).tags) == ["app:1", "app:latest"]
    store.remove("app:1")
    log = store.remove("app:latest")
    assert {"Deleted": img.id} in log and not store.has_blob(layer.digest)
    assert store.has_blob(base.layers[0]["digest"])


def test_fsck_finds_a_corrupted_blob(store):
    img = get_image("busybox", store=store)
    assert store.fsck() == []
    blob = store.blob_path(img.layers[0]["digest"])
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    problems = store.fsck()
    assert len(problems) == 1 and problems[0]["digest"] == img.layers[0]["digest"]
    assert "corrupt" in problems[0]["problem"]


# ---- hostile layers ------------------------------------------------------------------------

def _tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, extra in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = extra.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE}[kind]
            if kind in ("sym", "link"):
                info.linkname = extra
            tar.addfile(info)
    return buf.getvalue()


HOSTILE = {
    "dotdot": [("file", "../escaped", "x")],
    "dotdot-deep": [("dir", "a", None), ("file", "a/../../escaped", "x")],
    "absolute": [("file", "/tmp/ctrkernel-escaped", "x")],
    "symlink-out": [("sym", "up", "../../../../etc")],
    "symlink-parent": [("sym", "etc", "/etc"), ("file", "etc/ctrkernel-escaped", "x")],
    "symlink-parent-rel": [("dir", "a", None), ("sym", "a/b", "."),
                           ("sym", "c", "a"), ("file", "c/../../escaped", "x")],
    "hardlink-out": [("link", "passwd", "../../../etc/passwd")],
    "hardlink-abs": [("link", "passwd", "/etc/passwd")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_is_refused_and_writes_nothing_outside(tmp_path, case):
    blob = tmp_path / "layer.tar"
    blob.write_bytes(_tar(HOSTILE[case]))
    dest = tmp_path / "root" / "dest"
    dest.parent.mkdir()
    before = set(os.listdir(tmp_path))
    with pytest.raises(LayerError) as err:
        extract_layer(blob, dest)
    assert err.value.entry
    assert not dest.exists()
    assert set(os.listdir(tmp_path)) == before and os.listdir(tmp_path / "root") == []
    assert not Path("/tmp/ctrkernel-escaped").exists()
    assert not Path("/etc/ctrkernel-escaped").exists()


def test_device_node_refused_when_not_root(tmp_path):
    work = Path(tempfile.mkdtemp(prefix="ctrkernel-test-dev-"))
    request_cleanup = lambda: shutil.rmtree(work, ignore_errors=True)  # noqa: E731
    blob = work / "dev.tar"
    blob.write_bytes(_tar([("chr", "null", None)]))
    code = ("import sys; from ctrkernel.image.extract import extract_layer\n"
            "from ctrkernel.errors import LayerError\n"
            "try: extract_layer(sys.argv[1], sys.argv[2])\n"
            "except LayerError as e: print('refused', e)\n")
    argv = [sys.executable, "-c", code, str(blob), str(work / "dest")]
    if os.geteuid() == 0:
        os.chmod(work, 0o755)
        os.chown(work, 1000, 1000)
        argv[2] = f"import os; os.setgid(1000); os.setuid(1000); exec({code!r})"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, cwd="/")
        assert "refused" in out.stdout and "device node" in out.stdout, out.stderr
        assert sorted(os.listdir(work)) == ["dev.tar"]
    finally:
        request_cleanup()


def test_digest_mismatch_is_refused(store, tmp_path):
    layer = layer_from_dir(store, _tree(tmp_path / "t", {"f": "1"}))
    with pytest.raises(DigestMismatch):
        extract_layer(store.blob_path(layer.digest), tmp_path / "x", digest="sha256:" + "0" * 64)
    assert not (tmp_path / "x").exists()


def test_python_builtin_shares_the_busybox_layer(store):
    py = get_image("python", store=store)
    bb = get_image("busybox", store=store)
    assert py.layers[0] == bb.layers[0] and len(py.layers) == 3
    assert "python:3.11" in py.tags or any(t.startswith("python:3") for t in py.tags)
    top = py.layer_dirs()[-1]
    assert any(top.glob("usr/bin/python3*"))
    assert not (top / "usr" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
                / "test").exists()


@requires_isolation("full", "rootless")
def test_python_builtin_runs_python_in_a_container():
    """The builtin python image runs the interpreter copied from the host, with its stdlib."""
    from ctrkernel.image.builtin import PY_VERSION
    from ctrkernel.runtime import create

    c = create(f"python:{PY_VERSION}", ["python3", "-c", "import json, sys; "
                                         "print(2+2, sys.version_info[:2] == (%s))"
                                         % PY_VERSION.replace(".", ", ")])
    try:
        c.start()
        assert c.wait()["StatusCode"] == 0, c.logs(stdout=True, stderr=True)
        assert c.logs(stdout=True, stderr=True) == b"4 True\n"
    finally:
        c.remove(force=True)


def test_a_host_with_a_dynamic_busybox_gets_a_clear_error(tmp_path):
    """A fresh store on a host whose busybox is dynamically linked (here: /bin/ls on PATH as
    `busybox`): the busybox image is refused naming busybox-static, rather than made and then
    failing every command with 127 ("sh: not found")."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(shutil.which("ls"), bindir / "busybox")
    env = dict(os.environ, CTRKERNEL_HOME=str(tmp_path / "home"), PATH=str(bindir))
    done = subprocess.run([sys.executable, "-m", "ctrkernel", "history", "busybox"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "busybox-static" in done.stderr and "dynamically linked" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
