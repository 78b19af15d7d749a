"""Hardening applied in the container's first process just before exec.

Capabilities are bounded to Docker's default set (moby's `oci/caps/defaults.go`): everything
else is dropped from the bounding set, so not even a setuid binary can regain it, and the
ambient set is cleared. `no_new_privs` then stops execve from granting privileges at all.
"""
import os

from ctrkernel import _libc
from ctrkernel.errors import InvalidArgument

CAPABILITIES = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

DOCKER_DEFAULT = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                  "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                  "AUDIT_WRITE")
DEFAULT_MASK = sum(1 << CAPABILITIES[name] for name in DOCKER_DEFAULT)


def last_cap():
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAPABILITIES.values())


def names(mask):
    """The capability names in a 64-bit mask (as read from CapBnd/CapEff in /proc/PID/status)."""
    by_bit = {bit: name for name, bit in CAPABILITIES.items()}
    return sorted(by_bit.get(bit, f"CAP_{bit}") for bit in range(64) if mask >> bit & 1)


def _entries(path):
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip()
                    and not line.startswith("#")]
    except OSError:
        return []


def _topmost(layers, rel):
    """The file as the container will see it: from the highest layer that has it."""
    for layer in reversed(layers):
        path = os.path.join(layer, rel)
        if os.path.lexists(path):
            return path
    return os.path.join(layers[0], rel) if layers else rel


def resolve_user(user, root="/", layers=None):
    """Docker's --user forms (name, uid, name:group, uid:gid) -> (uid, gid, extra gids),
    looked up in the container's own /etc/passwd and /etc/group (in `root`, or in the image
    `layers` before the container's root exists)."""
    if user in (None, ""):
        user = "0"
    name, _, group = str(user).partition(":")
    where = (lambda rel: _topmost(layers, rel)) if layers else (lambda rel: os.path.join(root, rel))
    passwd = _entries(where("etc/passwd"))
    groups = _entries(where("etc/group"))
    entry = next((e for e in passwd if len(e) > 3 and (e[0] == name or e[2] == name)), None)
    if entry:
        uid, gid = int(entry[2]), int(entry[3])
    elif name.isdigit():
        uid, gid = int(name), 0 if not entry else int(entry[3])
    else:
        raise InvalidArgument(f"unable to find user {name}: no matching entries in passwd file")
    if group:
        match = next((g for g in groups if len(g) > 2 and (g[0] == group or g[2] == group)), None)
        if match:
            gid = int(match[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise InvalidArgument(f"unable to find group {group}: no matching entries in group file")
    member_name = entry[0] if entry else None
    extra = sorted({int(g[2]) for g in groups if len(g) > 3 and member_name
                    and member_name in g[3].split(",")} - {gid})
    return uid, gid, extra


def harden_and_become(uid, gid, extra_gids):
    """Bound capabilities, switch user, set no_new_privs. Call last before exec."""
    for cap in range(last_cap() + 1):
        if not DEFAULT_MASK >> cap & 1:
            try:
                _libc.prctl(_libc.PR_CAPBSET_DROP, cap)
            except OSError:
                pass  # unknown to this kernel
    try:
        os.setgroups(extra_gids)
    except PermissionError:
        # A rootless user namespace must deny setgroups (to write its gid_map unprivileged).
        if extra_gids:
            raise
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # for uid != 0 this clears permitted and effective sets
    if uid == 0:
        _libc.capset(DEFAULT_MASK, DEFAULT_MASK, 0)
    _libc.prctl(_libc.PR_CAP_AMBIENT, _libc.PR_CAP_AMBIENT_CLEAR_ALL)
    _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)
