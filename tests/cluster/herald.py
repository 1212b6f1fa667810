"""Herald on the test control plane: kubectl and helm as a user runs them, the chart
installed, and ``herald operator`` / ``herald worker`` run on the host as the chart's
ServiceAccounts, with the environment the chart gives their containers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import yaml
from psycopg.conninfo import conninfo_to_dict
from tests.cluster.controlplane import ROOT, ControlPlane, free_port
from tests.helpers import wait_until

CHART = ROOT / "deploy" / "helm" / "herald"
RELEASE = "herald"
HERALD = str(Path(sys.executable).with_name("herald"))


class CommandFailed(AssertionError):
    pass


@dataclasses.dataclass
class Result:
    args: Sequence[str]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 120.0,
) -> Result:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(input.encode() if input is not None else None), timeout
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandFailed(f"{' '.join(args)} did not finish within {timeout:.0f} s") from None
    result = Result(args, proc.returncode or 0, out.decode(), err.decode())
    if check and result.code != 0:
        raise CommandFailed(
            f"{' '.join(args)} exited {result.code}:\n{result.err.strip() or result.out.strip()}"
        )
    return result


@dataclasses.dataclass
class Kubectl:
    """kubectl with one kubeconfig (a user, or a ServiceAccount) in one namespace."""

    path: str
    kubeconfig: Path
    namespace: str

    async def __call__(self, *args: str, input: str | None = None, check: bool = True) -> Result:
        return await run(
            [self.path, f"--kubeconfig={self.kubeconfig}", "-n", self.namespace, *args],
            input=input,
            check=check,
        )

    async def apply(self, *docs: Mapping[str, Any], check: bool = True) -> Result:
        return await self("apply", "-f", "-", input=_yaml(docs), check=check)

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = await self("get", kind, name, "-o", "json", check=False)
        if result.code != 0:
            if "NotFound" in result.err:
                return None
            raise CommandFailed(result.err)
        obj: dict[str, Any] = result.json()
        return obj

    async def create_token(self, account: str, seconds: int = 3600) -> str:
        result = await self("create", "token", account, f"--duration={seconds}s")
        return result.out.strip()

    def as_user(self, kubeconfig: Path) -> Kubectl:
        return dataclasses.replace(self, kubeconfig=kubeconfig)

    def in_namespace(self, namespace: str) -> Kubectl:
        return dataclasses.replace(self, namespace=namespace)


def _yaml(docs: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False)


def signing_secret() -> str:
    """A fresh Standard Webhooks secret (whsec_ and 32 random bytes in base64)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def secret(name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def target(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "PublishingTarget",
        "metadata": {"name": name},
        "spec": {"type": "webhook", "url": url, **spec},
    }


def replay(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "DeadLetterReplay",
        "metadata": {"name": name},
        "spec": spec,
    }


def condition(obj: Mapping[str, Any] | None, kind: str = "Ready") -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


async def wait_ready(
    kubectl: Kubectl, kind: str, name: str, generation: int = 1, timeout: float = 30.0
) -> dict[str, Any]:
    """The object once its Ready condition is True for ``generation``."""

    async def check() -> dict[str, Any] | None:
        obj = await kubectl.get(kind, name)
        ok = (
            obj is not None
            and condition(obj).get("status") == "True"
            and (obj.get("status") or {}).get("observedGeneration") == generation
        )
        return obj if ok else None

    found: dict[str, Any] = await wait_until(
        check, interval=0.2, timeout=timeout, what=f"{kind} {name} Ready at generation {generation}"
    )
    return found


async def wait_default_account(kubectl: Kubectl) -> None:
    """Until the controller manager has made the namespace's default ServiceAccount
    (TokenRequests and Deployments in a new namespace need it)."""

    async def exists() -> bool:
        return (await kubectl("get", "serviceaccount", "default", check=False)).code == 0

    await wait_until(
        exists, interval=0.2, timeout=60, what=f"ServiceAccount {kubectl.namespace}/default"
    )


# -- the chart --------------------------------------------------------------------------


@dataclasses.dataclass
class Release:
    kube: ControlPlane
    kubectl: Kubectl
    helm: str
    namespace: str
    values: dict[str, Any]

    @property
    def helm_env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kube.admin_kubeconfig), "HELM_CACHE_HOME": "/tmp/helm"}

    async def helm_run(self, *args: str, check: bool = True) -> Result:
        return await run(
            [self.helm, *args, "-n", self.namespace], env=self.helm_env, check=check, timeout=180
        )

    async def install(self, values: Mapping[str, Any] | None = None) -> Result:
        return await self._deploy("install", values)

    async def upgrade(self, values: Mapping[str, Any] | None = None) -> Result:
        return await self._deploy("upgrade", values)

    async def _deploy(self, verb: str, values: Mapping[str, Any] | None) -> Result:
        if values is not None:
            self.values = dict(values)
        path = self.kube.root / f"values-{self.namespace}.yaml"
        path.write_text(yaml.safe_dump(self.values))
        return await self.helm_run(verb, RELEASE, str(CHART), "-f", str(path))

    async def uninstall(self) -> Result:
        return await self.helm_run("uninstall", RELEASE)

    async def deployment(self, component: str) -> dict[str, Any]:
        obj = await self.kubectl.get("deployment", f"{RELEASE}-{component}")
        assert obj is not None, f"the chart made no Deployment {RELEASE}-{component}"
        return obj

    async def container_env(self, component: str) -> dict[str, str]:
        """The environment the chart gives the component's container, resolved as the
        kubelet would (values, Secret keys, the Pod's namespace)."""
        deployment = await self.deployment(component)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for item in container.get("env", []):
            if "valueFrom" not in item:  # the API drops an empty value
                env[item["name"]] = item.get("value", "")
                continue
            source = item["valueFrom"]
            if "fieldRef" in source:
                assert source["fieldRef"]["fieldPath"] == "metadata.namespace", item
                env[item["name"]] = self.namespace
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                obj = await self.kubectl.get("secret", ref["name"])
                if obj is None:
                    assert ref.get("optional"), f"{item['name']}: Secret {ref['name']} is missing"
                    continue
                env[item["name"]] = base64.b64decode(obj["data"][ref["key"]]).decode()
            else:
                raise AssertionError(f"unexpected env source {item}")
        return env

    async def service_account_kubeconfig(self, component: str) -> Path:
        """A kubeconfig holding a TokenRequest token of the component's ServiceAccount (what
        its Pod would have mounted)."""
        deployment = await self.deployment(component)
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        token = await self.kubectl.create_token(account)
        return self.kube.write_kubeconfig(f"{self.namespace}-{account}", token, self.namespace)


