"""Loading untrusted `docker save` and OCI archives: stage, verify, then register (see the
package docstring)."""
import hashlib
import json
import os
import posixpath
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ctrkernel.errors import ArchiveError, DigestMismatch, InvalidArgument, NotFound
from ctrkernel.image import refs
from ctrkernel.image.archive.common import (CHUNK, CONTAINERD_NAME, INDEX_TYPES, JSON_LIMIT,
                                            LAYER_TYPES, MAX_LINK_HOPS)
from ctrkernel.image.store import (MANIFEST_TYPES, MT_CONFIG, MT_LAYER_GZIP, MT_MANIFEST,
                                   REF_NAME, _hex, canonical_json)



@dataclass
class _Member:
    path: Path        # where the staged bytes are (a name we chose, never the member's)
    digest: str
    size: int


@dataclass
class _Members:
    """The archive's regular files by normalized name, and its links (name -> target name)."""
    files: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)

    def get(self, name):
        for _ in range(MAX_LINK_HOPS):
            if name in self.files:
                return self.files[name]
            if name not in self.links:
                return None
            name = self.links[name]
        raise ArchiveError(name, "too many levels of links")

    def need(self, name, what):
        member = self.get(_member_name(name))
        if member is None:
            raise ArchiveError(name, f"{what} is missing from the archive")
        return member

    def json(self, name, what):
        member = self.need(name, what)
        return member, _parse_json(member, name, what)

    def blob(self, desc, what):
        """The staged member for an OCI descriptor, verified against its digest and size."""
        digest = _descriptor_digest(desc, what)
        member = self.get(f"blobs/sha256/{_hex(digest)}")
        if member is None:
            raise ArchiveError(digest, f"{what} named by the archive is missing from it")
        if member.digest != digest:
            raise DigestMismatch(what, digest, member.digest)
        if "size" in desc and desc["size"] != member.size:
            raise ArchiveError(digest, f"{what} is {member.size} bytes, its descriptor says "
                                       f"{desc['size']}")
        return member


def _parse_json(member, name, what):
    if member.size > JSON_LIMIT:
        raise ArchiveError(name, f"{what} is {member.size} bytes, too large for JSON")
    try:
        return json.loads(member.path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise ArchiveError(name, f"{what} is not valid JSON ({e})") from None


def _descriptor_digest(desc, what):
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        raise ArchiveError(str(desc)[:80], f"{what}: malformed descriptor")
    digest = desc["digest"]
    if not digest.startswith("sha256:"):
        raise ArchiveError(digest, f"{what}: only sha256 digests are supported")
    try:
        _hex(digest)
    except DigestMismatch:
        raise ArchiveError(digest, f"{what}: malformed digest") from None
    return digest


def _member_name(raw):
    """The normalized name of an archive member; refuses names that could escape a directory
    (we never use them as paths, but a tool unpacking the same archive might)."""
    if "\0" in raw:
        raise ArchiveError(raw, "NUL in name")
    if raw.startswith("/"):
        raise ArchiveError(raw, "absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(raw, "path contains '..'")
    return "/".join(parts)


def _link_target(name, linkname):
    """A symlink's target as a member name, refused if it leaves the archive."""
    if linkname.startswith("/"):
        raise ArchiveError(name, f"symlink to absolute path {linkname!r}")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), linkname))
    if joined == ".." or joined.startswith("../") or joined.startswith("/"):
        raise ArchiveError(name, f"symlink to {linkname!r} points outside the archive")
    return _member_name(joined)


def _open_source(source):
    if isinstance(source, (str, os.PathLike)):
        try:
            return open(source, "rb"), True
        except FileNotFoundError:
            raise NotFound(f"open {source}: no such file") from None
        except IsADirectoryError:
            raise InvalidArgument(f"{source} is a directory, not an image archive") from None
    return source, False


