"""``GET /signing-keys/{namespace}/{name}``: the ed25519 public keys (``whpk_...``) a
target's deliveries are signed with (``v1a``), for its receivers to fetch. Public keys are
not secrets, so this answers without the API token; it answers 404 alike for an unknown
target and for one without v1a keys, so it does not tell which targets exist."""

from __future__ import annotations

from aiohttp import web

from herald_delivery.target_types.webhook import signing_public_keys
from herald_worker.api.context import ctx
from herald_worker.api.errors import error_response
from herald_worker.api.models import SigningKeysPath


async def signing_keys(request: web.Request, path: SigningKeysPath) -> web.Response:
    namespace, name = path.namespace, path.name
    directory = ctx(request).directory
    keys: list[str] = []
    if directory is not None:
        found = directory.find(namespace, name)
        if found is not None:
            keys = signing_public_keys(found.secrets)
    if not keys:
        return error_response(
            404,
            f"no published signing keys for target {namespace}/{name}: it is not registered, "
            "or its Secret's signingSecret holds no whsk_ (ed25519) key",
            "target",
        )
    return web.json_response({"target": f"{namespace}/{name}", "publicKeys": keys})
