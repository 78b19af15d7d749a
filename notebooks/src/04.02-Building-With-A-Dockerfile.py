# %% [markdown]
# # 04.02 · Building with a Dockerfile, the cache, and the size of a VM
#
# > **Q4 · 컨테이너의 장점은?** — *What are the advantages of containers?*
#
# Layers are rarely made by hand: a **Dockerfile** lists the steps, and each step that changes
# files becomes a layer. Because a step's layer depends only on the step below it and on its own
# inputs, an unchanged step is never redone: the **build cache**. This section builds an image
# from a Dockerfile, watches the cache work, commits a container by hand, and then compares the
# image with a virtual machine's disk image, built from this machine's files.
#
# **Objectives**
# - read a build's log and say which steps made layers and which only changed the config;
# - predict which steps a change invalidates, and check it;
# - know what `docker commit` records, and why a Dockerfile is better;
# - compare an image's size with a real VM disk image built (and booted) here.

# %%
import ctrkernel
from ctrkernel.lessons import images as L
from ctrkernel.image.build import Builder, build

report = ctrkernel.doctor()
print("isolation:", report.isolation, "| RUN steps and containers can run:",
      report.isolation != "none" or report.ok("proot"))
base = L.base_image()
print("base image:", base)

# %% [markdown]
# ## 1 · A Dockerfile, step by step
#
# The build context is a directory; the Dockerfile names files in it. Comments, line
# continuations, and both forms of commands (`RUN echo hi`, the *shell form*; `CMD ["sh"]`, the
# *exec form*, a JSON list) are allowed.

# %%
import tempfile
from pathlib import Path

work = Path(tempfile.mkdtemp(prefix="ch04-build-"))
ctx = work / "app"
L.make_tree(ctx, {"app/greet.sh": "#!/bin/sh\necho \"$GREETING from $(pwd) as uid $(id -u)\"\n",
                  "app/VERSION": "1.0\n",
                  # unique to this run, so that the cache below starts cold every time
                  "app/CONTEXT": work.name + "\n"})
(ctx / "Dockerfile").write_text(f"""\
# A small application image
FROM {base}
ARG BUILD_NUMBER=0
ENV GREETING="Hello" \\
    APP_HOME=/opt/app
WORKDIR $APP_HOME
COPY app/ ./
RUN chmod +x greet.sh && echo "build $BUILD_NUMBER" > BUILD
USER 1000:1000
CMD ["/opt/app/greet.sh"]
""")
print((ctx / "Dockerfile").read_text())

# %% [markdown]
# A build is a stream of log lines, one block per step, as `docker build` prints them: the
# step, then `--->` and the id of the image after that step.

# %%
import time

start = time.perf_counter()
builder = Builder(ctx, tag="app:1", buildargs={"BUILD_NUMBER": "7"})
for line in builder:
    print(line)
first_build = time.perf_counter() - start
app = builder.image

# %%
print(L.run_or_explain(app, None))
print(L.run_or_explain(app, ["cat", "BUILD"]))

# %% [markdown]
# `ENV`, `ARG`, `WORKDIR`, `USER` and `CMD` only change the image's JSON config: in the history
# they are marked `empty_layer`. `COPY` and `RUN` add layers (`RUN` ran in a real container and
# its writable layer became the new layer).

# %%
L.show_table(L.history(app), width=70)

# %% [markdown]
# ## 2 · The cache
#
# Build again, unchanged. Each step's cache key is the digest of the step before it, the
# instruction as recorded (after `ARG`/`ENV` substitution) and, for `COPY`, the content of the
# copied files. Every key is found, so nothing runs and nothing new is stored.

# %%
blobs_before = L.store_blobs()
start = time.perf_counter()
log = list(Builder(ctx, tag="app:1", buildargs={"BUILD_NUMBER": "7"}))
cached_build = time.perf_counter() - start
print("\n".join(line for line in log if line.startswith(("Step", " ---> Using"))))
print(f"first build {first_build:.2f} s, unchanged rebuild {cached_build:.3f} s")

# %%
# NBVAL_CHECK_OUTPUT
print("steps from the cache:", log.count(" ---> Using cache"), "of", sum(l.startswith("Step") for l in log) - 1)
print("new blobs stored:", L.store_blobs() - blobs_before)

# %% [markdown]
# Now change one copied file. The steps above the `COPY` are reused; the `COPY` and every step
# after it run again, because each key includes the key of the step below.

# %%
(ctx / "app" / "VERSION").write_text("1.1\n")
for line in Builder(ctx, tag="app:2", buildargs={"BUILD_NUMBER": "7"}):
    if line.startswith(("Step", " ---> Using")):
        print(line)

