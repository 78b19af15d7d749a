"""An image as stored: a manifest naming a config and layers, with the tags that point at it.

`create_image` is the one way new images come into being (builtins, builds, commits, loads):
it appends layers and history entries to a parent's, writes the config and the manifest, and
only then registers them in index.json.
"""
import copy
import datetime
import os
import platform
import tempfile
from pathlib import Path

from ctrkernel.errors import NotFound
from ctrkernel.image.store import MT_CONFIG, MT_MANIFEST, _hex


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339(timestamp):
    return datetime.datetime.fromtimestamp(int(timestamp), datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text):
    """An RFC 3339 time from a config (several precisions) as an aware datetime."""
    if not text:
        return datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
    text = text.replace("Z", "+00:00")
    if "." in text:   # Go writes nanoseconds; Python accepts at most microseconds
        head, _, rest = text.partition(".")
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]   # up to the zone
        tz = rest[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
    try:
        when = datetime.datetime.fromisoformat(text)
        # a time without a zone is UTC (the spec requires one; be lenient with what we read)
        return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return datetime.datetime.fromtimestamp(0, datetime.timezone.utc)


def host_architecture():
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine,
                                                                                         machine)


class Image:
    """One image in a store. Attributes follow docker-py's Image model where they overlap."""

    def __init__(self, store, manifest_digest, tags=()):
        self.store = store
        self.manifest_digest = manifest_digest
        raw = store.read_blob(manifest_digest)
        import json
        self.manifest = json.loads(raw)
        self.manifest_size = len(raw)
        self.manifest_media_type = self.manifest.get("mediaType", MT_MANIFEST)
        self.id = self.manifest["config"]["digest"]
        self.config = store.read_json(self.id)
        self.tags = list(tags)

    def __repr__(self):
        return f"<Image: {', '.join(repr(t) for t in self.tags) or self.short_id}>"

    def __eq__(self, other):
        return isinstance(other, Image) and other.manifest_digest == self.manifest_digest

    def __hash__(self):
        return hash(self.manifest_digest)

    @property
    def short_id(self):
        return self.id[7:19]

    @property
    def created(self):
        return self.config.get("created", "")

    @property
    def layers(self):
        """The layer descriptors (mediaType, digest, size), lowest first."""
        return list(self.manifest.get("layers", []))

    @property
    def diff_ids(self):
        return list(self.config.get("rootfs", {}).get("diff_ids", []))

    @property
    def labels(self):
        return dict(self.config.get("config", {}).get("Labels") or {})

    @property
    def size(self):
        """Bytes of all layers uncompressed (what `docker images` shows as SIZE)."""
        return sum(self.store.layer_tar_size(d, l) for d, l in zip(self.diff_ids, self.layers))

    def layer_dirs(self):
        """The extracted, read-only layer trees, lowest first (each extracted once, shared)."""
        return [self.store.layer_dir(desc, diff_id)
                for desc, diff_id in zip(self.layers, self.diff_ids)]

    def history(self):
        """`docker history` rows, newest first: id, created, created_by, size, comment.
        Only the top row carries the image id; rows below it were not images of their own here,
        so, like Docker for pulled images, they show <missing>."""
        rows = []
        layers = list(zip(self.diff_ids, self.layers))
        for entry in self.config.get("history", []):
            size = 0
            if not entry.get("empty_layer") and layers:
                diff_id, desc = layers.pop(0)
                size = self.store.layer_tar_size(diff_id, desc)
            rows.append({"id": "<missing>", "created": entry.get("created", ""),
                         "created_by": entry.get("created_by", ""), "size": size,
                         "comment": entry.get("comment", ""),
                         "empty_layer": bool(entry.get("empty_layer"))})
        rows.reverse()
        if rows:
            rows[0]["id"] = self.id
        return rows

    def inspect(self):
        """`docker image inspect`'s shape."""
        cfg = self.config
        return {
            "Id": self.id,
            "RepoTags": list(self.tags),
            "RepoDigests": [],          # as Docker: only images pulled from a registry
            "Parent": self._parent_id(),
            "Comment": (cfg.get("history") or [{}])[-1].get("comment", ""),
            "Created": self.created,
            "Author": cfg.get("author", ""),
            "Config": copy.deepcopy(cfg.get("config", {})),
            "Architecture": cfg.get("architecture", ""),
            "Os": cfg.get("os", ""),
            "Size": self.size,
            "RootFS": {"Type": "layers", "Layers": self.diff_ids},
            "Metadata": {"LastTagTime": ""},
            "Descriptor": {"mediaType": self.manifest_media_type,
                           "digest": self.manifest_digest, "size": self.manifest_size},
        }

    def _parent_id(self):
        """The image this one was made from here (a build's previous step, a commit's image),
        as `docker inspect` shows it; "" for images loaded or made from scratch."""
        from ctrkernel.errors import CtrkernelError
        parent = self.store.parent_of(self.manifest_digest)
        try:
            return self.store.get("x@" + parent).id if parent else ""
        except CtrkernelError:
            return ""                   # removed since

    def tag(self, repository, tag=None):
        return self.store.tag(self.id, f"{repository}:{tag}" if tag else repository)

    def reload(self):
        return self.store.get("x@" + self.manifest_digest)


