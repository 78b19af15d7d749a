"""Writing images as a `docker save` archive or an OCI archive (see the package docstring)."""
import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

from ctrkernel.errors import CtrkernelError, DigestMismatch, InvalidArgument, NotFound
from ctrkernel.image import refs
from ctrkernel.image.archive.common import CHUNK, CONTAINERD_NAME, FORMATS
from ctrkernel.image.store import MT_INDEX, REF_NAME, _hex



# ---- save ------------------------------------------------------------------------------------

def save(images, output, format="docker", store=None):
    """Write `images` (references or Image objects) as one archive to `output` (a path, written
    to a temporary file and renamed on success, or a binary file object such as stdout).
    format: "docker" (docker save) or "oci" (OCI image layout). Returns the saved Images.

    Tags follow `docker save`: a reference by name:tag saves that tag, an Image object all its
    tags, an image id none."""
    from ctrkernel.image import default_store
    store = store or default_store()
    fmt = FORMATS.get(format)
    if fmt is None:
        raise InvalidArgument(f"unknown archive format {format!r} "
                              f"(use one of: {', '.join(sorted(FORMATS))})")
    chosen = _choose(images, store)
    writer = _write_oci if fmt == "oci" else _write_docker
    if isinstance(output, (str, os.PathLike)):
        path = Path(output)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                writer(chosen, f, store)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.rename(tmp, path)      # a failed save leaves no truncated archive under the name
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    else:
        writer(chosen, output, store)
    return [img for img, _ in chosen]


def _choose(images, store):
    """[(Image, [tags to save]), ...] in the order given, each image once."""
    from ctrkernel.image import Image, get_image
    if isinstance(images, (str, Image)):
        images = [images]
    chosen = {}
    for ref in images:
        img = get_image(ref, store=store)
        if isinstance(ref, Image):
            tags = list(img.tags)
        elif refs.looks_like_id(ref) and ref not in img.tags:
            tags = []
        else:
            tags = [refs.normalize(ref)]
        entry = chosen.setdefault(img.manifest_digest, (img, []))
        entry[1].extend(t for t in tags if t not in entry[1])
    if not chosen:
        raise InvalidArgument("no image to save")
    return list(chosen.values())


def _info(name, size=0, type_=tarfile.REGTYPE, mode=0o644):
    # reproducible members: saving the same images twice gives the same bytes
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime = size, type_, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar, name, data):
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


class _CheckedBlob:
    """Reads a stored blob for the archive, hashing it: a corrupt store must not be exported
    as if it were sound (the archive's reader would reject it, or worse, trust it)."""

    def __init__(self, f):
        self.f, self.hash, self.size = f, hashlib.sha256(), 0

    def read(self, n=-1):
        data = self.f.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def check(self, desc):
        while self.read(CHUNK):
            pass
        digest = "sha256:" + self.hash.hexdigest()
        if digest != desc["digest"] or self.size != desc.get("size", self.size):
            raise DigestMismatch(f"stored blob {desc['digest'][:19]} (run: ctrkernel image fsck)",
                                 desc["digest"], digest)


def _add_blob(tar, store, desc):
    name = f"blobs/sha256/{_hex(desc['digest'])}"
    try:
        f = open(store.blob_path(desc["digest"]), "rb")
    except FileNotFoundError:
        raise NotFound(f"blob {desc['digest']} is missing from the store (run: ctrkernel image fsck)") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        reader = _CheckedBlob(f)
        tar.addfile(_info(name, size), reader)
        reader.check(desc)


def _write_oci(chosen, out, store):
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        manifests, written = [], set()
        for img, tags in chosen:
            desc = {"mediaType": img.manifest_media_type, "digest": img.manifest_digest,
                    "size": img.manifest_size}
            # the ref name is the full name:tag, as podman writes it and as this store keeps
            # it, so `skopeo ... oci-archive:file:busybox:latest` and umoci find the image
            manifests += [dict(desc, annotations={REF_NAME: t, CONTAINERD_NAME: t})
                          for t in tags] or [desc]
        _add_bytes(tar, "index.json", json.dumps(
            {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests}).encode())
        tar.addfile(_info("blobs/", type_=tarfile.DIRTYPE, mode=0o755))
        tar.addfile(_info("blobs/sha256/", type_=tarfile.DIRTYPE, mode=0o755))
        for img, _ in chosen:
            descs = [{"digest": img.manifest_digest, "size": img.manifest_size},
                     img.manifest["config"]] + img.layers
            for desc in descs:
                if desc["digest"] not in written:
                    written.add(desc["digest"])
                    _add_blob(tar, store, desc)


class _TarStream:
    """A stored layer blob read as its uncompressed tar, with both digests checked at the end."""

    def __init__(self, store, desc, diff_id):
        from ctrkernel.image.extract import open_layer_stream
        self.desc, self.diff_id = desc, diff_id
        try:
            self.file = open(store.blob_path(desc["digest"]), "rb")
        except FileNotFoundError:
            raise NotFound(f"layer {desc['digest']} is missing from the store (run: ctrkernel image fsck)") \
                from None
        self.stream, self.outer, self.inner = open_layer_stream(self.file)

    def read(self, n=-1):
        return self.stream.read(n)

    def check(self, tar_size):
        self.inner.drain()
        self.outer.drain()
        self.file.close()
        if self.outer.digest != self.desc["digest"]:
            raise DigestMismatch("stored layer (run: ctrkernel image fsck)", self.desc["digest"],
                                 self.outer.digest)
        if self.inner.digest != self.diff_id or self.inner.size != tar_size:
            raise DigestMismatch("stored layer, uncompressed (run: ctrkernel image fsck)", self.diff_id,
                                 self.inner.digest)


def _write_docker(chosen, out, store):
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        entries, repositories, written = [], {}, set()
        for img, tags in chosen:
            if len(img.layers) != len(img.diff_ids):
                raise CtrkernelError(f"image {img.short_id}: {len(img.layers)} layers but "
                                     f"{len(img.diff_ids)} diff_ids in its config")
            config_name = f"{_hex(img.id)}.json"
            if config_name not in written:
                written.add(config_name)
                _add_bytes(tar, config_name, store.read_blob(img.id))
            names = []
            for desc, diff_id in zip(img.layers, img.diff_ids):
                name = f"{_hex(diff_id)}.tar"
                names.append(name)
                if name in written:
                    continue
                written.add(name)
                # docker archives carry uncompressed layers: the tar's digest is the diff_id
                tar_size = store.layer_tar_size(diff_id, desc)
                stream = _TarStream(store, desc, diff_id)
                tar.addfile(_info(name, tar_size), stream)
                stream.check(tar_size)
            entries.append({"Config": config_name, "RepoTags": tags or None, "Layers": names})
            for tag in tags:
                name, tagname = refs.split(tag)
                repositories.setdefault(name, {})[tagname] = _hex(img.diff_ids[-1]) \
                    if img.diff_ids else _hex(img.id)
        _add_bytes(tar, "manifest.json", json.dumps(entries).encode())
        _add_bytes(tar, "repositories", json.dumps(repositories).encode())


# ---- load: staging the archive's members ----------------------------------------------------
