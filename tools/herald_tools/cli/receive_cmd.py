"""``herald receive``: a local webhook receiver that verifies Standard Webhooks signatures
and prints every delivery, the peer of ``examples/local/`` for trying Herald on a laptop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import TextIO

from herald_core.errors import CannotListen, InvalidRequest

LOCAL_SECRET = "whsec_aGVyYWxkLWxvY2FsLWV4YW1wbGUtc2lnbmluZy1rZXk="  # noqa: S105 - published
"""The signing secret of examples/local/ (a local example's, never a real one)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Receive webhooks on this machine and print each one (its webhook-id, whether its "
        "signature verifies, the body), answering 200. With its defaults it is the "
        "receiver of examples/local/: run it, then `HERALD_EGRESS_ALLOW_LOOPBACK=true "
        "herald worker --targets examples/local/` and `herald enqueue --target local-hook "
        '--payload \'{"hello": "world"}\'`. Stops on Ctrl-C.'
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port (default 9000)")
    parser.add_argument("--path", default="/hook", help="URL path (default /hook)")
    parser.add_argument(
        "--secret",
        default=LOCAL_SECRET,
        help="Standard Webhooks signing secret to verify with (default: examples/local/'s), "
        "or an ed25519 public key whpk_... to verify v1a signatures with; '' to accept "
        "unsigned requests",
    )
    parser.add_argument(
        "--status", type=int, default=200, help="HTTP status to answer (default 200)"
    )


def describe(received: object, verified: bool | None) -> str:
    from herald_tools.receiver import Received

    assert isinstance(received, Received)
    body = received.body.decode("utf-8", "replace")
    with contextlib.suppress(ValueError, RecursionError):  # else shown as received
        body = json.dumps(json.loads(body), ensure_ascii=False)
    if len(body) > 200:
        body = body[:199] + "…"
    signature = {True: "signature ok", False: "BAD SIGNATURE", None: "unsigned"}[verified]
    return f"{received.webhook_id or '-'}  {signature}  -> {received.answer.status}  {body}"


async def run(args: argparse.Namespace, *, out: TextIO = sys.stdout) -> int:
    from herald_tools.receiver import Answer, Receiver, always

    if not 0 <= args.port < 65536:
        raise InvalidRequest("--port", f"must be a port number, got {args.port}")
    if not 100 <= args.status < 600:
        raise InvalidRequest("--status", f"must be an HTTP status, got {args.status}")
    if not args.path.startswith("/"):
        raise InvalidRequest("--path", f"must start with /, got {args.path!r}")
    receiver = Receiver(always(Answer(args.status)), secret=args.secret or None, path=args.path)
    receiver_host = args.host
    try:
        await receiver.start(args.port, host=receiver_host)
    except OSError as exc:
        raise CannotListen(
            "webhooks", receiver_host, args.port, exc, port_setting="--port", host_setting="--host"
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    out.write(f"herald receive: listening on http://{receiver_host}:{receiver.port}{args.path}\n")
    out.flush()
    total = 0
    try:
        while not stop.is_set():
            receiver.changed.clear()
            batch, receiver.received[:] = list(receiver.received), []  # printed, then let go
            for received in batch:
                out.write(describe(received, received.signature_ok) + "\n")
            out.flush()
            total += len(batch)
            waiter = asyncio.ensure_future(receiver.changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
    finally:
        await receiver.stop()
    out.write(f"herald receive: stopped after {total + len(receiver.received)} request(s)\n")
    return 0
