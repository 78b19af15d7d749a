# %% [markdown]
# # 03.02 · A fork bomb contained, and what a host can enforce
#
# | | 한국어 | English |
# |---|---|---|
# | **Q4** | 컨테이너의 장점은? | What are the advantages of containers? |
#
# A **fork bomb** is a program that copies itself without end: `b() { b | b & }; b` in a shell.
# On bare metal it fills the kernel's process table and the machine stops answering. In a
# container with a **pids limit** (`docker run --pids-limit 32`), the kernel refuses the 33rd
# process of that group and the rest of the host does not notice.
#
# **Objectives**
# - contain a real fork bomb with the pids controller and check that the host is unaffected;
# - list what a Binder-like host (no writable cgroups) can and cannot enforce, and see the
#   one cgroup such a session *can* observe: its own.
#
# **What this machine allows:**

# %%
from ctrkernel import metrics
from ctrkernel.lessons import cgroups as lesson
from ctrkernel.runtime.cgroups import cgroup_manager

print(lesson.machine())
ENFORCED = lesson.limits_enforced()

# %% [markdown]
# ## 1. A fork bomb in a box
#
# Our bomb is a tree: every copy starts two more copies, seven levels deep, so it wants
# 2⁷ = 128 sleeping leaves plus the copies waiting for them, about 255 processes. (A real bomb
# never stops; this one is bounded, and its leaves end after 20 s, so that it is also safe to
# run on a machine where no limit is enforced.) The container gets `pids_limit=32`, and
# `cpus=0.5` so that nothing in it can take more than half a CPU from the host.

# %%
print(lesson.fork_bomb())
before = lesson.host_check()
bomb = lesson.start(lesson.fork_bomb(), "bomb", pids_limit=32, cpus=0.5, memory="128m")
dash = lesson.watch(bomb, seconds=5, title="fork bomb (wants ~255 processes), --pids-limit 32")
during = lesson.host_check()

# %%
dash.figure()

# %% [markdown]
# **Claim: the kernel stops the bomb at the limit, and the host still works.** The most
# processes the sampler saw in the group, how many `fork()` calls the kernel refused because
# the group was full (the pids controller counts them in `pids.events`), and the host seen from
# outside before and during the bomb:

# %%
print("most processes seen in the container:", dash.summary()["bomb"]["max_pids"],
      "(limit 32; the bomb wants about 255)")
refused = lesson.fork_refusals(bomb)
print("fork() calls refused by the pids controller:",
      refused if refused is not None else "not counted here (no pids cgroup of ours)")
print("host before:", before)
print("host during:", during)
lesson.remove(bomb)

# %% [markdown]
# Every `fork()` past the 32nd fails with EAGAIN ("can't fork: Resource temporarily
# unavailable"). Busybox's shell exits when it cannot fork, so the copies that hit the wall
# disappear and the tree settles *below* the limit with the leaves that did start; the kernel's
# refusal counter is the proof that the wall was hit. The host, meanwhile, starts a process as
# fast as before. (`lesson.unbounded_fork_bomb()` is the classic `b() { b | b & }; b`: in a
# container with a pids limit it burns out within a second; never run it without one.)
# Removing the container kills the whole group at once: the kernel knows every member.
#
# ## 2. What a Binder-like host can and cannot enforce
#
# On Binder (and many shared notebook services) your session is an unprivileged user in a
# Kubernetes pod: `/sys/fs/cgroup` is read-only, so no cgroup can be created and **no container
# limit can be enforced by cgroups**. ctrkernel's cgroup driver then is the *null* one, which
# says why and uses `setrlimit` where that gives a real, weaker limit:
#
# | limit | with cgroups (root here) | Binder-like host (no writable cgroups) |
# |---|---|---|
# | memory | `memory.limit_in_bytes` + memsw: usage, swap included; OOM kill, exit 137 | `RLIMIT_AS`: *address space*; an allocation fails ("out of memory"), nobody is OOM-killed |
# | CPU | CFS quota: throttled to the share | **nothing**: `RLIMIT_CPU` would cap total seconds and kill, not share |
# | processes | `pids.max` per container | `RLIMIT_NPROC`: per *user*, over all the user's processes |
# | pause | freezer cgroup | SIGSTOP / SIGCONT, which the processes can notice |
# | metrics | the cgroup's counters | `/proc` per process (psutil): RSS summed, CPU times summed |
#
# This machine's driver and its reason:

# %%
mgr = cgroup_manager()
print(mgr.driver, "| enforces limits:", mgr.enforces)
print(mgr.why_not or "(nothing missing)")
print("setrlimit stand-ins for memory=64m, pids=32:",
      lesson.rlimits_in_words(memory="64m", pids_limit=32))

# %% [markdown]
# **What such a session can still see: its own cgroup.** The pod *is* limited, by Kubernetes,
# with the same kernel mechanism; the session can read its own group's files
# (`/proc/self/cgroup` names it) but not change them. `metrics.SessionCgroupSource()` reads them
# read-only and says so. Where a controller shows `/` (the root), its numbers are the whole
# machine's, not a pod's: on this course machine only the memory controller puts the notebook in
# a group of its own.

# %%
session = metrics.SessionCgroupSource()
print(session.label)
own = lesson.watch(session, seconds=3, interval=0.5, title="this session's own cgroup (read-only)")
own.figure()

# %% [markdown]
# ## Key points
#
# - The pids controller stops a fork bomb at the container's limit; the rest of the host keeps
#   working, and removing the container kills the whole group.
# - cgroups need a writable hierarchy (root, or a delegated subtree). Without one, a "container"
#   runs unlimited: `setrlimit` gives weaker, different limits for memory and processes, and
#   nothing for CPU. ctrkernel says so instead of pretending.
# - A session on such a host can still *observe* cgroups: its own pod's, read-only.
#
# ## Exercises
#
# **1.** Run the bounded bomb `lesson.fork_bomb(depth=4)` (about 31 processes)
# with `pids_limit=16`, record it for 3 s, and store the most processes seen in `most`.

# %%
most = None  # your answer here

# %%
# check your work
if most is None:
    small = lesson.start(lesson.fork_bomb(depth=4), "small-bomb", pids_limit=16)
    most = lesson.watch(small, seconds=3).summary()["small-bomb"]["max_pids"]
    lesson.remove(small)
assert most <= 16 or not ENFORCED, most
print("check passed:", most, "processes at most")

# %% [markdown]
# <details><summary>Solution 1</summary>
#
# ```python
# small = lesson.start(lesson.fork_bomb(depth=4), "small-bomb", pids_limit=16)
# most = lesson.watch(small, seconds=3).summary()["small-bomb"]["max_pids"]
# lesson.remove(small)
# ```
# With the limit enforced, `most` is 16; without it, the whole tree (31) or what RLIMIT_NPROC
# allowed.
# </details>
#
# **2.** `RLIMIT_NPROC` counts processes per *user*. If your user already runs 40 processes
# and a container asks for `pids_limit=32`, what must the rlimit be set to so that the container
# can start about 32 more? Store it in `nproc`.

# %%
nproc = None  # your answer here

# %%
# NBVAL_CHECK_OUTPUT
# check your work
nproc = nproc if nproc is not None else 40 + 32
assert nproc == 72
print("check passed: RLIMIT_NPROC =", nproc)

# %% [markdown]
# <details><summary>Solution 2</summary>
#
# 40 + 32 = 72: the kernel compares the user's total with the limit, so the container shares
# its budget with everything else the user starts meanwhile. That is why it is weaker than a
# pids cgroup, which counts the container's processes only.
# </details>
