"""Fixtures shared by the tests: the repository's golden files, the real binary, data
directories it fills with `demo`, and a real `serve` on a free loopback port."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = REPO / "fixtures" / "golden"
EVENTS = REPO / "fixtures" / "events"
SCHEMAS = REPO / "schemas"


def binary_path() -> pathlib.Path:
    given = os.environ.get("ARBITER_EVENTS_BIN")
    return pathlib.Path(given) if given else REPO / "target" / "release" / "arbiter-events"


def read_jsonl(path: pathlib.Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def golden_records():
    return read_jsonl(GOLDEN / "all_variants.jsonl")


@pytest.fixture(scope="session")
def golden_key() -> bytes:
    return bytes.fromhex((GOLDEN / "mac_key.hex").read_text().strip())


@pytest.fixture(scope="session")
def bin_path() -> str:
    path = binary_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"the arbiter-events binary is not at {path}: run `cargo build --release` "
                    "first (or set ARBITER_EVENTS_BIN)")
    return str(path)


def run(bin_path: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([bin_path, *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise AssertionError(f"arbiter-events {' '.join(args)} exited {done.returncode}: "
                             f"{done.stderr[-2000:]}")
    return done


class DemoDir:
    """A data directory filled by `arbiter-events demo`."""

    def __init__(self, bin_path: str, path: pathlib.Path) -> None:
        self.bin = bin_path
        self.path = path
        self.runs = 0

    def demo(self, tasks: int = 2000, seed: int = 7) -> None:
        self.runs += 1
        run(self.bin, "demo", "--data-dir", str(self.path), "--tasks", str(tasks),
            "--threads", "2", "--seed", str(seed + self.runs))

    def stats(self) -> dict:
        return json.loads(run(self.bin, "stats", "--data-dir", str(self.path)).stdout)

    def records(self) -> int:
        return self.stats()["records"]

    def mac_key(self) -> bytes:
        return bytes.fromhex(run(self.bin, "key", "mac", "--data-dir", str(self.path)).stdout.strip())

    def increments(self):
        return sorted(self.path.glob("exports/run-*/increment-*.msgpack"))


@pytest.fixture
def demo_dir(bin_path, tmp_path) -> DemoDir:
    """A fresh data directory after one demo run of 2000 tasks."""
    d = DemoDir(bin_path, tmp_path / "data")
    d.demo()
    return d


@pytest.fixture(scope="session")
def shared_demo(bin_path, tmp_path_factory) -> DemoDir:
    """One data directory for the tests that only read it."""
    d = DemoDir(bin_path, tmp_path_factory.mktemp("shared") / "data")
    d.demo()
    return d


# --- serve -------------------------------------------------------------------------------


def serve_help(bin_path: pathlib.Path):
    """`arbiter-events serve --help`, or None when the binary has no `serve`."""
    if not bin_path.is_file():
        return None
    try:
        done = subprocess.run([str(bin_path), "serve", "--help"], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


SERVE_HELP = serve_help(binary_path())
needs_serve = pytest.mark.skipif(
    SERVE_HELP is None,
    reason=f"`{binary_path()} serve --help` fails: this binary has no `serve` subcommand yet",
)

RECORD_TOKEN = "record-token-for-the-python-tests-0123456789abcdef"
EXPORT_TOKEN = "export-token-for-the-python-tests-0123456789abcdef"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `arbiter-events serve` child on a free loopback port (``--listen
    127.0.0.1:0``, the port read from its first line; else a probed free port), with
    known tokens; stopped on close, killed if it does not stop."""

    def __init__(self, bin_path: str, data_dir: pathlib.Path, config: str = "") -> None:
        self.data_dir = data_dir
        self.proc = None
        extra = []
        if config:
            path = data_dir.parent / "serve.toml"
            path.write_text(config)
            extra = ["--config", str(path)]
        self.url = ""
        self.lines: list = []
        help_text = SERVE_HELP or ""
        listen_flag = next((f for f in ("--listen", "--addr", "--bind", "--address")
                            if f in help_text), "--listen")
        env = dict(os.environ, ARBITER_EVENTS_RECORD_TOKEN=RECORD_TOKEN,
                   ARBITER_EVENTS_EXPORT_TOKEN=EXPORT_TOKEN)
        port_zero = "port 0" in help_text
        for _ in range(5):  # a probed port taken before the server binds it: try another
            port = 0 if port_zero else free_port()
            self.lines = []
            self.proc = subprocess.Popen(
                [bin_path, "serve", "--data-dir", str(data_dir), listen_flag, f"127.0.0.1:{port}",
                 *extra],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, text=True)
            threading.Thread(target=self._read, daemon=True).start()
            self.url = f"http://127.0.0.1:{port}" if port else ""
            if self._wait_ready(30.0):
                return
            self.close()
        raise AssertionError("arbiter-events serve did not come up: " + "".join(self.lines)[-2000:])

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def _wait_ready(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if not self.url:
                for line in list(self.lines):
                    if line.startswith("listening on http://"):
                        self.url = line.split()[-1].strip()
                if not self.url:
                    time.sleep(0.05)
                    continue
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def server(bin_path, tmp_path):
    s = Server(bin_path, tmp_path / "data")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def small_server(bin_path, tmp_path):
    """A server taking at most 10 events a request."""
    s = Server(bin_path, tmp_path / "data", config="[server]\nmax_events_per_request = 10\n")
    try:
        yield s
    finally:
        s.close()