def _stage(source, staging):
    """Copy every regular member to staging/m<N>, hashing it; record links. Directory entries
    carry nothing we need; any other member type is refused."""
    members = _Members()
    seen = set()
    f, close = _open_source(source)
    try:
        try:
            # "r|*": a stream (stdin works), optionally gzip-compressed as `docker load` accepts
            with tarfile.open(fileobj=f, mode="r|*") as tar:
                for n, m in enumerate(tar):
                    name = _member_name(m.name)
                    if name in seen:
                        raise ArchiveError(m.name, "appears twice in the archive")
                    seen.add(name)
                    if m.isdir() or not name:
                        continue
                    if m.issym():
                        members.links[name] = _link_target(name, m.linkname)
                    elif m.islnk():
                        members.links[name] = _member_name(m.linkname)
                    elif m.isreg():
                        members.files[name] = _stage_file(tar, m, staging / f"m{n}")
                    else:
                        raise ArchiveError(m.name, "special file (device, fifo) in an image "
                                                   "archive")
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise ArchiveError("archive", f"not a readable tar archive ({e})") from None
    finally:
        if close:
            f.close()
    return members


def _stage_file(tar, member, path):
    src = tar.extractfile(member)
    h, size = hashlib.sha256(), 0
    with open(path, "xb") as out:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if size != member.size:
        raise ArchiveError(member.name, "truncated")
    return _Member(path, "sha256:" + h.hexdigest(), size)


# ---- load: reading the two formats into plans -------------------------------------------------

@dataclass
class _LayerPlan:
    member: _Member           # the layer as found in the archive
    diff_id: str              # what the config says its tar hashes to
    media_type: str


@dataclass
class _ImagePlan:
    config: bytes
    layers: list
    tags: list
    manifest: bytes = None    # OCI: the archive's manifest, kept verbatim (its digest survives)
    manifest_type: str = MT_MANIFEST


def _familiar(tag):
    """docker.io/library/busybox:latest -> busybox:latest, as `docker images` shows names."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return tag


def _config_diff_ids(config, where):
    if not isinstance(config, dict):
        raise ArchiveError(where, "image config is not a JSON object")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ArchiveError(where, "image config has no rootfs.diff_ids list")
    for d in diff_ids:
        _descriptor_digest({"digest": d}, "diff_id")
    return diff_ids


def _plan_oci(members):
    _, index = members.json("index.json", "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ArchiveError("index.json", "has no manifests list")
    by_digest = {}             # manifest digest -> (descriptor, tags)
    for desc in _manifest_descriptors(members, index["manifests"], depth=0):
        entry = by_digest.setdefault(desc["digest"], (desc, []))
        annotations = desc.get("annotations") or {}
        name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME) or ""
        # an OCI ref name may be only a tag ("latest"): that names no repository, so the image
        # is loaded untagged, as Docker does
        if ":" in name or "/" in name:
            try:
                tag = _familiar(refs.normalize(name))
            except InvalidArgument:
                continue
            if tag not in entry[1]:
                entry[1].append(tag)
    plans = []
    for digest, (desc, tags) in by_digest.items():
        manifest_member = members.blob(desc, "image manifest")
        manifest = _parse_json(manifest_member, digest, "image manifest")
        if not isinstance(manifest, dict) or not isinstance(manifest.get("layers", []), list):
            raise ArchiveError(digest, "image manifest is malformed")
        config_desc = manifest.get("config")
        config_member = members.blob(config_desc, "image config")
        diff_ids = _config_diff_ids(_parse_json(config_member, digest, "image config"), digest)
        layer_descs = manifest.get("layers", [])
        if len(layer_descs) != len(diff_ids):
            raise ArchiveError(digest, f"manifest has {len(layer_descs)} layers, its config "
                                       f"{len(diff_ids)} diff_ids")
        layers = []
        for layer_desc, diff_id in zip(layer_descs, diff_ids):
            member = members.blob(layer_desc, "layer")
            media_type = layer_desc.get("mediaType", MT_LAYER_GZIP)
            if media_type not in LAYER_TYPES:
                raise ArchiveError(layer_desc["digest"], f"layer media type {media_type!r} is "
                                                         "not supported (tar or tar+gzip)")
            layers.append(_LayerPlan(member, diff_id, media_type))
        plans.append(_ImagePlan(config_member.path.read_bytes(), layers, tags,
                                manifest=manifest_member.path.read_bytes(),
                                manifest_type=desc.get("mediaType")
                                or manifest.get("mediaType") or MT_MANIFEST))
    return plans


def _manifest_descriptors(members, descs, depth):
    """Image manifests named by an index; a nested index (multi-platform) gives the manifest
    for this host's platform."""
    from ctrkernel.image.image import host_architecture
    for desc in descs:
        media_type = isinstance(desc, dict) and desc.get("mediaType")
        digest = _descriptor_digest(desc, "index entry")
        if media_type in MANIFEST_TYPES or media_type is None:
            yield desc
        elif media_type in INDEX_TYPES and depth < 4:
            nested = _parse_json(members.blob(desc, "nested index"), digest, "nested index")
            mine = [d for d in nested.get("manifests", []) if isinstance(d, dict)
                    and (d.get("platform") or {}).get("os", "linux") == "linux"
                    and (d.get("platform") or {}).get("architecture",
                                                      host_architecture()) == host_architecture()]
            if not mine:
                raise ArchiveError(digest, f"no image for linux/{host_architecture()} in it")
            mine = [dict(d, annotations=desc.get("annotations") or {}) for d in mine[:1]]
            yield from _manifest_descriptors(members, mine, depth + 1)
        else:
            raise ArchiveError(digest, f"index entry of media type {media_type!r} is not an "
                                       "image manifest")


