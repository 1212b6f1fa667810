"""Where a target's Secret comes from: the Kubernetes API (read-only, in a cluster) or the
Secret manifests given with ``herald worker --targets`` (locally). Secret values never
enter the database, logs, metrics or error messages."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from herald_core.secret_data import decode_secret_data

log = logging.getLogger("herald.secrets")


@dataclasses.dataclass(frozen=True)
class SecretLookup:
    data: Mapping[str, str] | None
    """Decoded values, or None when the Secret cannot be read."""
    problem: str | None = None
    """Why not, for the target's status: names the Secret, never a value."""


class SecretSource(Protocol):
    async def get(self, namespace: str, name: str) -> SecretLookup: ...


class StaticSecrets:
    """Secrets loaded from manifests (``herald worker --targets PATH``)."""

    def __init__(self, secrets: Mapping[tuple[str, str], Mapping[str, str]]) -> None:
        self._secrets = dict(secrets)

    def replace(self, secrets: Mapping[tuple[str, str], Mapping[str, str]]) -> None:
        self._secrets = dict(secrets)

    async def get(self, namespace: str, name: str) -> SecretLookup:
        data = self._secrets.get((namespace, name))
        if data is None:
            return SecretLookup(
                None,
                f"Secret {namespace}/{name} was not found in the manifests given with --targets",
            )
        return SecretLookup(data)


class KubernetesSecrets:
    """Reads Secrets through the Kubernetes API (in-cluster ServiceAccount, else kubeconfig).
    The last good value is kept when the API is unreachable, so an API hiccup does not
    stop deliveries."""

    def __init__(self, api: Any | None = None) -> None:
        self._api = api
        self._last: dict[tuple[str, str], Mapping[str, str]] = {}
        self._binary: set[tuple[str, str, str]] = set()  # keys already reported

    def _client(self) -> Any:
        if self._api is None:
            import kubernetes

            try:
                kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
            self._api = kubernetes.client.CoreV1Api()
        return self._api

    async def get(self, namespace: str, name: str) -> SecretLookup:
        from kubernetes.client.exceptions import ApiException

        try:
            secret = await asyncio.to_thread(self._client().read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                self._last.pop((namespace, name), None)
                return SecretLookup(None, f"Secret {namespace}/{name} does not exist")
            if exc.status == 403:
                return SecretLookup(
                    None,
                    f"the worker's ServiceAccount may not read Secret "
                    f"{namespace}/{name} (RBAC: get secrets)",
                )
            return self._stale(namespace, name, f"HTTP {exc.status}")
        except Exception as exc:  # unreachable API: keep delivering with what we had
            return self._stale(namespace, name, type(exc).__name__)
        data, undecodable = decode_secret_data(secret.data)
        # Binary keys (a DER certificate...) may share the Secret: Herald reads none of
        # them, so they are left out (a key the target needs is then reported missing by
        # its type's check).
        for key in undecodable:
            if (namespace, name, key) not in self._binary:
                self._binary.add((namespace, name, key))
                log.warning(
                    "a Secret key is not UTF-8 text; left out",
                    extra={"action": "read-secret", "secret": f"{namespace}/{name}", "key": key},
                )
        self._last[(namespace, name)] = data
        return SecretLookup(data)

    def _stale(self, namespace: str, name: str, reason: str) -> SecretLookup:
        last = self._last.get((namespace, name))
        log.warning(
            "cannot read a Secret from the Kubernetes API; using the last value read",
            extra={
                "action": "read-secret",
                "secret": f"{namespace}/{name}",
                "error": reason,
                "cached": last is not None,
            },
        )
        if last is not None:
            return SecretLookup(last)
        return SecretLookup(
            None, f"cannot read Secret {namespace}/{name} from the Kubernetes API ({reason})"
        )
