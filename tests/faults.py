"""Faults on purpose: a store outage made by a TCP proxy that refuses connections for a while,
and random SIGKILLs of ``p2pk run``'s workers. Used by ``tests/test_faults.py``.

moto keeps its data in memory and loses it on restart, so the outage is made in front of it: the
proxy closes its listening socket (new connections are refused: ECONNREFUSED, as when a MinIO pod
restarts) and cuts every open connection, then listens again on the same port.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import services
from test_run import events, gone


class RefusingProxy:
    """``127.0.0.1:<port>`` → ``target`` (host:port), byte for byte; :meth:`outage` refuses."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = services.free_port()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stopped = False
        self._listen()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: an outage or stop
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._open.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def refuse(self) -> None:
        """Stop listening and cut every open connection: the store is down."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            live = list(self._open)
        for s in live:
            self._close(s)

    def restore(self) -> None:
        if self._listener is None and not self._stopped:
            self._listen()

    def outage(self, seconds: float) -> None:
        self.refuse()
        time.sleep(seconds)
        self.restore()

    def stop(self) -> None:
        self._stopped = True
        self.refuse()


@dataclass
class FaultReport:
    """What happened in :func:`run_with_faults`."""

    returncode: int
    output: str
    kills: list[tuple[float, str]] = field(default_factory=list)   # (seconds into the run, client)
    outage: tuple[float, float] | None = None                       # (start, seconds)
    round_ends: dict[str, list[int]] = field(default_factory=dict)  # client → rounds in round_end order
    wall_seconds: float = 0.0

    def rounds_redone(self) -> dict[str, int]:
        """Rounds a client finished more than once (work repeated after a kill, not results)."""
        return {c: len(r) - len(set(r)) for c, r in self.round_ends.items()}


def run_with_faults(spec: Path, out: Path, s3: services.S3Server, *, kills: int, outage_seconds: float,
                    outage_after_rounds: int, kill_every_rounds: int = 3, seed: int = 0,
                    args: tuple[str, ...] = ()) -> FaultReport:
    """``p2pk run`` over S3 through a :class:`RefusingProxy`, at default settings, while a chaos
    thread SIGKILLs a random worker ``kills`` times and the store refuses connections for
    ``outage_seconds``. Faults are paced by progress, not by the clock, so that a fast and a slow
    machine see the same run: the i-th kill once the workers together have finished
    ``i * kill_every_rounds`` rounds (a kill held back, by the outage or by no worker being ready,
    does not push the later ones back, so that all of them fit in the run), the victim one that
    has finished a round since it last
    started (scattered kills, as preemptions and OOM kills on a busy cluster, not a worker shot
    down again while it is still starting); the outage once ``outage_after_rounds`` rounds are done."""
    proxy = RefusingProxy(s3.endpoint)
    rng = random.Random(seed)
    store_url = s3.store_url()
    env = {**os.environ, **s3.env, "P2PK_S3_ENDPOINT": proxy.address, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "p2p_job.cli", "run", str(spec), "--out", str(out), "--store", store_url,
                            "--s3-endpoint", proxy.address, *args],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    report = FaultReport(returncode=-1, output="")
    start = time.monotonic()

    def chaos() -> None:
        outage_done, next_kill = False, kill_every_rounds
        while run.poll() is None and (len(report.kills) < kills or not outage_done):
            time.sleep(0.3)
            all_events = {log: events(log) for log in sorted((out / "logs").glob("*/*.log"))}
            done = sum(e["event"] == "round_end" for evs in all_events.values() for e in evs)
            if not outage_done and done >= outage_after_rounds:
                report.outage = (round(time.monotonic() - start, 1), outage_seconds)
                proxy.outage(outage_seconds)
                outage_done = True
                continue
            if len(report.kills) >= kills or done < next_kill:
                continue
            live = []
            for log, evs in all_events.items():
                last_start = max((i for i, e in enumerate(evs) if e["event"] == "worker_start"), default=None)
                if last_start is None or any(e["event"] == "worker_done" for e in evs):
                    continue
                progressed = any(e["event"] == "round_end" for e in evs[last_start:])
                if progressed and not gone(evs[last_start]["pid"]):
                    live.append((log.stem, evs[last_start]["pid"]))
            if live:
                client, pid = rng.choice(live)
                try:
                    os.kill(pid, signal.SIGKILL)
                    report.kills.append((round(time.monotonic() - start, 1), client))
                    next_kill += kill_every_rounds
                except ProcessLookupError:
                    pass

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()
    try:
        report.output, _ = run.communicate(timeout=1500)
    finally:
        run.kill()
        proxy.stop()
    report.returncode = run.returncode
    report.wall_seconds = time.monotonic() - start
    chaos_thread.join(timeout=10)
    for log in sorted((out / "logs").glob("*/*.log")):
        report.round_ends[log.stem] = [e["round"] for e in events(log) if e["event"] == "round_end"]
    return report