# -- Herald's processes -----------------------------------------------------------------


@dataclasses.dataclass
class HeraldProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.popen.kill()
            self.popen.wait(10)

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait; SIGKILL and fail loudly if it does not exit in time."""
        if not self.alive:
            return
        self.popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.popen.wait, timeout)
        if self.alive:
            self.kill()
            raise AssertionError(
                f"{self.name} ignored SIGTERM for {timeout:.0f} s and was killed; last "
                f"lines:\n{self.tail()}"
            )
        if self.popen.returncode != 0:
            raise AssertionError(
                f"{self.name} exited {self.popen.returncode} on SIGTERM; last lines:\n{self.tail()}"
            )


async def start_herald(
    command: str,
    env: Mapping[str, str],
    *,
    log: Path,
    port: int,
    ready_path: str,
    timeout: float = 60.0,
) -> HeraldProcess:
    """Start ``herald COMMAND`` and wait until ``ready_path`` on ``port`` answers 200."""
    handle = log.open("ab")
    try:
        popen = subprocess.Popen(
            [HERALD, command],
            env={**_clean_env(), **env},
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        handle.close()
    process = HeraldProcess(f"herald {command}", popen, log, port)

    async def ready() -> bool:
        if not process.alive:
            raise AssertionError(
                f"{process.name} exited with {popen.returncode}; last lines:\n{process.tail()}"
            )
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.write(f"GET {ready_path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        line = await reader.readline()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return b" 200 " in line

    try:
        await wait_until(
            ready, interval=0.2, timeout=timeout, what=f"{process.name} answering {ready_path}"
        )
    except BaseException:
        process.kill()
        raise
    return process


def _clean_env() -> dict[str, str]:
    """The test process's environment without Herald's or Kubernetes' own settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HERALD_", "KUBERNETES_")) and k != "KUBECONFIG"
    }


