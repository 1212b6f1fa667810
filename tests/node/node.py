"""A real Kubernetes node beside the test control plane: containerd, kubelet, kube-scheduler
and kube-proxy, with the Herald image (built from the Dockerfile by scripts/build-image.sh)
and a pause image compiled from Kubernetes' pause.c imported into containerd.

The pod network is a bridge (``herald0``, 10.244.0.0/24) whose traffic never leaves the
machine: no masquerade, and the FORWARD chain drops whatever would go from the bridge to any
other interface or back. The only addresses a Pod reaches are the cluster's own and the
bridge's, where the API server, a forwarder to the tests' PostgreSQL and the tests'
receivers listen.

Every host change is recorded first and put back when the node stops (tests/node/host.py);
every process is started here and stopped by PID. Needs root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import selectors
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tests.cluster.controlplane import ROOT, ControlPlane, ControlPlaneError, Process, free_port
from tests.node import host

BRIDGE = "herald0"
SUBNET = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
SERVICE_RANGE = "10.0.0.0/24"  # the control plane's --service-cluster-ip-range
NODE_NAME = "herald-node"
CGROUP = "herald-node"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # what kubelet 1.33 and containerd expect
CNI_BIN = Path("/usr/lib/cni")
IMAGE_SCRIPT = ROOT / "scripts" / "build-image.sh"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "herald" / "node"


class NodeError(RuntimeError):
    """The node could not be started: the message says which step and why."""


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a node (empty: nothing)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (kubelet and containerd run as root)")
    for tool in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install containerd runc iptables iproute2)")
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_BIN / plugin).exists():
            missing.append(f"CNI plugin {plugin} (apt-get install containernetworking-plugins)")
    return missing


def image_archive() -> tuple[Path, str] | None:
    """(docker-archive, reference) of the Herald image built from this checkout, or None."""
    try:
        found = subprocess.run(
            ["bash", str(IMAGE_SCRIPT), "--print"], capture_output=True, text=True, timeout=60
        )
        ref = subprocess.run(
            ["bash", str(IMAGE_SCRIPT), "--ref"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if found.returncode != 0 or ref.returncode != 0:
        return None
    return Path(found.stdout.strip()), ref.stdout.strip()


def pause_archive(binary: Path, dest: Path) -> Path:
    """A docker-archive of a one-file image: the pause binary as /pause, tagged PAUSE_IMAGE."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tar.gettarinfo(str(binary), arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755
        info.mtime = 0
        with binary.open("rb") as handle:
            tar.addfile(info, handle)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [PAUSE_IMAGE], "Layers": ["layer.tar"]}]
    ).encode()
    with tarfile.open(dest, "w") as tar:
        for name, data in (
            ("layer.tar", layer_bytes),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


class Forwarder:
    """TCP from ``listen`` to ``target`` (threads; both ends on this machine): a (host, port)
    or a Unix socket's path. Pods reach the tests' PostgreSQL, which listens on loopback or
    a Unix socket, through it on the bridge's address."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int] | str) -> None:
        self.target = target
        self.server = socket.create_server(listen, reuse_port=False)
        self.port: int = self.server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="pg-forwarder", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            if isinstance(self.target, str):
                upstream = socket.socket(socket.AF_UNIX)
                upstream.settimeout(10)
                upstream.connect(self.target)
            else:
                upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with client, upstream, selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ, upstream)
            sel.register(upstream, selectors.EVENT_READ, client)
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.5):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    try:
                        key.data.sendall(data)
                    except OSError:
                        return

    def close(self) -> None:
        self._stop.set()
        self.server.close()
        self._thread.join(5)


@dataclasses.dataclass
class Node:
    bin: Path
    root: Path
    image_archive: Path
    image: str
    plane: ControlPlane | None = None
    ledger: host.Ledger | None = None
    processes: dict[str, Process] = dataclasses.field(default_factory=dict)
    forwarders: list[Forwarder] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    _lock: IO[str] | None = None

    @property
    def containerd_root(self) -> Path:
        # Kept between runs (images stay imported); containers are removed at every stop.
        return CACHE / "containerd"

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    # -- start

    def start(self) -> None:
        began = time.monotonic()
        self._take_lock()
        swept = host.sweep()
        if swept:
            print("node: restored the host after a killed run:", *swept, sep="\n  ")
        self.root.mkdir(parents=True, exist_ok=True)
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        self.ledger = host.Ledger.record(
            roots=[self.root, self.containerd_root],
            bridge=BRIDGE,
            cgroup=CGROUP,
            shim_marker=str(self.socket),
            scratch=self.root,
        )
        self._network()
        self.plane = ControlPlane(
            bin=self.bin, root=self.root / "plane", address=GATEWAY, with_node=True
        )
        self.plane.start()
        for process in self.plane.processes.values():
            self.ledger.started(process.popen.pid)
        self.timings["control plane"] = time.monotonic() - began
        mark = time.monotonic()
        self._start_containerd()
        self._import_images()
        self.timings["containerd and images"] = time.monotonic() - mark
        mark = time.monotonic()
        self._start_kubelet()
        self._start_scheduler()
        self._start_proxy()
        self._wait_node_ready()
        self.timings["node Ready"] = time.monotonic() - mark
        self.timings["total"] = time.monotonic() - began

    def _take_lock(self) -> None:
        host.STATE_DIR.mkdir(parents=True, exist_ok=True)
        self._lock = host.LOCK_FILE.open("w")
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NodeError(
                        f"another node test run held {host.LOCK_FILE} for 10 minutes"
                    ) from None
                time.sleep(1)

    def _ip(self, *args: str) -> None:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise NodeError(f"ip {' '.join(args)}: {result.stderr.strip()}")

    def _iptables(self, *args: str) -> None:
        result = subprocess.run(
            ["iptables", "-w", "5", *args], capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            raise NodeError(f"iptables {' '.join(args)}: {result.stderr.strip()}")

    def _network(self) -> None:
        """The bridge with the gateway address (the API server binds to it before the first
        Pod), and the rules that keep its traffic on this machine."""
        self._ip("link", "add", BRIDGE, "type", "bridge")
        self._ip("addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        self._ip("link", "set", BRIDGE, "up")
        self._iptables("-I", "FORWARD", "1", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
        self._iptables("-I", "FORWARD", "1", "!", "-i", BRIDGE, "-o", BRIDGE, "-j", "DROP")
        cni = self.root / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-herald.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "herald-test",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,  # nothing leaves the machine: no NAT to hide behind
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                                # Only the Services' range goes through the gateway: no
                                # default route, so other addresses are unreachable.
                                "routes": [{"dst": SERVICE_RANGE}],
                                "dataDir": str(self.root / "cni-ipam"),
                            },
                        },
                        {"type": "loopback"},
                    ],
                }
            )
        )

    def _spawn(self, name: str, args: list[str]) -> Process:
        log = self.root / f"{name}.log"
        with log.open("ab") as handle:
            popen = subprocess.Popen(
                args,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self.processes[name] = process
        assert self.ledger is not None
        self.ledger.started(popen.pid)
        return process

    def _poll(self, process: Process, timeout: float, check: Any, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise NodeError(
                    f"{process.name} exited with {process.popen.returncode} while waiting for "
                    f"{what}; its last lines:\n{process.tail()}"
                )
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                if check():
                    return
            time.sleep(0.2)
        raise NodeError(
            f"timed out after {timeout:.0f} s waiting for {what}; {process.name}'s last "
            f"lines:\n{process.tail()}"
        )

    def ctr(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            ["ctr", f"--address={self.socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def _start_containerd(self) -> None:
        state = self.root / "containerd-state"
        config = self.root / "containerd.toml"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config.write_text(
            f"""version = 2
root = "{self.containerd_root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.root / "opt"}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # No oom_score_adj below containerd's own: lowering it needs CAP_SYS_RESOURCE, which a
  # machine (or a container running these tests) may not grant (runc then fails with
  # "can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  enable_cdi = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{state / "runc"}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.root / "cni"}"
"""
        )
        process = self._spawn("containerd", ["containerd", f"--config={config}"])
        self._poll(
            process,
            60,
            lambda: self.socket.exists() and bool(self.ctr("version", timeout=10)),
            "containerd to answer on its socket",
        )
        # A killed run may have left containers in the kept root: none may survive.
        self._remove_containers()

    def _images(self) -> set[str]:
        return set(self.ctr("images", "list", "--quiet").split())

    def _import_images(self) -> None:
        present = self._images()
        if PAUSE_IMAGE not in present:
            archive = pause_archive(self.bin / "pause", self.root / "pause.tar")
            self.ctr("images", "import", str(archive))
        if self.image not in present:
            self.ctr("images", "import", str(self.image_archive), timeout=600)
        present = self._images()
        for name in (PAUSE_IMAGE, self.image):
            if name not in present:
                raise NodeError(f"{name} is not in containerd after the import: {sorted(present)}")

    def tag_image(self, new: str) -> None:
        """The same image under another reference (an upgrade to a "new" tag)."""
        if new not in self._images():
            self.ctr("images", "tag", self.image, new)

    def kubeconfig(self) -> Path:
        assert self.plane is not None
        return self.plane.admin_kubeconfig

    def _cgroups(self) -> None:
        """kubelet's cgroupRoot in every hierarchy (kubelet wants it to exist); cpuset's
        needs its parent's CPUs and memory nodes before anything can join it."""
        for hierarchy in host.CGROUP_ROOT.iterdir():
            if hierarchy.is_symlink() or not (hierarchy / "cgroup.procs").exists():
                continue
            folder = hierarchy / CGROUP
            folder.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (folder / name).exists() and not (folder / name).read_text().strip():
                    (folder / name).write_text((hierarchy / name).read_text())

    def _start_kubelet(self) -> None:
        self._cgroups()
        resolv = self.root / "resolv.conf"
        resolv.write_text("")  # no DNS: Pods find the API from KUBERNETES_SERVICE_HOST
        config = self.root / "kubelet.yaml"
        health = free_port()
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": GATEWAY,
                    "port": free_port(GATEWAY),
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": health,
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": f"/{CGROUP}",
                    "failCgroupV1": False,  # this machine has cgroup v1 (hybrid)
                    "failSwapOn": False,
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    # Images are imported, never pulled: none may be collected.
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "evictionHard": {
                        "memory.available": "50Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "authentication": {
                        "anonymous": {"enabled": True},
                        "webhook": {"enabled": False},
                    },
                    "authorization": {"mode": "AlwaysAllow"},
                    "makeIPTablesUtilChains": False,
                    "resolvConf": str(resolv),
                    "serializeImagePulls": False,
                    "shutdownGracePeriod": "0s",
                    "volumeStatsAggPeriod": "0s",
                    "registerNode": True,
                    "oomScoreAdj": 0,  # kubelet's own: leave it (see restrict_oom_score_adj)
                    "podLogsDir": str(self.root / "pod-logs"),
                }
            )
        )
        process = self._spawn(
            "kubelet",
            [
                str(self.bin / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.kubeconfig()}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={GATEWAY}",
                f"--root-dir={self.kubelet_root}",
                "--v=1",
            ],
        )
        self._poll(
            process,
            120,
            lambda: _get(f"http://127.0.0.1:{health}/healthz") == "ok",
            "kubelet to answer /healthz",
        )

    def _start_scheduler(self) -> None:
        process = self._spawn(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig()}",
                f"--authentication-kubeconfig={self.kubeconfig()}",
                f"--authorization-kubeconfig={self.kubeconfig()}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )
        if process.popen.poll() is not None:
            raise NodeError(f"kube-scheduler exited: {process.tail()}")

    def _start_proxy(self) -> None:
        health = free_port()
        process = self._spawn(
            "kube-proxy",
            [
                str(self.bin / "kube-proxy"),
                f"--kubeconfig={self.kubeconfig()}",
                f"--hostname-override={NODE_NAME}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={SUBNET}",
                f"--healthz-bind-address=127.0.0.1:{health}",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                # Leave the host's conntrack and localhost settings alone.
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
                "--iptables-localhost-nodeports=false",
                "--oom-score-adj=0",
            ],
        )
        self._poll(
            process,
            120,
            lambda: _get(f"http://127.0.0.1:{health}/healthz") is not None,
            "kube-proxy to answer /healthz",
        )

    def _wait_node_ready(self) -> None:
        assert self.plane is not None
        plane = self.plane

        def ready() -> bool:
            status, node = plane.request("GET", f"/api/v1/nodes/{NODE_NAME}", timeout=5)
            if status != 200:
                return False
            conditions = (node.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        self._poll(self.processes["kubelet"], 120, ready, f"node {NODE_NAME} to be Ready")

    def forward(self, target: tuple[str, int] | str) -> int:
        """A port on the bridge's address forwarding to ``target`` (e.g. PostgreSQL)."""
        forwarder = Forwarder((GATEWAY, 0), target)
        self.forwarders.append(forwarder)
        return forwarder.port

    # -- stop

    def _remove_containers(self) -> None:
        """Every task killed and every container deleted (their shims exit with them)."""
        with contextlib.suppress(NodeError, subprocess.SubprocessError, OSError):
            for line in self.ctr("tasks", "list", "--quiet", timeout=30).split():
                with contextlib.suppress(NodeError, subprocess.SubprocessError):
                    self.ctr("tasks", "kill", "--signal=SIGKILL", line, timeout=30)
            deadline = time.monotonic() + 30
            for line in self.ctr("containers", "list", "--quiet", timeout=30).split():
                while time.monotonic() < deadline:
                    try:
                        self.ctr("tasks", "delete", "--force", line, timeout=30)
                    except NodeError as exc:
                        if "not found" not in str(exc):
                            time.sleep(0.2)
                            continue
                    break
                with contextlib.suppress(NodeError, subprocess.SubprocessError):
                    self.ctr("containers", "delete", line, timeout=30)

    def stop(self) -> list[str]:
        """Stop everything and restore the host; returns what the restore undid."""
        problems: list[str] = []
        for forwarder in self.forwarders:
            forwarder.close()
        self.forwarders.clear()
        for name in ("kube-proxy", "kube-scheduler", "kubelet"):
            self._stop_process(name, problems)
        if "containerd" in self.processes:
            self._remove_containers()
            self._stop_process("containerd", problems)
        if self.plane is not None:
            try:
                self.plane.stop()
            except ControlPlaneError as exc:
                problems.append(str(exc))
            self.plane = None
        undone = self.ledger.restore() if self.ledger is not None else []
        self.ledger = None
        shutil.rmtree(self.root, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if problems:
            raise NodeError("; ".join(problems))
        return undone

    def _stop_process(self, name: str, problems: list[str]) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        try:
            process.stop(timeout=10)
        except ControlPlaneError as exc:
            problems.append(str(exc))


def _get(url: str) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - our loopback port
            return str(resp.read().decode())
    except OSError:
        return None


@contextlib.contextmanager
def running_node(bin_folder: Path, archive: Path, image: str, root: Path) -> Iterator[Node]:
    node = Node(bin=bin_folder, root=root, image_archive=archive, image=image)
    try:
        node.start()
        yield node
    finally:
        node.stop()
