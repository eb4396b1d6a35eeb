"""gs:// for tests with no network: a Google Cloud Storage emulator on 127.0.0.1.

start.sh/stop.sh of the recipe in tests/gcs_emulator/, in Python: `Server.start(dir)` makes a
throwaway CA and certificate with openssl, picks free loopback ports, starts the emulator (HTTP
for google-cloud-storage, so Beam; TLS for TensorFlow's own gs://), the OAuth token stub and the
CONNECT proxy, and `Server.env` holds the variables a process needs to reach them.

The fixtures in conftest.py: `gcs_server` (one per session) and `gcs` (a fresh bucket per test,
with `Server.env` set in os.environ for the test). Setting it in os.environ mid-process is
enough, also after TensorFlow is imported: TF's gs:// reads the proxy, CA bundle and test token
per request. Two things it fixes at its first gs:// call in a process, whatever the env then:
GCS_RETRY_CONFIG_MAX_RETRIES, and its stat cache (entries live 5 s, keyed by path; fresh bucket
names keep tests apart).

By hand, e.g. to run `widedeep` against it: `python -m tests.gcs` prints `export` lines and
serves until interrupted.
"""

import importlib.util
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HARNESS = Path(__file__).resolve().parent / "gcs_emulator"
PROJECT = "widedeep-test"
START_TIMEOUT_S = 15.0

# Run each script under a watchdog thread that exits when its parent (pytest) is gone, so a
# killed test session leaves no servers behind; fixture teardown stops them the normal way.
_WATCHDOG = """
import os, runpy, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class StartError(RuntimeError):
    """The emulator could not be started; the message says why (the fixture skips with it)."""


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def make_certificates(directory: Path) -> None:
    """A throwaway CA (ca.pem) and a certificate for the hosts TF's gs:// calls (srv.pem/srv.key)."""
    if (directory / "srv.pem").is_file():
        return
    if shutil.which("openssl") is None:
        raise StartError("gcs emulator: openssl not found on PATH (needed for its throwaway CA)")
    (directory / "ext.cnf").write_text(
        "subjectAltName=DNS:www.googleapis.com,DNS:storage.googleapis.com,"
        "DNS:oauth2.googleapis.com,IP:127.0.0.1\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", "/CN=gcs-emulator-ca", "-keyout", "ca.key", "-out", "ca.pem"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=www.googleapis.com",
         "-keyout", "srv.key", "-out", "srv.csr"],
        ["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "30", "-extfile", "ext.cnf", "-out", "srv.pem"],
    ]
    for args in steps:
        done = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True)
        if done.returncode != 0:
            raise StartError(f"gcs emulator: openssl {args[0]} failed: "
                             f"{done.stderr.strip()[-300:]}")


