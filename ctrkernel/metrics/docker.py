"""Container statistics in the exact shape of Docker's Engine API (`GET /containers/{id}/stats`,
schema `ContainerStatsResponse`), and the columns `docker stats` prints from it.

The daemon side (`to_docker`): one `Sample` becomes `cpu_stats` (container CPU in ns, the host's
`system_cpu_usage` in ns from /proc/stat, `online_cpus`, throttling), the previous sample becomes
`precpu_stats`, memory as the kernel counts it (`usage` includes page cache), `pids_stats`,
`blkio_stats.io_service_bytes_recursive`. Docker's conventions are kept: an unlimited memory
limit is reported as the host's RAM; a pids limit of 0 means none; `networks` is omitted when the
container has no network interface other than loopback (network "none" or "host"); `num_procs`
is 0 on Linux; `precpu_stats` is empty for a one-shot read.

The client side (`cpu_percent`, `memory_usage`, `row`): the docker CLI's arithmetic, so that a
percentage computed here from a real daemon's JSON is the one `docker stats` shows.
"""
import datetime
import time

from ctrkernel.metrics.sample import NS

ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(epoch):
    """Docker's timestamp format: RFC 3339 in UTC with nanoseconds."""
    whole = int(epoch)
    nanos = int(round((epoch - whole) * NS))
    if nanos >= NS:
        whole, nanos = whole + 1, nanos - NS
    base = datetime.datetime.fromtimestamp(whole, datetime.timezone.utc)
    return base.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def host_memory():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_stats(sample):
    if sample is None:
        return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                              "usage_in_usermode": 0},
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    s = sample.stats
    usage = {"total_usage": s.cpu_usage_ns or 0, "usage_in_kernelmode": s.cpu_system_ns or 0,
             "usage_in_usermode": s.cpu_user_ns or 0}
    if s.cpu_percpu_ns:                    # cgroup v1 only, as in Docker
        usage["percpu_usage"] = list(s.cpu_percpu_ns)
    return {"cpu_usage": usage, "system_cpu_usage": sample.system_cpu_ns,
            "online_cpus": sample.online_cpus,
            "throttling_data": {"periods": s.cpu_periods or 0,
                                "throttled_periods": s.cpu_throttled_periods or 0,
                                "throttled_time": s.cpu_throttled_ns or 0}}


def _memory_stats(sample):
    s = sample.stats
    limit = s.memory_limit
    machine = host_memory()
    if limit is None or (machine and limit > machine):
        limit = machine                    # Docker: no limit -> the host's memory
    memory = {"usage": s.memory_usage or 0, "stats": dict(s.memory_stat or {}), "limit": limit}
    if s.source.startswith("cgroup v1"):   # v1 has these counters, v2 does not (Docker omits)
        memory["max_usage"] = s.memory_max_usage or 0
        memory["failcnt"] = s.memory_failcnt or 0
    elif s.memory_max_usage is not None:
        memory["max_usage"] = s.memory_max_usage
    return memory


def _networks(pid):
    """{interface: counters} from the container's network namespace, loopback excluded."""
    if not pid:
        return {}
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.readlines()[2:]
    except OSError:
        return {}
    networks = {}
    for line in lines:
        name, _, numbers = line.partition(":")
        name = name.strip()
        if name == "lo":
            continue
        v = [int(x) for x in numbers.split()]
        networks[name] = {"rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2],
                          "rx_dropped": v[3], "tx_bytes": v[8], "tx_packets": v[9],
                          "tx_errors": v[10], "tx_dropped": v[11]}
    return networks


def to_docker(sample, previous=None, name=None, container_id=None, pid=None, network=True):
    """A Docker `ContainerStatsResponse` dict from a Sample (and the one before it)."""
    s = sample.stats
    out = {
        "read": rfc3339(sample.time),
        "preread": rfc3339(previous.time) if previous is not None else ZERO_TIME,
        "pids_stats": {"current": s.pids_current or 0, "limit": s.pids_limit or 0},
        "blkio_stats": {"io_service_bytes_recursive": [dict(e) for e in s.blkio_devices],
                        "io_serviced_recursive": None, "io_queue_recursive": None,
                        "io_service_time_recursive": None, "io_wait_time_recursive": None,
                        "io_merged_recursive": None, "io_time_recursive": None,
                        "sectors_recursive": None},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu_stats(sample),
        "precpu_stats": _cpu_stats(previous),
        "memory_stats": _memory_stats(sample),
        "name": f"/{name}" if name else "",
        "id": container_id or "",
    }
    networks = _networks(pid) if network else {}
    if networks:
        out["networks"] = networks
    return out


