# %% [markdown]
# # 02 · A container is a process
#
# > **컨테이너란 무엇인가?** — *What is a container?* (Q2)
#
# The deck says "Container = Process". This chapter makes that literal: you will look at an
# ordinary process, give it one kind of isolation at a time (a *namespace*), then all of them
# together with a new root filesystem, and find that the result, a container, is still just a
# process on the host, one that sees a smaller world.
#
# **Objectives**
# - read a process's identity in `/proc/<pid>/`, including its namespaces;
# - create each namespace alone and see what it changes (and what it does not);
# - know why a container's root is switched with `pivot_root`, not `chroot`;
# - find a running container's process from the host.
#
# **What this machine allows** (the probe from chapter 00):

# %%
import ctrkernel

report = ctrkernel.doctor()
print("isolation:", report.isolation)
for name in ("utsns", "pidns", "mountns", "netns", "ipcns", "userns", "cgroupns", "pivot_root"):
    print(f"  {name:<11}", "yes" if report.ok(name) else "no ")

# %% [markdown]
# ## 1. A process and its `/proc` entry
#
# Every process has a directory `/proc/<pid>/`. Its `ns/` subdirectory holds one link per
# namespace the process lives in; the number in each link (an inode) *is* the namespace's
# identity: two processes are in the same namespace exactly when those numbers are equal.

# %%
import os

import psutil

me = psutil.Process()
print("this notebook's kernel is PID", me.pid, "running", me.name(), "as uid", me.uids().real)
for kind in sorted(os.listdir(f"/proc/{me.pid}/ns")):
    print(f"  {kind:<18} -> {os.readlink(f'/proc/{me.pid}/ns/{kind}')}")

# %% [markdown]
# ## 2. Each namespace alone
#
# `alone(kind)` starts a short-lived child process, calls `unshare()` for that one namespace,
# and reports what it sees; the table puts it beside what this notebook sees. Watch the
# namespace inode change, and the hostname, process list, mounts or interfaces with it.

# %%
import socket

from ctrkernel.errors import HostLacks
from ctrkernel.lessons.nsdemo import KINDS, alone

demos = {}
for kind in KINDS:
    try:
        demos[kind] = alone(kind)
        display(demos[kind])
    except HostLacks as e:
        print(f"{kind}: cannot be shown on this host.\n  {e}\n")

# %% [markdown]
# What you should see:
#
# - **uts**: the child renamed itself `container`; this notebook's hostname did not change.
# - **pid**: the first process in a new PID namespace is **PID 1** and sees only itself.
# - **mnt**: a tmpfs mounted inside is not a mount point outside.
# - **net**: only `lo` inside: no route to anywhere until someone adds an interface.
# - **user**: uid 0 inside; outside it is still you. Rootless containers are built on this.
#
# On a host that forbids namespaces (Binder), each demo says so instead: that is the honest
# outcome, since no process there may create one.
#
# ### Look at one from outside while it lives
#
# Each child above was gone by the time its table appeared. `holding(kind)` keeps one alive
# for the length of a `with` block and gives you its PID *as the host numbers it*, so you can
# inspect it from outside like any other process: its `/proc/<pid>/ns/uts` link names a
# different namespace than ours, and `nsenter` (which calls `setns()` to join another process's
# namespaces) runs `hostname` in there. When the block ends the process is killed and reaped.

# %%
import shutil
import subprocess

from ctrkernel.lessons.nsdemo import holding

try:
    with holding("uts", hostname="held-box") as pid:
        print("a process in its own UTS namespace: PID", pid)
        print("  /proc/<pid>/ns/uts  ->", os.readlink(f"/proc/{pid}/ns/uts"))
        print("  /proc/self/ns/uts   ->", os.readlink("/proc/self/ns/uts"), "(this notebook)")
        # As root nsenter may join any namespace; rootless it must first join the process's
        # user namespace (which we own), where it gets the right to enter the UTS one.
        join = ["--uts"] if os.geteuid() == 0 else ["--user", "--preserve-credentials", "--uts"]
        if shutil.which("nsenter"):
            seen = subprocess.run(["nsenter", f"--target={pid}", *join, "hostname"],
                                  capture_output=True, text=True)
            print("  nsenter ... hostname:", (seen.stdout or seen.stderr).strip())
        else:
            print("  (nsenter is not installed here: the ns links above are the evidence)")
        print("  our own hostname:    ", socket.gethostname())
    print("after the block, does the process still exist?", os.path.exists(f"/proc/{pid}"))
except HostLacks as e:
    print(f"uts: cannot be shown on this host.\n  {e}")