class Server:
    """The emulator, token stub and proxy for one test session (or one `python -m tests.gcs`)."""

    def __init__(self, directory: Path, http_port: int, tls_port: int, token_port: int,
                 proxy_port: int):
        self.dir = directory
        self.http_port, self.tls_port = http_port, tls_port
        self.token_port, self.proxy_port = token_port, proxy_port
        self.procs: dict[str, subprocess.Popen] = {}
        self.startup_s = 0.0
        self._buckets = itertools.count(1)
        self._client = None
        self.env = {
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{http_port}",
            "NO_GCE_CHECK": "True",
            "GOOGLE_APPLICATION_CREDENTIALS": str(directory / "fake-sa.json"),
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-token",
            "CURL_CA_BUNDLE": str(directory / "ca.pem"),
            "https_proxy": f"http://127.0.0.1:{proxy_port}",
            "no_proxy": "127.0.0.1,localhost",
            "GCS_RETRY_CONFIG_MAX_RETRIES": "2",
        }

    @classmethod
    def start(cls, directory, attempts: int = 3) -> "Server":
        """Start everything in `directory` (a scratch folder); raises StartError if it can't."""
        if importlib.util.find_spec("gcp_storage_emulator") is None:
            raise StartError(f"gcs emulator: {sys.executable} has no gcp_storage_emulator "
                             "(pip install gcp-storage-emulator==2026.7.19, or '.[test]')")
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        make_certificates(directory)
        for attempt in range(attempts):  # a free port can be taken before we bind it: retry
            server = cls(directory, *free_ports(4))
            try:
                server._launch()
                server.startup_s = time.monotonic() - t0
                return server
            except StartError:
                server.stop()
                if attempt == attempts - 1 or not server._port_clash():
                    raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        d = self.dir
        json.dump({"type": "service_account", "project_id": PROJECT, "private_key_id": "0",
                   "private_key": (d / "srv.key").read_text(),
                   "client_email": f"test@{PROJECT}.iam.gserviceaccount.com", "client_id": "0",
                   "token_uri": f"http://127.0.0.1:{self.token_port}/token"},
                  open(d / "fake-sa.json", "w"))
        scripts = {
            "emulator": ["emulator.py", "--http-port", self.http_port, "--https-port",
                         self.tls_port, "--cert", d / "srv.pem", "--key", d / "srv.key"],
            "token": ["token_stub.py", self.token_port],
            "proxy": ["connect_proxy.py", self.proxy_port, self.tls_port],
        }
        # The servers themselves must not use a proxy (the caller's own https_proxy, say).
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
        for name, (script, *args) in scripts.items():
            with open(d / f"{name}.log", "w") as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-c", _WATCHDOG, str(HARNESS / script), *map(str, args)],
                    cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT)
        ports = {"emulator": (self.http_port, self.tls_port), "token": (self.token_port,),
                 "proxy": (self.proxy_port,)}
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting = dict(ports)
        while waiting:
            for name in list(waiting):
                if self.procs[name].poll() is not None:
                    raise StartError(f"gcs emulator: {name} exited with "
                                     f"{self.procs[name].returncode}: {self.log_tail(name)}")
                if all(_listening(p) for p in waiting[name]):
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                name = next(iter(waiting))
                ports = ", ".join(f"127.0.0.1:{p}" for p in waiting[name])
                raise StartError(f"gcs emulator: {name} not listening on {ports} "
                                 f"within {START_TIMEOUT_S:.0f} s: "
                                 f"{self.log_tail(name)}")
            if waiting:
                time.sleep(0.05)

    def log_tail(self, name: str, lines: int = 3) -> str:
        try:
            text = (self.dir / f"{name}.log").read_text().strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def _port_clash(self) -> bool:
        return any("Address already in use" in self.log_tail(n, 20) for n in self.procs)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def client(self):
        """A google.cloud.storage client for the emulator, whatever os.environ holds."""
        if self._client is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage
            self._client = storage.Client(
                project=PROJECT, credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.env["STORAGE_EMULATOR_HOST"]})
        return self._client

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (default: a fresh name, 'wd-test-<n>') and return its name."""
        name = name or f"wd-test-{next(self._buckets)}"
        self.client().create_bucket(name)
        return name


class Bucket:
    """What the `gcs` fixture yields: one fresh bucket on the session's emulator."""

    def __init__(self, server: Server, bucket: str, env: dict[str, str]):
        self.server = server
        self.bucket = bucket
        self.env = env          # os.environ plus server.env: pass as env= to subprocesses

    def url(self, path: str = "") -> str:
        return f"gs://{self.bucket}/{path.lstrip('/')}"

    def list(self, prefix: str = "") -> list[str]:
        """Sorted names of the bucket's objects under `prefix` (read through google-cloud-storage)."""
        return sorted(b.name for b in self.server.client().list_blobs(self.bucket, prefix=prefix))

    def client(self):
        return self.server.client()


def main() -> None:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="gcs-"))
    server = Server.start(directory)
    try:
        for k, v in server.env.items():
            print(f"export {k}={v}")
        print(f"# serving from {directory}; Ctrl-C stops", file=sys.stderr, flush=True)
        sys.stdout.flush()
        while all(p.poll() is None for p in server.procs.values()):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
