"""The image store: an OCI image layout on disk, content addressed, safe for concurrent writers.

    <home>/images/oci/oci-layout            {"imageLayoutVersion": "1.0.0"}
    <home>/images/oci/index.json            one descriptor per (manifest, tag); the tag is the
                                            org.opencontainers.image.ref.name annotation
    <home>/images/oci/blobs/sha256/<hex>    layers (tar+gzip), configs, manifests
    <home>/images/layers/<diff_id hex>/     each layer extracted once, shared by every image
    <home>/images/parents/<manifest hex>    the image a build step or commit started from
    <home>/images/tmp/                      blobs and extractions being written

The `oci/` directory is a plain OCI layout, so `skopeo inspect oci:<home>/images/oci:busybox:latest`
reads it directly.

Why it stays consistent:
- a blob is written to tmp/ and renamed to its digest only once its content hashes to that
  digest, so a blob path never holds partial or wrong bytes (rename is atomic);
- index.json is rewritten as a whole (temp file + rename) while holding an exclusive flock on
  `index.lock`; an image becomes visible only when that rewrite lands, after all its blobs, so an
  interrupted build or load leaves no partial image, only unreferenced blobs;
- writers hold `gc.lock` shared while they add blobs; gc takes it exclusively, so it never
  removes the blobs of an image that is being written.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ctrkernel.errors import Conflict, DigestMismatch, ImageNotFound, NotFound
from ctrkernel.image import refs

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
INTERMEDIATE = "io.ctrkernel.image.intermediate"
DOCKER_MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MT_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES = (MT_MANIFEST, DOCKER_MT_MANIFEST)
CHUNK = 1 << 20
# A temp file or extraction in tmp/ older than this belongs to no live writer (gc removes it).
STALE_TMP = 3600


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    """Sorted keys, no spaces: the same object always gives the same bytes, hence digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _hex(digest):
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not refs.HEX.match(hexpart):
        raise DigestMismatch("descriptor", "sha256:<64 hex digits>", digest)
    return hexpart


class BlobWriter:
    """Write a blob of unknown digest: bytes go to a temp file and are hashed on the way."""

    def __init__(self, store):
        self.store = store
        fd, self.tmp_path = tempfile.mkstemp(dir=store.tmp, prefix="blob-")
        self.file = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.hash.update(data)
        self.size += len(data)
        return self.file.write(data)

    @property
    def digest(self):
        return "sha256:" + self.hash.hexdigest()

    def commit(self, expected=None):
        """Move the temp file to blobs/sha256/<digest>; returns the digest."""
        self.file.close()
        digest = self.digest
        if expected and expected != digest:
            os.unlink(self.tmp_path)
            raise DigestMismatch("blob", expected, digest)
        final = self.store.blob_path(digest)
        if final.exists():
            os.unlink(self.tmp_path)       # same content already stored: content addressing
        else:
            os.chmod(self.tmp_path, 0o644)
            os.rename(self.tmp_path, final)
        return digest

    def abort(self):
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)


