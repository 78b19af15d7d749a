"""Disk use of images, counted the way `docker system df -v` counts it.

A layer is stored once however many images use it, so an image's size (all its layers) says
little about what deleting it would free. For each image of a set:

- `size`:   bytes of all its layers (uncompressed, what `images` shows);
- `shared`: bytes of its layers that another image of the set also uses (removing this image
            frees none of them);
- `unique`: the rest, `size - shared`: what removing it would free.

`summary()` adds the store-wide totals of `docker system df`: each distinct layer counted once,
and what is reclaimable (layers no container's image needs).
"""
import os
import stat
from dataclasses import dataclass, field

from ctrkernel.image.image import Image


@dataclass
class ImageUsage:
    image: Image
    size: int = 0
    shared: int = 0
    unique: int = 0
    containers: int = 0
    layers: dict = field(default_factory=dict)   # {diff_id: bytes}, each distinct layer once


def _layer_sizes(image):
    """{diff_id: uncompressed bytes} for each distinct layer of image (a layer may repeat)."""
    sizes = {}
    for diff_id, desc in zip(image.diff_ids, image.layers):
        if diff_id not in sizes:
            sizes[diff_id] = image.store.layer_tar_size(diff_id, desc)
    return sizes


def _container_counts():
    """{image id: number of containers (any state) made from it}, from the runtime's state."""
    from ctrkernel.runtime import list_containers
    counts = {}
    for c in list_containers(all=True):
        image_id = c.attrs.get("ImageID")
        if image_id:
            counts[image_id] = counts.get(image_id, 0) + 1
    return counts


def image_usage(images=None, store=None, containers=None):
    """[ImageUsage] for `images` (default: every image of the store except intermediate build
    steps), in the order given. A layer counts as shared when another image *of this set*
    uses it. `containers` ({image id: count}) defaults to the runtime's containers."""
    if images is None:
        from ctrkernel.image import default_store
        images = (store or default_store()).images()
    images = list(images)
    counts = _container_counts() if containers is None else containers
    sizes = [_layer_sizes(img) for img in images]
    users = {}
    for layer_sizes in sizes:
        for diff_id in layer_sizes:
            users[diff_id] = users.get(diff_id, 0) + 1
    rows = []
    for img, layer_sizes in zip(images, sizes):
        total = sum(layer_sizes.values())
        shared = sum(b for d, b in layer_sizes.items() if users[d] > 1)
        rows.append(ImageUsage(img, total, shared, total - shared, counts.get(img.id, 0),
                               layer_sizes))
    return rows


def summary(images=None, store=None, containers=None):
    """`docker system df`'s Images row: {"total", "active", "size", "reclaimable"}; size counts
    each distinct layer once, reclaimable is the bytes of layers no image in use needs."""
    rows = image_usage(images, store, containers)
    stored, needed = {}, set()
    for row in rows:
        stored.update(row.layers)
        if row.containers:
            needed.update(row.layers)
    size = sum(stored.values())
    return {"total": len(rows), "active": sum(1 for r in rows if r.containers), "size": size,
            "reclaimable": size - sum(stored[d] for d in needed)}


def tree_bytes(root):
    """Bytes of regular files under root (each inode once, links not followed): what a
    container's writable layer or an extracted layer holds. 0 when root does not exist."""
    total, seen = 0, set()
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
