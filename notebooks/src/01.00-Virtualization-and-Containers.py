# %% [markdown]
# # 01 · Virtualization and containers
#
# | | 한국어 | English |
# |---|---|---|
# | **Q5** | 가상화란? | What is virtualization? |
# | **Q1** | 가상화와 컨테이너의 차이? | What is the difference between virtualization and containers? |
#
# The deck draws three pictures side by side: **bare metal** (one operating system, applications
# sharing it with no CPU or memory isolation), **virtual machines** (a hypervisor gives each
# application its own *virtual hardware* and its own guest operating system) and **containers**
# (one host kernel; each application is a process fenced off by namespaces and cgroups). It then
# claims: a VM boots an OS (*minutes*), a container starts a process (*seconds*); a VM pays
# hypervisor and guest-OS overhead; VM images are huge. Here you check each claim with a **real
# virtual machine** booted by QEMU on this machine, next to a plain process and a container.
#
# **Objectives**
# - say what a hypervisor virtualizes (CPU, memory, devices: a whole machine) and what a container
#   does not (the kernel: it is shared);
# - measure start time, idle memory, size and workload overhead of a process, a container and a
#   VM, and read the plots;
# - explain why a *minimal* VM is the best case for VMs, and what a full distribution's boot costs.

# %%
import ctrkernel
from ctrkernel.lessons import vm as lesson

report = ctrkernel.doctor()
for name in ("qemu", "kvm", "vm_kernel", "pidns"):
    check = report.check(name)
    print(f"{'ok ' if check.ok else 'NO '} {name:<10} {check.detail[:110]}")
can, how = lesson.can_boot()
print("\nVMs on this machine:", how if can else f"cannot boot here ({how}): recorded results follow")

# %% [markdown]
# ## From bare metal to virtual machines to containers
#
# - **Bare metal**: one kernel owns the hardware. Two applications on it share everything: one
#   can take all the memory or all the CPU from the other. Isolating them meant buying two
#   servers, each mostly idle.
# - **Virtual machine**: a *hypervisor* (here QEMU, with the kernel's KVM when the CPU's
#   virtualization extensions are usable, or pure software emulation otherwise) presents a
#   complete **virtual computer**: CPUs, RAM, a serial port, network and disk devices. A whole
#   guest operating system, *with its own kernel*, boots on it. Isolation is strong, but every
#   VM reserves its memory and carries a kernel, an init system and services.
# - **Container**: no virtual hardware and no second kernel. The application is an ordinary
#   process of the host's kernel, given its own view (namespaces: processes, mounts, hostname,
#   network) and its own limits (cgroups). Chapter 02 builds one from scratch.
#
# **Claim**: a VM has its own kernel and its own (virtual) hardware; a container shares the host's
# kernel. The cell below asks the same four questions from inside a plain process, a container,
# and a VM booted right now (or recorded).

# %%
views = lesson.views()
display(lesson.banner(views))
lesson.table(views["rows"], ["kind", "kernel", "cpus", "memory_kib", "processes"])

# %% [markdown]
# Read it: the process and the container report the **same kernel release** (the host's), the
# same CPUs and the same memory: the container only *sees less* (a few processes). The VM reports
# **another kernel** (the one QEMU booted), the CPUs and memory QEMU gave it, and a handful of
# processes: it is a different computer. That is Q5 in one table: *virtualization* makes a
# machine; a container makes a process look like it is alone.

# %% [markdown]
# ## Start time: seconds, or minutes?
#
# We time "start it" until "our code runs" for a plain process, a container (`ctrkernel.runtime`),
# and a minimal VM: the host's kernel plus a tiny initramfs that ctrkernel builds from busybox,
# whose init prints a marker line on the serial console as soon as userspace runs. Two QEMU
# machine types: `pc` (a classic PC with firmware, PCI and ACPI) and `microvm` (virtio over
# memory-mapped I/O, almost no firmware: the shape of Firecracker-style micro VMs).

# %%
starts = lesson.start_times()
full = lesson.full_boot()
display(lesson.banner(starts))
lesson.measure_figures().figure_start_times(starts, full).show()
{kind: f"{seconds:.3f} s" for kind, seconds in lesson.summary(starts).items()}

# %% [markdown]
# The minimal VM is the **best case for VMs**: no firmware to speak of, no disk, no init system,
# no services; its "userspace" is one shell script. A real VM boots a distribution: the kernel,
# then an init system that mounts filesystems and starts services, then the application. The
# point labelled *full Debian, systemd* is exactly that: this machine's own Debian installation
# booted as the VM's root filesystem (read-only, writes to a tmpfs) until systemd put up its
# login prompts. It is always shown from its recording, because under software emulation
# it takes minutes of CPU:

# %%
display(lesson.banner(full))
{k: full[k] for k in ("distribution", "seconds_to_initramfs", "seconds_to_login",
                      "units_started", "accelerator", "memory_mb")}

