# %% [markdown]
# # 04.01 · The deck's web image: three layers, shared, served
#
# > **Q4 · 컨테이너의 장점은?** — *What are the advantages of containers?*
#
# The deck's example of an image is a web service: **OS base files + a web server (Apache
# httpd) + HTML files**, each a layer, and it claims that images sharing a layer store it only
# once. Here you build that image (with busybox's `httpd` as the web server), serve a page from
# it, build a second site on the same two lower layers, and measure what sharing saves.
#
# **Objectives**
# - build an image as three layers and name what each holds;
# - serve it from a container on a published port and fetch the page;
# - measure the disk two images share, and read an image's `history`;
# - see a set of images, their layers and their largest paths at a glance.

# %%
import ctrkernel
from ctrkernel.lessons import images as L
from ctrkernel.image.build import build

report = ctrkernel.doctor()
print("isolation:", report.isolation, "| containers can run:",
      report.isolation != "none" or report.ok("proot"))

# %% [markdown]
# ## 1 · Three layers: base files, a web server, HTML
#
# `L.web_context` writes a build context: a directory with the three parts and a five-line
# Dockerfile (section 04.02 explains Dockerfiles; here each `COPY` simply makes one layer).

# %%
import tempfile
from pathlib import Path

work = Path(tempfile.mkdtemp(prefix="ch04-web-"))
site = L.web_context(work / "site", {"index.html": "<h1>Hello from layer 3</h1>\n"})
print((site / "Dockerfile").read_text())

# %%
web, log = build(site, tag="web:1")
print("\n".join(log))

# %%
# One row per layer, lowest first: what made it, and how big it is once extracted.
for row in L.layer_rows(web):
    print(f"layer {row['layer']}: {row['files']:>2} files, {L.human(row['bytes']):>7}  "
          f"{row['created_by'].split(' in ')[-1]}")

# %% [markdown]
# Layer 1 is a few hundred bytes of `/etc` files, layer 2 is the server (one static binary of
# about 2 MB), layer 3 is the page. Nothing else: no kernel, no init system, no package manager.
#
# ## 2 · Serve it
#
# Start a container from the image with its port published on `127.0.0.1`, and fetch the page
# with `requests`, as a browser would. The container has its own network namespace; the runtime
# relays connections from the published port into it. (Where nothing can be isolated, as on
# Binder, the container has no network namespace and simply listens on the host's port.)

# %%
import requests
from ctrkernel.errors import CtrkernelError

server, page = None, None
try:
    server, url = L.serve(web)
    page = L.fetch(url)
    print(url, "->", page.status_code, page.text.strip())
    print("the container's isolation:", server.isolation["level"], "| network namespaces:",
          "net" in server.isolation["namespaces"])
except (CtrkernelError, requests.RequestException) as e:
    print("this host cannot serve from a container:", e)

# %% [markdown]
# ### Check your work
#
# **Exercise 1.** The page came out of layer 3. Which layer did the *program* that sent it come
# from? Check by asking the running server for a file of layer 1.

# %%
# NBVAL_CHECK_OUTPUT
# Check your work (exercise 1): the server (layer 2) serves /var/www, created by layer 1 and
# filled by layer 3.
if page is not None:
    print("page served from layer 3:", page.text.strip() == "<h1>Hello from layer 3</h1>")
    print("os-release (layer 1) not under /var/www:", L.fetch(url + "os-release").status_code == 404)
else:
    print("page served from layer 3: (no container here)")
if server is not None:
    server.stop(timeout=2)
    server.remove(force=True)

# %% [markdown]
# ## 3 · Two images, one base: the disk sharing saves
#
# A second site needs the same base files and the same server; only its HTML differs. Built
# from the same inputs, its first two layers have **the same digests**, so the store holds them
# once.

# %%
blog_ctx = L.web_context(work / "blog", {"index.html": "<h1>My blog</h1>\n",
                                         "posts/1.html": "<p>first post</p>\n" * 50})
blog, _ = build(blog_ctx, tag="blog:1")
for w, b in zip(web.layers, blog.layers):
    print(w["digest"][:19], "==" if w["digest"] == b["digest"] else "!=", b["digest"][:19])

