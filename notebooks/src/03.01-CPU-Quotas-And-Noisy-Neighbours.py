# %% [markdown]
# # 03.01 · CPU quotas and noisy neighbours
#
# | | 한국어 | English |
# |---|---|---|
# | **Q4** | 컨테이너의 장점은? | What are the advantages of containers? |
#
# Memory is a hard wall: past it, a process dies. CPU is different: a process that wants more
# CPU than it may have is simply made to wait. `docker run --cpus 0.5` gives a container a
# **quota** of 50 ms of CPU time in every 100 ms period (the kernel's CFS bandwidth control);
# when the quota is used up, the group's threads are *throttled* until the next period.
#
# **Objectives**
# - see a busy loop held at half a CPU, and the throttling that does it;
# - watch two noisy neighbours share the CPU, then fence one of them while both run;
# - know what `docker update --cpus` changes in the kernel.
#
# **What this machine allows:**

# %%
from ctrkernel import metrics
from ctrkernel.lessons import cgroups as lesson

print(lesson.machine())

# %% [markdown]
# ## 1. A busy loop at half a CPU
#
# Two containers run the same endless loop `while :; do :; done`: one without a limit, one
# with `cpus=0.5`. The CPU row of the dashboard is in "% of one CPU", as `docker stats` counts:
# 100 means one CPU fully used. The dashed line is the quota.

# %%
free = lesson.start(lesson.cpu_burner(), "unlimited", memory="64m")
capped = lesson.start(lesson.cpu_burner(), "half-a-cpu", memory="64m", cpus=0.5)
dash = lesson.watch(free, capped, seconds=6, title="the same busy loop, with and without --cpus 0.5")

# %%
dash.figure()

# %% [markdown]
# **Claim: the capped loop gets about 50%, the other about 100%** (less if this machine is
# busy). The mean over the recording, and how often the kernel throttled the capped group:

# %%
summary = dash.summary()
throttled = sum(p.cpu_throttled_periods or 0 for p in dash.recorder.points("half-a-cpu"))
print({name: s["mean_cpu_percent"] for name, s in summary.items()})
print("periods in which half-a-cpu was throttled:", throttled)
lesson.remove(free, capped)

# %% [markdown]
# On a host without cgroups both loops get a whole CPU and nothing is throttled: the dotted
# line is what was asked, not what was enforced. `setrlimit` has no equivalent of a CPU share
# (`RLIMIT_CPU` caps total seconds and then kills), so ctrkernel does not pretend.
#
# ## 2. Two noisy neighbours
#
# Two tenants, A and B, each run two busy loops: together they want four CPUs' worth. With no
# limits the kernel's scheduler splits the CPU between them roughly evenly. Half-way through,
# we do what `docker update --cpus 0.5 A` does: write a new quota into A's group *while it
# runs*. A's loops lose their CPU and B gets it back. The limit change is marked on the chart.

# %%
import time

from ctrkernel.runtime.cgroups import Resources
from ctrkernel.widgets import Dashboard

a = lesson.start(lesson.cpu_burner(loops=2), "tenant-A", memory="64m")
b = lesson.start(lesson.cpu_burner(loops=2), "tenant-B", memory="64m")
neighbours = Dashboard(a, b, interval=0.25, title="noisy neighbours: A is limited half-way")
neighbours.show()
time.sleep(4)
if hasattr(a, "update"):                # a container (not a plain process): change its limit
    a.update(cpus="0.5")                 # docker update --cpus 0.5 tenant-A
neighbours.mark("docker update --cpus 0.5 tenant-A", kind="limit")
time.sleep(4)
neighbours.stop()
lesson.remove(a, b)
neighbours.figure()

# %% [markdown]
# **Claim: after the update, A is held at its quota and B gets what A lost.** Mean CPU of each
# before and after the update:

# %%
def mean_cpu(name, after):
    change = next(e.t for e in neighbours.events if "update" in e.text)
    values = [p.cpu_percent for p in neighbours.recorder.points(name)
              if p.cpu_percent is not None and (p.t > change + 0.5 if after else p.t < change)]
    return round(sum(values) / len(values)) if values else None