def _plan_docker(members):
    _, manifest = members.json("manifest.json", "manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise ArchiveError("manifest.json", "is not a non-empty list of images")
    plans = []
    for entry in manifest:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise ArchiveError("manifest.json", "an entry lacks Config or Layers")
        config_name = entry["Config"]
        config_member, config = members.json(config_name, "image config")
        diff_ids = _config_diff_ids(config, config_name)
        # docker names the config after its digest: that is the image id, so check it
        stem = posixpath.basename(config_name).removesuffix(".json")
        if refs.HEX.match(stem) and len(stem) == 64 and config_member.digest != f"sha256:{stem}":
            raise DigestMismatch(f"image config {config_name}", f"sha256:{stem}",
                                 config_member.digest)
        if len(entry["Layers"]) != len(diff_ids):
            raise ArchiveError(config_name, f"manifest.json lists {len(entry['Layers'])} layers, "
                                            f"the config {len(diff_ids)} diff_ids")
        layers = [_LayerPlan(members.need(name, "layer"), diff_id, "")
                  for name, diff_id in zip(entry["Layers"], diff_ids)]
        tags = []
        for tag in entry.get("RepoTags") or []:
            tag = _familiar(refs.normalize(tag))     # InvalidArgument names a bad tag
            if tag not in tags:
                tags.append(tag)
        plans.append(_ImagePlan(config_member.path.read_bytes(), layers, tags))
    return plans


# ---- load: checking layers and moving everything into the store ------------------------------

@dataclass
class _ReadyLayer:
    blob: Path                # the blob to store (the member itself, or its gzip)
    descriptor: dict
    tree: Path                # extracted and checked, or None when the store already has it
    tar_size: int


def _compression(path):
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    for magic, name in ((b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bzip2"),
                        (b"\xfd7zXZ\x00", "xz")):
        if head.startswith(magic):
            return name
    return None


def _gzip(src, dest):
    """Compress a docker archive's plain tar layer for the store (its layers are tar+gzip)."""
    from ctrkernel.image.layers import DEFAULT_LEVEL
    compressor = zlib.compressobj(DEFAULT_LEVEL, zlib.DEFLATED, 31)
    h, size = hashlib.sha256(), 0
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        while True:
            chunk = fin.read(CHUNK)
            out = compressor.compress(chunk) if chunk else compressor.flush()
            h.update(out)
            size += len(out)
            fout.write(out)
            if not chunk:
                break
    return "sha256:" + h.hexdigest(), size


def _prepare_layer(store, plan, staging, n, docker):
    """Check one layer (hostile content, diff_id) and get the blob the store will hold."""
    from ctrkernel.image import extract
    from ctrkernel.image.extract import extract_layer, open_layer_stream
    corrupt = (zlib.error, getattr(extract, "_CorruptStream", zlib.error))
    kind = _compression(plan.member.path)
    if kind not in (None, "gzip"):
        raise ArchiveError(plan.diff_id, f"{kind}-compressed layers are not supported here "
                                         "(only tar and tar+gzip)")
    tree = None
    if (store.layers / _hex(plan.diff_id)).exists():
        # the very same tar was unpacked and checked before: only prove this is that tar
        with open(plan.member.path, "rb") as f:
            _, _, inner = open_layer_stream(f)
            try:
                inner.drain()
            except corrupt as e:
                raise ArchiveError(plan.diff_id, f"layer is not a valid gzip stream ({e})") \
                    from None
        if inner.digest != plan.diff_id:
            raise DigestMismatch("layer (uncompressed)", plan.diff_id, inner.digest)
        tar_size = inner.size
    else:
        tree = staging / f"tree-{n}"
        info = extract_layer(plan.member.path, tree, diff_id=plan.diff_id)
        tar_size = info["tar_size"]
    if not docker:
        descriptor = {"mediaType": plan.media_type, "digest": plan.member.digest,
                      "size": plan.member.size}
        return _ReadyLayer(plan.member.path, descriptor, tree, tar_size)
    if kind == "gzip":
        blob, digest, size = plan.member.path, plan.member.digest, plan.member.size
    else:
        blob = staging / f"gz-{n}"
        digest, size = _gzip(plan.member.path, blob)
    return _ReadyLayer(blob, {"mediaType": MT_LAYER_GZIP, "digest": digest, "size": size},
                       tree, tar_size)


def _adopt_blob(store, path, digest):
    final = store.blob_path(digest)
    if final.exists():
        return
    os.chmod(path, 0o644)
    os.rename(path, final)           # atomic: the blob path never holds partial bytes


def _adopt_tree(store, tree, diff_id, tar_size):
    if tree is not None:
        final = store.layers / _hex(diff_id)
        try:
            os.rename(tree, final)
        except OSError:
            if not final.exists():
                raise
            # another process extracted the same layer meanwhile: identical; ours is dropped
    store.record_tar_size(diff_id, tar_size)


def _same_image(store, image_id):
    for img in store.images(all=True):
        if img.id == image_id:
            return img
    return None


def load_archive(source, store=None):
    """Load every image of an archive (a path or a binary file object, either format, plain
    or gzip-compressed). Returns [(Image, [tags the archive gave it]), ...]."""
    from ctrkernel.image import default_store
    from ctrkernel.image.extract import _rmtree
    store = store or default_store()
    with store.writing():         # gc waits: it must not remove blobs we add before register
        staging = Path(tempfile.mkdtemp(dir=store.tmp, prefix="load-"))
        try:
            members = _stage(source, staging)
            if members.get("index.json") is not None:
                plans, docker = _plan_oci(members), False
            elif members.get("manifest.json") is not None:
                plans, docker = _plan_docker(members), True
            else:
                raise ArchiveError("archive", "neither index.json (OCI layout) nor "
                                              "manifest.json (docker save) is in it")
            ready = {}
            for plan in plans:
                for layer in plan.layers:
                    if layer.diff_id not in ready:
                        ready[layer.diff_id] = _prepare_layer(store, layer, staging,
                                                              len(ready), docker)
            # every check passed: only now does anything enter the store
            results = []
            for plan in plans:
                for layer in plan.layers:
                    r = ready[layer.diff_id]
                    _adopt_blob(store, r.blob, r.descriptor["digest"])
                    _adopt_tree(store, r.tree, layer.diff_id, r.tar_size)
                    r.tree = None
                config_desc = store.put_bytes(plan.config, MT_CONFIG)
                same = _same_image(store, config_desc["digest"]) if plan.manifest is None \
                    else None
                if same is not None:
                    # a docker archive has no manifest, and the image id is the config digest:
                    # the image is already here (e.g. saved from this store), so only tag it
                    plan.manifest, plan.manifest_type = same.store.read_blob(
                        same.manifest_digest), same.manifest_media_type
                elif plan.manifest is None:
                    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                                "config": config_desc,
                                "layers": [ready[l.diff_id].descriptor for l in plan.layers]}
                    plan.manifest = canonical_json(manifest)
                manifest_desc = store.put_bytes(plan.manifest, plan.manifest_type)
                store.register(manifest_desc, tags=plan.tags)
                results.append((store.get("x@" + manifest_desc["digest"]), plan.tags))
            return results
        finally:
            _rmtree(staging)


def load(source, store=None):
    """`docker load`: the images of an archive (see load_archive), now in the store."""
    return [img for img, _ in load_archive(source, store)]
