"""Images and layers: an OCI image layout store, tar layers with whiteouts, builtin images.

    from ctrkernel.image import get_image, default_store
    img = get_image("busybox")     # builtin images are created on first use, with no network
    img.id, img.tags, img.config   # config digest, ["busybox:latest"], the OCI image config
    img.layer_dirs()               # extracted read-only layer trees, lowest first
    img.history()                  # docker history's rows

Modules: `store` (the OCI layout, locking, gc, fsck), `layers` (making layers from trees,
diffs and overlay upper dirs), `extract` (unpacking untrusted layers), `image` (the Image object
and create_image), `builtin` (busybox and python from the host), `archive` (save/load in the
OCI and `docker save` formats), `usage` (shared vs unique bytes), `display` (Docker's sizes and
times), `dockerfile`, `build` (Dockerfile builds, cache, intermediate images) and `commit`.
"""
import threading

from ctrkernel.errors import ImageNotFound
from ctrkernel.image.image import Image, create_image
from ctrkernel.image.layers import (Layer, LayerWriter, changes, layer_from_diff, layer_from_dir,
                                    layer_from_upper)
from ctrkernel.image.store import Store

__all__ = ["Image", "Layer", "LayerWriter", "Store", "changes", "create_image", "default_store",
           "get_image", "images", "layer_from_diff", "layer_from_dir", "layer_from_upper",
           "prune_images", "remove_image", "tag_image"]

_stores = {}
_lock = threading.Lock()


def default_store() -> Store:
    """The store under ctrkernel.paths.subdir("images") (follows $CTRKERNEL_HOME)."""
    from ctrkernel import paths
    root = paths.subdir("images")
    with _lock:
        store = _stores.get(str(root))
        if store is None or not store.layout.exists():
            store = _stores[str(root)] = Store(root)
        return store


def get_image(reference, store=None) -> Image:
    """The image named by `reference`; builtin images (busybox, python) are made on first use.
    Raises ImageNotFound for anything else that is not in the store."""
    if isinstance(reference, Image):
        return reference
    store = store or default_store()
    try:
        return store.get(reference)
    except ImageNotFound:
        from ctrkernel.image import builtin
        if builtin.is_builtin(reference):
            return builtin.ensure(store, reference)
        raise


def images(all=False, filters=None, store=None):
    """Images, newest first; `filters` as the Engine API's (dangling, label, before, since,
    reference, until: image/filters.py)."""
    store = store or default_store()
    found = store.images(all=all)
    if filters:
        from ctrkernel.image import filters as image_filters
        found = image_filters.apply(found, filters, store=store)
    return found


def tag_image(reference, new_tag, store=None):
    return (store or default_store()).tag(reference, new_tag)


def remove_image(reference, force=False, store=None):
    """`docker rmi`: refuses an image a container was made from unless forced (delete.py)."""
    from ctrkernel.image import delete
    return delete.remove(reference, force=force, store=store)


def prune_images(all=False, store=None):
    """`docker image prune [-a]`: {"ImagesDeleted": [...], "SpaceReclaimed": bytes}."""
    from ctrkernel.image import delete
    return delete.prune(all=all, store=store)
