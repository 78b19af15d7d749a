"""save/load: our archives read by skopeo, umoci and podman; theirs loaded and run here;
hostile archives refused with nothing left behind."""
import hashlib
import io
import json
import os
import pty
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ctrkernel.errors import ArchiveError, DigestMismatch, LayerError
from ctrkernel.image import Store, default_store, get_image
from ctrkernel.image.archive import load, load_archive, save
from ctrkernel.image.extract import union_view

from conftest import REPO, requires


def tool(name):
    """Skip with a clear reason when an interop tool is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def sh(argv, **kw):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
    assert done.returncode == 0, f"{argv} failed: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def busybox():
    return get_image("busybox")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("archive")


@pytest.fixture(scope="module")
def saved(busybox, work):
    """busybox saved once in each format (shared by the interop tests)."""
    paths = {}
    for fmt in ("docker", "oci"):
        paths[fmt] = work / f"busybox-{fmt}.tar"
        save(["busybox"], paths[fmt], format=fmt)
    return paths


@pytest.fixture(scope="module")
def rootfs_tar(busybox, work):
    """busybox's tree as a plain rootfs tar (GNU tar), for the tools to make images from."""
    tree = union_view(busybox.layer_dirs(), work / "rootfs")
    out = work / "rootfs.tar"
    sh(["tar", "-C", str(tree), "-cf", str(out), "."])
    return tree, out


def assert_store_untouched(store):
    assert store.images(all=True) == []
    assert store.fsck() == []
    assert list(store.blobs.iterdir()) == [], "blobs of a refused load entered the store"
    assert [p for p in store.layers.iterdir()] == []
    assert list(store.tmp.iterdir()) == [], "staging was not removed"


def run_here(image, argv):
    from ctrkernel.runtime import run
    return run(image, argv, remove=True)


# ---- ours, both directions, in-process --------------------------------------------------------

@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_save_is_reproducible_and_loads_back_with_tags(busybox, saved, work, fmt):
    again = io.BytesIO()
    save([busybox], again, format=fmt)          # an Image object saves all its tags
    assert again.getvalue() == saved[fmt].read_bytes()
    store = Store(work / f"fresh-{fmt}")
    ((img, tags),) = load_archive(saved[fmt], store=store)
    assert tags == ["busybox:latest"] and img.tags == ["busybox:latest"]
    assert img.id == busybox.id and img.diff_ids == busybox.diff_ids
    assert img.manifest_digest == busybox.manifest_digest     # even through docker's plain tars
    assert store.fsck() == [] and list(store.tmp.iterdir()) == []
    (layer,) = img.layer_dirs()
    assert (layer / "bin" / "busybox").is_file()


def test_docker_archive_members_are_docker_save_shaped(saved, busybox):
    with tarfile.open(saved["docker"]) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert manifest == [{"Config": busybox.id[7:] + ".json", "RepoTags": ["busybox:latest"],
                             "Layers": [busybox.diff_ids[0][7:] + ".tar"]}]
        layer = tar.extractfile(manifest[0]["Layers"][0]).read()
        assert "sha256:" + hashlib.sha256(layer).hexdigest() == busybox.diff_ids[0]
        assert "busybox" in json.load(tar.extractfile("repositories"))


def test_save_by_id_has_no_tags_and_gzip_archive_loads(busybox, work):
    buf = io.BytesIO()
    save([busybox.short_id], buf, format="docker")
    import gzip
    store = Store(work / "by-id")
    ((img, tags),) = load_archive(io.BytesIO(gzip.compress(buf.getvalue())), store=store)
    assert tags == [] and img.id == busybox.id
    assert [i.id for i in store.images()] == [busybox.id]


# ---- ours -> skopeo, umoci, podman ------------------------------------------------------------

def test_skopeo_reads_our_archives_and_store(saved, busybox, work):
    skopeo = tool("skopeo")
    oci = json.loads(sh([skopeo, "inspect", f"oci-archive:{saved['oci']}"]))
    assert oci["Digest"] == busybox.manifest_digest
    assert oci["Layers"] == [layer["digest"] for layer in busybox.layers]
    docker = json.loads(sh([skopeo, "inspect", f"docker-archive:{saved['docker']}"]))
    assert docker["Layers"] == busybox.diff_ids          # docker archives carry plain tars
    by_tag = json.loads(sh([skopeo, "inspect", f"docker-archive:{saved['docker']}:busybox:latest"]))
    assert by_tag["Layers"] == busybox.diff_ids          # skopeo finds it by our RepoTags
    dest = work / "skopeo-copy"
    sh([skopeo, "copy", f"oci-archive:{saved['oci']}:busybox:latest", f"oci:{dest}:copied"])
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["digest"] == busybox.manifest_digest
    store_view = json.loads(sh([skopeo, "inspect",
                                f"oci:{default_store().layout}:busybox:latest"]))
    assert store_view["Digest"] == busybox.manifest_digest


