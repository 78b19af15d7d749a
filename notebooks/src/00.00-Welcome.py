# %% [markdown]
# # 00 · Welcome: containers versus virtual machines, by doing
#
# > "I watched videos and searched, and I roughly get it, but I still don't know exactly what it is!"
#
# This course exists to end that confusion. Instead of reading claims about containers and
# virtual machines, you will **run each thing on a real Linux kernel and measure it**: start
# processes in namespaces, stack image layers, hold a process to half a CPU, boot a real VM and
# time it, and count how many of each fit on one machine.
#
# Everything runs through `ctrkernel`, a small but real container runtime written in Python for
# this course, so that every step is something you can read, run and change.

# %% [markdown]
# ## The seven questions
#
# The course grows out of a Korean slide deck, *Container vs. Virtualization*. Its opening page
# asks seven questions; every chapter answers at least one of them with an experiment you run.
#
# | # | 한국어 | English | Chapter |
# |---|---|---|---|
# | Q1 | 가상화와 컨테이너의 차이? | What is the difference between virtualization and containers? | 01 |
# | Q2 | 컨테이너란 무엇인가? | What is a container? | 02 |
# | Q3 | 가상화의 환경불일치의 의미는? | What does "environment mismatch" (configuration drift) between VMs mean? | 05 |
# | Q4 | 컨테이너의 장점은? | What are the advantages of containers? | 03, 04, 07 |
# | Q5 | 가상화란? | What is virtualization? | 01 |
# | Q6 | 컨테이너 엔진만 있으면 구동가능? | Does a container run anywhere a container engine exists? | 05 |
# | Q7 | 가상화와 컨테이너 집적도 차이란 무엇인가? | What is the difference in density? | 06 |
#
# **Objectives of this chapter**
# - know what the course covers and in which order;
# - know how to run it (locally as root, locally without root, on Binder, headless);
# - find out, by measurement, what *your* machine allows, and what that means for each chapter.

# %% [markdown]
# ## How to run the course
#
# | where | what you get |
# |---|---|
# | **Linux, as root** (`sudo`) | full isolation: every namespace, `pivot_root` into an overlay filesystem, cgroup limits (v1 or v2), real VMs with QEMU |
# | **Linux, as a normal user** | *rootless*: namespaces inside a user namespace; you are root only inside the container; cgroup limits only where a subtree is delegated to you |
# | **Binder** (a browser, nothing installed) | nothing can be isolated: a Binder pod forbids namespaces and its cgroups are read-only. The notebooks still run: they **observe** instead of enforcing, and every result says which |
# | **headless** (papermill, nbval, CI) | the same notebooks, executed top to bottom; live widgets leave a static figure |
#
# On a fresh Debian or Ubuntu machine, from a clone of the repository:
#
# ```bash
# scripts/course      # installs what is needed, then opens JupyterLab on notebooks/
# scripts/test        # the whole test suite, these notebooks included
# ```

# %% [markdown]
# ## What does this machine allow?
#
# Rather than guess, ctrkernel **tries** each feature in a short-lived child process: create a
# user namespace, mount a fresh `/proc` in a PID namespace, mount overlayfs, create a cgroup, boot
# QEMU... The result is one report, computed once and asked by everything else in the course.
# The first code cell of every chapter loads the package the same way.

# %%
import ctrkernel

report = ctrkernel.doctor()
report

# %% [markdown]
# The single word that matters most is the **isolation level**:
#
# - `full`: you are root, every namespace works. Containers here are exactly what Docker makes.
# - `rootless`: you are not root, but the kernel lets you create a *user namespace*, in which
#   you are root. Almost everything works; the main loss is cgroup limits.
# - `none`: nothing can be isolated. This is what Binder gives. You will still see every
#   mechanism, but from the outside.

# %%
print("isolation:", report.isolation)
print("cgroups:", report.cgroup["version"], "- limits enforced by the", report.cgroup["driver"], "driver")

# %% [markdown]
# ## What that means for each chapter
#
# Each chapter needs some of the checks above to run its experiments for real. Where one is
# missing, the chapter says so and shows a clearly labelled fallback (for example, VM timings
# recorded on a described machine) instead of failing or pretending.

# %%
from ctrkernel.course import chapter_plan

chapter_plan(report)

# %% [markdown]
# ## Check your work
#
# **Exercise 1.** Without looking at the report again, write down what you expect
# `report.ok("pidns")` to be on your machine, then check it below.
#
# **Exercise 2.** Run the same probe from a terminal: `ctrkernel doctor` (or
# `python -m ctrkernel doctor --json`). Does it report the same isolation level as this notebook?

# %%
# NBVAL_CHECK_OUTPUT
# Check your work (exercise 2): the command line and the notebook ask the same probe.
import json
import subprocess
import sys

cli = json.loads(subprocess.run([sys.executable, "-m", "ctrkernel", "doctor", "--json"],
                                capture_output=True, text=True, check=True).stdout)
print("same isolation level from the command line:", cli["isolation"] == report.isolation)

# %% [markdown]
# <details><summary>Solutions</summary>
#
# 1. `True` where you are root or user namespaces work (`full` or `rootless`), `False` on Binder.
# 2. Yes: both run the same checks in fresh child processes. They can only differ if you run
#    them as different users (try `sudo`), which is exactly the point: isolation depends on who
#    asks, not on the software.
#
# </details>
#
# ## Key points
#
# - A container is built from kernel features (namespaces, cgroups, union filesystems); whether
#   you may use them depends on the host and on who you are.
# - The course measures instead of claiming; where a measurement is impossible here, it says why.
# - Next: [01 · Virtualization and containers](01.00-Virtualization-and-Containers.ipynb).
