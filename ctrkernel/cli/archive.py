"""`ctrkernel save` and `ctrkernel load`: images to and from tar archives (docker's verbs).

Both exit 1 on any failure, as `docker save`/`docker load` do (a missing image, an archive
refused, a file that cannot be read or written), with Docker's "Error..." message; only a flag
error is 125.
"""
import sys

from ctrkernel.cli.images import _fail
from ctrkernel.cli.registry import arg, verb
from ctrkernel.errors import CtrkernelError


def _file_error(e, doing):
    """A file we could not open or write, said as docker says it; the verb exits 1. (A reader
    that went away is not one: main() turns BrokenPipeError into 141.)"""
    if isinstance(e, BrokenPipeError):
        raise e
    where = f" {e.filename}" if e.filename else ""
    return _fail(f"{doing}:{where}: {e.strerror or e}", daemon=False)


@verb("save")
@arg("images", metavar="IMAGE", nargs="+")
@arg("-o", "--output", default=None, help="write to a file, instead of STDOUT")
@arg("--format", default="docker", choices=["docker", "docker-archive", "oci", "oci-archive"],
     help="docker (`docker save`'s manifest.json layout, the default) or oci (an OCI image "
          "layout, as `skopeo copy oci-archive:` writes)")
def save(args):
    """Save one or more images to a tar archive (streamed to STDOUT by default)."""
    from ctrkernel.image.archive import save as save_images
    try:
        if args.output is None:
            if sys.stdout.isatty():
                # docker's own refusal: a terminal would only show binary noise
                return _fail("cowardly refusing to save to a terminal. Use the -o flag or "
                             "redirect", daemon=False)
            sys.stdout.flush()
            save_images(args.images, sys.stdout.buffer, format=args.format)
            sys.stdout.buffer.flush()
        else:
            save_images(args.images, args.output, format=args.format)
    except CtrkernelError as e:
        return _fail(e)
    except OSError as e:
        return _file_error(e, "failed to save image")
    return 0


@verb("load")
@arg("-i", "--input", default=None, help="read from a tar archive file, instead of STDIN")
@arg("-q", "--quiet", action="store_true", help="accepted for compatibility (no progress "
                                                 "is shown)")
def load(args):
    """Load images from a tar archive (docker save or OCI archive, may be gzip-compressed)."""
    from ctrkernel.image.archive import load_archive
    if args.input is None and sys.stdin.isatty():
        return _fail("requested load from stdin, but stdin is empty", daemon=False)
    try:
        loaded = load_archive(args.input if args.input is not None else sys.stdin.buffer)
        for image, tags in loaded:
            for tag in tags:
                print(f"Loaded image: {tag}")
            if not tags:
                print(f"Loaded image ID: {image.id}")
    except CtrkernelError as e:
        return _fail(e)
    except OSError as e:
        return _file_error(e, "failed to load image")
    return 0