def test_umoci_unpacks_our_oci_archive(saved, work):
    umoci = tool("umoci")
    layout = work / "umoci-layout"
    with tarfile.open(saved["oci"]) as tar:
        tar.extractall(layout)                    # our own archive: trusted here
    assert sh([umoci, "ls", "--layout", str(layout)]).split() == ["busybox:latest"]
    bundle = work / "umoci-bundle"
    sh([umoci, "unpack", "--image", f"{layout}:busybox:latest", str(bundle)])
    busybox_bin = bundle / "rootfs" / "bin" / "busybox"
    assert busybox_bin.is_file()
    assert sh([str(busybox_bin), "echo", "unpacked by umoci"]) == "unpacked by umoci\n"


class Podman:
    """podman with a private, temporary store (never the system one): vfs, so no overlay
    mounts; runc (crun refuses this host's hybrid cgroups); cgroups under a parent named for
    us, so anything left is found and removed (and the suite's leak check would see it)."""

    def __init__(self, base):
        self.base = base
        self.cgroup_parent = f"ctrkernel-test-podman-{os.getpid()}"
        self.argv = [tool("podman"), "--root", str(base / "root"), "--runroot",
                     str(base / "runroot"), "--storage-driver", "vfs", "--cgroup-manager",
                     "cgroupfs", "--events-backend", "file", "--runtime", "runc",
                     "--tmpdir", str(base / "tmp")]

    def __call__(self, *args):
        return sh(self.argv + list(args))

    def run(self, image, *command):
        return self("run", "--rm", "--network", "none", "--cgroup-parent",
                    f"/{self.cgroup_parent}", "--ulimit", "nofile=1024:20000",
                    "--ulimit", "nproc=4096:4096", image, *command)

    def loaded(self, archive):
        out = self("load", "-q", "-i", str(archive))
        names = [line.partition(":")[2].strip() for line in out.splitlines()
                 if line.startswith("Loaded image")]
        assert names, out
        return names[0]

    def close(self):
        subprocess.run(self.argv + ["rm", "-af"], capture_output=True, timeout=60)
        # conmon and the runtime exit with the container; wait for any straggler of ours
        for _ in range(50):
            if not self._processes():
                break
            time.sleep(0.1)
        for mount in [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                      if str(self.base) in line.split()[1]]:
            subprocess.run(["umount", "-l", mount], capture_output=True)
        for controller in Path("/sys/fs/cgroup").iterdir():
            parent = controller / self.cgroup_parent
            if parent.is_dir():
                for d in sorted((p for p in parent.rglob("*") if p.is_dir()),
                                key=lambda p: -len(p.parts)):
                    d.rmdir()
                parent.rmdir()
        shutil.rmtree(self.base, ignore_errors=True)
        assert not self._processes(), "podman left processes behind"

    def _processes(self):
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if str(self.base).encode() in (proc / "cmdline").read_bytes():
                        found.append(int(proc.name))
                except OSError:
                    continue
        return found


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    tool("podman")
    p = Podman(tmp_path_factory.mktemp("podman"))
    yield p
    p.close()


@requires("root")
@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_podman_loads_and_runs_our_archive(saved, podman, busybox, fmt):
    name = podman.loaded(saved[fmt])
    assert name.endswith("busybox:latest")
    assert podman("image", "inspect", "--format", "{{.Id}}", name).strip() == busybox.id[7:]
    assert podman.run(name, "echo", "hi") == "hi\n"


# ---- the tools' images -> ours, run with ctrkernel.runtime -------------------------------------

@requires("root")
def test_umoci_made_image_loads_and_runs_here(rootfs_tar, work):
    umoci = tool("umoci")
    tree, _ = rootfs_tar
    layout = work / "umoci-made"
    sh([umoci, "init", "--layout", str(layout)])
    sh([umoci, "new", "--image", f"{layout}:umoci-made:1"])
    sh([umoci, "insert", "--image", f"{layout}:umoci-made:1", str(tree), "/"])
    sh([umoci, "config", "--image", f"{layout}:umoci-made:1", "--config.cmd", "echo",
        "--config.cmd", "made by umoci"])
    archive = work / "umoci-made.tar"
    sh(["tar", "-C", str(layout), "-cf", str(archive), "."])
    ((img, tags),) = load_archive(archive)
    assert tags == ["umoci-made:1"]
    index = json.loads((layout / "index.json").read_text())
    assert img.manifest_digest == index["manifests"][0]["digest"]   # kept verbatim
    assert get_image("umoci-made:1").id == img.id
    assert run_here("umoci-made:1", None) == b"made by umoci\n"
    assert run_here(img, ["sh", "-c", "echo $((6 * 7))"]) == b"42\n"


