"""How Docker prints image facts: sizes in powers of 1000 ("1.23MB") and times as "2 hours ago".

Shared by the command line (`images`, `history`, `system df`) and the chapter 04 helpers, so a
notebook shows what the terminal shows.
"""
import datetime

from ctrkernel.image.image import parse_time


def human_size(n):
    """Bytes with three significant digits in decimal units, as `docker images` prints SIZE."""
    n = float(n or 0)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{int(n)}B" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000


def duration(seconds):
    """Docker's human duration ("About a minute", "3 hours", "2 weeks")."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def ago(created, now=None):
    """An RFC 3339 time as `docker images` shows CREATED ("5 minutes ago")."""
    if not created:
        return "N/A"
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return duration((now - parse_time(created)).total_seconds()) + " ago"


def step_ids(img):
    """The IMAGE column of `docker history`, newest first: for each history row, the id of an
    image of this store whose history is exactly the rows up to there (with the same layers),
    else "<missing>". Docker shows the intermediate images of a local build this way and
    <missing> for pulled images, whose steps never were images on this host.

    The build's parent links (a step's image -> the image it started from) are followed first;
    other images of the store fill the rows they leave (a step whose link went with `rmi`)."""
    from ctrkernel.errors import CtrkernelError

    history = img.config.get("history", [])
    diff_ids = img.diff_ids
    found = {len(history): img.id}

    def matches(other):
        theirs = other.config.get("history", [])
        return (0 < len(theirs) <= len(history) and theirs == history[:len(theirs)]
                and other.diff_ids == diff_ids[:len(other.diff_ids)])

    digest, seen = img.manifest_digest, set()
    while digest not in seen:
        seen.add(digest)
        digest = img.store.parent_of(digest)
        try:
            parent = img.store.get("x@" + digest) if digest else None
        except CtrkernelError:
            parent = None        # removed since: the rows below are found by the scan
        if parent is None or not matches(parent):
            break
        found.setdefault(len(parent.config.get("history", [])), parent.id)
    if len(found) < len(history):
        for other in img.store.images(all=True):
            if matches(other):
                found.setdefault(len(other.config["history"]), other.id)
    return [found.get(n, "<missing>") for n in range(len(history), 0, -1)]
