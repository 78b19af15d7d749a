"""Image references as users type them: `busybox`, `busybox:latest`, `python:3.11`, an image id
(`sha256:3f...` or its first 12 hex digits), or `name@sha256:...`.

A name without a tag means `:latest`, as in Docker. Registry host names are kept as typed
(`localhost/foo:1`): this store never talks to a registry, so no `docker.io/library/` is added.
"""
import re

from ctrkernel.errors import InvalidArgument

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
HEX = re.compile(r"^[0-9a-f]{1,64}$")


def split(reference):
    """'busybox' -> ('busybox', 'latest'); 'host:5000/x:1' -> ('host:5000/x', '1')."""
    reference = reference.strip()
    name, tag = reference, "latest"
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        name, tag = reference[:colon], reference[colon + 1:]
    if not _NAME.match(name) or not _TAG.match(tag):
        raise InvalidArgument(f"invalid reference format: {reference!r} "
                              "(expected name[:tag], lowercase)")
    return name, tag


def normalize(reference):
    """The canonical 'name:tag' form used as the ref name in index.json."""
    name, tag = split(reference)
    return f"{name}:{tag}"


def looks_like_id(reference):
    """True for 'sha256:<hex>' or a bare hex prefix of at least 4 digits (`docker rmi 3f2a`)."""
    ref = reference[7:] if reference.startswith("sha256:") else reference
    return bool(HEX.match(ref)) and (len(ref) >= 4 or reference.startswith("sha256:"))
