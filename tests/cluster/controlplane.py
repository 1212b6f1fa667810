"""A throwaway Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver (RBAC, token
and ServiceAccount authentication, the TokenRequest API) and kube-controller-manager
(ServiceAccount defaults, Deployments and ReplicaSets, namespace deletion, garbage
collection). There is no kubelet or scheduler: Pods stay Pending, so Herald's processes
run on the host, authenticated with tokens of the chart's ServiceAccounts.

The binaries come from ``scripts/build-kube.sh`` (a per-user cache keyed by version) or
from ``HERALD_KUBE_BIN``. Every process is started by this module and stopped by PID,
with a bounded wait that says what it waited for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import ROOT, free_port

BUILD_SCRIPT = ROOT / "scripts" / "build-kube.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
NODE_BINARIES = ("kubelet", "kube-scheduler", "kube-proxy", "pause")
ADMIN_USER = "herald-test-admin"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started: the message says which process and why."""


def find_binaries(*, node: bool = False) -> Path | None:
    """Folder holding the three binaries (and the node's with ``node``), or None when they
    are not built."""
    names = BINARIES + (NODE_BINARIES if node else ())
    explicit = os.environ.get("HERALD_KUBE_BIN")
    if explicit:
        folder = Path(explicit)
    else:
        try:
            out = subprocess.run(
                ["bash", str(BUILD_SCRIPT), "--print", *(["--node"] if node else [])],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0:
            return None
        folder = Path(out.stdout.strip())
    if all((folder / name).is_file() for name in names):
        return folder
    return None


@dataclasses.dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 5.0, *, kill: bool = False) -> None:
        """SIGTERM (SIGKILL with ``kill``), then SIGKILL after ``timeout``: the cluster is
        thrown away, so a slow graceful shutdown (kube-apiserver drains its watches) is
        cut short. Raises only if even SIGKILL does not end the process."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.popen.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            self.popen.kill()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            raise ControlPlaneError(
                f"{self.name} (pid {self.popen.pid}) did not exit 10 s after SIGKILL"
            ) from None


@dataclasses.dataclass
class ControlPlane:
    bin: Path
    root: Path
    server: str = ""
    ca_file: Path = dataclasses.field(default_factory=Path)
    admin_token: str = ""
    admin_kubeconfig: Path = dataclasses.field(default_factory=Path)
    etcd_url: str = ""
    processes: dict[str, Process] = dataclasses.field(default_factory=dict)
    # The API server's address. With a node (tests/node) it is the pod network's gateway:
    # Pods reach the API there through the `kubernetes` Service, whose endpoint it becomes.
    address: str = "127.0.0.1"
    with_node: bool = False
    _apiserver_args: list[str] = dataclasses.field(default_factory=list)

    # -- start and stop

    def start(self, *, timeout: float = 120.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._keys()
        self._start_etcd(timeout)
        self._start_apiserver(timeout)
        self.admin_kubeconfig = self.write_kubeconfig("admin", self.admin_token)
        self._start_controller_manager(timeout)

    def stop(self) -> None:
        problems = []
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            try:
                process.stop()
            except ControlPlaneError as exc:
                problems.append(str(exc))
        if problems:
            raise ControlPlaneError("; ".join(problems))

    def restart_apiserver(self, *, timeout: float = 120.0) -> None:
        """Kill kube-apiserver (a crash: connections drop at once) and start it again on the
        same port and etcd."""
        self.stop_apiserver()
        self.start_apiserver(timeout=timeout)

    def stop_apiserver(self) -> None:
        """Kill kube-apiserver: every connection drops and none is accepted (an outage, as a
        managed control plane's upgrade makes one) until :meth:`start_apiserver`."""
        self.processes.pop("kube-apiserver").stop(kill=True)

    def start_apiserver(self, *, timeout: float = 120.0) -> None:
        """Start kube-apiserver again on the same port and etcd; return once it is ready."""
        self._spawn("kube-apiserver", self._apiserver_args)
        self._wait_ready(timeout)

    # -- requests as the admin

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """One API call; returns (status, decoded JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 - https to our own loopback server
            self.server + path, data=data, method=method
        )
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        if data is not None:
            req.add_header("Content-Type", content_type)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:  # noqa: S310
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def write_kubeconfig(self, name: str, token: str, namespace: str = "default") -> Path:
        path = self.root / f"{name}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "herald-test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [
                {
                    "name": name,
                    "context": {"cluster": "herald-test", "user": name, "namespace": namespace},
                }
            ],
            "current-context": name,
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision (older resourceVersions then expire: a watch
        from one gets 410 Gone). Returns the revision."""

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            req = urllib.request.Request(  # noqa: S310 - our own loopback etcd
                self.etcd_url + path, data=json.dumps(body).encode(), method="POST"
            )
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                answer: dict[str, Any] = json.loads(resp.read())
                return answer

        revision = int(post("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    # -- internals

    def _keys(self) -> None:
        self.admin_token = secrets.token_urlsafe(32)
        (self.root / "tokens.csv").write_text(
            f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        )
        key = self.root / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(self.root / "sa.pub")],
            check=True,
            capture_output=True,
        )

    def _spawn(self, name: str, args: list[str]) -> Process:
        log = self.root / f"{name}.log"
        handle = log.open("ab")
        try:
            popen = subprocess.Popen(
                [str(self.bin / name), *args],
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            handle.close()
        process = Process(name, popen, log)
        self.processes[name] = process
        return process

    def _start_etcd(self, timeout: float) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        process = self._spawn(
            "etcd",
            [
                "--name=herald-test",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=herald-test=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # throwaway data: durability buys nothing here
                "--log-level=warn",
            ],
        )
        self._poll(
            process,
            timeout,
            lambda: _http_ok(self.etcd_url + "/health"),
            "etcd to answer /health",
        )

    def _start_apiserver(self, timeout: float) -> None:
        port = free_port(self.address)
        certs = self.root / "certs"
        self.server = f"https://{self.address}:{port}"
        self.ca_file = certs / "apiserver.crt"
        self._apiserver_args = [
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={port}",
            f"--cert-dir={certs}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.root / 'sa.pub'}",
            f"--service-account-signing-key-file={self.root / 'sa.key'}",
            f"--token-auth-file={self.root / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            # No kubelet: the kubernetes Service's endpoints would point at loopback and
            # the reconciler would complain every 10 s. With a node, Pods need them.
            "--endpoint-reconciler-type=" + ("lease" if self.with_node else "none"),
            # The node's name resolves nowhere: logs and exec go to its address.
            *(["--kubelet-preferred-address-types=InternalIP"] if self.with_node else []),
            # Watches read etcd directly, so a compaction expires their resourceVersions
            # at once (the watch-expiry test relies on it).
            "--watch-cache=false",
            "--profiling=false",
            # Every request's user, verb, object and answer: the RBAC tests read it.
            f"--audit-policy-file={self._audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking",
        ]
        process = self._spawn("kube-apiserver", self._apiserver_args)
        self._poll(
            process,
            timeout,
            lambda: self.ca_file.exists(),
            "kube-apiserver to write its serving certificate",
        )
        self._wait_ready(timeout)

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    def _audit_policy(self) -> Path:
        path = self.root / "audit-policy.yaml"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "audit.k8s.io/v1",
                    "kind": "Policy",
                    "omitStages": ["RequestReceived"],
                    "rules": [{"level": "Metadata"}],
                }
            )
        )
        return path

    def audit(self, username: str) -> list[dict[str, Any]]:
        """The audit events of one user's requests (completed ones), oldest first."""
        events = []
        with contextlib.suppress(FileNotFoundError), self.audit_log.open() as lines:
            for line in lines:
                event = json.loads(line)
                if (
                    event.get("user", {}).get("username") == username
                    and event.get("stage") == "ResponseComplete"
                ):
                    events.append(event)
        return events

    def _wait_ready(self, timeout: float) -> None:
        process = self.processes["kube-apiserver"]

        def ready() -> bool:
            try:
                status, _ = self.request("GET", "/readyz", timeout=5)
            except OSError:
                return False
            return status == 200

        self._poll(process, timeout, ready, "kube-apiserver to answer /readyz")

    def _start_controller_manager(self, timeout: float) -> None:
        process = self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.admin_kubeconfig}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",  # no serving: nothing here scrapes it
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--controllers=*",
                "--concurrent-deployment-syncs=2",
                "--concurrent-replicaset-syncs=2",
                # Publishes the kube-root-ca.crt ConfigMap that Pods' token volumes mount.
                *([f"--root-ca-file={self.ca_file}"] if self.with_node else []),
            ],
        )

        def default_account() -> bool:
            status, _ = self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return status == 200

        self._poll(
            process, timeout, default_account, "kube-controller-manager to create the default SA"
        )

    def _poll(self, process: Process, timeout: float, check: Any, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise ControlPlaneError(
                    f"{process.name} exited with {process.popen.returncode} while waiting for "
                    f"{what}; its last lines:\n{process.tail()}"
                )
            with contextlib.suppress(OSError):
                if check():
                    return
            time.sleep(0.1)
        raise ControlPlaneError(
            f"timed out after {timeout:.0f} s waiting for {what}; {process.name}'s last "
            f"lines:\n{process.tail()}"
        )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback etcd
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def control_plane(
    bin_folder: Path, *, address: str = "127.0.0.1", with_node: bool = False
) -> Iterator[ControlPlane]:
    root = Path(tempfile.mkdtemp(prefix="herald-kube-"))
    plane = ControlPlane(bin=bin_folder, root=root, address=address, with_node=with_node)
    try:
        plane.start()
        yield plane
    finally:
        try:
            plane.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
