"""The settings of a StreamingLLM sink cache, in one place (StreamingLLM, Xiao et al. 2023, Sec. 3.2).

A sink cache keeps ``num_sinks`` attention sinks and the ``window`` most recent tokens in every full-attention
layer: ``num_sinks + window`` tokens in all (the paper's 4+1020 is the default). Hybrid models' sliding-window layers
keep what the model was trained to see instead (their own last ``sliding_window`` tokens), whatever these settings.
Every user of the cache (:class:`~tenfold.streaming.SinkCache`, the serve engine, ``tenfold chat``, the in-process
LM backend, perplexity and the CLIs) takes one :class:`SinkConfig`; :meth:`SinkConfig.add_args` /
:meth:`SinkConfig.from_args` turn it into command-line flags, so each default lives here only.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from tenfold.errors import TenfoldError

DEFAULT_SINKS = 4
DEFAULT_WINDOW = 1020


@dataclass(frozen=True)
class SinkConfig:
    """StreamingLLM cache settings; validated on creation (ValueError naming the setting).

    ``num_sinks``: first tokens kept for ever (the attention sinks), >= 0.
    ``window``: most recent tokens kept, >= 1 and >= ``num_sinks``; the cache holds ``num_sinks + window`` tokens
    per full-attention layer.
    ``prefill_chunk``: tokens per forward pass when a long input is streamed in, 1..``window`` (default: half the
    window, at most 256).
    ``rebase_at``: frame positions of the ring buffer stay below this; past it the window is rotated back once
    (default ``2 * (num_sinks + window)``; at least ``num_sinks + 2 * window``).
    ``rerotate``: re-rotate the whole window at every eviction (the original implementation, the test reference)
    instead of the ring buffer; both give the same scores up to rounding.
    """

    num_sinks: int = DEFAULT_SINKS
    window: int = DEFAULT_WINDOW
    prefill_chunk: int | None = None
    rebase_at: int | None = None
    rerotate: bool = False

    def __post_init__(self):
        def whole(name, value):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")

        whole("num_sinks", self.num_sinks)
        whole("window", self.window)
        if self.num_sinks < 0:
            raise ValueError(f"num_sinks must be an integer >= 0, got {self.num_sinks!r}")
        if self.window < 1:
            raise ValueError(f"window must be an integer >= 1, got {self.window!r}")
        if self.window < self.num_sinks:
            raise ValueError(f"window ({self.window}) must not be smaller than num_sinks ({self.num_sinks})")
        if self.prefill_chunk is not None:
            whole("prefill_chunk", self.prefill_chunk)
            if not 1 <= self.prefill_chunk <= self.window:
                raise ValueError(f"prefill_chunk must be between 1 and window ({self.window}), got {self.prefill_chunk}")
        if self.rebase_at is not None:
            whole("rebase_at", self.rebase_at)
            if self.rebase_at < self.size + self.window:
                raise ValueError(f"rebase_at must be an integer >= num_sinks + 2 * window ({self.size + self.window}), "
                                 f"got {self.rebase_at!r}")
        if not isinstance(self.rerotate, bool):
            raise ValueError(f"rerotate must be True or False, got {self.rerotate!r}")

    @property
    def size(self) -> int:
        """Tokens a full-attention layer holds: ``num_sinks + window``."""
        return self.num_sinks + self.window

    @property
    def chunk(self) -> int:
        """Tokens per prefill forward pass (``prefill_chunk``, or half the window, at most 256)."""
        return self.prefill_chunk if self.prefill_chunk is not None else max(1, min(256, self.window // 2))

    @property
    def rebase_limit(self) -> int:
        """``rebase_at``, or its default ``2 * (num_sinks + window)``."""
        return self.rebase_at if self.rebase_at is not None else 2 * self.size

    def label(self) -> str:
        """``"4+1020"``: sinks + window, as the paper writes a cache."""
        return f"{self.num_sinks}+{self.window}"

    # -- command line ------------------------------------------------------------------------------------
    @staticmethod
    def add_args(parser: argparse.ArgumentParser, prefill: bool = True) -> None:
        """Add ``--sinks``, ``--window`` and (``prefill``) ``--prefill-chunk`` / ``--rebase-at`` to ``parser``."""
        parser.add_argument("--sinks", type=_at_least(0), default=DEFAULT_SINKS,
                            help=f"attention sinks: first tokens the cache never evicts (default {DEFAULT_SINKS})")
        parser.add_argument("--window", type=_at_least(1), default=DEFAULT_WINDOW,
                            help=f"most recent tokens kept; cache size = sinks + window (default {DEFAULT_WINDOW})")
        if prefill:
            parser.add_argument("--prefill-chunk", type=_at_least(1), default=None,
                                help="tokens per forward pass while a long input is read in, at most --window "
                                     "(default: half the window, at most 256)")
            parser.add_argument("--rebase-at", type=_at_least(1), default=None,
                                help="ring-buffer positions stay below this; past it the window is rotated back once "
                                     "(default 2 x cache size; at least sinks + 2 x window)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SinkConfig":
        """The config the flags of :meth:`add_args` describe; TenfoldError (one line, flag names) when invalid."""
        sinks, window = args.sinks, args.window
        chunk, rebase = getattr(args, "prefill_chunk", None), getattr(args, "rebase_at", None)
        if window < sinks:
            raise TenfoldError(f"--window ({window}) must not be smaller than --sinks ({sinks})")
        if chunk is not None and chunk > window:
            raise TenfoldError(f"--prefill-chunk ({chunk}) must not be larger than --window ({window})")
        if rebase is not None and rebase < sinks + 2 * window:
            raise TenfoldError(f"--rebase-at must be at least --sinks + 2 x --window ({sinks + 2 * window}), "
                               f"got {rebase}")
        try:
            return cls(sinks, window, prefill_chunk=chunk, rebase_at=rebase)
        except ValueError as exc:
            raise TenfoldError(str(exc)) from None


def _at_least(low: int):
    """An argparse type: an integer >= ``low`` (argparse prints one line and exits 2 otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low} (got {value})")
        return value

    parse.__name__ = "integer"
    return parse
