"""A real two-node Ray cluster on this machine for the Ray engine's tests, always stopped afterwards.

Each node is a `ray start` with its own resources, started in a session of its own: every process of
the cluster (Ray renames them, so their command lines say little) inherits that session, and the
teardown stops exactly those processes, by id, never another Ray on the machine. The cluster uses
token authentication with a token of its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OBJECT_STORE_BYTES = 100 * 1024**2  # the test machine is small and shared
START_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(**extra: str) -> dict:
    """Workers import tagcons from this checkout; no usage stats."""
    path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, RAY_USAGE_STATS_ENABLED="0", **extra)


def ray_cli() -> list[str]:
    return [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


def session_of(pid: str) -> int | None:
    try:
        stat = (Path("/proc") / pid / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])  # fields after the name: state ppid pgrp session


class TwoNodeCluster:
    """`ray start --head` plus `ray start --address` (one CPU each, the second with its own resource)."""

    def __init__(self):
        self.temp_dir = tempfile.mkdtemp(prefix="tcray", dir="/tmp")  # short: Ray's socket paths are limited
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.sessions: list[int] = []
        self.token = secrets.token_hex(32)

    def env(self) -> dict:
        return ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)

    def start(self) -> TwoNodeCluster:
        common = ["--num-cpus=1", f"--object-store-memory={OBJECT_STORE_BYTES}", f"--temp-dir={self.temp_dir}"]
        head = ["start", "--head", f"--port={self.port}", "--include-dashboard=false", "--disable-usage-stats"]
        self._ray(*head, *common)
        self._ray("start", f"--address={self.address}", '--resources={"second_node": 1}', *common)
        return self

    def _ray(self, *args: str) -> None:
        process = subprocess.Popen(
            [*ray_cli(), *args],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.sessions.append(process.pid)
        out, err = process.communicate(timeout=START_TIMEOUT)
        if process.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{out}\n{err}")

    def pids(self) -> list[int]:
        """Processes of this cluster: those in the sessions of its `ray start` commands."""
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and session_of(p) in self.sessions]

    def processes_named(self, marker: str) -> list[int]:
        """Living processes of this cluster whose title (Ray sets it to the actor or task) has `marker`."""
        found = []
        for pid in self.living():
            try:
                if marker.encode() in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """SIGTERM then SIGKILL every process of this cluster (by id), then remove its folder."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 15
            while self.living() and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def living(self) -> list[int]:
        """pids() without zombies (dead, waiting for a parent that is not us to reap them)."""
        return [pid for pid in self.pids() if _state(pid) not in ("Z", "X", None)]


def _state(pid: int) -> str | None:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def embed_command(pairs: Path, images: Path, out: Path, address: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tagcons",
        "embed",
        "--data",
        str(pairs),
        "--images",
        str(images),
        "--backbone",
        "tiny",
        "--out",
        str(out),
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--engine",
        "ray",
        "--ray-address",
        address,
    ]
