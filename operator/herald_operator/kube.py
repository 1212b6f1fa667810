"""The operator's own Kubernetes API calls, beside kopf's: read a target's Secret, read and
patch the worker Deployment's scale, patch a DeadLetterReplay's status while it runs,
read the peering object, post Events on objects kopf does not serve (the Deployment).

The official client (synchronous) runs in threads, with the connection kopf's login
produced (``kopf.login_via_client`` loads it as the client's default configuration).
Every write is a JSON merge patch on a subresource (``/scale``, ``/status``): no PUT, no
strategic merge, no read-modify-write races. Secret values are decoded here and never
logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from herald_core.secret_data import decode_secret_data
from herald_operator.conditions import timestamp
from herald_operator.readiness import SecretOutcome, SecretRead

log = logging.getLogger("herald.operator.kube")
T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """A call failed: ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, what: str, status: int | None, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{what}: {detail}")


class KubeApi:
    def __init__(self, *, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._api_client: Any = None

    def _client(self) -> Any:
        import kubernetes

        with self._lock:
            if self._api_client is None:
                config = kubernetes.client.Configuration.get_default_copy()
                self._api_client = kubernetes.client.ApiClient(config)
            return self._api_client

    def reset(self) -> None:
        """Forget the connection (it is made again, with fresh credentials, on next use)."""
        with self._lock:
            client, self._api_client = self._api_client, None
        if client is not None:
            client.close()

    close = reset

    async def _call(self, what: str, call: Callable[[Any], T]) -> T:
        from kubernetes.client.exceptions import ApiException

        def run() -> T:
            return call(self._client())

        try:
            return await asyncio.to_thread(run)
        except ApiException as exc:
            if exc.status == 401:
                self.reset()  # expired token: log in again next time
            detail = f"HTTP {exc.status} {exc.reason or ''}".strip()
            raise KubeError(what, exc.status, detail) from None
        except Exception as exc:  # no answer: connection refused, timeout, TLS...
            self.reset()
            raise KubeError(what, None, type(exc).__name__) from exc

    @staticmethod
    def _json(response: Any) -> Any:
        return json.loads(response.data or b"null")

    # -- reachability ---------------------------------------------------------------------------

    async def reachable(self, *, timeout: float = 5.0) -> None:
        """Raise KubeError unless the API server answers (``/version``, readable by any
        account; any answer below 500 counts: the server is there)."""
        import kubernetes

        def call(client: Any) -> Any:
            api = kubernetes.client.VersionApi(client)
            return api.get_code(_preload_content=False, _request_timeout=timeout)

        try:
            await self._call("ask the API server its version", call)
        except KubeError as exc:
            if exc.status is None or exc.status >= 500:
                raise

    # -- Secrets (read-only) ----------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> SecretRead:
        import kubernetes

        def call(client: Any) -> Any:
            api = kubernetes.client.CoreV1Api(client)
            return self._json(
                api.read_namespaced_secret(
                    name, namespace, _preload_content=False, _request_timeout=self._timeout
                )
            )

        try:
            body = await self._call(f"read Secret {namespace}/{name}", call)
        except KubeError as exc:
            if exc.status == 404:
                return SecretRead(namespace, name, SecretOutcome.MISSING)
            if exc.status == 403:
                return SecretRead(namespace, name, SecretOutcome.FORBIDDEN, detail=exc.detail)
            return SecretRead(namespace, name, SecretOutcome.UNAVAILABLE, detail=exc.detail)
        data, undecodable = decode_secret_data((body or {}).get("data"))
        if undecodable:
            problem = f"key {undecodable[0]} is not UTF-8 text"
            return SecretRead(namespace, name, SecretOutcome.UNDECODABLE, detail=problem)
        return SecretRead(namespace, name, SecretOutcome.FOUND, data=data)

    # -- the worker Deployment's scale --------------------------------------------------------

    async def get_scale(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Deployment's ``/scale`` (metadata with uid, spec.replicas), None if absent."""
        import kubernetes

        def call(client: Any) -> Any:
            api = kubernetes.client.AppsV1Api(client)
            return self._json(
                api.read_namespaced_deployment_scale(
                    name, namespace, _preload_content=False, _request_timeout=self._timeout
                )
            )

        try:
            body: dict[str, Any] = await self._call(f"read Deployment {namespace}/{name}", call)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return body

    async def patch_scale(self, namespace: str, name: str, replicas: int) -> None:
        import kubernetes

        def call(client: Any) -> Any:
            api = kubernetes.client.AppsV1Api(client)
            return api.patch_namespaced_deployment_scale(
                name,
                namespace,
                {"spec": {"replicas": replicas}},
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self._timeout,
            )

        await self._call(f"scale Deployment {namespace}/{name}", call)

    # -- custom objects -----------------------------------------------------------------------

    async def get_custom(
        self, group: str, version: str, plural: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        import kubernetes

        def call(client: Any) -> Any:
            api = kubernetes.client.CustomObjectsApi(client)
            if namespace is None:
                raw = api.get_cluster_custom_object(
                    group,
                    version,
                    plural,
                    name,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            else:
                raw = api.get_namespaced_custom_object(
                    group,
                    version,
                    namespace,
                    plural,
                    name,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            return self._json(raw)

        try:
            body: dict[str, Any] = await self._call(f"read {plural}/{name}", call)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return body

    async def patch_status(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
    ) -> bool:
        """Merge-patch the ``/status`` subresource; False if the object is gone."""
        import kubernetes

        def call(client: Any) -> Any:
            api = kubernetes.client.CustomObjectsApi(client)
            return api.patch_namespaced_custom_object_status(
                group,
                version,
                namespace,
                plural,
                name,
                {"status": dict(status)},
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self._timeout,
            )

        try:
            await self._call(f"patch {plural}/{name} status", call)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- Events ---------------------------------------------------------------------------------

    async def post_event(
        self,
        regarding: Mapping[str, Any],
        *,
        type: str,
        reason: str,
        message: str,
        action: str,
        component: str,
        instance: str,
    ) -> None:
        """A core/v1 Event about ``regarding`` (apiVersion, kind, name, namespace, uid), as
        kubectl describe shows them. Failures are logged, never raised: an Event is
        information, not state."""
        import kubernetes

        namespace = str(regarding["namespace"])
        now = timestamp(dt.datetime.now(dt.UTC), precise=True)
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{regarding['name']}.", "namespace": namespace},
            "involvedObject": {k: v for k, v in regarding.items() if v is not None},
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "action": action,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": instance[:128],
            "firstTimestamp": timestamp(dt.datetime.now(dt.UTC)),
            "lastTimestamp": timestamp(dt.datetime.now(dt.UTC)),
            "eventTime": now,
            "count": 1,
        }

        def call(client: Any) -> Any:
            api = kubernetes.client.CoreV1Api(client)
            return api.create_namespaced_event(
                namespace, body, _preload_content=False, _request_timeout=self._timeout
            )

        try:
            await self._call(f"post Event {reason}", call)
        except KubeError as exc:
            log.warning(
                "cannot post an Event",
                extra={"action": "post-event", "reason": reason, "error": str(exc)},
            )
