"""Containers: a process with its own namespaces, root filesystem, limits and state.

    from ctrkernel.runtime import create, run, get, list_containers, prune
    c = run("busybox", ["sh", "-c", "hostname; echo hi"], detach=True)
    c.wait(); c.logs(); c.remove()

See container.py for the lifecycle, spawn.py for the process chain, rootfs.py for the mounts.
"""
from ctrkernel.runtime.container import (Container, ExecResult, create, get, list_containers,
                                         prune, run)

__all__ = ["Container", "ExecResult", "create", "get", "list_containers", "prune", "run"]