@pytest.fixture(scope="module")
def podman_made(rootfs_tar, podman):
    """An image made by `podman import` of a rootfs tar; its id as podman reports it."""
    _, tarball = rootfs_tar
    return podman("import", "-q", "--change", 'CMD ["echo", "made by podman"]', str(tarball),
                  "localhost/podman-made:1").strip()


@requires("root")
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_podman_made_image_loads_and_runs_here(podman_made, podman, work, fmt):
    image_id = podman_made
    archive = work / f"podman-made-{fmt}.tar"
    if archive.exists():
        archive.unlink()
    podman("save", "-q", "--format", fmt, "-o", str(archive), "localhost/podman-made:1")
    ((img, tags),) = load_archive(archive)
    assert tags == ["localhost/podman-made:1"]
    assert img.id == image_id if image_id.startswith("sha256:") else img.id[7:] == image_id
    assert run_here(img, None) == b"made by podman\n"
    assert run_here("localhost/podman-made:1", ["cat", "/etc/passwd"]).startswith(b"root:x:0:0")


@requires("root")
def test_skopeo_docker_archive_of_ours_loads_back_and_runs(busybox, work):
    skopeo = tool("skopeo")
    archive = work / "skopeo-docker.tar"
    sh([skopeo, "copy", f"oci:{default_store().layout}:busybox:latest",
        f"docker-archive:{archive}:skopeo-copied:1"])
    ((img, tags),) = load_archive(archive)
    assert tags == ["skopeo-copied:1"] and img.id == busybox.id
    assert run_here("skopeo-copied:1", ["echo", "back from skopeo"]) == b"back from skopeo\n"


# ---- hostile and broken archives ------------------------------------------------------------

def _tar(members):
    """An archive from [(TarInfo fields or name, bytes)]."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for spec, data in members:
            info = tarfile.TarInfo(spec) if isinstance(spec, str) else spec
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _layer(entries):
    """A plain layer tar: entries are (name, bytes) files or (name, None, linktarget) links."""
    members = []
    for entry in entries:
        info = tarfile.TarInfo(entry[0])
        if entry[1] is None:
            info.type, info.linkname = tarfile.SYMTYPE, entry[2]
        members.append((info, entry[1]))
    return _tar(members).getvalue()


def _digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _oci(layer, swap=None, drop=(), ref="evil:1", extra=()):
    """An OCI archive of one image; `swap` replaces the layer blob's bytes under its name."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
        "size": len(config)}, "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": _digest(layer), "size": len(layer)}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": ref}}]})
    members = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index.encode())]
    for data in (config, manifest, layer):
        if data not in drop:
            content = swap if (swap and data is layer) else data
            members.append((f"blobs/sha256/{_digest(data)[7:]}", content))
    return _tar(members + list(extra))


def _docker(layer, diff_id=None, config_name=None, layer_name="layer.tar"):
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers",
                                    "diff_ids": [diff_id or _digest(layer)]}}).encode()
    manifest = [{"Config": config_name or f"{_digest(config)[7:]}.json",
                 "RepoTags": ["evil:1"], "Layers": [layer_name]}]
    return _tar([("manifest.json", json.dumps(manifest).encode()),
                 (config_name or f"{_digest(config)[7:]}.json", config), (layer_name, layer)])


GOOD_LAYER = _layer([("hello.txt", b"hi\n")])


def test_a_well_formed_handmade_archive_loads(tmp_path):
    """The control for the hostile cases below: the same shapes, intact, do load."""
    store = Store(tmp_path / "s")
    (img,) = load(_oci(GOOD_LAYER), store=store)
    assert img.tags == ["evil:1"]
    (img2,) = load(_docker(GOOD_LAYER), store=store)
    assert img2.id == img.id and store.fsck() == []