# %% [markdown]
# ## 3. A new root: `chroot` is not enough, `pivot_root` is
#
# `chroot(dir)` changes only where *this* process's path lookups start. A root process inside
# a chroot can escape it: make a directory, `chroot` into that (now the process's working
# directory is *outside* its root), `cd ..` repeatedly, and `chroot .` at the real root. The
# old filesystem was never taken away, only hidden.
#
# `pivot_root(new, old)` instead changes the root *mount* of the whole mount namespace and puts
# the old root at `old`, which the runtime then unmounts (`umount2(old, MNT_DETACH)`). After
# that there is no path back: the host's filesystem is not hidden, it is gone from the
# container's mount table. (It only works in a private mount namespace, on a new root that is
# a mount point; on the host's shared `/` it fails with `EINVAL`, one reason every runtime
# first unshares a mount namespace and bind-mounts the new root onto itself.)
#
# Try it for real. `escape_attempt` builds a tiny jail (a tmpfs with three empty directories)
# in a throw-away process with its own mount table, enters it with `chroot` or with
# `pivot_root`, then runs exactly the escape above and lists `/` wherever it ended up.

# %%
from ctrkernel.lessons.nsdemo import escape_attempt

for how in ("chroot", "pivot_root"):
    try:
        attempt = escape_attempt(how)
    except HostLacks as e:
        print(f"{how}: cannot be shown on this host: {e}")
        continue
    print(f"{how:>10}: jail holds {attempt['jail']}")
    print(f"{'':>10}  after the escape '/' holds {attempt['after_escape'][:8]}"
          f"{' ...' if len(attempt['after_escape']) > 8 else ''}")
    print(f"{'':>10}  escaped to the host's root: {attempt['escaped']}")

# %% [markdown]
# After `chroot`, the escape lands on the host's real root (`boot`, `usr`, `home`...). After
# `pivot_root` and the detach, "up" from the jail's root is the jail's root: the escape finds
# only the jail again. That is why every container runtime, this one included, uses
# `pivot_root`.
#
# Here is the result from inside a real container: its root is the image, and the host's
# mount table is not there.

# %%
from ctrkernel.runtime import run


def inside(command):
    try:
        return run("busybox", ["sh", "-c", command], remove=True).decode()
    except HostLacks as e:
        return f"(no container on this host: {e})"


print(inside("echo root has: $(ls /); echo mounts seen: $(wc -l < /proc/mounts)"))
with open("/proc/mounts") as f:
    print("mounts the host has:", sum(1 for _ in f))

# %% [markdown]
# **On a Binder-like host** (`isolation: none` in the first cell) this section looks different,
# and that is the truth about such a host, not a failure of the course:
#
# - both escape demos print *cannot be shown on this host*: each needs a private mount
#   namespace, which an unprivileged user may only create inside a user namespace, and Binder
#   forbids user namespaces;
# - the container above still runs, but without `pivot_root`. ctrkernel falls back to `proot`,
#   which fakes the root by rewriting the path in every system call the container makes (it
#   traces it with `ptrace`). `ls /` shows the image, yet the container counts exactly as many
#   mounts as the host: nothing was unmounted. Like `chroot`, the host's filesystem is only
#   hidden, not gone. Section 4 prints `'rootfs': 'proot-copy', 'pivot_root': False` to say so.

# %% [markdown]
# ## 4. All together: a container
#
# A container is one process given all the namespaces at once, a new root by `pivot_root`, a
# smaller set of capabilities and, in chapter 03, cgroup limits. Start one in the background and
# look at it from both sides.

# %%
import time

from ctrkernel.runtime import run

try:
    box = run("busybox", ["sleep", "120"], detach=True, hostname="box")
except HostLacks as e:
    box = None
    print("no container on this host:", e)

if box is not None:
    print("isolation it really had:", box.isolation)
    # exec_run starts a new process in the container's namespaces: this shell is not the
    # container's main process (`sleep`), it joins it.
    print("inside, seen by a shell exec'd into the container:",
          box.exec_run(["sh", "-c", "echo the shell is PID $$, and ps lists:; ps"]).output.decode())
    print("on the host the same process is PID", box.pid, "->", psutil.Process(box.pid).cmdline())
    for kind in ("pid", "uts", "mnt", "net"):
        same = os.stat(f"/proc/{box.pid}/ns/{kind}").st_ino == os.stat(f"/proc/self/ns/{kind}").st_ino
        print(f"  {kind}: {'shared with' if same else 'different from'} this notebook")

