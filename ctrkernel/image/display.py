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