def stats(container, stream=False, one_shot=False, interval=1.0):
    """docker-py's `container.stats(decode=True, stream=..., one_shot=...)` for our containers.

    stream=False: one dict; like the daemon it samples twice, `interval` seconds apart, so that
    `precpu_stats` is filled and a CPU percentage can be computed (one_shot=True: once, with an
    empty `precpu_stats`). stream=True: a generator of dicts, one every `interval` seconds, each
    with the previous sample as `precpu_stats`."""
    from ctrkernel.metrics.sources import ContainerSource
    source = ContainerSource(container)
    # Docker reports no networks for --network host (the host's counters are not the
    # container's); with its own namespace, the interfaces other than loopback are its own.
    network = container.attrs.get("Network", "none") != "host" \
        and bool(container.attrs.get("Isolation", {}).get("namespaces"))

    def shaped(sample, previous):
        return to_docker(sample, previous, container.name, container.id, container.pid,
                         network=network)

    def generate():
        previous = None
        while True:
            sample = source.read()
            if sample is None:
                return
            yield shaped(sample, previous)
            previous = sample
            time.sleep(interval)

    if stream:
        return generate()
    first = source.read()
    if first is None:
        from ctrkernel.errors import Conflict
        raise Conflict(f"container {container.name} has no statistics (removed?)")
    if one_shot:
        return shaped(first, None)
    time.sleep(interval)
    second = source.read() or first
    return shaped(second, first)


# ---- the docker CLI's arithmetic ---------------------------------------------------------------
def cpu_percent(s):
    """CPU % from a stats dict, as `docker stats`: (container CPU delta / host CPU delta) x
    online CPUs x 100, 0.0 when either delta is not positive."""
    cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage", 0)
                 - pre.get("cpu_usage", {}).get("total_usage", 0))
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or [])
    if system_delta > 0 and cpu_delta > 0:
        return cpu_delta / system_delta * online * 100.0
    return 0.0


def memory_usage(memory_stats):
    """Memory in use as `docker stats` shows it: usage minus `total_inactive_file` (cgroup v1)
    or `inactive_file` (v2) when that is smaller than usage."""
    usage = memory_stats.get("usage", 0)
    stat = memory_stats.get("stats") or {}
    if "total_inactive_file" in stat and stat["total_inactive_file"] < usage:
        return usage - stat["total_inactive_file"]
    if stat.get("inactive_file", usage) < usage:
        return usage - stat["inactive_file"]
    return usage


def memory_percent(memory_stats):
    limit = memory_stats.get("limit", 0)
    return memory_usage(memory_stats) / limit * 100.0 if limit else 0.0


def block_io(s):
    """(bytes read, bytes written) summed over devices, ops compared case-insensitively."""
    entries = (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    read = sum(e["value"] for e in entries if e.get("op", "").lower() == "read")
    write = sum(e["value"] for e in entries if e.get("op", "").lower() == "write")
    return read, write


def network_io(s):
    nets = (s.get("networks") or {}).values()
    return sum(n.get("rx_bytes", 0) for n in nets), sum(n.get("tx_bytes", 0) for n in nets)


def _go_g(value, precision):
    """Go's %.<p>g for the magnitudes go-units prints (no exponent below 10**p)."""
    return f"{value:.{precision}g}"


def bytes_size(n):
    """go-units BytesSize: binary units, 4 significant digits ("12.81MiB")."""
    value, units = float(n), ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    i = 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    return _go_g(value, 4) + units[i]


def human_size(n, precision=3):
    """go-units HumanSizeWithPrecision: decimal units ("168MB")."""
    value, units = float(n), ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    i = 0
    while value >= 1000 and i < len(units) - 1:
        value /= 1000
        i += 1
    return _go_g(value, precision) + units[i]


COLUMNS = [("Container", "CONTAINER"), ("ID", "CONTAINER ID"), ("Name", "NAME"),
           ("CPUPerc", "CPU %"), ("MemUsage", "MEM USAGE / LIMIT"), ("MemPerc", "MEM %"),
           ("NetIO", "NET I/O"), ("BlockIO", "BLOCK I/O"), ("PIDs", "PIDS")]
DEFAULT_TABLE = ["ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs"]


def row(s):
    """The fields `docker stats --format` offers, formatted as the docker CLI does."""
    memory = s.get("memory_stats") or {}
    read, write = block_io(s)
    rx, tx = network_io(s)
    name = (s.get("name") or "").lstrip("/")
    return {"Container": name or s.get("id", "")[:12], "ID": s.get("id", "")[:12], "Name": name,
            "CPUPerc": f"{cpu_percent(s):.2f}%",
            "MemUsage": f"{bytes_size(memory_usage(memory))} / "
                        f"{bytes_size(memory.get('limit', 0))}",
            "MemPerc": f"{memory_percent(memory):.2f}%",
            "NetIO": f"{human_size(rx)} / {human_size(tx)}",
            "BlockIO": f"{human_size(read)} / {human_size(write)}",
            "PIDs": str((s.get("pids_stats") or {}).get("current", 0))}


def table(rows, fields=None):
    """Rows (from `row`) as docker's aligned table (columns 3 spaces apart)."""
    fields = fields or DEFAULT_TABLE
    headers = dict(COLUMNS)
    lines = [[headers.get(f, f.upper()) for f in fields]] + [[r[f] for f in fields] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(fields))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)