def _hostile_cases(tmp):
    outside = tmp / "outside"
    sym = tarfile.TarInfo("notes")
    sym.type, sym.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
    fifo = tarfile.TarInfo("fifo")
    fifo.type = tarfile.FIFOTYPE
    return outside, {
        # each hidden in an otherwise valid archive, so that only the check itself refuses it
        "dotdot member": (ArchiveError, _oci(GOOD_LAYER, extra=[(f"../../{outside.name}",
                                                                 b"x")])),
        "dotdot inside": (ArchiveError, _oci(GOOD_LAYER, extra=[
            (f"blobs/../../../{outside.name}", b"x")])),
        "absolute member": (ArchiveError, _oci(GOOD_LAYER, extra=[(str(outside / "abs"),
                                                                   b"x")])),
        "symlink out of the archive": (ArchiveError, _oci(GOOD_LAYER, extra=[(sym, None)])),
        "special file": (ArchiveError, _oci(GOOD_LAYER, extra=[(fifo, None)])),
        "layer digest mismatch": (DigestMismatch, _oci(GOOD_LAYER, swap=_layer([
            ("hello.txt", b"hj\n")]))),
        "manifest names a missing blob": (ArchiveError, _oci(GOOD_LAYER, drop=(GOOD_LAYER,))),
        "docker layer diff_id mismatch": (DigestMismatch,
                                          _docker(GOOD_LAYER, diff_id=_digest(b"other"))),
        "docker config not its id": (DigestMismatch, _docker(GOOD_LAYER, config_name="0" * 64
                                                             + ".json")),
        "docker layer path traversal": (ArchiveError, _docker(GOOD_LAYER,
                                                              layer_name="../layer.tar")),
        "layer entry escapes": (LayerError, _oci(_layer([("../../escape", b"x")]))),
        "layer writes through a symlink": (LayerError, _docker(_layer([
            ("etc", None, str(outside)), ("etc/passwd", b"pwned")]))),
        "not a tar": (ArchiveError, io.BytesIO(b"this is not an archive" * 100)),
        "neither format": (ArchiveError, _tar([("hello", b"x")])),
    }


def test_hostile_archives_are_refused_and_leave_nothing(tmp_path):
    outside, cases = _hostile_cases(tmp_path)
    outside.mkdir()
    store = Store(tmp_path / "store")
    for label, (error, archive) in cases.items():
        with pytest.raises(error):
            load(archive, store=store)
        assert list(outside.iterdir()) == [], label
        assert_store_untouched(store)
    assert not Path("/escape").exists()


def test_interrupted_load_leaves_no_image(tmp_path, saved):
    store = Store(tmp_path / "store")
    data = saved["oci"].read_bytes()

    class Interrupted(io.RawIOBase):
        def __init__(self):
            self.pos = 0

        def readable(self):
            return True

        def readinto(self, buf):
            if self.pos > len(data) // 2:
                raise KeyboardInterrupt
            n = min(len(buf), 65536)
            buf[:n] = data[self.pos:self.pos + n]
            self.pos += n
            return n

    with pytest.raises(KeyboardInterrupt):
        load(io.BufferedReader(Interrupted()), store=store)
    assert_store_untouched(store)


# ---- the command line -------------------------------------------------------------------------

def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ctrkernel", *args], capture_output=True,
                          timeout=120, cwd=REPO, **kw)


def test_cli_save_load_through_a_pipe_and_files(busybox, tmp_path):
    env = dict(os.environ, CTRKERNEL_HOME=str(tmp_path / "home"))
    assert cli("save", "-o", str(tmp_path / "b.tar"), "busybox", env=env).returncode == 0
    saver = subprocess.Popen([sys.executable, "-m", "ctrkernel", "save", "--format", "oci",
                              "busybox"], stdout=subprocess.PIPE, env=env, cwd=REPO)
    loaded = cli("load", stdin=saver.stdout, env=dict(os.environ))
    saver.stdout.close()
    assert saver.wait() == 0
    assert loaded.returncode == 0 and loaded.stdout == b"Loaded image: busybox:latest\n"
    fresh = dict(env, CTRKERNEL_HOME=str(tmp_path / "other"))
    assert cli("load", "-i", str(tmp_path / "b.tar"), env=fresh).stdout == \
        b"Loaded image: busybox:latest\n"
    assert cli("save", "-o", str(tmp_path / "id.tar"), busybox.id, env=env).returncode == 0
    by_id = cli("load", "-q", "-i", str(tmp_path / "id.tar"),
                env=dict(env, CTRKERNEL_HOME=str(tmp_path / "third")))
    assert by_id.stdout.decode() == f"Loaded image ID: {busybox.id}\n"
    missing = cli("load", "-i", str(tmp_path / "nope.tar"), env=env)
    assert missing.returncode == 1 and b"no such file" in missing.stderr
    hostile = cli("load", input=b"junk" * 1000, env=env)
    assert hostile.returncode == 1 and b"not a readable tar archive" in hostile.stderr


def test_cli_save_refuses_a_terminal(tmp_path):
    master, slave = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "ctrkernel", "save", "busybox"],
                              stdout=slave, stderr=subprocess.PIPE, timeout=60, cwd=REPO)
    finally:
        os.close(slave)
        os.close(master)
    assert done.returncode == 1 and b"cowardly refusing to save to a terminal" in done.stderr