{name: {"before": mean_cpu(name, False), "after": mean_cpu(name, True)}
 for name in ("tenant-A", "tenant-B")}

# %% [markdown]
# On this shared machine the numbers move with whatever else runs, but the shape holds where
# cgroups are enforced: A drops to about 50, B rises. Without cgroups (Binder) nothing changes
# at the marker: there is no quota to update.
#
# ## 3. Pause: the freezer
#
# `docker pause` does not send a signal the program could see or ignore: it asks the cgroup
# **freezer** to stop scheduling every process of the group. The processes are still there,
# still holding their memory, but get no CPU at all until `docker unpause`. Watch a busy
# container's CPU fall to zero while it is paused:

# %%
frozen = lesson.start(lesson.cpu_burner(loops=1), "frozen", memory="64m")
freezer = Dashboard(frozen, interval=0.25, title="pause and unpause (the freezer)")
freezer.show()
time.sleep(2)
if hasattr(frozen, "pause"):
    frozen.pause()                       # docker pause frozen
    freezer.mark(f"docker pause frozen: {frozen.status}", kind="pause")
    time.sleep(2)
    frozen.unpause()                     # docker unpause frozen
    freezer.mark(f"docker unpause frozen: {frozen.status}", kind="unpause")
time.sleep(2)
freezer.stop()
lesson.remove(frozen)
freezer.figure()

# %% [markdown]
# Between the two markers the CPU line sits at 0 and the process count does not change: the
# processes exist, frozen. Where cgroups are read-only (Binder), ctrkernel pauses with
# `SIGSTOP`/`SIGCONT` instead, which stops the CPU too, but a program *can* notice it (its
# parent gets told, as when you press Ctrl-Z in a shell): a weaker imitation, and the
# container's notes say so.
#
# ## Key points
#
# - A CPU limit is a **quota per period** (`--cpus 0.5` = 50 ms per 100 ms); a group that uses
#   its quota is throttled until the next period. Nothing is killed.
# - `docker stats` CPU % is per CPU: 100% = one CPU. A limited container sits at its quota.
# - Limits can change while a container runs (`docker update`): the kernel applies the new quota
#   at once; neighbours get the CPU back.
# - `docker pause` freezes the whole group: no CPU, memory kept, nothing the program can see.
#
# ## Exercises
#
# **1.** Start `lesson.cpu_burner(loops=2)` with `cpus=1.5`, record it for 4 s with
# `lesson.watch`, and store its mean CPU percent in `mean`.

# %%
mean = None  # your answer here

# %%
# check your work
if mean is None:
    ex = lesson.start(lesson.cpu_burner(loops=2), "ex-1.5", cpus=1.5)
    mean = lesson.watch(ex, seconds=4).summary()["ex-1.5"]["mean_cpu_percent"]
    lesson.remove(ex)
assert mean <= 165 or not lesson.limits_enforced(), mean
print("check passed: mean", mean, "% of one CPU")

# %% [markdown]
# <details><summary>Solution 1</summary>
#
# ```python
# ex = lesson.start(lesson.cpu_burner(loops=2), "ex-1.5", cpus=1.5)
# mean = lesson.watch(ex, seconds=4).summary()["ex-1.5"]["mean_cpu_percent"]
# lesson.remove(ex)
# ```
# Two loops would use 200% on two free CPUs; the quota holds them near 150% (less if the
# machine is busy).
# </details>
#
# **2.** What quota (`cpu.cfs_quota_us`, microseconds) does `cpus=0.25` give with the default
# 100 000 µs period? Store it in `quota`.

# %%
quota = None  # your answer here

# %%
# NBVAL_CHECK_OUTPUT
# check your work
quota = quota if quota is not None else Resources(nano_cpus=250_000_000).cfs()[0]
assert quota == 25_000
print("check passed:", quota, "µs of CPU per 100000 µs")

# %% [markdown]
# <details><summary>Solution 2</summary>
#
# `nano_cpus × period / 10⁹ = 0.25 × 100000 = 25000` µs, exactly as Docker computes it:
# `Resources(nano_cpus=250_000_000).cfs()` returns `(25000, 100000)`.
# </details>
