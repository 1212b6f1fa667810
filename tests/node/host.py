"""What a node changes on the host, recorded before it starts and put back after it stops.

kubelet sets kernel sysctls (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops),
kube-proxy and the test's own firewall rules add iptables chains and rules, containerd and
kubelet mount overlays, tmpfs volumes and network namespaces, make cgroups, and the CNI
bridge plugin makes a bridge, veths and turns on IP forwarding. ``Ledger.record`` notes the
host's state before any of it, and saves the note to a file; ``Ledger.restore`` puts back
every sysctl, deletes every rule, chain, mount, cgroup, namespace and interface that was not
there before, and kills by PID any process the node left behind. A run killed before it
could restore leaves the file behind: the next run (or ``python -m tests.node.host``)
restores from it first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

STATE_DIR = Path("/run/herald-node")
LEDGER_FILE = STATE_DIR / "ledger.json"
LOCK_FILE = STATE_DIR / "lock"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# libcni's cache of results, where containerd 1.6 writes one file per sandbox network and
# cannot be told to write elsewhere; the node's are deleted (the folder too if it is new).
CNI_CACHE = Path("/var/lib/cni")

SYSCTLS = (
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)
IPTABLES = ("iptables", "ip6tables")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    found = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            found[name] = _sysctl_path(name).read_text().strip()
    return found


def _run(*args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=check)


def iptables_snapshot(binary: str) -> dict[str, dict[str, list[str]]]:
    """table -> {"chains": [...], "rules": ["-A CHAIN ...", ...]} from ``<binary>-save``."""
    try:
        out = _run(f"{binary}-save").stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    tables: dict[str, dict[str, list[str]]] = {}
    table = ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
            tables[table] = {"chains": [], "rules": []}
        elif line.startswith(":") and table:
            tables[table]["chains"].append(line[1:].split()[0])
        elif line.startswith("-A ") and table:
            tables[table]["rules"].append(line)
    return tables


def mountpoints() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(line.split()[4].encode().decode("unicode_escape"))
    return points


def links() -> dict[str, dict[str, Any]]:
    out = _run("ip", "-j", "-d", "link", "show").stdout
    return {item["ifname"]: item for item in json.loads(out or "[]")}


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclasses.dataclass
class Ledger:
    """The host's state before the node: see the module's docstring."""

    sysctls: dict[str, str] = dataclasses.field(default_factory=dict)
    iptables: dict[str, dict[str, dict[str, list[str]]]] = dataclasses.field(default_factory=dict)
    mounts: list[str] = dataclasses.field(default_factory=list)
    links: list[str] = dataclasses.field(default_factory=list)
    netns: list[str] = dataclasses.field(default_factory=list)
    # Folders whose mounts and files are the node's own (roots of containerd and kubelet).
    roots: list[str] = dataclasses.field(default_factory=list)
    bridge: str = ""
    cgroup: str = ""  # kubelet's cgroupRoot, e.g. "herald-node"
    # Processes the node started: pid -> /proc start time (a reused pid is left alone).
    processes: dict[str, str] = dataclasses.field(default_factory=dict)
    # A text that names the node's containerd socket: its shims carry it on their command line.
    shim_marker: str = ""
    # The run's scratch folder (configuration, logs, state), deleted last.
    scratch: str = ""
    # Files under CNI_CACHE before the node; None: the folder did not exist.
    cni_cache: list[str] | None = None

    @classmethod
    def record(
        cls, *, roots: list[Path], bridge: str, cgroup: str, shim_marker: str, scratch: Path
    ) -> Ledger:
        netns = (
            sorted(p.name for p in Path("/run/netns").glob("*"))
            if Path("/run/netns").is_dir()
            else []
        )
        ledger = cls(
            sysctls=read_sysctls(),
            iptables={binary: iptables_snapshot(binary) for binary in IPTABLES},
            mounts=mountpoints(),
            links=sorted(links()),
            netns=netns,
            roots=[str(r) for r in roots],
            bridge=bridge,
            cgroup=cgroup,
            shim_marker=shim_marker,
            scratch=str(scratch),
            cni_cache=_files(CNI_CACHE) if CNI_CACHE.is_dir() else None,
        )
        ledger.save()
        return ledger

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = LEDGER_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1))
        tmp.replace(LEDGER_FILE)

    @classmethod
    def load(cls) -> Ledger | None:
        try:
            data = json.loads(LEDGER_FILE.read_text())
        except (OSError, ValueError):
            return None
        return cls(**data)

    def started(self, pid: int) -> None:
        """A process the node started (killed by restore() if still running)."""
        start = _start_time(pid)
        if start is not None:
            self.processes[str(pid)] = start
            self.save()

    # -- restore

    def restore(self) -> list[str]:
        """Put the host back; returns what was undone (one line each). Never raises for one
        step: every step is tried, and the problems are in the lines."""
        done: list[str] = []
        for step in (
            self._kill_processes,
            self._unmount,
            self._delete_netns,
            self._delete_links,
            self._restore_iptables,
            self._remove_cgroups,
            self._restore_sysctls,
            self._clean_cni_cache,
        ):
            try:
                done.extend(step())
            except Exception as exc:  # one step's failure must not skip the others
                done.append(f"{step.__name__} failed: {exc!r}")
        if self.scratch and Path(self.scratch).is_dir():
            shutil.rmtree(self.scratch, ignore_errors=True)
            done.append(f"deleted {self.scratch}")
        with contextlib.suppress(FileNotFoundError):
            LEDGER_FILE.unlink()
        return done

    def _pids(self) -> list[int]:
        pids = [int(p) for p, start in self.processes.items() if _start_time(int(p)) == start]
        if self.shim_marker:
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if self.shim_marker in cmdline and int(proc.name) != os.getpid():
                    pids.append(int(proc.name))
        return sorted(set(pids))

    def _kill_processes(self) -> list[str]:
        pids = self._pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            for pid in pids:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        return [f"killed pid {pid}" for pid in pids]

    def _ours(self, point: str) -> bool:
        return any(point == r or point.startswith(r.rstrip("/") + "/") for r in self.roots) or (
            point.startswith("/run/netns/cni-")
        )

    def _unmount(self) -> list[str]:
        done = []
        before = set(self.mounts)
        for _ in range(3):
            new = [p for p in mountpoints() if p not in before and self._ours(p)]
            if not new:
                break
            for point in sorted(set(new), key=len, reverse=True):
                if _run("umount", "--lazy", point).returncode == 0:
                    done.append(f"unmounted {point}")
        return done

    def _delete_netns(self) -> list[str]:
        folder = Path("/run/netns")
        if not folder.is_dir():
            return []
        done = []
        for path in folder.glob("cni-*"):
            if path.name not in self.netns:
                _run("umount", "--lazy", str(path))
                _run("ip", "netns", "delete", path.name)
                with contextlib.suppress(OSError):
                    path.unlink()
                done.append(f"deleted network namespace {path.name}")
        return done

    def _delete_links(self) -> list[str]:
        done = []
        current = links()
        for name, item in current.items():
            if name in self.links:
                continue
            kind = (item.get("linkinfo") or {}).get("info_kind")
            if name == self.bridge or (kind == "veth" and item.get("master") == self.bridge):
                _run("ip", "link", "delete", name)
                done.append(f"deleted interface {name}")
        if self.bridge in current and self.bridge not in self.links and (self.bridge in links()):
            _run("ip", "link", "delete", self.bridge)
        return done

    def _restore_iptables(self) -> list[str]:
        done = []
        for binary, tables in self.iptables.items():
            now = iptables_snapshot(binary)
            for table, state in now.items():
                old = tables.get(table, {"chains": [], "rules": []})
                for rule in reversed(state["rules"]):
                    if rule in old["rules"]:
                        continue
                    args = shlex.split(rule)
                    args[0] = "-D"
                    if _run(binary, "-w", "5", "-t", table, *args).returncode == 0:
                        done.append(f"{binary} -t {table} {shlex.join(args)}")
                new_chains = [c for c in state["chains"] if c not in old["chains"]]
                for chain in new_chains:
                    _run(binary, "-w", "5", "-t", table, "-F", chain)
                for chain in new_chains:
                    if _run(binary, "-w", "5", "-t", table, "-X", chain).returncode == 0:
                        done.append(f"{binary} -t {table} -X {chain}")
        return done

    def _remove_cgroups(self) -> list[str]:
        if not self.cgroup:
            return []
        done = []
        for hierarchy in CGROUP_ROOT.iterdir():
            top = hierarchy / self.cgroup
            if not top.is_dir():
                continue
            folders = sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            )
            for folder in [*folders, top]:
                for _ in range(50):
                    try:
                        folder.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        self._kill_cgroup(folder)
                        time.sleep(0.1)
            done.append(f"removed cgroup {top}")
        return done

    @staticmethod
    def _kill_cgroup(folder: Path) -> None:
        with contextlib.suppress(OSError):
            for pid in (folder / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)

    def _clean_cni_cache(self) -> list[str]:
        if not CNI_CACHE.is_dir():
            return []
        if self.cni_cache is None:
            shutil.rmtree(CNI_CACHE, ignore_errors=True)
            return [f"deleted {CNI_CACHE}"]
        new = [f for f in _files(CNI_CACHE) if f not in self.cni_cache]
        for name in new:
            with contextlib.suppress(OSError):
                (CNI_CACHE / name).unlink()
        return [f"deleted {len(new)} files under {CNI_CACHE}"] if new else []

    def _restore_sysctls(self) -> list[str]:
        done = []
        now = read_sysctls()
        for name, value in self.sysctls.items():
            if now.get(name) != value:
                with contextlib.suppress(OSError):
                    _sysctl_path(name).write_text(value)
                    done.append(f"sysctl {name}: {now.get(name)} -> {value}")
        return done


def sweep() -> list[str]:
    """Restore the host from a killed run's ledger, if one is left (call with the lock held)."""
    ledger = Ledger.load()
    if ledger is None:
        return []
    return ledger.restore()


if __name__ == "__main__":
    import fcntl

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"a node test run is in progress (it holds {LOCK_FILE})") from None
        for line in sweep() or ["nothing to restore"]:
            print(line)
