"""Sampling in the background: a thread reads every source at a fixed rate, keeps a bounded
history of Points per target, and notices events (an OOM kill, an exit, a limit change).

Front ends subscribe with `on_sample(callback)`; the live dashboard pushes each round to the
browser from here, which is why sampling must never wait for the notebook's main thread.

    rec = Recorder([container_a, container_b], interval=0.25)
    rec.start(); ...; rec.stop()          # or rec.record(10) to sample for 10 s and stop
    rec.series["web"]                     # [Point, ...]   (units: ctrkernel.metrics.UNITS)
    rec.events                            # [Event(t, target, kind, text), ...]
"""
import threading
import time
from collections import deque
from dataclasses import dataclass

from ctrkernel.metrics.fastread import FileReader
from ctrkernel.metrics.sample import online_cpus, point
from ctrkernel.metrics.sources import source_for


@dataclass
class Event:
    t: float          # s since the recording started
    time: float       # s since the epoch
    target: str
    kind: str         # "oom", "exit", "limit", "note", "pause", "unpause"
    text: str


def _fmt_limit(name, value):
    if value is None:
        return f"{name} unlimited"
    if name == "memory":
        return f"memory {value / 2**20:.0f} MiB"
    if name == "cpu":
        return f"cpu {value / 100:.2f} CPU"
    return f"pids {value}"


class Recorder:
    def __init__(self, targets, interval=0.5, history=4800):
        targets = targets if isinstance(targets, (list, tuple)) else [targets]
        self.sources = [source_for(t) for t in targets]
        self.reader = FileReader()           # files kept open across rounds (fastread.py)
        for source in self.sources:
            source.reader = self.reader
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"two targets share a name: {names}")
        self.interval = float(interval)
        self.series = {s.name: deque(maxlen=history) for s in self.sources}
        self.events = []
        self.rounds = 0
        self.errors = []                     # callback failures, kept rather than lost
        self._last = {}                      # name -> last Sample
        self._callbacks = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self.t0 = time.monotonic()
        self._cpus = online_cpus()

    # ---- control -------------------------------------------------------------------------
    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def start(self):
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ctrkernel-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, 4 * self.interval))
        return self

    def record(self, seconds, until=None):
        """Sample for `seconds` (or until `until(recorder)` is true), then stop; returns self."""
        self.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.running:
            if until is not None and until(self):
                break
            time.sleep(min(self.interval, 0.1))
        return self.stop()

    def on_sample(self, callback):
        """callback(recorder, new_points: {name: Point}) after every round, in the sampler."""
        self._callbacks.append(callback)

    def mark(self, text, target="", kind="note"):
        """Add an event by hand (e.g. "limit lowered" right after an update)."""
        now = time.monotonic()
        with self._lock:
            self.events.append(Event(now - self.t0, time.time(), target, kind, text))

    # ---- sampling ------------------------------------------------------------------------
    def sample_once(self):
        """One round over all sources (the thread calls this; tests and benchmarks may too)."""
        new = {}
        host = (self.reader.system_cpu_ns(), self._cpus)   # once per round, for every source
        for source in self.sources:
            sample = source.read(host)
            if sample is None:
                continue
            previous = self._last.get(source.name)
            p = point(previous, sample, self.t0)
            with self._lock:
                last_point = self.series[source.name][-1] if self.series[source.name] else None
                self.series[source.name].append(p)
                self._events(source.name, last_point, p)
            self._last[source.name] = sample
            new[source.name] = p
        self.rounds += 1
        for callback in self._callbacks:
            try:
                callback(self, new)
            except Exception as e:           # a broken view must not stop the sampling
                self.errors.append(repr(e))
        return new

    def _events(self, name, before, now):
        def add(kind, text):
            self.events.append(Event(now.t, now.time, name, kind, text))
        if before is None:
            if now.oom_kills:
                add("oom", f"{name}: {now.oom_kills} OOM kill(s) before recording")
            return
        if now.oom_kills > before.oom_kills:
            add("oom", f"{name}: OOM kill")
        if before.status != now.status and now.status in ("paused", "running") \
                and before.status in ("paused", "running"):
            add("pause" if now.status == "paused" else "unpause", f"{name}: {now.status}")
        elif before.status in ("running", "paused") and now.status not in ("running", "paused"):
            add("exit", f"{name}: {now.status}")
        for field, label in (("memory_limit", "memory"), ("cpu_limit_percent", "cpu"),
                             ("pids_limit", "pids")):
            old, new = getattr(before, field), getattr(now, field)
            if old != new:
                add("limit", f"{name}: {_fmt_limit(label, old)} -> {_fmt_limit(label, new)}")

    def _loop(self):
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            next_tick += self.interval
            delay = next_tick - time.monotonic()
            if delay < 0:                    # fell behind (a slow read): do not burst
                next_tick = time.monotonic()
                delay = 0
            if self._stop.wait(delay):
                break

    # ---- reading back --------------------------------------------------------------------
    def points(self, name):
        with self._lock:
            return list(self.series[name])

    def label(self, name):
        return next(s.label for s in self.sources if s.name == name)

    def summary(self):
        """{name: {peak memory, mean CPU %, max pids, last status}} of what was recorded."""
        out = {}
        for name in self.series:
            pts = self.points(name)
            cpu = [p.cpu_percent for p in pts if p.cpu_percent is not None]
            mem = [p.memory_used for p in pts if p.memory_used is not None]
            pids = [p.pids for p in pts if p.pids is not None]
            out[name] = {"samples": len(pts), "peak_memory_mib": round(max(mem) / 2**20, 1)
                         if mem else None,
                         "mean_cpu_percent": round(sum(cpu) / len(cpu), 1) if cpu else None,
                         "max_pids": max(pids) if pids else None,
                         "status": pts[-1].status if pts else None}
        return out
