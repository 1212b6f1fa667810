"""Fixtures of the node suite: one real node per session (tests/node/node.py) beside its own
control plane, the Herald image built from this checkout in containerd, a database Pods
reach, and helm and kubectl as a user runs them.

Without root, the Debian packages (containerd, runc, containernetworking-plugins,
iptables), the node's binaries (scripts/build-kube.sh --node) or the image
(scripts/build-image.sh) the suite skips, saying which; CI (HERALD_TEST_REQUIRE_ALL=1)
fails instead.
"""

from __future__ import annotations

import atexit
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict
from tests.cluster.controlplane import find_binaries
from tests.cluster.herald import Kubectl, run, wait_default_account
from tests.conftest import REQUIRE_ALL, need_binary
from tests.node.chart import Helm
from tests.node.node import GATEWAY, Node, image_archive, missing_prerequisites

NODE_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The node suite runs when asked for by path (``python -m pytest tests/node``), once,
    not in every run of the whole suite (CI runs the whole suite twice, once per
    PostgreSQL): it needs root and changes the host while it runs."""
    named = [Path(str(arg).split("::")[0]).resolve() for arg in config.args]
    if any(path == NODE_DIR or NODE_DIR in path.parents for path in named):
        return
    skip = pytest.mark.skip(reason="the node suite runs on its own: python -m pytest tests/node")
    for item in items:
        if NODE_DIR in Path(str(item.fspath)).parents:
            item.add_marker(skip)


def _unavailable(message: str) -> None:
    if REQUIRE_ALL:
        pytest.fail(message + " (HERALD_TEST_REQUIRE_ALL=1: CI must run this test)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    missing = missing_prerequisites()
    if missing:
        _unavailable("a node needs " + "; ".join(missing))
    folder = find_binaries(node=True)
    if folder is None:
        _unavailable(
            "kubelet, kube-scheduler, kube-proxy and pause are not built: run "
            "scripts/build-kube.sh --node (needs Go and gcc)"
        )
    assert folder is not None
    found = image_archive()
    if found is None:
        _unavailable("the Herald image of this checkout is not built: run scripts/build-image.sh")
    assert found is not None
    archive, image = found
    root = Path(tempfile.mkdtemp(prefix="herald-node-"))
    started = Node(bin=folder, root=root, image_archive=archive, image=image)
    # Finalizers run on failures and Ctrl-C; atexit covers an interpreter that exits
    # before them. stop() is idempotent. A SIGKILLed run is swept by the next one.
    atexit.register(started.stop)
    try:
        started.start()
        print(f"\nnode started: {started.timings}")
        yield started
    finally:
        undone = started.stop()
        atexit.unregister(started.stop)
        print(f"\nnode stopped; restored: {len(undone)} changes")


@pytest.fixture(scope="session")
def kubectl_path() -> str:
    return need_binary("kubectl", "the node tests run kubectl as a user does")


@pytest.fixture(scope="session")
def helm_path() -> str:
    return need_binary("helm", "the node tests install the chart with helm")


@pytest.fixture()
async def namespace(node: Node, kubectl_path: str) -> AsyncIterator[str]:
    name = f"n-{uuid.uuid4().hex[:10]}"
    admin = Kubectl(kubectl_path, node.kubeconfig(), "default")
    await admin("create", "namespace", name)
    await wait_default_account(admin.in_namespace(name))
    yield name
    await run(
        [
            kubectl_path,
            f"--kubeconfig={node.kubeconfig()}",
            "delete",
            "namespace",
            name,
            "--wait=false",
        ],
        check=False,
    )


@pytest.fixture()
def kubectl(node: Node, kubectl_path: str, namespace: str) -> Kubectl:
    return Kubectl(kubectl_path, node.kubeconfig(), namespace)


@pytest.fixture()
def helm(node: Node, helm_path: str, namespace: str, tmp_path: Path) -> Helm:
    return Helm(helm_path, node, namespace, tmp_path)


@pytest.fixture(scope="session")
def pod_pg_port(node: Node, pg_admin_url: str) -> int:
    """A port on the bridge's address forwarding to the tests' PostgreSQL server."""
    params = conninfo_to_dict(pg_admin_url)
    host = str(params.get("host") or "127.0.0.1")
    port = int(params.get("port") or 5432)
    target: tuple[str, int] | str = (
        f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
    )
    return node.forward(target)


@pytest.fixture()
async def pod_db_url(fresh_db: Callable[[str | None], Any], pod_pg_port: int) -> tuple[str, str]:
    """(URL for the tests, URL for Pods) of one fresh, empty database (migrations are the
    chart's hook Job's to run)."""
    url: str = await fresh_db(None)
    params = conninfo_to_dict(url)
    # The chart takes a URL: postgresql://user[:password]@host:port/dbname.
    user = str(params.get("user") or "postgres")
    password = str(params.get("password") or "")
    credentials = f"{user}:{password}" if password else user
    return url, f"postgresql://{credentials}@{GATEWAY}:{pod_pg_port}/{params['dbname']}"
