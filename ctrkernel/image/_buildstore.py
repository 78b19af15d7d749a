"""What the build and commit need from the image store, in one place.

build.py and commit.py call only these functions; they delegate to the store of
`ctrkernel.image` (part A of issue 5) where it provides the operation, and hold the few
build-specific pieces themselves: the build cache (a small JSON file per cache key), layers made
from a container's writable layer, and the "intermediate image" object the runtime can start a
RUN step in without it ever being tagged.
"""
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path

from ctrkernel import paths
from ctrkernel.errors import LayerError
from ctrkernel.runtime.diff import is_opaque

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MOUNT_POINTS = ("proc", "sys", "dev")  # made by the runtime in an empty upper: not the command's


def canonical(obj):
    """The bytes a JSON document is stored as: sorted keys, no spaces, so digests repeat."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def full_tag(ref):
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return f"{ref}:latest"
    return ref


def default_store():
    try:
        from ctrkernel.image import default_store as store
    except ImportError:
        return None  # the layout under paths.subdir("images") is used directly
    return store()


def tmp_dir():
    """Scratch space on the same filesystem as the store (so renames into it are atomic)."""
    return str(paths.subdir("tmp"))


# ------------------------------------------------------------------ the build cache

def _cache_dir():
    return paths.subdir("images", "build-cache")


def cache_get(store, key):
    """The image state a step with this key produced before, if all its blobs are still there."""
    path = _cache_dir() / (key.split(":")[-1] + ".json")
    try:
        entry = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not all(has_blob(store, layer["digest"]) for layer in entry["layers"]):
        return None  # a layer was removed (rmi, prune): the step must run again
    return entry


def cache_put(store, key, snapshot):
    path = _cache_dir() / (key.split(":")[-1] + ".json")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(canonical(snapshot))
    os.replace(tmp, path)  # atomic: a concurrent build sees the old entry or this one


# ------------------------------------------------------------------ blobs
# Until ctrkernel.image offers these, the build writes the OCI layout itself: blobs under
# blobs/sha256/, written to a temporary name and renamed, so a reader never sees half a blob.

def _root(store):
    root = Path(getattr(store, "root", None) or getattr(store, "path", None)
                or paths.subdir("images"))
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    if not (root / "oci-layout").exists():
        _atomic_write(root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    return root


def _atomic_write(path, data):
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def blob_path(store, digest):
    return _root(store) / "blobs" / "sha256" / digest.split(":", 1)[1]


def has_blob(store, digest):
    return blob_path(store, digest).exists()


def put_blob(store, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_path(store, digest)
    if not path.exists():
        _atomic_write(path, data)
    return digest


# ------------------------------------------------------------------ layers

def _tar_tree(root, out, overlay=False):
    """A reproducible tar of root into the binary file `out`: sorted entries, times 0, no names.

    Owners and modes are kept (COPY --chown and RUN's chmod must survive); times and user names
    are not, so the same files always give the same digest. With overlay=True, root is an
    overlayfs upper directory and its whiteouts (0/0 char devices, opaque xattrs) become the OCI
    layer spec's `.wh.` entries.
    """
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                entries.append(os.path.join(dirpath, name))
        for path in sorted(entries, key=lambda p: os.path.relpath(p, root).split(os.sep)):
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if overlay and stat.S_ISDIR(st.st_mode) and rel in MOUNT_POINTS and not os.listdir(path):
                continue
            if overlay and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                head, base = os.path.split(rel)
                tar.addfile(_plain_info(os.path.join(head, ".wh." + base)), io.BytesIO())
                continue
            info = tar.gettarinfo(path, arcname=rel)
            info.mtime, info.uname, info.gname = 0, "", ""
            info.pax_headers = {}
            if os.geteuid() != 0:
                # Unprivileged, our own files stand for root's (what a user namespace maps).
                info.uid = 0 if info.uid == os.geteuid() else info.uid
                info.gid = 0 if info.gid == os.getegid() else info.gid
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            if overlay and stat.S_ISDIR(st.st_mode) and is_opaque(path):
                tar.addfile(_plain_info(os.path.join(rel, ".wh..wh..opq")), io.BytesIO())


def _plain_info(name):
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.size = 0o644, 0, 0
    return info


def layer_from_tree(store, root, overlay=False):
    """Store the files under root as one layer; its descriptor (digest, size, diff_id)."""
    raw = tempfile.TemporaryFile(dir=tmp_dir())
    with raw:
        _tar_tree(root, raw, overlay)
        raw.seek(0)
        diff = hashlib.sha256()
        packed = io.BytesIO()
        with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, compresslevel=6) as gz:
            for chunk in iter(lambda: raw.read(1 << 20), b""):
                diff.update(chunk)
                gz.write(chunk)
    data = packed.getvalue()
    digest = put_blob(store, data)
    return {"mediaType": MEDIA_LAYER, "digest": digest, "size": len(data),
            "diff_id": "sha256:" + diff.hexdigest()}


def _check_member(member, dest):
    """Refuse an entry that would write outside dest (untrusted tars: ADD sources, layers)."""
    name = member.name
    parts = Path(name).parts
    if name.startswith("/") or ".." in parts:
        raise LayerError(name, "path leaves the destination")
    parent = os.path.realpath(os.path.join(dest, os.path.dirname(name)))
    if parent != dest and not parent.startswith(dest + os.sep):
        raise LayerError(name, "a parent directory is a symlink leading out")
    if member.islnk():
        target = os.path.realpath(os.path.join(dest, member.linkname))
        if member.linkname.startswith("/") or not target.startswith(dest + os.sep):
            raise LayerError(name, f"hard link to {member.linkname} leaves the destination")
    if member.issym():
        target = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
        if member.linkname.startswith("/") or target.split(os.sep)[0] == "..":
            # Absolute or climbing symlinks are legal in images (they resolve inside the
            # container's root), but we never write through them: the parent check above
            # refuses any later entry below such a link.
            pass
    if (member.ischr() or member.isblk()) and os.geteuid() != 0:
        raise LayerError(name, "device node, and we are not root")


def unpack_tar(source, dest, whiteouts_for_overlay=False):
    """Extract a (gzip/bzip2/xz) tar into dest safely; returns dest."""
    dest = os.path.realpath(dest)
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(source, mode="r:*") as tar:
        for member in tar:
            _check_member(member, dest)
            base = os.path.basename(member.name)
            if whiteouts_for_overlay and base.startswith(".wh."):
                _overlay_whiteout(dest, member.name)
                continue
            if member.isdir() and os.path.isdir(os.path.join(dest, member.name)):
                os.chmod(os.path.join(dest, member.name), member.mode)
                continue
            target = os.path.join(dest, member.name)
            if os.path.lexists(target) and not os.path.isdir(target):
                os.unlink(target)
            tar.extract(member, dest, set_attrs=True, numeric_owner=os.geteuid() == 0)
    return Path(dest)


def _overlay_whiteout(dest, name):
    """OCI `.wh.x` becomes what overlayfs understands: a 0/0 char device (root) or, where we
    cannot make devices, the `.wh.` file itself, which the runtime's copy fallback applies."""
    directory, base = os.path.split(os.path.join(dest, name))
    os.makedirs(directory, exist_ok=True)
    if base == ".wh..wh..opq":
        try:
            os.setxattr(directory, "trusted.overlay.opaque", b"y")
            return
        except OSError:
            pass
    elif os.geteuid() == 0:
        os.mknod(os.path.join(directory, base[4:]), stat.S_IFCHR | 0o600, os.makedev(0, 0))
        return
    open(os.path.join(directory, base), "wb").close()


def layer_dir(store, layer):
    """The extracted, read-only tree of one layer (done once per diff_id, atomically)."""
    final = paths.subdir("images", "extracted") / layer["diff_id"].split(":")[1]
    if final.exists():
        return final
    work = Path(tempfile.mkdtemp(prefix=".extract-", dir=final.parent))
    try:
        unpack_tar(blob_path(store, layer["digest"]), work, whiteouts_for_overlay=True)
        os.chmod(work, 0o755)
        os.rename(work, final)
    except OSError:
        if not final.exists():
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def path_exists(store, layers, path):
    rel = path.strip("/")
    return any(os.path.lexists(layer_dir(store, layer) / rel) for layer in layers)


# ------------------------------------------------------------------ images

class BuiltImage:
    """An image as the build sees it: config, layer descriptors, and extracted layer trees.

    The runtime starts a container from any object with `.config` and `.layer_dirs()`, so a
    RUN step runs in an intermediate image that is never tagged nor listed.
    """

    def __init__(self, store, config, layers, tags=()):
        self.store, self.config, self.layers, self.tags = store, config, list(layers), list(tags)
        self.id = "sha256:" + hashlib.sha256(canonical(config)).hexdigest()
        self.short_id = self.id.split(":")[1][:12]

    def layer_dirs(self):
        return [layer_dir(self.store, layer) for layer in self.layers]

    def __repr__(self):
        return f"<Image {self.short_id} {' '.join(self.tags)}>".replace(" >", ">")


def _manifest(config_digest, config_size, layers):
    return {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{k: l[k] for k in ("mediaType", "digest", "size")} for l in layers]}


