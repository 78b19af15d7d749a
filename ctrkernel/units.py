"""Docker's unit strings, parsed and checked: sizes ("64m", "1g", "512k") and CPU counts ("1.5").

Sizes follow Docker's `RAMInBytes` (go-units): a number, optionally with a fraction, then an
optional unit k/m/g/t/p (any case), an optional "i" and an optional "b". Units are binary
(1k = 1024 bytes), as for every Docker memory flag. A bare number is bytes.

CPU counts follow `docker run --cpus`: a decimal number of CPUs turned into "nano CPUs"
(1.5 -> 1_500_000_000); more than nine decimals is refused as "too precise", as Docker does.

Everything wrong raises `InvalidArgument` with a message saying what was expected.
"""
import re
from decimal import Decimal, InvalidOperation

from ctrkernel.errors import InvalidArgument

NANO = 1_000_000_000

UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}

_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp]?)(i?)(b?)$", re.IGNORECASE)


def parse_bytes(value, what="size"):
    """A size in bytes from an int or a Docker size string ("64m", "1.5g", "512KiB", "1024").

    `what` names the value in error messages (e.g. "--memory").
    """
    if isinstance(value, bool):
        raise InvalidArgument(f"invalid {what}: {value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgument(f"invalid {what}: {value} is negative")
        return value
    if isinstance(value, float):
        if value < 0 or value != value:
            raise InvalidArgument(f"invalid {what}: {value!r} is not a non-negative size")
        return int(value)
    text = str(value).strip()
    if text.startswith("-"):
        raise InvalidArgument(f"invalid {what}: {text!r} is negative")
    m = _SIZE.match(text)
    if not m or (m.group(3) and not m.group(2)):
        raise InvalidArgument(
            f"invalid {what}: {text!r} is not a size; use a number of bytes optionally followed "
            f"by a unit b, k, m, g, t or p (e.g. 512k, 64m, 1g)")
    number, unit = Decimal(m.group(1)), m.group(2).lower()
    return int(number * UNITS[unit])


def parse_cpus(value, what="--cpus"):
    """Nano CPUs (an int) from a number of CPUs: 1.5 or "1.5" -> 1_500_000_000."""
    if isinstance(value, bool):
        raise InvalidArgument(f"invalid {what}: {value!r} is not a number of CPUs")
    try:
        cpus = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidArgument(
            f"invalid {what}: {value!r} is not a number of CPUs (e.g. 0.5, 1, 1.5)") from None
    if not cpus.is_finite():
        raise InvalidArgument(f"invalid {what}: {value!r} is not a finite number of CPUs")
    if cpus < 0:
        raise InvalidArgument(f"invalid {what}: {value!r} is negative")
    nano = cpus * NANO
    if nano != nano.to_integral_value():
        raise InvalidArgument(f"invalid {what}: {value!r} is too precise (at most 9 decimals)")
    return int(nano)


def parse_int(value, what, minimum=None):
    """An integer flag value (e.g. --pids-limit, --cpu-quota), with a clear error if it is not."""
    if isinstance(value, bool):
        raise InvalidArgument(f"invalid {what}: {value!r} is not an integer")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise InvalidArgument(f"invalid {what}: {number} is below the minimum {minimum}")
    return number


def format_bytes(n, precision=3):
    """Binary units as `docker stats` shows them: 67108864 -> "64MiB", 1536 -> "1.5KiB"."""
    if n is None:
        return "-"
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            break
        value /= 1024
    return f"{value:.{precision}g}{unit}"


def format_cpus(nano_cpus):
    """1_500_000_000 -> "1.5"."""
    return f"{Decimal(nano_cpus) / NANO:f}".rstrip("0").rstrip(".") if nano_cpus else "0"