class Store:
    """One OCI image layout plus the extracted-layer cache. See the module docstring."""

    def __init__(self, root):
        self.root = Path(root)
        self.layout = self.root / "oci"
        self.blobs = self.layout / "blobs" / "sha256"
        self.tmp = self.root / "tmp"
        self.layers = self.root / "layers"
        self.parents = self.root / "parents"
        for d in (self.blobs, self.tmp, self.layers, self.parents):
            d.mkdir(parents=True, exist_ok=True)
        if not (self.layout / "oci-layout").exists():
            self._write_atomic(self.layout / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        if not (self.layout / "index.json").exists():
            with self.locked():
                if not (self.layout / "index.json").exists():
                    self._write_index({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []})

    def __repr__(self):
        return f"Store({str(self.root)!r})"

    # ---- blobs ---------------------------------------------------------------------------
    def blob_path(self, digest) -> Path:
        return self.blobs / _hex(digest)

    def has_blob(self, digest) -> bool:
        return self.blob_path(digest).exists()

    def blob_writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put_bytes(self, data: bytes, media_type: str) -> dict:
        writer = self.blob_writer()
        try:
            writer.write(data)
            digest = writer.commit()
        except BaseException:
            writer.abort()
            raise
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def put_json(self, obj, media_type) -> dict:
        return self.put_bytes(canonical_json(obj), media_type)

    def read_blob(self, digest) -> bytes:
        """The blob's bytes, verified against its digest (raises DigestMismatch, NotFound)."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from the store (run: ctrkernel image fsck)") from None
        actual = sha256_digest(data)
        if actual != digest:
            raise DigestMismatch(f"blob {digest[:19]}", digest, actual)
        return data

    def read_json(self, digest):
        return json.loads(self.read_blob(digest))

    def verify_blob(self, digest, size=None):
        """None if the blob is present and hashes to its digest, else a problem string."""
        path = self.blob_path(digest)
        h, n = hashlib.sha256(), 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    n += len(chunk)
        except FileNotFoundError:
            return "missing"
        if "sha256:" + h.hexdigest() != digest:
            return f"corrupt (content hashes to sha256:{h.hexdigest()})"
        if size is not None and n != size:
            return f"wrong size ({n} bytes, descriptor says {size})"
        return None

    # ---- locking and the index ---------------------------------------------------------------
    @contextlib.contextmanager
    def _flock(self, name, mode):
        fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def locked(self):
        """Exclusive lock for read-modify-write of index.json."""
        return self._flock("index.lock", fcntl.LOCK_EX)

    def writing(self):
        """Held (shared) while blobs of a new image are written, so gc cannot race them."""
        return self._flock("gc.lock", fcntl.LOCK_SH)

    def _write_atomic(self, path, data: bytes):
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="meta-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)

    def _write_index(self, index):
        self._write_atomic(self.layout / "index.json", json.dumps(index, indent=2).encode())

    def index(self) -> dict:
        return json.loads((self.layout / "index.json").read_text())

    def _entries(self):
        return [m for m in self.index()["manifests"] if m.get("mediaType") in MANIFEST_TYPES]

    def register(self, manifest_desc, tags=(), intermediate=None):
        """Make a stored manifest visible, with its tags (moved from any other image).
        intermediate: True marks an untagged build step, False clears that mark, None keeps
        whatever the manifest's entry says already."""
        tags = [refs.normalize(t) for t in tags]
        with self.locked():
            index = self.index()
            entries = index["manifests"]
            digest = manifest_desc["digest"]
            for tag in tags:
                for e in entries:
                    if e.get("annotations", {}).get(REF_NAME) == tag and e["digest"] != digest:
                        # the tag moves; the old image stays, untagged, as Docker's <none>
                        e["annotations"].pop(REF_NAME)
            base = {k: manifest_desc[k] for k in ("mediaType", "digest", "size")}
            keep = [e for e in entries if e["digest"] != digest]
            mine = [e for e in entries if e["digest"] == digest]
            have = {e.get("annotations", {}).get(REF_NAME) for e in mine} - {None}
            new = [dict(base, annotations={REF_NAME: t}) for t in sorted(have | set(tags))]
            if not new:
                flagged = any(e.get("annotations", {}).get(INTERMEDIATE) for e in mine)
                if intermediate is None:
                    intermediate = flagged
                note = {INTERMEDIATE: "true"} if intermediate and not have else {}
                new = [dict(base, annotations=note) if note else base]
            index["manifests"] = self._dedupe_untagged(keep) + new
            self._write_index(index)

    @staticmethod
    def _dedupe_untagged(entries):
        """One untagged entry per manifest, and none for a manifest that also has a tag."""
        tagged = {e["digest"] for e in entries if e.get("annotations", {}).get(REF_NAME)}
        out, seen = [], set()
        for e in entries:
            if not e.get("annotations", {}).get(REF_NAME):
                if e["digest"] in tagged or e["digest"] in seen:
                    continue
                seen.add(e["digest"])
            out.append(e)
        return out

    # ---- images ------------------------------------------------------------------------------
    def images(self, all=False):
        """Every image (newest first); untagged intermediate build steps only with all=True."""
        from ctrkernel.image.image import Image
        by_digest = {}
        for e in self._entries():
            by_digest.setdefault(e["digest"], []).append(e)
        found = []
        for digest, entries in by_digest.items():
            tags = sorted(e["annotations"][REF_NAME] for e in entries
                          if e.get("annotations", {}).get(REF_NAME))
            intermediate = not tags and any(e.get("annotations", {}).get(INTERMEDIATE)
                                            for e in entries)
            if intermediate and not all:
                continue
            found.append(Image(self, digest, tags))
        found.sort(key=lambda i: (i.created, i.id), reverse=True)
        return found

    def get(self, reference):
        """The image a reference names (tag, image id or id prefix, name@manifest-digest)."""
        from ctrkernel.image.image import Image
        entries = self._entries()
        if "@" in reference:
            _, _, digest = reference.partition("@")
            for e in entries:
                if e["digest"] == digest:
                    return Image(self, digest, self._tags_of(entries, digest))
            raise ImageNotFound(reference)
        if refs.looks_like_id(reference):
            want = reference if reference.startswith("sha256:") else "sha256:" + reference
            hits = {img.manifest_digest: img for img in self.images(all=True)
                    if img.id.startswith(want) or img.manifest_digest.startswith(want)}
            if len(hits) == 1:
                return next(iter(hits.values()))
            if len(hits) > 1:
                raise Conflict(f"image id prefix {reference!r} is ambiguous")
        try:
            name = refs.normalize(reference)
        except Exception:
            raise ImageNotFound(reference) from None
        for e in entries:
            if e.get("annotations", {}).get(REF_NAME) == name:
                return Image(self, e["digest"], self._tags_of(entries, e["digest"]))
        raise ImageNotFound(reference)

    @staticmethod
    def _tags_of(entries, digest):
        return sorted(e["annotations"][REF_NAME] for e in entries
                      if e["digest"] == digest and e.get("annotations", {}).get(REF_NAME))

    def tag(self, reference, new_tag):
        """`docker tag SOURCE TARGET`."""
        img = self.get(reference)
        self.register({"mediaType": img.manifest_media_type, "digest": img.manifest_digest,
                       "size": img.manifest_size}, tags=[new_tag])
        return self.get(new_tag)

    def untag(self, reference):
        """Remove one tag but keep the image (untagged, Docker's <none>): what `rmi -f` does to
        an image a container still uses. Returns Docker's log line."""
        img = self.get(reference)
        name = refs.normalize(reference)
        if name not in img.tags:
            raise ImageNotFound(reference)
        with self.locked():
            index = self.index()
            for e in index["manifests"]:
                if e["digest"] == img.manifest_digest and \
                        e.get("annotations", {}).get(REF_NAME) == name:
                    e["annotations"].pop(REF_NAME)
            index["manifests"] = self._dedupe_untagged(index["manifests"])
            self._write_index(index)
        return [{"Untagged": name}]

    def remove(self, reference, force=False, prune=True, keep_parents=False):
        """`docker rmi`: untag; delete the image when its last tag goes. Returns Docker's log
        lines ({"Untagged": ...} / {"Deleted": ...}). keep_parents: leave the intermediate
        build steps it was made from (`rmi --no-prune`)."""
        img = self.get(reference)
        log = []
        by_id = reference not in img.tags and refs.looks_like_id(reference)
        name = None if by_id else refs.normalize(reference)
        if by_id and len(img.tags) > 1 and not force:
            raise Conflict(f"unable to delete {img.short_id} (must be forced): image is "
                           f"referenced in multiple repositories ({', '.join(img.tags)})")
        with self.locked():
            index = self.index()
            remaining = []
            for e in index["manifests"]:
                tag = e.get("annotations", {}).get(REF_NAME)
                if e["digest"] == img.manifest_digest and (by_id or tag == name):
                    if tag:
                        log.append({"Untagged": tag})
                    continue
                remaining.append(e)
            gone = not any(e["digest"] == img.manifest_digest for e in remaining)
            index["manifests"] = remaining
            self._write_index(index)
            if gone:
                log.append({"Deleted": img.id})
                if keep_parents:
                    self._orphan_parent(index, img.manifest_digest)
                else:
                    log += self._remove_unused_parents(index, img.manifest_digest)
        if gone and prune:
            self.gc()
        return log

    # ---- parents: the image a build step or a commit started from ----------------------------
    # Kept beside the layout, as Docker keeps them beside its image store: OCI has no field
    # for it. They let `rmi` remove a build's intermediate images with the image they made.
    def set_parent(self, manifest_digest, parent_digest):
        path = self.parents / _hex(manifest_digest)
        if parent_digest and not path.exists():
            self._write_atomic(path, parent_digest.encode())

    def parent_of(self, manifest_digest):
        try:
            return (self.parents / _hex(manifest_digest)).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _orphan_parent(self, index, digest):
        """With the index lock held and `digest` just removed, its parent kept (`rmi
        --no-prune`): a step no other image starts from any more is no longer hidden as an
        intermediate image, so `images` lists it as <none> and `image prune` can remove it,
        as Docker treats a parent left without children."""
        parent = self.parent_of(digest)
        (self.parents / _hex(digest)).unlink(missing_ok=True)
        if not parent or any(self.parent_of(e["digest"]) == parent for e in index["manifests"]):
            return
        for e in index["manifests"]:
            if e["digest"] == parent:
                e.get("annotations", {}).pop(INTERMEDIATE, None)
                if "annotations" in e and not e["annotations"]:
                    del e["annotations"]
        self._write_index(index)

    def _remove_unused_parents(self, index, digest):
        """With the index lock held and `digest` just removed: remove its parent too when that is
        an untagged intermediate build step no other image starts from, and so on upwards (what
        `docker rmi` does with a build's intermediate images). Returns the Deleted lines."""
        log = []
        parent = self.parent_of(digest)
        (self.parents / _hex(digest)).unlink(missing_ok=True)
        while parent:
            mine = [e for e in index["manifests"] if e["digest"] == parent]
            if not mine or any(e.get("annotations", {}).get(REF_NAME) for e in mine) or \
                    not any(e.get("annotations", {}).get(INTERMEDIATE) for e in mine):
                break               # tagged, an image of its own (<none>), or gone already
            if any(self.parent_of(e["digest"]) == parent for e in index["manifests"]):
                break               # another image (another build's next step) starts from it
            index["manifests"] = [e for e in index["manifests"] if e["digest"] != parent]
            self._write_index(index)
            try:
                log.append({"Deleted": self.read_json(parent)["config"]["digest"]})
            except (NotFound, DigestMismatch, KeyError):
                log.append({"Deleted": parent})
            grandparent = self.parent_of(parent)
            (self.parents / _hex(parent)).unlink(missing_ok=True)
            parent = grandparent
        return log

    # ---- extracted layers -------------------------------------------------------------------
    def layer_dir(self, descriptor, diff_id) -> Path:
        """The layer extracted under layers/<diff_id hex>, extracting it (verified, atomically)
        on first use."""
        final = self.layers / _hex(diff_id)
        if final.exists():
            return final
        from ctrkernel.image.image import extract_into_cache
        return extract_into_cache(self, descriptor, diff_id)

    def record_tar_size(self, diff_id, size):
        path = self.layers / f"{_hex(diff_id)}.size"
        if not path.exists():
            self._write_atomic(path, str(int(size)).encode())

    def layer_tar_size(self, diff_id, descriptor=None):
        """Uncompressed bytes of a layer (recorded when made or extracted; else measured)."""
        path = self.layers / f"{_hex(diff_id)}.size"
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            pass
        if descriptor is None:
            return 0
        from ctrkernel.image.extract import open_layer_stream
        try:
            with open(self.blob_path(descriptor["digest"]), "rb") as f:
                stream, _, inner = open_layer_stream(f)
                inner.drain()
        except FileNotFoundError:
            return 0
        self.record_tar_size(diff_id, inner.size)
        return inner.size

    # ---- garbage collection and checks ------------------------------------------------------
    def _reachable(self):
        """Blob digests reachable from index.json, and the diff_ids of every image."""
        blobs, diff_ids = set(), set()
        for e in self._entries():
            blobs.add(e["digest"])
            try:
                manifest = self.read_json(e["digest"])
            except Exception:
                continue
            blobs.add(manifest["config"]["digest"])
            blobs.update(layer["digest"] for layer in manifest.get("layers", []))
            try:
                config = self.read_json(manifest["config"]["digest"])
                diff_ids.update(config.get("rootfs", {}).get("diff_ids", []))
            except Exception:
                pass
        return blobs, diff_ids

    def gc(self, layer_dirs=True):
        """Remove blobs (and extracted layers) no image refers to; returns bytes freed.
        Extracted layers that appear in a mount (a running container's overlay) are kept."""
        freed = 0
        with self._flock("gc.lock", fcntl.LOCK_EX), self.locked():
            blobs, diff_ids = self._reachable()
            keep = {_hex(d) for d in blobs}
            for path in self.blobs.iterdir():
                if path.name not in keep:
                    freed += path.stat().st_size
                    path.unlink()
            for path in self.parents.iterdir():      # links of manifests no longer stored
                if path.name not in keep:
                    path.unlink()
            if layer_dirs:
                mounts = Path("/proc/self/mounts").read_text()
                wanted = {_hex(d) for d in diff_ids}
                for path in self.layers.iterdir():
                    if path.name.partition(".")[0] not in wanted and str(path) not in mounts:
                        _rmtree(path) if path.is_dir() else path.unlink()
            cutoff = time.time() - STALE_TMP    # temp files of interrupted writers
            for path in self.tmp.iterdir():
                with contextlib.suppress(OSError):
                    if path.lstat().st_mtime < cutoff:
                        _rmtree(path) if path.is_dir() else path.unlink()
        return freed

    def fsck(self):
        """Check every blob reachable from index.json. Returns a list of problems, each a dict
        {"digest", "what", "problem"}; an empty list means the store is sound."""
        problems = []

        def check(digest, what, size=None):
            problem = self.verify_blob(digest, size)
            if problem:
                problems.append({"digest": digest, "what": what, "problem": problem})
            return problem is None

        for e in self._entries():
            label = e.get("annotations", {}).get(REF_NAME) or e["digest"][:19]
            if not check(e["digest"], f"manifest of {label}", e.get("size")):
                continue
            manifest = self.read_json(e["digest"])
            check(manifest["config"]["digest"], f"config of {label}", manifest["config"].get("size"))
            for n, layer in enumerate(manifest.get("layers", [])):
                check(layer["digest"], f"layer {n} of {label}", layer.get("size"))
        problems += self._check_extracted()
        unique = {(p["digest"], p["problem"]): p for p in problems}
        return list(unique.values())

    def _check_extracted(self):
        """Problems of the extracted-layer cache (layers/ and the extractions in tmp/): a tree
        no stored image has as a layer, or whose layer blob is gone (a container could still
        mount it, but nothing could extract it again), and partial extractions an interrupted
        process left in tmp/ (older than a live one could be). Only reported: `image prune`
        and gc remove them."""
        blob_of = {}                           # diff_id hex -> its layer blob's digest
        for e in self._entries():
            try:
                manifest = self.read_json(e["digest"])
                config = self.read_json(manifest["config"]["digest"])
            except Exception:
                continue                       # reported above as a missing/corrupt blob
            for diff_id, layer in zip(config.get("rootfs", {}).get("diff_ids", []),
                                      manifest.get("layers", [])):
                blob_of[diff_id.partition(":")[2]] = layer["digest"]
        problems = []
        for path in sorted(self.layers.iterdir()):
            name = path.name.partition(".")[0]
            if not path.is_dir() or path.name.endswith(".size"):
                continue
            if name not in blob_of:
                problem = "extracted, but no image in the store has this layer"
            elif not self.has_blob(blob_of[name]):
                problem = f"extracted, but its layer blob {blob_of[name]} is missing"
            else:
                continue
            problems.append({"digest": "sha256:" + name, "what": f"extracted layer {path}",
                             "problem": problem})
        cutoff = time.time() - STALE_TMP
        for path in sorted(self.tmp.glob("layer-*")):
            with contextlib.suppress(OSError):
                if path.is_dir() and path.lstat().st_mtime < cutoff:
                    problems.append({"digest": "", "what": f"extraction {path}",
                                     "problem": "partial extraction left by an interrupted "
                                                "process"})
        return problems


def _rmtree(path):
    """rmtree that also removes read-only trees (extracted layers are made read-only)."""
    def onerror(func, p, exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700) if os.path.isdir(p) and not os.path.islink(p) else None
        func(p)
    shutil.rmtree(path, onerror=onerror)
