# %% [markdown]
# # 04.02 · Building with a Dockerfile, the cache, and the size of a VM
#
# > **Q4 · 컨테이너의 장점은?** — *What are the advantages of containers?*
#
# Layers are rarely made by hand: a **Dockerfile** lists the steps, and each step that changes
# files becomes a layer. Because a step's layer depends only on the step below it and on its own
# inputs, an unchanged step is never redone: the **build cache**. This section builds an image
# from a Dockerfile, watches the cache work, commits a container by hand, and then compares the
# image with what a virtual machine needs on disk.
#
# **Objectives**
# - read a build's log and say which steps made layers and which only changed the config;
# - predict which steps a change invalidates, and check it;
# - know what `docker commit` records, and why a Dockerfile is better;
# - compare an image's size with a VM's kernel, initramfs and modules, measured here.

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
# ## 5 · An image against a VM's disk
#
# A container image holds only the application's files: it uses the host's running kernel. A VM
# must bring its own kernel, an initramfs to boot it, the kernel's modules, and then a whole
# operating system's files on a disk image. The first three are measured here from the kernel
# package the course boots in chapter 01 (the OS disk comes on top of them).

# %%
import plotly.graph_objects as go

vm = L.vm_disk_sizes()
app_bytes = sum(r["bytes"] for r in L.layer_rows(app))
parts = {"container image app:1 (all layers)": app_bytes,
         "VM kernel (vmlinuz)": vm["kernel"], "VM initramfs": vm["initramfs"],
         "VM kernel modules": vm["modules"]}
fig = go.Figure(go.Bar(x=list(parts), y=[v / 1e6 for v in parts.values()],
                       text=[L.human(v) for v in parts.values()], textposition="outside"))
fig.update_layout(title=f"What must be on disk (kernel {vm['version']}), measured on this machine",
                  yaxis_title="MB", height=420)
print(f"the VM's kernel files are {(vm['kernel'] + vm['initramfs'] + vm['modules']) / app_bytes:,.0f}"
      " times the size of the whole container image")
fig

# %%
# NBVAL_CHECK_OUTPUT
# Check your work: is the whole image smaller than the VM's kernel, initramfs and modules
# alone (before any of the VM's OS files)?
vm_boot = vm["kernel"] + vm["initramfs"] + vm["modules"]
print("measured the VM's kernel files:", vm_boot > 0)
print("image smaller than the VM's kernel files alone:", vm_boot == 0 or app_bytes < vm_boot)

# %% [markdown]
# ## Key points
#
# - A Dockerfile is a recipe: metadata steps change the config, `COPY`/`ADD`/`RUN` add layers.
# - The build cache keys each step on the step below it and on its own inputs; an unchanged
#   rebuild does nothing and stores nothing. Order a Dockerfile from what changes least to what
#   changes most.
# - Errors name the Dockerfile line; a malformed file fails before anything runs.
# - `commit` keeps a container's changes but not how they were made.
# - An image carries only the application's files; a VM carries a kernel, its modules and a
#   whole OS on top.
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
