"""`ctrkernel doctor`."""
from ctrkernel.cli.registry import arg, verb


@verb("doctor")
@arg("--json", action="store_true", help="print one JSON object (isolation, cgroup, checks)")
def doctor(args):
    """Show what this host allows: namespaces, overlayfs, cgroups, VMs, and the isolation level.

    Every check is a real attempt in a short-lived child process. The isolation level is
    `full` (root), `rootless` (user namespaces) or `none` (nothing can be isolated).
    """
    from ctrkernel.host import doctor as probe

    report = probe()
    print(report.to_json(indent=2) if args.json else report)
    return 0