def create_image(store, parent=None, steps=(), config=None, tags=(), created=None,
                 author=None, intermediate=False):
    """Store a new image and return it.

    parent: an Image (its layers and history come first) or None (`FROM scratch`).
    steps: [(layer or None, {"created_by": ..., "comment": ...}), ...]; a None layer is a
           metadata-only step (ENV, CMD...), recorded with empty_layer = true.
    config: keys of the runtime config to set (Env, Cmd, Entrypoint, WorkingDir, User,
            ExposedPorts, Labels, Volumes...), replacing the parent's values.
    created: RFC 3339 time for the image and its new history entries (default now); pass a
             constant for reproducible images.
    """
    created = created or now_rfc3339()
    if parent is not None:
        cfg = copy.deepcopy(parent.config)
        layers = parent.layers
    else:
        cfg = {"architecture": host_architecture(), "os": "linux", "config": {},
               "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
        layers = []
    cfg["created"] = created
    if author:
        cfg["author"] = author
    runtime = cfg.setdefault("config", {})
    for key, value in (config or {}).items():
        if value is None:
            runtime.pop(key, None)
        else:
            runtime[key] = copy.deepcopy(value)
    cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    cfg.setdefault("history", [])
    with store.writing():
        for layer, entry in steps:
            record = {"created": entry.get("created", created),
                      "created_by": entry.get("created_by", "")}
            if entry.get("comment"):
                record["comment"] = entry["comment"]
            if entry.get("author"):
                record["author"] = entry["author"]
            if layer is None:
                record["empty_layer"] = True
            else:
                if not store.has_blob(layer.digest):
                    raise NotFound(f"layer blob {layer.digest} is not in the store")
                cfg["rootfs"]["diff_ids"].append(layer.diff_id)
                layers = layers + [layer.descriptor()]
                store.record_tar_size(layer.diff_id, layer.tar_size)
            cfg["history"].append(record)
        return store_image(store, cfg, layers, tags=tags, intermediate=intermediate,
                           parent=parent)


def store_image(store, config, layers, tags=(), intermediate=False, parent=None):
    """Write a complete image config and its manifest (the layer blobs must be stored already)
    and register them; returns the Image. The build uses this directly, since it edits the
    config step by step itself; everything else goes through create_image.

    intermediate=True marks an untagged build step (listed only by `images -a`, as Docker's
    classic builder keeps its intermediate images); False makes it an ordinary image.
    parent: the Image this one was made from (a build's previous step, a commit's image), so
    that removing an image also removes the intermediate steps only it needed."""
    with store.writing():
        config_desc = store.put_json(config, MT_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config_desc,
                    "layers": [{k: d[k] for k in ("mediaType", "digest", "size")}
                               for d in layers]}
        manifest_desc = store.put_json(manifest, MT_MANIFEST)
        if parent is not None and parent.manifest_digest != manifest_desc["digest"]:
            store.set_parent(manifest_desc["digest"], parent.manifest_digest)
        store.register(manifest_desc, tags=tags, intermediate=intermediate)
    return store.get("x@" + manifest_desc["digest"])


def extract_into_cache(store, descriptor, diff_id):
    """Extract one layer into store.layers/<diff_id hex> once, atomically (see Store.layer_dir)."""
    from ctrkernel.image.extract import _rmtree, extract_layer
    final = store.layers / _hex(diff_id)
    if final.exists():
        return final
    work = Path(tempfile.mkdtemp(dir=store.tmp, prefix="layer-"))
    try:
        info = extract_layer(store.blob_path(descriptor["digest"]), work / "tree",
                             digest=descriptor["digest"], diff_id=diff_id)
        store.record_tar_size(diff_id, info["tar_size"])
        try:
            os.rename(work / "tree", final)
        except OSError:
            if not final.exists():
                raise
            # another process extracted the same layer first: theirs is identical; use it
    finally:
        if (work / "tree").exists():
            _rmtree(work / "tree")
        os.rmdir(work)
    return final
