"""Deleting images as the Docker daemon does (`docker rmi`, `docker image prune`).

The store knows tags, layers and build parents; deleting also needs to know which containers
were made from an image, so it lives here, in the core, and every front end (the command line,
the docker-py shim, the Engine API) only translates. Messages are Docker's, so that code and
people used to them recognise them.
"""
from ctrkernel.errors import Conflict


def users(img):
    """Containers (any state) made from this image, running ones first."""
    from ctrkernel.runtime import list_containers
    found = [c for c in list_containers(all=True) if c.attrs.get("ImageID") == img.id]
    return sorted(found, key=lambda c: c.status not in ("running", "paused"))


def remove(reference, force=False, store=None, noprune=False):
    """`docker rmi REFERENCE`: Docker's log lines ([{"Untagged": t}, {"Deleted": id}, ...]).

    A name removes that tag, and the image with its last tag; an id removes the image. An image
    a container was made from is refused (Conflict) unless forced, and never while a container
    of it runs; forced, it loses its names but stays, untagged, for the containers still made
    from it (deleting its layers would leave them unable to start again). noprune keeps the
    untagged intermediate images it was built from (`rmi --no-prune`)."""
    from ctrkernel.image import default_store, refs
    store = store or default_store()
    img = store.get(reference)
    by_name = not refs.looks_like_id(reference) or reference in img.tags
    name = refs.normalize(reference) if by_name else None
    if by_name and len(img.tags) > 1:
        return store.remove(reference)            # another tag keeps the image: untag only
    made_from = users(img)
    if made_from:
        running = [c for c in made_from if c.status in ("running", "paused")]
        if by_name and not force:
            raise Conflict(f'conflict: unable to remove repository reference "{reference}" '
                           f"(must force) - container {made_from[0].short_id} is using its "
                           f"referenced image {img.short_id}")
        if not by_name and running:
            raise Conflict(f"conflict: unable to delete {img.short_id} (cannot be forced) - "
                           f"image is being used by running container {running[0].short_id}")
        if not by_name and not force:
            raise Conflict(f"conflict: unable to delete {img.short_id} (must be forced) - "
                           f"image is being used by stopped container {made_from[0].short_id}")
        log = []
        for tag in [name] if by_name else list(img.tags):
            log += store.untag(tag)
        return log
    if not by_name and len(img.tags) > 1 and not force:
        raise Conflict(f"conflict: unable to delete {img.short_id} (must be forced) - image "
                       "is referenced in multiple repositories")
    return store.remove(reference, force=force, keep_parents=noprune)


def prune(all=False, store=None):
    """`docker image prune [-a]`: remove dangling images (untagged, not a build step of another
    image), or with all=True every image no container was made from, with the build steps only
    they needed. Returns the Engine API's answer: {"ImagesDeleted": [...], "SpaceReclaimed": n}."""
    from ctrkernel.image import default_store
    store = store or default_store()
    used = {c.attrs.get("ImageID") for c in _all_containers()}
    deleted = []
    for img in store.images(all=False):          # intermediate build steps go with their image
        if img.id in used or (img.tags and not all):
            continue
        deleted += store.remove(img.manifest_digest, force=True, prune=False)
    return {"ImagesDeleted": deleted or None, "SpaceReclaimed": store.gc()}


def _all_containers():
    from ctrkernel.runtime import list_containers
    return list_containers(all=True)
