# %% [markdown]
# # 03 · cgroups: limits you can watch
#
# | | 한국어 | English |
# |---|---|---|
# | **Q4** | 컨테이너의 장점은? | What are the advantages of containers? |
#
# Among the advantages the deck lists (resource efficiency, **isolation**, compatibility, auto
# scaling...), this chapter takes **resource isolation**: a container can be held to a share of
# the machine's memory, CPU and processes, so that one misbehaving application cannot starve the
# others. In Linux that is the job of **control groups (cgroups)**, which Google contributed to
# the kernel. You will set limits, break them on purpose, and watch what happens, live.
#
# **Objectives**
# - say what the deck's bare metal / VM / container comparison means for CPU and memory;
# - find a container's limits as plain files in `/sys/fs/cgroup`;
# - watch a memory-hungry container climb to its limit and be **OOM-killed** (exit 137);
# - read the same numbers as `docker stats` shows them.
#
# Chapter 03 has three parts: this one (memory), [03.01](03.01-CPU-Quotas-And-Noisy-Neighbours.ipynb)
# (CPU and noisy neighbours) and [03.02](03.02-Fork-Bombs-And-What-A-Host-Can-Enforce.ipynb)
# (a fork bomb, and what a Binder-like host can and cannot enforce).
#
# **What this machine allows** (from `ctrkernel.doctor()` and the cgroup driver it chose):

# %%
import ctrkernel
from ctrkernel import metrics
from ctrkernel.lessons import cgroups as lesson

print(lesson.machine())

# %% [markdown]
# If the last lines say **limits enforced: NO** (a Binder session, for example), every cell still
# runs: the containers start without kernel limits, the weaker `setrlimit` limits apply where
# they exist, the charts show what *would* have been the limit as a dotted line "asked, not
# enforced", and you see honestly that nothing stops the workload. The text tells you what a
# machine with cgroups shows instead.
#
# ## 1. Why isolation of CPU and memory matters
#
# The deck compares three ways to run applications ("WHY CONTAINER?"):
#
# | | bare metal | virtual machines | containers |
# |---|---|---|---|
# | CPU / memory isolation | 자원(CPU, Memory) 격리 불가 — **none** | 자원 격리 — **yes**, each VM gets its virtual CPUs and RAM | 자원 격리 — **yes**, through cgroups |
# | price | OS 간 호환성 문제 — OS compatibility problems | 하이퍼바이저 및 Guest OS 부하 — hypervisor and guest OS overhead | 컨테이너는 OS의 Kernel을 공유, 프로세스로 시작 — share the host kernel, start as processes |
#
# On bare metal, applications are processes that share everything: one that leaks memory
# pushes the others into swap or gets them killed; one that spins takes CPU from all. A VM
# fences an application with virtual hardware, at the cost of a whole guest OS. A container
# is still an ordinary process (chapter 02), but the kernel *accounts* every page and every CPU
# cycle it uses to its cgroup and enforces the group's limits.
#
# **Claim: a container's limits are just files.** ctrkernel (like Docker and runc) creates a
# directory for each container in each cgroup controller and writes the limits into it. Start
# a container with `--memory 32m` (`memory="32m"`) and look:

# %%
probe = lesson.start("sleep 60", "limits-demo", memory="32m", pids_limit=64)
for path, value in lesson.limit_files(probe).items():
    print(f"{value:>12}  {path}")

# %% [markdown]
# `memory.limit_in_bytes` holds 33554432 = 32 × 2²⁰ bytes. `memory.memsw.limit_in_bytes`
# (memory + swap) holds the same number: ctrkernel allows *no* swap beyond the limit, so the
# limit cannot be escaped by swapping out. `cpu.cfs_quota_us = -1` means no CPU limit was asked.
# (On cgroup v2 the files are `memory.max`, `memory.swap.max`, `cpu.max`, `pids.max` in one
# directory.)

# %%
lesson.remove(probe)

# %% [markdown]
# ## 2. A memory limit and the OOM kill
#
# The workload is a shell loop that appends 1 MiB to a string four times a second
# (`lesson.memory_hog()`, shown below). With a 32 MiB limit, the kernel charges each new page to
# the container's group; when the group reaches its limit and nothing can be reclaimed, the
# kernel's **OOM killer** kills a process *in that group*, not elsewhere on the host. Docker
# reports such a container as exited with status **137** (128 + SIGKILL's 9) and
# `OOMKilled: true`.
#
# The hog stops by itself at 256 MiB, so that on a machine where no limit is enforced it cannot
# eat the host. The dashboard below samples the container four times a second: in JupyterLab
# it updates live (and keeps updating if you run other cells); the static figure after it is
# what was recorded.

# %%
print(lesson.memory_hog())
hog = lesson.start(lesson.memory_hog(), "hog", memory="32m")
dash = lesson.watch(hog, seconds=25, until=lesson.all_stopped, title="memory hog, limit 32 MiB")

