"""One payload schema per provider, keyed by the envelope's `provider` value."""

from pydantic import BaseModel

from schemas.payloads.eguma import EgumaBooking
from schemas.payloads.fourvenues import FourvenuesTicketsRequest
from schemas.payloads.fourvenues_channels import ChannelTicketsRequest
from schemas.payloads.remypass import RemyPassBooking

PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "remypass": RemyPassBooking,
    "fourvenues": FourvenuesTicketsRequest,
    "fourvenues_channels": ChannelTicketsRequest,
    "eguma": EgumaBooking,
}

__all__ = [
    "PAYLOAD_MODELS",
    "ChannelTicketsRequest",
    "EgumaBooking",
    "FourvenuesTicketsRequest",
    "RemyPassBooking",
]
