"""`docker images --filter`: the Engine API's image filters, applied to a list of images.

Filters arrive as the Engine API has them, {name: [value, ...]} (docker-py's `filters=` dict,
whose values may also be single strings or booleans), or as the CLI's "name=value" strings.
Values of one filter are alternatives (any may match); different filters must all match.
An unknown filter or a malformed value is an error, as in Docker, never silently ignored.
"""
import fnmatch

from ctrkernel.errors import CtrkernelError
from ctrkernel.image.image import parse_time

KNOWN = ("dangling", "label", "before", "since", "reference", "until")


class InvalidFilter(CtrkernelError):
    """A filter Docker would refuse: unknown name or a value it cannot use."""


def parse_cli(pairs):
    """["dangling=true", "label=a=b"] -> {"dangling": ["true"], "label": ["a=b"]}."""
    filters = {}
    for pair in pairs or ():
        name, eq, value = pair.partition("=")
        if not eq:
            raise InvalidFilter(f"bad format of filter (expected name=value): {pair!r}")
        filters.setdefault(name.strip().lower(), []).append(value)
    return filters


def normalise(filters):
    """Any accepted shape -> {name: [str, ...]}, checked against the known names."""
    out = {}
    for name, values in (filters or {}).items():
        if name not in KNOWN:
            raise InvalidFilter(f"invalid filter {name!r} (images accept: {', '.join(KNOWN)})")
        if isinstance(values, (str, bool)):
            values = [values]
        out[name] = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    return out


def _dangling(values):
    wanted = set()
    for v in values:
        if v.lower() in ("1", "true"):
            wanted.add(True)
        elif v.lower() in ("0", "false"):
            wanted.add(False)
        else:
            raise InvalidFilter(f"invalid filter 'dangling={v}' (true or false)")
    return wanted


def _reference_matches(pattern, tag):
    """Docker's rule: the pattern matches 'name:tag', or the name alone ('busy*')."""
    name = tag.rpartition(":")[0]
    return fnmatch.fnmatchcase(tag, pattern) or fnmatch.fnmatchcase(name, pattern)


def _label_matches(wanted, labels):
    key, eq, value = wanted.partition("=")
    return key in labels and (not eq or labels[key] == value)


def _created_of(reference, store):
    from ctrkernel.image import get_image
    return parse_time(get_image(reference, store=store).created)


def _until(value):
    """A timestamp (RFC 3339 or Unix seconds) or a duration before now ("24h", "90m")."""
    import datetime
    utc = datetime.timezone.utc
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if value[-1:] in units:
            return datetime.datetime.now(utc) - datetime.timedelta(
                seconds=float(value[:-1]) * units[value[-1]])
        try:
            return datetime.datetime.fromtimestamp(float(value), utc)
        except ValueError:
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))   # malformed: raise
            return parse_time(value)
    except (ValueError, OverflowError):
        raise InvalidFilter(f"invalid filter 'until={value}' (a time or a duration such as "
                            "'24h')") from None


def apply(images, filters, store=None):
    """The images that pass every filter. Where a reference filter is given, each image keeps
    only the tags it matched (as `docker images --filter reference=...` lists them)."""
    filters = normalise(filters)
    if not filters:
        return list(images)
    dangling = _dangling(filters["dangling"]) if "dangling" in filters else None
    before = [_created_of(r, store) for r in filters.get("before", ())]
    since = [_created_of(r, store) for r in filters.get("since", ())]
    until = [_until(v) for v in filters.get("until", ())]
    patterns = filters.get("reference", ())
    kept = []
    for img in images:
        if dangling is not None and (not img.tags) not in dangling:
            continue
        if "label" in filters and not all(_label_matches(w, img.labels)
                                          for w in filters["label"]):
            continue
        created = parse_time(img.created) if (before or since or until) else None
        if before and not created < min(before):
            continue
        if since and not created > max(since):
            continue
        if until and not created <= max(until):
            continue
        if patterns:
            matched = [t for t in img.tags if any(_reference_matches(p, t) for p in patterns)]
            if not matched:
                continue
            img.tags = matched
        kept.append(img)
    return kept
