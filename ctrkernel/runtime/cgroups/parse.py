"""Parsers for cgroup files (v1 and v2), pure functions of the file's text.

They are tested on recorded file trees in tests/data/cgroupfs/. The kernel documents the formats
in Documentation/admin-guide/cgroup-v1/*.rst and cgroup-v2.rst:
- single values: "1234\\n" or "max\\n";
- flat keyed: "key value\\n" lines (memory.stat, cpu.stat, memory.events, cpuacct.stat);
- nested keyed: "8:0 rbytes=1 wbytes=2\\n" (io.stat);
- v1 blkio: "8:0 Read 4096\\n" lines plus a "Total N" line.
"""

# v1 writes "no limit" as the largest page-aligned number that fits in a signed 64-bit integer.
V1_UNLIMITED = 0x7FFFFFFFFFFFF000


def value(text):
    """A single number, or None for "max" (v2) and v1's page-aligned "unlimited"."""
    text = text.strip()
    if text in ("max", "-1", ""):
        return None
    n = int(text)
    return None if n >= V1_UNLIMITED else n


def flat_keyed(text):
    """{"key": int} from "key value" lines."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def nested_keyed(text):
    """{"8:0": {"rbytes": int, ...}} from v2 nested keyed lines (io.stat)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        entry = out.setdefault(parts[0], {})
        for item in parts[1:]:
            key, _, number = item.partition("=")
            try:
                entry[key] = int(number)
            except ValueError:
                pass
    return out


def int_list(text):
    """[int] from whitespace-separated numbers (cgroup.procs, cpuacct.usage_percpu)."""
    return [int(x) for x in text.split()]


def cpu_max(text):
    """(quota_us or None, period_us) from v2 cpu.max ("max 100000", "50000 100000")."""
    quota, _, period = text.strip().partition(" ")
    return (None if quota == "max" else int(quota)), int(period or 100000)


def v1_blkio(text):
    """Docker's blkio entries [{major, minor, op, value}] from v1 blkio *_bytes files."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue                             # the "Total N" line
        major, minor = parts[0].split(":")
        entries.append({"major": int(major), "minor": int(minor), "op": parts[1],
                        "value": int(parts[2])})
    return entries


def v2_io_as_blkio(stat):
    """Docker's blkio entries from parsed v2 io.stat, as the Docker daemon builds them."""
    entries = []
    for device, counters in sorted(stat.items()):
        major, minor = (int(x) for x in device.split(":"))
        for key, op in (("rbytes", "read"), ("wbytes", "write")):
            entries.append({"major": major, "minor": minor, "op": op, "value": counters.get(key, 0)})
    return entries


def blkio_totals(entries):
    """(bytes read, bytes written) summed over devices, whichever case the op names have."""
    read = sum(e["value"] for e in entries if e["op"].lower() == "read")
    write = sum(e["value"] for e in entries if e["op"].lower() == "write")
    return read, write


def proc_cgroup(text):
    """{controller: path} from /proc/<pid>/cgroup; the v2 (unified) entry is keyed ""."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out