# %% [markdown]
# Notice: the host sees the container's `sleep` as an ordinary process with an ordinary PID;
# inside, it is PID 1, and `ps` lists only it and the shell we exec'd. Nothing was booted and
# there is no second kernel: that is the whole difference from the VMs of chapter 01. (On a
# Binder-like host there is no PID namespace: `ps` lists the host's processes, and the
# isolation line above says `'namespaces': []`.)

# %%
if box is not None:
    host_pid = box.pid
    box.remove(force=True)
    print("removed; is its process gone from the host?", not psutil.pid_exists(host_pid))

# %% [markdown]
# ## Exercises
#
# 1. In the table for `pid`, why does the child see itself as PID 1 while the host gave it
#    another PID? Check your work below: from a fresh container, print the PID of its first
#    process as it sees it.
# 2. Which namespace makes `ps` inside a container show so few processes: `pid` or `mnt`?
#    (Hint: `ps` reads `/proc`.)
#    Write your answer (`"pid"`, `"mnt"` or `"both"`) in `answer_2` below; the check runs
#    `ps`'s view of `/proc` in a child with each namespace alone, then with both.
# 3. The chroot escape needs the process to be allowed to call `chroot` (CAP_SYS_CHROOT).
#    Which capability set does a container from chapter 02 keep? Check below whether
#    `chroot` is even in it.

# %%
# NBVAL_CHECK_OUTPUT
# Check your work (exercise 1): the first process of a container is PID 1, wherever isolation exists.
answer = inside("echo $$").strip()
if report.isolation == "none":
    print("no PID namespace on this host; where there is one you would see: PID 1 inside")
else:
    print("PID 1 inside" if answer == "1" else f"unexpected: {answer}")

# %%
answer_2 = None  # your answer to exercise 2: "pid", "mnt" or "both"

# %%
# NBVAL_CHECK_OUTPUT
# Check your work (exercise 2): does a child that lists /proc (as ps does) find only itself?
from ctrkernel.lessons.nsdemo import PS_SETUPS, ps_sees_only_itself

try:
    sees_only_itself = {setup: ps_sees_only_itself(*setup) for setup in PS_SETUPS}
except HostLacks as e:
    sees_only_itself = None
    print("the experiment cannot run on this host (no namespaces here, so ps always lists every"
          " process):\n ", e)
if sees_only_itself is not None:
    name = {("pid",): "pid", ("mnt",): "mnt", ("mnt", "pid"): "both"}
    for setup, alone_in_proc in sees_only_itself.items():
        print(f"{name[setup]:<4} ps sees only itself: {alone_in_proc!s:<5}  ({PS_SETUPS[setup]})")
    enough = [name[setup] for setup, ok in sees_only_itself.items() if ok]
    if answer_2 is None:
        print('set answer_2 above to "pid", "mnt" or "both" and run this cell again')
    else:
        print("your answer matches the experiment:", answer_2 == (enough[0] if enough else None))

# %%
# Check your work (exercise 3): the capabilities a container keeps (Docker's default set).
caps = inside("grep CapBnd /proc/self/status")
print(caps.strip())
if caps.startswith("CapBnd"):
    bounding = int(caps.split()[1], 16)
    print("CAP_SYS_CHROOT (18) kept:", bool(bounding & (1 << 18)),
          "| CAP_SYS_ADMIN (21) kept:", bool(bounding & (1 << 21)))

# %% [markdown]
# <details><summary>Solutions</summary>
#
# 1. PID numbers belong to a PID namespace. The kernel gives the process a number in *every*
#    PID namespace it is visible in: its own (where it is the first, so 1) and each ancestor's
#    (the host's, where it is just the next free number).
# 2. Both: the `pid` namespace decides which processes exist for it, and a fresh `/proc`
#    (mounted in the container's own mount namespace) lets `ps` see exactly those. With a PID
#    namespace but the host's `/proc`, `ps` would still list every host process.
# 3. Docker's default set keeps `CAP_SYS_CHROOT`, so the chroot trick is *allowed*, yet it no
#    longer leads anywhere: after `pivot_root` there is no host root above the container's.
#    `CAP_SYS_ADMIN` (mount, pivot_root, unshare...) is dropped, so the container cannot undo
#    its own isolation.
#
# </details>
#
# ## Key points
#
# - A namespace gives a process its own copy of one kind of global resource; the inode in
#   `/proc/<pid>/ns/` names it.
# - A container is a process in a new set of namespaces whose root was switched with
#   `pivot_root` (not escapable like `chroot`), with fewer capabilities.
# - The host sees every container process; the container sees only its own.
# - Next: [03 · cgroups](03.00-Cgroups-Memory-Limits-And-The-OOM-Kill.ipynb), the limits that namespaces do not give.