@dataclasses.dataclass
class Herald:
    """A release of the chart in one namespace, with its processes run on the host."""

    release: Release
    logs: Path
    processes: list[HeraldProcess] = dataclasses.field(default_factory=list)

    async def operator(self, **env: str) -> HeraldProcess:
        metrics, health = free_port(), free_port()
        local = {
            "HERALD_OPERATOR_LISTEN_HOST": "127.0.0.1",
            "HERALD_OPERATOR_METRICS_PORT": str(metrics),
            "HERALD_OPERATOR_HEALTH_PORT": str(health),
        }
        return await self._start("operator", {**local, **env}, metrics, "/metrics")

    async def worker(self, **env: str) -> HeraldProcess:
        port = free_port()
        local = {"HERALD_HTTP_HOST": "127.0.0.1", "HERALD_HTTP_PORT": str(port)}
        return await self._start("worker", {**local, **env}, port, "/readyz")

    async def _start(
        self, component: str, env: Mapping[str, str], port: int, ready_path: str
    ) -> HeraldProcess:
        """``herald COMPONENT`` with the chart's environment for it, as its ServiceAccount,
        listening on 127.0.0.1 (``env`` last: the test's overrides)."""
        base = await self.release.container_env(component)
        kubeconfig = await self.release.service_account_kubeconfig(component)
        process = await start_herald(
            component,
            {**base, "KUBECONFIG": str(kubeconfig), **env},
            log=self.logs / f"{component}-{len(self.processes)}.log",
            port=port,
            ready_path=ready_path,
        )
        self.processes.append(process)
        return process

    async def stop_all(self) -> None:
        problems = []
        for process in self.processes:
            try:
                await process.stop()
            except AssertionError as exc:
                problems.append(str(exc))
        self.processes.clear()
        if problems:
            raise AssertionError("\n".join(problems))

    def accounts(self) -> list[str]:
        ns = self.release.namespace
        return [f"system:serviceaccount:{ns}:{RELEASE}-{c}" for c in ("operator", "worker")]

    def forbidden(self) -> list[str]:
        """Requests of the chart's ServiceAccounts that the API refused (401/403), from
        the API server's audit log."""
        refused = []
        for account in self.accounts():
            for event in self.release.kube.audit(account):
                code = event.get("responseStatus", {}).get("code")
                if code in (401, 403):
                    ref = event.get("objectRef", {})
                    refused.append(
                        f"{account}: {event['verb']} {ref.get('resource')}"
                        f"/{ref.get('subresource', '')} {ref.get('name', '')} -> {code}"
                    )
        return refused

    def used(self) -> set[tuple[str, str, str]]:
        """(account, verb, resource[/subresource]) of every request the accounts made."""
        out = set()
        for account in self.accounts():
            for event in self.release.kube.audit(account):
                ref = event.get("objectRef") or {}
                resource = ref.get("resource", "")
                if ref.get("subresource"):
                    resource += "/" + ref["subresource"]
                out.add((account.rsplit(":", 1)[-1], event["verb"], resource))
        return out


@contextlib.asynccontextmanager
async def herald_release(
    kube: ControlPlane, kubectl: Kubectl, helm: str, db_url: str, **values: Any
) -> AsyncIterator[Herald]:
    release = Release(kube, kubectl, helm, kubectl.namespace, chart_values(db_url, **values))
    await release.install()
    logs = kube.root / "logs" / kubectl.namespace
    logs.mkdir(parents=True, exist_ok=True)
    herald = Herald(release, logs)
    try:
        yield herald
    finally:
        await herald.stop_all()


def as_url(conninfo: str) -> str:
    """A libpq connection string as the postgresql:// URL the chart takes."""
    params = conninfo_to_dict(conninfo)
    user = quote(str(params.pop("user", "postgres")), safe="")
    password = params.pop("password", None)
    dbname = quote(str(params.pop("dbname", "postgres")), safe="")
    auth = f"{user}:{quote(str(password), safe='')}" if password else user
    query = urlencode({k: str(v) for k, v in params.items() if v is not None})
    return f"postgresql://{auth}@/{dbname}" + (f"?{query}" if query else "")


def chart_values(db_url: str, **overrides: Any) -> dict[str, Any]:
    """Values for a test install: the test database (the chart makes its Secret), no
    migration Job (there is no kubelet to run it; the test database is migrated), quick
    status refreshes."""
    values: dict[str, Any] = {
        "database": {"url": as_url(db_url)},
        "migrations": {"enabled": False},
        "operator": {"extraEnv": [{"name": "HERALD_STATUS_INTERVAL", "value": "1s"}]},
        "worker": {
            # Every receiver of the tests listens on 127.0.0.1.
            "egress": {"allowLoopback": True},
            "extraEnv": [
                {"name": "HERALD_TARGETS_REFRESH", "value": "1s"},
            ],
        },
    }
    return merge(values, overrides)


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, nested mappings merged (Helm values)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