# %% [markdown]
# ### Check your work
#
# **Exercise 1.** Predict which steps come from the cache if you change only the build argument
# (`BUILD_NUMBER=8`, files unchanged). Then check.

# %%
# NBVAL_CHECK_OUTPUT
# Check your work (exercise 1): which steps came from the cache?
log = list(Builder(ctx, tag="app:3", buildargs={"BUILD_NUMBER": "8"}))
for step, cached in L.cache_report(log):
    print("cache" if cached else "ran  ", step.split()[0])

# %% [markdown]
# ## 3 · When a build fails, it says where
#
# A malformed Dockerfile is refused **before any step runs**, naming the line; a failing `RUN`
# names the line, the exit code, and keeps the log. Nothing is tagged by a failed build.

# %%
# NBVAL_CHECK_OUTPUT
from ctrkernel.errors import BuildError

(ctx / "Dockerfile.bad").write_text(f"FROM {base}\nRUN echo fine\nCOPY app/ /app\nCMD [\"sh\", \"-c\" \"echo\"]\n")
blobs_before = L.store_blobs()
try:
    Builder(ctx, dockerfile="Dockerfile.bad")
except BuildError as e:
    print(type(e).__name__, "on line", e.line, "->", e)
print("steps run:", 0 if L.store_blobs() == blobs_before else "some")

# %%

(ctx / "Dockerfile.fail").write_text(f"FROM {base}\nRUN echo working... && exit 3\n")
try:
    list(Builder(ctx, dockerfile="Dockerfile.fail"))
except BuildError as e:
    print("line:", e.line, "| exit code:", getattr(e, "exit_code", None))
    print("message:", e)
    print("log tail:", e.build_log[-2:])

# %% [markdown]
# ## 4 · `docker commit`: an image from a container's changes
#
# You can also change a container by hand and keep its writable layer as a new image. It works,
# but nothing records *how* the files changed: the history says only what command the container
# ran. This is the "drift" of chapter 05 in miniature; a Dockerfile is the recipe.

# %%
from ctrkernel.image.commit import commit
from ctrkernel.runtime import create

try:
    c = create(app, ["sh", "-c", "echo tuned > /opt/app/tuning.conf"], user="0")
    c.start(); c.wait()
    tuned = commit(c, repository="app", tag="tuned", message="hand-tuned", author="a learner",
                   changes=["ENV TUNED=yes"])
    c.remove(force=True)
    L.show_table(L.history(tuned)[:2], width=60)
except ctrkernel.CtrkernelError as e:
    tuned = None
    print("this host cannot run the container to commit:", e)

# %% [markdown]
# ## 5 · An image against a VM's disk image
#
# A container image holds only the application's files: it uses the host's running kernel. A VM
# must bring its own kernel, an initramfs to boot it, the kernel's modules, and an operating
# system, all on a **disk image**. Here we build a real one, the smallest this machine can make
# with no network: an ext4 filesystem on a raw disk holding static busybox as `/bin/sh` and
# `/sbin/init`, the booted kernel's whole modules directory, and `/boot/vmlinuz` + `initrd.img`.
# `mke2fs -d` fills the filesystem from a directory, so this needs neither root nor a mount.
# A real distribution's disk holds far more than this one (a package manager, libraries, a shell
# with its own dependencies, ...): what follows is a **lower bound** for a VM.
#
# Three sizes describe a disk image (`qemu-img info`): its *virtual size* (the disk the guest
# sees), its *allocated* bytes (a raw file is sparse: free space takes nothing on the host), and
# the compressed `qcow2` it is shipped as. An image has two: its layer blobs as pulled
# (gzip-compressed) and its layers unpacked.

# %%
import plotly.graph_objects as go
from ctrkernel.vm import disk as vmdisk

vm = L.vm_disk_sizes(work / "vm")
image_bytes = {"compressed (layer blobs: a pull)": sum(l["size"] for l in app.layers),
               "uncompressed (layer tars)": app.size}
if vm["disk"]:
    d = vm["disk"]
    print(f"built a VM disk image for kernel {vm['version']} in {d['seconds']:.1f} s; it holds:")
    for part, n in d["parts"].items():
        print(f"  {part:20} {L.human(n):>9}")
    disk_bytes = {"compressed (qcow2: a download)": d["qcow2_bytes"],
                  "allocated on the host (raw, sparse)": d["allocated"],
                  "virtual size (what the guest sees)": d["virtual_size"]}
else:
    # Fallback, labelled: without mke2fs/qemu-img only the kernel's own files are measured.
    print("no VM disk image could be built here:", vm["why"])
    print("fallback: the kernel, initramfs and modules only; the OS disk would come on top")
    disk_bytes = {"kernel + initramfs + modules (no disk)":
                  vm["kernel"] + vm["initramfs"] + vm["modules"]}