# %%
dash.figure()

# %% [markdown]
# The solid line is the memory in use as `docker stats` counts it; the dashed line is the limit.
# The dotted vertical lines mark what the sampler noticed: the OOM kill and the exit. (The shell
# briefly holds two copies of its string while it grows it, which is why the kill comes before
# the line reaches 32 MiB: the peak between two samples is not drawn.)
#
# **Claim: the kernel killed it, and says so.** The exit status and `OOMKilled`, as
# `docker inspect` would report them:

# %%
lesson.outcome(hog)

# %% [markdown]
# On a host with cgroups this shows `ExitCode: 137, OOMKilled: True`. Without them the hog
# either hit the weaker `RLIMIT_AS` (the shell reports "out of memory" and exits 1: an
# allocation failed, nobody was killed) or grew until it stopped itself. Its last words:

# %%
print(hog.logs(stdout=True, stderr=True).decode()[-160:] if hasattr(hog, "logs") else "(a plain process)")
lesson.remove(hog)

# %% [markdown]
# ## 3. The same numbers as `docker stats`
#
# `metrics.stats(container)` returns a dictionary in exactly the shape of Docker's Engine API
# (`GET /containers/{id}/stats`, what `docker-py`'s `container.stats(stream=False)` returns):
# `read`, `preread`, `cpu_stats`, `precpu_stats`, `memory_stats`, `pids_stats`, `blkio_stats`,
# `num_procs`... `metrics.row()` applies the docker CLI's arithmetic: CPU % is
# *(container CPU time delta / host CPU time delta) × CPUs × 100*, memory leaves out the
# inactive file cache. A container with a 64 MiB limit, running a busy loop:

# %%
busy = lesson.start(lesson.cpu_burner(), "busy", memory="64m")
s = metrics.stats(busy)
print(sorted(s))
print(metrics.table([metrics.row(s)]))
lesson.remove(busy)

# %% [markdown]
# The command line prints the same table: `ctrkernel stats` (live, like `docker stats`) or
# `ctrkernel stats --no-stream`.
#
# ## Key points
#
# - Bare metal gives no CPU or memory isolation; VMs give it with a guest OS per application;
#   containers give it with **cgroups**, inside the one shared kernel.
# - A container's limits are files in `/sys/fs/cgroup/<controller>/ctrkernel/<id>/`.
# - Past its memory limit (swap included), a container's process is **OOM-killed** by the
#   kernel: exit status 137 and `OOMKilled: true`. Only that container suffers.
# - `docker stats` numbers are computed from the cgroup's counters; `ctrkernel.metrics` computes
#   them the same way.
#
# ## Exercises
#
# **1.** Run the hog with a 48 MiB limit and record it. Store the peak memory the dashboard saw
# (MiB) in `peak` (hint: `dash.summary()`).

# %%
peak = None  # your answer here

# %%
# check your work
if peak is None:
    hog48 = lesson.start(lesson.memory_hog(), "hog48", memory="48m")
    peak = lesson.watch(hog48, seconds=30, until=lesson.all_stopped).summary()["hog48"]["peak_memory_mib"]
    lesson.remove(hog48)
assert 0 < peak <= 48 or not lesson.limits_enforced(), peak
print("check passed: peak", peak, "MiB")

# %% [markdown]
# <details><summary>Solution 1</summary>
#
# ```python
# hog48 = lesson.start(lesson.memory_hog(), "hog48", memory="48m")
# dash48 = lesson.watch(hog48, seconds=30, until=lesson.all_stopped)
# peak = dash48.summary()["hog48"]["peak_memory_mib"]
# lesson.remove(hog48)
# ```
# The peak stays below the limit: at the limit the kernel first reclaims what it can, then
# kills.
# </details>
#
# **2.** Using the recorded fixture `tests/data/docker_stats/v2-one-shot.json` (a real Docker
# response), compute the memory the docker CLI shows, in bytes, and store it in `used`.

# %%
import json
from pathlib import Path

recorded = json.loads(Path("../tests/data/docker_stats/v2-one-shot.json").read_text())
used = None  # your answer here

# %%
# NBVAL_CHECK_OUTPUT
# check your work
used = used if used is not None else metrics.memory_usage(recorded["memory_stats"])
assert used == recorded["memory_stats"]["usage"] - recorded["memory_stats"]["stats"]["inactive_file"]
print("check passed:", metrics.row(recorded)["MemUsage"])

# %% [markdown]
# <details><summary>Solution 2</summary>
#
# ```python
# m = recorded["memory_stats"]
# used = m["usage"] - m["stats"]["inactive_file"]   # cgroup v2: inactive_file
# ```
# Docker printed `12.81MiB / 10.63GiB` for this container.
# </details>
