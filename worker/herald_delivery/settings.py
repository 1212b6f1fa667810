"""Settings of egress: where the workers may deliver. How to add a setting: see
:mod:`herald_queue.settings`."""

from __future__ import annotations

from typing import Annotated, ClassVar, Self

from pydantic import AfterValidator, Field, model_validator

from herald_core.settings import HeraldSettings, Kind
from herald_delivery.egress import EgressPolicy, parse_networks


def _networks(value: str | None) -> str | None:
    parse_networks(value)  # its ValueError says which item is not a network
    return value


Networks = Annotated[
    str | None,
    Kind("CIDR list", "CIDRs separated by commas, such as 10.0.0.0/8, fd00::/8"),
    AfterValidator(_networks),
]


class EgressSettings(HeraldSettings):
    """Where the workers may deliver (herald_delivery.egress). Read by the worker, which
    enforces it on every address it connects to, and by whatever registers targets (the
    operator, `herald targets apply`, `herald worker --targets`), which refuses a URL whose
    literal address it forbids: give them the same values."""

    section: ClassVar[str] = "Egress (`herald worker`, `herald operator`, `herald targets apply`)"

    allow: Networks = Field(
        None,
        validation_alias="HERALD_EGRESS_ALLOW",
        description="Networks (CIDRs, comma-separated) the workers may deliver to although a "
        "built-in rule or HERALD_EGRESS_DENY refuses them: the most specific matching network "
        "decides (e.g. 169.254.10.0/24 reaches that part of the link-local range, never "
        "169.254.169.254, the metadata service, unless listed itself).",
    )
    deny: Networks = Field(
        None,
        validation_alias="HERALD_EGRESS_DENY",
        description="Networks (CIDRs, comma-separated) the workers never deliver to, besides "
        "the built-in ones: link-local (169.254.0.0/16, fe80::/10), the cloud metadata "
        "services (169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192) and "
        "loopback.",
    )
    allow_loopback: bool = Field(
        False,
        validation_alias="HERALD_EGRESS_ALLOW_LOOPBACK",
        description="Deliver to loopback addresses (127.0.0.0/8, ::1, 0.0.0.0): the worker's "
        "own host. For local runs and tests; `herald demo` sets it.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self.policy()  # refuses a network both allowed and denied
        return self

    def policy(self) -> EgressPolicy:
        return EgressPolicy(
            allow=parse_networks(self.allow),
            deny=parse_networks(self.deny),
            allow_loopback=self.allow_loopback,
        )