def save_image(store, config, layers, tag=None):
    """Store config and manifest blobs; list the image in index.json (tagged if tag given)."""
    config_bytes = canonical(config)
    config_digest = put_blob(store, config_bytes)
    manifest = canonical(_manifest(config_digest, len(config_bytes), layers))
    manifest_digest = put_blob(store, manifest)
    descriptor = {"mediaType": MEDIA_MANIFEST, "digest": manifest_digest, "size": len(manifest)}
    _index_add(store, descriptor, full_tag(tag) if tag else None)
    return BuiltImage(store, config, layers, tags=[full_tag(tag)] if tag else [])


def tag(store, image, ref):
    return save_image(store, image.config, image.layers, tag=ref)


REF_NAME = "org.opencontainers.image.ref.name"


def _index_add(store, descriptor, ref):
    import fcntl

    root = _root(store)
    with open(root / "index.json.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # read-modify-write of index.json, one writer at once
        try:
            index = json.loads((root / "index.json").read_text())
        except FileNotFoundError:
            index = {"schemaVersion": 2, "manifests": []}
        manifests = index["manifests"]
        if ref:
            manifests = [m for m in manifests if m.get("annotations", {}).get(REF_NAME) != ref]
            entry = dict(descriptor, annotations={REF_NAME: ref})
        else:
            entry = dict(descriptor)
            if any(m["digest"] == descriptor["digest"] for m in manifests):
                entry = None
        if entry:
            manifests.append(entry)
        index["manifests"] = manifests
        _atomic_write(root / "index.json", json.dumps(index, indent=1).encode())


def _read_json_blob(store, digest):
    data = blob_path(store, digest).read_bytes()
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        from ctrkernel.errors import DigestMismatch
        raise DigestMismatch(f"blob {digest[:19]}", digest,
                             "sha256:" + hashlib.sha256(data).hexdigest())
    return json.loads(data)


def load_base(store, ref):
    """The image named ref (a tag or an id), with its layer descriptors, as a BuiltImage."""
    from ctrkernel.errors import ImageNotFound

    wanted_id, theirs = None, None
    try:
        from ctrkernel.image import get_image
        theirs = get_image(ref)  # creates builtin images (busybox...) on first use
        wanted_id = theirs.id
    except ImportError:
        pass
    root = _root(store)
    try:
        index = json.loads((root / "index.json").read_text())
    except FileNotFoundError:
        index = {"manifests": []}
    name = full_tag(ref) if ":" not in ref or not ref.startswith("sha256:") else None
    for entry in index["manifests"]:
        manifest = _read_json_blob(store, entry["digest"])
        config_digest = manifest["config"]["digest"]
        names = [entry.get("annotations", {}).get(REF_NAME)]
        if (wanted_id and config_digest == wanted_id) or (not wanted_id and (
                ref in names or name in names or config_digest.startswith(ref)
                or config_digest.split(":")[1].startswith(ref))):
            config = _read_json_blob(store, config_digest)
            layers = [dict(l, diff_id=d) for l, d in
                      zip(manifest["layers"], config["rootfs"]["diff_ids"])]
            return BuiltImage(store, config, layers, tags=[n for n in names if n])
    manifest = getattr(theirs, "manifest", None)
    manifest = manifest() if callable(manifest) else manifest
    if isinstance(manifest, dict) and "layers" in manifest:  # listed elsewhere than index.json
        diff_ids = theirs.config["rootfs"]["diff_ids"]
        return BuiltImage(store, theirs.config, [dict(l, diff_id=d) for l, d in
                                                 zip(manifest["layers"], diff_ids)],
                          tags=list(getattr(theirs, "tags", None) or []))
    raise ImageNotFound(ref)


# ------------------------------------------------------------------ a container's changes

def layer_from_container(store, container):
    """Store what a container wrote as a layer; None when it wrote nothing."""
    kind = container.isolation["rootfs"]
    if kind in ("overlayfs", "fuse-overlayfs"):
        upper = Path(container.upper_dir)
        written = [e for e in os.listdir(upper)
                   if not (e in MOUNT_POINTS and (upper / e).is_dir() and not os.listdir(upper / e))]
        return layer_from_tree(store, upper, overlay=True) if written else None
    # A copied root (no overlay here): compare it with the image's layers, file by file.
    from ctrkernel.runtime.rootfs import copy_layers

    work = Path(tempfile.mkdtemp(prefix="ctrkernel-commit-", dir=tmp_dir()))
    try:
        union, stage = work / "union", work / "stage"
        copy_layers(container.attrs["Layers"], union)
        stage.mkdir()
        if not _stage_changes(union, Path(container.dir) / "rootfs", stage):
            return None
        return layer_from_tree(store, stage)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stage_changes(before, after, stage):
    """Copy into stage what differs from before to after; deletions as `.wh.` files."""
    import filecmp

    changed = False
    for dirpath, dirnames, filenames in os.walk(after):
        rel_dir = os.path.relpath(dirpath, after)
        for name in sorted(dirnames + filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in MOUNT_POINTS:
                continue
            new, old = after / rel, before / rel
            st = os.lstat(new)
            same = False
            if os.path.lexists(old):
                so = os.lstat(old)
                same = (stat.S_IFMT(so.st_mode) == stat.S_IFMT(st.st_mode)
                        and so.st_mode == st.st_mode)
                if same and stat.S_ISLNK(st.st_mode):
                    same = os.readlink(old) == os.readlink(new)
                elif same and stat.S_ISREG(st.st_mode):
                    same = so.st_size == st.st_size and filecmp.cmp(old, new, shallow=False)
            if same:
                continue
            changed = True
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISDIR(st.st_mode):
                target.mkdir(exist_ok=True)
                os.chmod(target, stat.S_IMODE(st.st_mode))
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(new), target)
            elif stat.S_ISREG(st.st_mode):
                shutil.copy2(new, target)
        # Deleted here: present before, gone after. One whiteout hides a whole deleted tree.
        if os.path.isdir(before / rel_dir):
            for name in sorted(os.listdir(before / rel_dir)):
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if rel not in MOUNT_POINTS and not os.path.lexists(after / rel):
                    changed = True
                    (stage / rel_dir).mkdir(parents=True, exist_ok=True)
                    (stage / rel_dir / (".wh." + name)).touch()
    return changed


class RunResult:
    def __init__(self, status, output, layer):
        self.status, self.output, self.layer = status, output, layer


def run_and_commit(store, image, argv, env):
    """Run argv in a container of image (no network, as a build step) and commit what it wrote.

    A generator: it yields Docker's " ---> Running in <id>" line, then the command's output line
    by line while it runs (so a long RUN shows progress), then returns a RunResult.
    """
    from ctrkernel.runtime import create

    container = create(image, argv, env=env, network="none")
    try:
        yield f" ---> Running in {container.id[:12]}"
        container.start()
        output, pending = [], b""
        for chunk in container.logs(stdout=True, stderr=True, follow=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                output.append(text)
                yield text
        if pending:
            output.append(pending.decode(errors="replace"))
            yield output[-1]
        status = container.wait()["StatusCode"]
        layer = layer_from_container(store, container) if status == 0 else None
        return RunResult(status, "\n".join(output), layer)
    finally:
        container.remove(force=True)
