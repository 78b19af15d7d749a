"""`ctrkernel save` and `ctrkernel load`: images to and from tar archives (docker's verbs)."""
import sys

from ctrkernel.cli.registry import arg, verb
from ctrkernel.errors import InvalidArgument


@verb("save")
@arg("images", metavar="IMAGE", nargs="+")
@arg("-o", "--output", default=None, help="write to a file, instead of STDOUT")
@arg("--format", default="docker", choices=["docker", "docker-archive", "oci", "oci-archive"],
     help="docker (`docker save`'s manifest.json layout, the default) or oci (an OCI image "
          "layout, as `skopeo copy oci-archive:` writes)")
def save(args):
    """Save one or more images to a tar archive (streamed to STDOUT by default)."""
    from ctrkernel.image.archive import save as save_images
    if args.output is None:
        if sys.stdout.isatty():
            # docker's own refusal: a terminal would only show binary noise
            raise InvalidArgument("cowardly refusing to save to a terminal. "
                                  "Use the -o flag or redirect")
        sys.stdout.flush()
        save_images(args.images, sys.stdout.buffer, format=args.format)
        sys.stdout.buffer.flush()
    else:
        save_images(args.images, args.output, format=args.format)
    return 0


@verb("load")
@arg("-i", "--input", default=None, help="read from a tar archive file, instead of STDIN")
@arg("-q", "--quiet", action="store_true", help="accepted for compatibility (no progress "
                                                 "is shown)")
def load(args):
    """Load images from a tar archive (docker save or OCI archive, may be gzip-compressed)."""
    from ctrkernel.image.archive import load_archive
    if args.input is None and sys.stdin.isatty():
        raise InvalidArgument("requested load from stdin, but stdin is empty")
    for image, tags in load_archive(args.input if args.input is not None else sys.stdin.buffer):
        for tag in tags:
            print(f"Loaded image: {tag}")
        if not tags:
            print(f"Loaded image ID: {image.id}")
    return 0