fig = go.Figure()
for name, values, color in (("container image app:1", image_bytes, "#1f77b4"),
                            ("VM disk image" if vm["disk"] else "VM kernel files (fallback)",
                             disk_bytes, "#d62728")):
    fig.add_bar(name=name, y=[f"{name}: {k}" for k in values], x=[v / 1e6 for v in values.values()],
                orientation="h", marker_color=color, text=[L.human(v) for v in values.values()],
                textposition="outside", cliponaxis=False)
fig.update_layout(title="An image against a VM disk image, both measured on this machine",
                  xaxis_title="MB (log scale)", xaxis_type="log", height=420,
                  margin={"l": 20, "r": 90})
smallest_vm = min(disk_bytes.values())
print(f"the VM's smallest form is {smallest_vm / image_bytes['compressed (layer blobs: a pull)']:,.0f}"
      " times the container image as pulled")
fig

# %% [markdown]
# The disk is not a pile of bytes: boot it, as a cloud VM boots. QEMU reads the kernel and the
# initrd from the disk's `/boot`, the initrd finds the root filesystem on `/dev/vda`, and
# busybox's `init` *from the disk* becomes PID 1 and runs its rc script, which reports and powers
# off. (Under software emulation this takes seconds; the guest's writes are thrown away, so the
# disk measured above is unchanged.)

# %%
if vm["disk"]:
    try:
        booted = vmdisk.boot(vm["disk"]["path"])
        print(f"booted under {booted.accelerator}: PID 1 is {booted.pid1!r}, root is "
              f"{booted.root}, {booted.seconds_to_init:.1f} s from QEMU's launch to init")
    except ctrkernel.CtrkernelError as e:
        print("this host cannot boot the disk:", e)
else:
    print("no disk to boot:", vm["why"])

# %%
# NBVAL_CHECK_OUTPUT
# Check your work: is the disk a real ext4 filesystem with busybox and the modules in it, read
# without mounting? Is even the uncompressed image smaller than the VM disk as shipped?
if vm["disk"]:
    inside = vmdisk.listing(vm["disk"]["path"], "/bin")
    print("ext4:", "extent" in vmdisk.filesystem(vm["disk"]["path"])["Filesystem features"])
    print("/bin/busybox in the disk:", "busybox" in inside)
    print("kernel modules in the disk:",
          vm["version"] in vmdisk.listing(vm["disk"]["path"], "/lib/modules"))
    print("sparse (allocated < virtual size):", d["allocated"] < d["virtual_size"])
    print("image uncompressed < VM disk compressed:", app.size < d["qcow2_bytes"])
else:
    print("fallback (no disk built): image < the VM's kernel files alone:",
          app.size < vm["kernel"] + vm["initramfs"] + vm["modules"])

# %% [markdown]
# ## Key points
#
# - A Dockerfile is a recipe: metadata steps change the config, `COPY`/`ADD`/`RUN` add layers.
# - The build cache keys each step on the step below it and on its own inputs; an unchanged
#   rebuild does nothing and stores nothing. Order a Dockerfile from what changes least to what
#   changes most.
# - Errors name the Dockerfile line; a malformed file fails before anything runs.
# - `commit` keeps a container's changes but not how they were made.
# - An image carries only the application's files; a VM's disk carries a kernel, its modules,
#   an initrd and a whole OS. Even the smallest disk built here is many times the image.
#
# ## Exercises
#
# 2. Move `COPY app/ ./` **after** the `RUN` line (and make the RUN not depend on it). Change
#    `VERSION` again: how many steps come from the cache now?
# 3. Run `ctrkernel build -t app:cli <dir>` in a terminal (with the same `CTRKERNEL_HOME`). Does
#    it hit the cache the notebook filled?

# %%
# Check your work (exercise 3): the command line builds into the same store.
import os
import subprocess
import sys

done = subprocess.run([sys.executable, "-m", "ctrkernel", "build", "-t", "app:cli",
                       "--build-arg", "BUILD_NUMBER=8", str(ctx)], capture_output=True, text=True)
print(done.stdout.count("Using cache"), "steps from the cache; exit status", done.returncode)

# %% [markdown]
# <details><summary>Solutions</summary>
#
# 1. `ARG`, `ENV`, `WORKDIR` and `COPY` come from the cache: a build argument is not part of
#    the `ARG` line's record, but the `RUN` that sees it records it (`|1 BUILD_NUMBER=8 /bin/sh
#    -c ...`, as Docker does), so the `RUN` and every step after it run again.
# 2. Every step before the `COPY` (now including the `RUN`) comes from the cache; only the `COPY`
#    and what follows it run.
# 3. Yes: the cache lives in the store, not in the process, so every step is `Using cache`.
#
# </details>

# %%
import shutil

shutil.rmtree(work, ignore_errors=True)
