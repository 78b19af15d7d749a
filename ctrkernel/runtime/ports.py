"""Published ports: Docker's forms parsed, and the host-side listening sockets made.

Ports are published on 127.0.0.1 only: the shim listens there in the host's network namespace
and relays into the container's, so publishing changes nothing host-wide (no iptables rules,
no bridge, no veth pair), and nothing is exposed beyond this machine.
"""
import errno
import socket

from ctrkernel.errors import Conflict, InvalidArgument


def normalize(ports):
    """{"80/tcp": 8080, 53: (ip, 5353)} or ["8080:80"] -> [(container_port, host_port)]."""
    pairs = []
    if not ports:
        return pairs
    if isinstance(ports, (list, tuple)):
        for spec in ports:
            pairs.append(parse_publish(spec))
        return pairs
    for inside, outside in ports.items():
        port, _, proto = str(inside).partition("/")
        if proto not in ("", "tcp"):
            raise InvalidArgument(f"only TCP ports can be published, not {inside}")
        if isinstance(outside, (list, tuple)):
            outside = outside[-1]
        if outside is None:
            raise InvalidArgument(f"port {inside}: a host port is needed (random ports are not supported)")
        pairs.append((_number(port), _number(outside)))
    return pairs


def parse_publish(spec):
    """Docker's -p forms: "8080:80", "127.0.0.1:8080:80", "8080:80/tcp"."""
    text, _, proto = str(spec).partition("/")
    if proto not in ("", "tcp"):
        raise InvalidArgument(f"only TCP ports can be published, not {spec}")
    parts = text.split(":")
    if len(parts) == 3:
        if parts[0] not in ("127.0.0.1", "localhost", ""):
            raise InvalidArgument(f"{spec}: ports are published on 127.0.0.1 only")
        parts = parts[1:]
    if len(parts) != 2:
        raise InvalidArgument(f"{spec}: expected HOSTPORT:CONTAINERPORT")
    return _number(parts[1]), _number(parts[0])


def _number(text):
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise InvalidArgument(f"invalid port {text!r}") from None
    if not 0 < value < 65536:
        raise InvalidArgument(f"invalid port {value}: must be 1-65535")
    return value


def listen(pairs):
    """One socket listening on 127.0.0.1:<host port> per pair (in the caller's namespace)."""
    sockets = []
    try:
        for _, host_port in pairs:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", host_port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise Conflict(f"port 127.0.0.1:{host_port} is already allocated") from None
                raise
            s.listen(64)
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets
