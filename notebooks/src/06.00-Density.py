# %% [markdown]
# # 06 · Density: how many fit on one host?
#
# | | 한국어 | English |
# |---|---|---|
# | **Q7** | 가상화와 컨테이너 집적도 차이란 무엇인가? | What is the difference in density (how many instances fit on one host)? |
#
# The deck reports an experiment: on the same host, **16 Tomcat instances in virtual machines
# against 40 in containers**. Here you run that experiment in miniature, on this machine: identical
# small web servers (busybox `httpd` serving one page), started one after another as containers
# and as VMs, under **one memory budget**, until the budget or a cap is reached. Every instance
# must answer an HTTP request on `127.0.0.1` before it counts.
#
# **Objectives**
# - run the density experiment and read how many instances fit and what each costs;
# - explain *why* containers fit more: no guest kernel, one shared page cache, shared image layers;
# - know what the miniature leaves out (reserved VM memory, KVM, real applications).

# %%
import ctrkernel
from ctrkernel.lessons import vm as lesson
from ctrkernel.vm import density

report = ctrkernel.doctor()
for name in ("qemu", "kvm", "vm_kernel", "netns"):
    check = report.check(name)
    print(f"{'ok ' if check.ok else 'NO '} {name:<10} {check.detail[:110]}")
can, how = lesson.can_boot()
print("\nVMs on this machine:", how if can else f"cannot boot here ({how}): recorded results follow")

# %% [markdown]
# ## The experiment
#
# `density.run_density(budget_mb, cap)` does, for containers and then for VMs:
#
# 1. start one web server: a container from the `busybox` image with port 80 published on a free
#    `127.0.0.1` port, or a minimal VM whose init runs the same `httpd`, with QEMU's user-mode
#    network forwarding a free `127.0.0.1` port to the guest's port 80;
# 2. wait until `http://127.0.0.1:<port>/` answers;
# 3. measure the host memory of its processes (PSS: shared pages divided among their sharers);
# 4. stop when the total passes the budget (the last instance does not fit) or at the cap.
#
# The budget here is small and the cap low so that the notebook runs in about a minute on two
# shared cores; the bars labelled *budget / mean cost* extrapolate to a full budget.

# %%
result = lesson.density(budget_mb=512, cap=4)
display(lesson.banner(result))
density.figure_density(result).show()
{kind: {k: result[kind].get(k) for k in ("fitted", "answering", "stopped_by", "would_fit", "error")
        if k in result[kind]} for kind in ("container", "VM")}

# %% [markdown]
# Per instance, what the host paid (MiB of PSS), and how long each took from "start" to "answers":

# %%
rows = [dict(r, pss_mib=round(r["pss"] / 2**20, 1)) for kind in ("container", "VM")
        for r in result[kind].get("rows", [])]
lesson.table(rows, ["kind", "index", "pss_mib", "seconds_to_answer", "fits"])

# %% [markdown]
# ## Why containers fit more
#
# - **No guest kernel.** Every VM boots and keeps its own Linux kernel in its own RAM: kernel
#   code, its data structures, its page tables, its buffers. Containers share the host's one
#   kernel.
# - **One page cache, shared pages.** Each VM reads its files into its *own* page cache, inside
#   its RAM: ten VMs hold ten copies of the same busybox. The containers' processes map the
#   same file pages from the host's page cache: the busybox text is in memory once, and PSS
#   splits it among them (watch the per-container cost fall as more start).
# - **Shared image layers.** All the containers run from the same read-only layers on disk; only
#   each one's small writable layer is its own. Each VM needs its own disk (or, here, its own
#   copy of the initramfs in RAM).
# - **No emulator around it.** Each VM is also a QEMU process with virtual devices and (under
#   software emulation) a cache of translated code.
#
# **Claim**: the busybox pages are shared between containers. The cell below starts two idle
# containers and shows that their combined PSS is far less than twice their RSS (where the runtime
# is available here).

# %%
shared = lesson.shared_pages()
display(lesson.banner(shared))
shared.get("rows") or shared.get("container_note")

# %% [markdown]
# ## What the miniature leaves out
#
# - We count only the pages each QEMU process has actually touched. Here that is nearly all of
#   each guest's RAM: Debian's kernel zeroes pages as it hands them out
#   (`CONFIG_INIT_ON_ALLOC_DEFAULT_ON`) and shuffles its free lists, so a guest soon touches most
#   of what it was given. In effect, **a VM's memory is reserved**, used or not.
# - Under **KVM** there is no translated-code cache, so each VM costs less than under emulation;
#   the guest kernel and its page cache remain.
# - Real applications (a Tomcat with a JVM) dwarf busybox `httpd`, so each instance costs more in
#   both columns; the *difference* per instance (a kernel, an OS, virtual hardware) stays. That is
#   the deck's 16 versus 40.

# %% [markdown]
# ## Key points
#
# - Density (Q7) is how many instances fit on one host; measured here under one memory budget.
# - Each VM carries a guest kernel, its own page cache and an emulator process; containers share
#   one kernel, one page cache and the image's layers.
# - Memory is the usual limit; PSS is the fair way to count shared pages.

# %% [markdown]
# ## Exercises
#
# **1.** Using `result`, compute how many times more containers than VMs would fit in the budget
# (the `would_fit` numbers). Store it in `factor` (leave it `None` if one side could not run).

# %%
factor = None  # your answer here

# %%
# check your work
sides = [result[k].get("would_fit") for k in ("container", "VM")]
expected = sides[0] / sides[1] if all(sides) else None
factor = factor if factor is not None else expected
assert factor == expected
print("check passed")

# %% [markdown]
# <details><summary>Solution 1</summary>
#
# ```python
# factor = result["container"]["would_fit"] / result["VM"]["would_fit"]
# ```
# The deck's ratio is 40 / 16 = 2.5 for Tomcat; with a tiny server the guest's fixed costs weigh
# far more, so the factor is larger.
# </details>
#
# **2.** How much of one VM's cost is the guest's RAM? Boot a VM with less memory, e.g.
# `density.fill("VM", budget_mb=1024, cap=1, vm_memory_mb=64)`, compare the PSS with the
# experiment's (96 MiB VMs), and store the difference in MiB in `saved` (only where VMs can boot).

# %%
saved = None  # your answer here

# %%
# check your work
if saved is not None:
    assert saved > -50, "a smaller guest should not cost much more"
print("check passed")

# %% [markdown]
# <details><summary>Solution 2</summary>
#
# ```python
# small = density.fill("VM", budget_mb=1024, cap=1, vm_memory_mb=64)
# saved = (result["VM"]["mean_pss"] - small["mean_pss"]) / 2**20
# ```
# Only the guest RAM the guest *touched* counts on the host; a mostly idle small guest touches
# little of it, so the saving is smaller than 32 MiB: most of the cost is the kernel, the
# initramfs and QEMU itself.
# </details>
