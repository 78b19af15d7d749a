"""What this host allows: the one probe every other part of ctrkernel asks.

`doctor()` runs the checks in `ctrkernel._probe` (each one a real attempt, in a throw-away child
process), caches the report for the life of the process, and decides the isolation level:

- ``full``: we are root and every namespace plus pivot_root works;
- ``rootless``: not root, but user namespaces work and a mount namespace works inside one;
- ``none``: nothing can be isolated (a Binder pod, say): processes can only be observed.

Nothing else in ctrkernel guesses: code that needs a feature calls `require()`, which raises
`HostLacks` naming the missing check and what to do about it.
"""
import html
import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from ctrkernel.errors import HostLacks

ISOLATION_LEVELS = ("full", "rootless", "none")

# The namespaces a container gets; all of them (and pivot_root) make "full" or "rootless".
CONTAINER_NAMESPACES = ("mountns", "pidns", "utsns", "ipcns", "netns")

# What each missing check means for a learner, in plain words, and what to do about it.
REMEDIES = {
    "root": "Run as root (sudo) for full isolation, or rely on user namespaces (rootless).",
    "userns": "Enable user namespaces (sysctl user.max_user_namespaces=15000; on Debian also "
              "kernel.unprivileged_userns_clone=1) or run as root.",
    "userns_mount": "The kernel refuses mounts inside user namespaces; run as root.",
    "mountns": "Containers need their own mount table: run as root or enable user namespaces.",
    "pidns": "Without a PID namespace a container would see every host process; run as root or enable user namespaces.",
    "utsns": "Without a UTS namespace a container cannot have its own hostname; run as root or enable user namespaces.",
    "ipcns": "Without an IPC namespace a container shares System V IPC with the host; run as root or enable user namespaces.",
    "netns": "Without a network namespace a container shares the host's network; run as root or enable user namespaces.",
    "cgroupns": "Without a cgroup namespace a container sees the host's cgroup paths; run as root or enable user namespaces.",
    "pivot_root": "Without pivot_root the container's root can only be a chroot; run as root or enable user namespaces.",
    "overlayfs": "Without overlayfs image layers are copied instead of stacked.",
    "overlayfs_userns": "Rootless containers fall back to fuse-overlayfs or a copy of the layers.",
    "fuse_overlayfs": "apt-get install fuse-overlayfs (needs /dev/fuse).",
    "cgroups": "Limits on memory, CPU and processes need a writable cgroup hierarchy: run as root "
               "(or with a delegated cgroup v2 subtree). Metrics can still be observed.",
    "no_new_privs": "no_new_privs is set for this session (as on Binder): setuid helpers such as "
                    "newuidmap cannot work.",
    "busybox": "apt-get install busybox-static (the course's base image is built from it).",
    "qemu": "apt-get install qemu-system-x86 to boot real virtual machines; without it the "
            "course shows recorded VM measurements from data/.",
    "kvm": "Without a usable /dev/kvm, VMs run under software emulation (slower, still real).",
    "vm_kernel": "apt-get install linux-image-cloud-amd64 for a kernel to boot in VMs.",
    "vm_disk": "apt-get install e2fsprogs qemu-utils to build and measure a VM disk image.",
    "cc": "apt-get install gcc: the per-container shim and the layer loops are compiled from C on "
          "first use (without it: a Python waiter per container, slower layers).",
    "proot": "apt-get install proot: lets containers run in their image's filesystem with no "
             "namespaces at all (as on Binder).",
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    data: dict = field(default=None, compare=False, repr=False)

    @property
    def remedy(self):
        return "" if self.ok else REMEDIES.get(self.name, "")


def decide_isolation(ok):
    """The isolation level from a mapping of check name -> bool. Pure, so it is unit tested."""
    namespaces = all(ok.get(n, False) for n in CONTAINER_NAMESPACES) and ok.get("pivot_root", False)
    if ok.get("root", False) and namespaces:
        return "full"
    if not ok.get("root", False) and ok.get("userns", False) and ok.get("userns_mount", False) \
            and namespaces:
        return "rootless"
    return "none"


ISOLATION_MEANING = {
    "full": "Full isolation: every namespace, pivot_root, and cgroup limits where writable.",
    "rootless": "Rootless isolation: namespaces inside a user namespace; you are root only "
                "inside the container. cgroup limits only where a subtree is delegated to you.",
    "none": "No isolation: this host lets us create no namespaces, so 'containers' run as plain "
            "processes in the image's files where possible. Everything is observed, nothing is "
            "enforced, and each result says so.",
}


@dataclass(frozen=True)
class HostReport:
    checks: tuple
    isolation: str

    @classmethod
    def from_checks(cls, checks):
        checks = tuple(checks)
        return cls(checks, decide_isolation({c.name: c.ok for c in checks}))

    def check(self, name) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"the probe has no check named {name!r}")

    def ok(self, name) -> bool:
        return self.check(name).ok

    def require(self, name, feature):
        """Raise HostLacks unless check `name` passed; `feature` says what needed it."""
        c = self.check(name)
        if not c.ok:
            raise HostLacks(feature, f"{name} ({c.detail})", c.remedy)

    @property
    def cgroup(self) -> dict:
        """The cgroup layout: version (v1/v2/hybrid/none), driver (v1/v2/none), writable, mounts."""
        return dict(self.check("cgroups").data or {"version": "none", "driver": "none",
                                                     "writable": []})

    def to_dict(self):
        return {
            "isolation": self.isolation,
            "meaning": ISOLATION_MEANING[self.isolation],
            "cgroup": self.cgroup,
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, "remedy": c.remedy}
                for c in self.checks
            ],
        }

    def to_json(self, **kw):
        return json.dumps(self.to_dict(), **kw)

    def __str__(self):
        width = max(len(c.name) for c in self.checks)
        lines = [f"isolation: {self.isolation}", f"  {ISOLATION_MEANING[self.isolation]}", ""]
        for c in self.checks:
            lines.append(f"{'ok ' if c.ok else 'NO '} {c.name:<{width}}  {c.detail}")
            if c.remedy:
                lines.append(f"    {'':<{width}}  -> {c.remedy}")
        return "\n".join(lines)

    def _repr_html_(self):
        e = html.escape
        rows = "".join(
            f"<tr><td style='text-align:center'>{'&#x2705;' if c.ok else '&#x274C;'}</td>"
            f"<td><code>{e(c.name)}</code></td><td style='text-align:left'>{e(c.detail)}"
            + (f"<br><i>{e(c.remedy)}</i>" if c.remedy else "") + "</td></tr>"
            for c in self.checks
        )
        return (
            f"<p><b>Isolation on this host: <code>{e(self.isolation)}</code></b> &mdash; "
            f"{e(ISOLATION_MEANING[self.isolation])}</p>"
            "<table><thead><tr><th></th><th>check</th><th style='text-align:left'>what we found"
            f"</th></tr></thead><tbody>{rows}</tbody></table>"
        )


_cache = None
_lock = threading.Lock()


def run_probe():
    """Run every check for real in a fresh worker process; return the list of Checks."""
    done = subprocess.run(
        [sys.executable, "-m", "ctrkernel._probe"], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"the host probe failed: {done.stderr.strip()}")
    return [Check(e["name"], e["ok"], e["detail"], e.get("data")) for e in json.loads(done.stdout)]


def doctor(refresh=False) -> HostReport:
    """What this host allows. Computed once per process (pass refresh=True to probe again)."""
    global _cache
    with _lock:
        if _cache is None or refresh:
            _cache = HostReport.from_checks(run_probe())
        return _cache
