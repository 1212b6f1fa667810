"""What each route of the API needs when callers are authorised by Kubernetes
(``HERALD_API_AUTH=kubernetes``): the one table of RBAC permissions, by operationId.

- Publishing (``submitJobs``, the Alertmanager receivers, the event fan-outs) needs
  ``create`` on ``publishingtargets/publish`` for *each target* published to, in the
  target's namespace, named after it. ``jobs.enqueue``, which every publishing route goes
  through, checks it (:func:`authorize_publish`) once it knows the targets: an event is
  refused whole (403, nothing written) unless the caller may publish to every target it
  fans out to.
- Reading the queue (jobs, statistics, targets, dead letters, the tracker) needs ``get`` on
  ``publishingtargets/queue`` in all namespaces: these answers span namespaces.
- Changing it (cancel, replay, purge, clearing the tracker) needs ``update`` on
  ``publishingtargets/queue`` in all namespaces.

``publishingtargets/publish`` and ``publishingtargets/queue`` are names RBAC rules grant,
not endpoints of the API server (a SubjectAccessReview checks rules, which may name any
subresource). Routes marked public (probes, metrics, /openapi.json, signing keys) need no
token. A new route gets a row here (``tests/unit/test_api_access.py`` fails without one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from aiohttp import web

from herald_core.errors import Unauthenticated
from herald_worker.kubeauth import Identity, KubernetesAuth

PUBLISH = "publishingtargets/publish"
QUEUE = "publishingtargets/queue"


@dataclasses.dataclass(frozen=True)
class Needs:
    """The permission a route needs: ``verb`` on ``resource`` in all namespaces, or
    (``per_target``) ``verb`` on ``resource`` for each target, checked by the handler."""

    verb: str
    resource: str
    per_target: bool = False


PER_TARGET = Needs("create", PUBLISH, per_target=True)
READ = Needs("get", QUEUE)
OPERATE = Needs("update", QUEUE)

ACCESS: dict[str, Needs] = {
    "submitJobs": PER_TARGET,
    "alertmanagerWebhook": PER_TARGET,
    "alertmanagerWebhookNamespaced": PER_TARGET,
    "publishEvent": PER_TARGET,
    "alertmanagerEvents": PER_TARGET,
    "listJobs": READ,
    "getJob": READ,
    "listJobAttempts": READ,
    "queueStats": READ,
    "listTargets": READ,
    "listTracked": READ,
    "listDeadLetters": READ,
    "deadLetterStats": READ,
    "getDeadLetter": READ,
    "cancelJob": OPERATE,
    "clearTracker": OPERATE,
    "purgeDeadLetters": OPERATE,
    "replayDeadLetters": OPERATE,
    "replayDeadLetter": OPERATE,
}

AUTH = web.AppKey("herald.kubeauth", KubernetesAuth)
IDENTITY = web.RequestKey("herald.identity", Identity)
"""The request key of the caller's :class:`Identity` (set by the authentication middleware
in Kubernetes mode)."""


def identity(request: web.Request) -> Identity | None:
    return request.get(IDENTITY)


async def authorize_publish(request: web.Request, targets: Iterable[str]) -> None:
    """Check that the caller may publish to each ``namespace/name`` in ``targets`` (a no-op
    unless callers are authorised by Kubernetes). Raises ``Forbidden`` naming the first
    permission missing, ``AuthUnavailable`` if the API server cannot say."""
    auth = request.app.get(AUTH)
    if auth is None:
        return
    who = identity(request)
    if who is None:  # the middleware sets it on every route that is not public
        raise Unauthenticated("no authenticated caller")
    for ref in sorted(set(targets)):
        namespace, _, name = ref.rpartition("/")
        await auth.authorize(who, PER_TARGET.verb, namespace, name, PER_TARGET.resource)