# %% [markdown]
# Under KVM (hardware virtualization) every VM number shrinks several-fold, and a tuned micro VM
# (Firecracker) boots in about a hundred milliseconds; the deck's *minutes* describe full
# distributions with firmware, disks and services. A container is a process start plus some
# mounts: it stays one to two orders of magnitude below, whatever the hypervisor.

# %% [markdown]
# ## Memory: what one idle instance costs the host
#
# **Claim**: a VM pays for a guest kernel and virtual hardware even when idle; a container costs
# about what its processes cost. We start one idle VM and one idle container (`sleep`) and
# measure their processes on the host with psutil: RSS (resident pages) and PSS (resident pages,
# with each shared page divided among the processes sharing it, so shared libraries are not
# counted twice).

# %%
mem = lesson.memory()
display(lesson.banner(mem))
lesson.measure_figures().figure_memory(mem).show()
{r["kind"]: f"PSS {r['pss'] / 2**20:.1f} MiB" for r in mem["rows"]}

# %% [markdown]
# ## Size: what each one is made of
#
# **Claim**: VM images are big, container images are small layers. Our minimal VM needs a kernel
# and an initramfs (no disk at all); the container needs only its image's layers, because the
# kernel is the host's. A real VM adds a disk image with a whole distribution (Debian's cloud
# disk images are hundreds of MiB), a container image for a real service tens of MiB.

# %%
size = lesson.sizes()
display(lesson.banner(size))
lesson.measure_figures().figure_sizes(size).show()

# %% [markdown]
# ## Overhead: the same work in each
#
# **Claim**: work inside a VM passes through virtual hardware and the hypervisor; a container
# costs what a process costs. Two workloads, each the very same busybox binary everywhere:
# a **CPU-bound** loop (busybox `awk` arithmetic) and a **syscall-heavy** copy (`dd bs=1`: one
# `read` and one `write` system call per byte). Each is timed inside its environment; the plot
# shows the ratio to the plain process (1 means "as fast").

# %%
work = lesson.workloads()
display(lesson.banner(work))
lesson.measure_figures().figure_workloads(work).show()
lesson.table(work["rows"], ["kind", "workload", "seconds", "ratio"])

# %% [markdown]
# Read it with the accelerator in mind. Under **software emulation (TCG)** every guest
# instruction is translated, so the VM is several times slower at everything. Under **KVM** the
# guest runs on the real CPU: CPU-bound work runs at nearly native speed, and the overhead shows
# where the guest must leave the CPU (I/O, timers, page-table work). A container runs on the
# host kernel directly: its ratio stays near 1 for both.

# %% [markdown]
# ## Key points
#
# - **Virtualization** (Q5) builds a whole virtual computer: CPUs, memory and devices, on which a
#   guest operating system with *its own kernel* boots.
# - **A container** (Q1) virtualizes nothing: it is a process of the host's kernel with its own
#   view and limits. Same kernel release inside and outside.
# - Measured here: a container starts in a fraction of a second, a minimal VM in seconds, a full
#   distribution in far more; an idle VM costs tens to hundreds of MiB of host memory, an idle
#   container about what its processes use.
# - The minimal VM is the VM's **best case**; the deck's "minutes" is the full-distribution case.

# %% [markdown]
# ## Exercises
#
# **1.** From `starts`, compute how many times longer the fastest VM takes to reach userspace than
# the container does (or than the process, if no container ran here). Store it in `ratio`.

# %%
medians = lesson.summary(starts)
vm_best = min(v for k, v in medians.items() if k.startswith("VM"))
ratio = None  # your answer here

# %%
# check your work
ratio = ratio if ratio is not None else vm_best / medians.get("container", medians["process"])
assert ratio > 1, "a VM should never start faster than a container"
print("check passed")

# %% [markdown]
# <details><summary>Solution 1</summary>
#
# ```python
# ratio = vm_best / medians.get("container", medians["process"])
# ```
# The VM has to boot a kernel before any of our code runs; a container starts a process.
# </details>
#
# **2.** Which of the four numbers in the `views` table is *different* in the VM because of
# virtual hardware, and which because of the guest's own kernel? Put the column names in two sets.

# %%
from_hardware = set()   # your answer, e.g. {"cpus"}
from_kernel = set()

# %%
# check your work
from_hardware = from_hardware or {"cpus", "memory_kib"}
from_kernel = from_kernel or {"kernel", "processes"}
assert from_hardware == {"cpus", "memory_kib"} and from_kernel == {"kernel", "processes"}
print("check passed")

# %% [markdown]
# <details><summary>Solution 2</summary>
#
# CPUs and memory are what QEMU's virtual machine offers (`-smp`, `-m`): virtual hardware. The
# kernel release and the process list belong to the guest's own kernel. In a container, all four
# are the host kernel's answers (the process list filtered by the PID namespace).
# </details>
