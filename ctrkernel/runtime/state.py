"""The state directory: one directory per container, readable by any process.

    <home>/containers/<id>/config.json   what was asked for (written once at create)
                           run.json      what was started: pids and their start times, isolation
                           status.json   how it ended (written atomically by the shim)
                           stdout.log, stderr.log, upper/, work/, rootfs/

A process is identified by (pid, start time) rather than pid alone, so that a pid reused by an
unrelated process after a crash is never signalled.
"""
import json
import os
import secrets
import shutil
from pathlib import Path

from ctrkernel import paths


def root() -> Path:
    return paths.subdir("containers")


def new_id():
    return secrets.token_hex(32)


def container_dir(container_id) -> Path:
    return root() / container_id


def all_ids():
    try:
        return sorted(e.name for e in os.scandir(root()) if e.is_dir() and
                      os.path.exists(os.path.join(e.path, "config.json")))
    except FileNotFoundError:
        return []


def read_json(directory, name):
    try:
        with open(Path(directory) / name) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(directory, name, data):
    """Write atomically: readers in other processes see the old file or the new one."""
    path = Path(directory) / name
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def remove_dir(directory):
    """Remove a container's directory, including a writable layer root may own oddly."""
    shutil.rmtree(directory, ignore_errors=True)
    if os.path.exists(directory):
        # Overlay's work dir can hold a root-owned, mode-000 "work" subdirectory.
        for dirpath, dirnames, _ in os.walk(directory):
            for d in dirnames:
                try:
                    os.chmod(os.path.join(dirpath, d), 0o700)
                except OSError:
                    pass
        shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------ process identity

def start_time(pid):
    """The kernel's start time of pid (clock ticks since boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None  # a zombie has finished; only its parent's wait is missing
    return int(fields[19])


def identity(pid):
    return {"pid": pid, "start": start_time(pid)}


def alive(ident):
    """True if the process recorded as `ident` (a dict from identity()) still runs."""
    if not ident or not ident.get("pid"):
        return False
    return ident.get("start") is not None and start_time(ident["pid"]) == ident["start"]
