"""What both directions share: the formats' names, media types and limits."""
from ctrkernel.image.store import DOCKER_MT_LAYER, MT_INDEX, MT_LAYER_GZIP, MT_LAYER_TAR

FORMATS = {"docker": "docker", "docker-archive": "docker", "oci": "oci", "oci-archive": "oci"}
CONTAINERD_NAME = "io.containerd.image.name"     # docker 25+ and containerd read this name
INDEX_TYPES = (MT_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json")
LAYER_TYPES = (MT_LAYER_GZIP, MT_LAYER_TAR, DOCKER_MT_LAYER,
               "application/vnd.docker.image.rootfs.diff.tar")
JSON_LIMIT = 16 << 20          # manifests and configs are small; refuse to read a JSON bomb
MAX_LINK_HOPS = 16
CHUNK = 1 << 20