# %%
numbers = L.sharing([web, blog])
numbers

# %% [markdown]
# Two images save little. The point is the trend: ten sites on the same base cost one copy of the
# base and server plus ten small HTML layers, where ten VM disk images would each carry a full
# system. The plot grows the number of sites using the measured layer sizes.

# %%
import plotly.graph_objects as go

shared = sum(r["bytes"] for r in L.layer_rows(web)[:2])
html = L.layer_rows(web)[2]["bytes"]
counts = list(range(1, 21))
fig = go.Figure([
    go.Scatter(x=counts, y=[(shared + n * html) / 1e6 for n in counts], name="layers shared"),
    go.Scatter(x=counts, y=[n * (shared + html) / 1e6 for n in counts], name="each image a full copy"),
])
fig.update_layout(title="Disk for N web sites on one base (measured layer sizes)",
                  xaxis_title="number of sites", yaxis_title="MB", height=380)
fig

# %% [markdown]
# ### Check your work
#
# **Exercise 2.** Predict the bytes stored for `web` and `blog` together, from the layer sizes,
# before running the cell.

# %%
# NBVAL_CHECK_OUTPUT
# Check your work (exercise 2): stored = base + server once, plus each site's HTML layer.
rows_w, rows_b = L.layer_rows(web), L.layer_rows(blog)
expected = rows_w[0]["bytes"] + rows_w[1]["bytes"] + rows_w[2]["bytes"] + rows_b[2]["bytes"]
print("stored bytes as predicted:", numbers["bytes_stored"] == expected)
print("layers stored:", numbers["unique_layers"], "of", numbers["layers"], "used")

# %% [markdown]
# ## 4 · History: how the image was made
#
# `docker history nginx` lists each step with its command and size (the deck shows 27 layers,
# 143.9 MB). Ours is short: the newest step first, `<missing>` for steps whose intermediate image
# is not kept, as for an image pulled from a registry; metadata steps have size 0.

# %%
L.show_table(L.history(web))

# %% [markdown]
# ## 5 · The layer explorer
#
# Every image, its layers and the largest paths in each layer, at a glance. Blue layers are used
# by more than one image (stored once); hover for the step that made a layer.

# %%
L.layer_explorer([web, blog])

# %% [markdown]
# ## Key points
#
# - The deck's web image is three layers: base files, the server, the HTML. The server layer is
#   the big one; the HTML is tiny.
# - Images built from the same inputs share layers **by digest**, so N sites on one base cost one
#   base, not N.
# - `history` shows which step made which layer and how much each added.
#
# ## Exercises
#
# 3. Build a third site whose Dockerfile copies the HTML **before** the server. Does it still
#    share the server layer with `web`? (Hint: a layer's content is the same, but what is it
#    stacked on?)
# 4. Which layer would you change to fix a security bug in the web server, and which images would
#    need rebuilding?

# %%
# Check your work (exercise 3): reorder the steps and compare the digests.
swapped = L.web_context(work / "swapped", {"index.html": "<h1>Hello from layer 3</h1>\n"})
text = (swapped / "Dockerfile").read_text().splitlines()
text[3], text[4] = text[4], text[3]
(swapped / "Dockerfile").write_text("\n".join(text) + "\n")
third, _ = build(swapped, tag="swapped:1")
print("server layer digest shared:", any(l["digest"] == web.layers[1]["digest"] for l in third.layers))
print("image ids equal:", third.id == web.id)

# %% [markdown]
# <details><summary>Solutions</summary>
#
# 3. The *layer* is shared (a layer's digest depends only on its own files), but the *image* is
#    different: its `rootfs.diff_ids` list is in another order, and the build cache keys each
#    step on the step below it, so a real build would have to redo every step after the first
#    change. Put what changes least at the bottom.
# 4. Layer 2, the server. Every image built on it needs rebuilding; their base and HTML layers
#    are reused as they are.
#
# </details>

# %%
import shutil

shutil.rmtree(work, ignore_errors=True)
