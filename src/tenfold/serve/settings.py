""":class:`ServeSettings`: what a request may ask for, and who may ask (the ``tenfold serve`` flags of the same
names)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServeSettings:
    """Limits and access of one server; every field is the ``tenfold serve`` flag of the same name."""

    model_name: str
    max_tokens_cap: int = 2048
    default_max_tokens: int = 256
    max_prompt_tokens: int = 8192
    max_body_bytes: int = 1_000_000
    max_image_pixels: int = 4096 * 4096
    max_images: int = 4
    api_keys: list[str] = field(default_factory=list)
    allowed_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=lambda: ["*"])  # Host headers answered (DNS rebinding guard)
    public_metrics: bool = False  # with API keys, /metrics needs a key unless this is set
    body_timeout: float = 15.0  # seconds a request body may stall between chunks (408 past it)
    truncation: str = "auto"  # the Responses API's truncation when a request does not say (--truncation)
    max_stored_responses: int = 256  # stored responses per API key (--max-stored-responses), LRU
