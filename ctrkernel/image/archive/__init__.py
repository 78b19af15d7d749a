"""Saving and loading images as tar archives, in the two formats other tools exchange.

- OCI archive: a tar of an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`),
  what `skopeo copy ... oci-archive:` and `podman save --format oci-archive` write. Blobs are
  copied verbatim, so digests (and the image id) survive the trip both ways.
- `docker save` archive: `manifest.json` ([{"Config", "RepoTags", "Layers"}]), the config as
  `<id hex>.json`, each layer as an *uncompressed* tar (`<diff_id hex>.tar` here, as podman and
  skopeo write; docker writes `<v1 id>/layer.tar`, podman adds symlinks of that form), and
  `repositories`. The image id (the config digest) survives; layer blobs are re-compressed on
  load, as Docker does, so their compressed digests are this store's own.

    save(["busybox"], "busybox.tar", format="docker")   # or a file object (stdout)
    images = load("busybox.tar")                         # or a file object (stdin)

Everything loaded is untrusted. The archive is first staged member by member into a private
directory under the store's tmp/ (member names only choose a *key*, never a path, and names
with `..` or a leading `/`, links out of the archive and special files are refused); then every
blob is checked against its digest and size, every layer unpacked with extract.py's checks
(which also prove its diff_id); only when all of that passed are the blobs and extracted layers
moved into the store and the images registered in index.json. A refused or interrupted load
therefore leaves no image and nothing outside tmp/ (which is removed as well).
"""
from ctrkernel.image.archive.load import load, load_archive
from ctrkernel.image.archive.save import save

__all__ = ["save", "load", "load_archive"]
