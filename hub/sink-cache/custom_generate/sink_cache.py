# Generated from tenfold's src/tenfold/streaming/sink_cache.py by scripts/export_custom_generate.py: edit the source
# there and re-run the script, not this copy.
"""An attention-sink KV cache for transformers >= 5 (StreamingLLM, Xiao et al. 2023, Sec. 3.2).

The cache keeps the first ``num_sinks`` tokens of each sequence (the "attention sinks") and the
most recent ``window`` tokens. Positions are assigned *within the cache* (the paper's rule): while
a step of q new tokens is processed the cache holds at most ``num_sinks + window`` tokens
including them, and the new tokens take positions after the kept ones, so every attention score
sees in-cache distances.

Eviction without re-rotation (the default). The original implementation re-rotates every kept key
by however far eviction moved it, i.e. the whole window on every decode step. Here the recent
keys keep the rotation they were written with ("frame" positions, contiguous in stream order), in
a ring buffer whose oldest slot the next token overwrites, so nothing moves. Distances between a
query and recent keys are the same either way; only the sinks must look as if they sat at
positions ``0..S-1`` of the query's cache, so they are rewritten each step from an fp32 copy at
``frame - in_cache_position + i`` (``S`` columns, not ``S + W``). Frame positions are re-based
(the window rotated once, uniformly) when they would pass ``rebase_at``, so they stay as small
as the in-cache ones and numerically safe over any stream length. Steps of several tokens (prefill
chunks) still move the window into stream order, without rotating it. Left-padded batches use the
re-rotating path until their padding is evicted. ``rerotate=True`` keeps the original path
throughout (the reference the ring is tested against: equal to 1e-4 in NLL).

Integration goes through public extension points only: ``SinkCache`` is a
:class:`transformers.Cache` made of :class:`SinkLayer` (a ``CacheLayerMixin``), and
:func:`enable_streaming` registers a forward pre-hook (``nn.Module.register_forward_pre_hook``)
that gives each step its in-cache ``position_ids`` and the matching 2-D attention mask.
Left-padded batches work: every row keeps its own sinks and window, as if it ran alone.

Usage::

    enable_streaming(model)                      # once per model
    cache = SinkCache(num_sinks=4, window=1020)
    model.generate(ids, attention_mask=mask, past_key_values=cache, max_new_tokens=200)
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import Cache, CacheLayerMixin

from .config import DEFAULT_SINKS, DEFAULT_WINDOW, SinkConfig
from .rope import SLIDING, RopeShift, StreamingLayout, check_cache_fits, check_supported


def _no_rows(batch: int = 0) -> torch.Tensor:
    """Per-row counters at zero: a (batch,) int64 CPU tensor."""
    return torch.zeros(batch, dtype=torch.long)


class SinkLayer(CacheLayerMixin):
    """One layer's keys and values in a pre-allocated buffer that grows only when a step needs more room."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, capacity: int = 0, max_capacity: int | None = None):
        super().__init__()
        self.capacity = self.initial_capacity = capacity  # columns allocated at first (and after reset)
        self.max_capacity = capacity if max_capacity is None else max_capacity  # growth stops here (unless a step needs more)
        self.n = 0
        self.slot: int | None = None  # set by the cache for one step: overwrite this column instead of appending
        self.sink_keys: torch.Tensor | None = None  # fp32 copy of the sink keys at positions 0..S-1 (ring mode)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, q, d = key_states.shape
        self.device, self.capacity = key_states.device, max(self.capacity, q)
        # zeros, not empty: the compiled decode step reads every column with weight 0 past the filled ones, and
        # uninitialised memory may hold NaN (0 * NaN is NaN)
        self.keys = key_states.new_zeros((b, h, self.capacity, d))
        self.values = value_states.new_zeros((b, h, self.capacity, value_states.shape[-1]))
        self.n, self.is_initialized = 0, True

    def _grow(self, needed: int) -> None:
        cap = max(needed, min(2 * self.capacity, max(self.max_capacity, needed)))
        keys = self.keys.new_zeros((*self.keys.shape[:2], cap, self.keys.shape[-1]))
        values = self.values.new_zeros((*self.values.shape[:2], cap, self.values.shape[-1]))
        keys[:, :, : self.n] = self.keys[:, :, : self.n]
        values[:, :, : self.n] = self.values[:, :, : self.n]
        self.keys, self.values, self.capacity = keys, values, cap

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        q = key_states.shape[-2]
        if self.slot is not None:  # ring mode: the new token replaces the oldest recent one, nothing moves
            s, self.slot = self.slot, None
            self.keys[:, :, s : s + q] = key_states
            self.values[:, :, s : s + q] = value_states
            return self.keys[:, :, : self.n], self.values[:, :, : self.n]
        if self.n + q > self.capacity:
            self._grow(self.n + q)
        self.keys[:, :, self.n : self.n + q] = key_states
        self.values[:, :, self.n : self.n + q] = value_states
        self.n += q
        return self.keys[:, :, : self.n], self.values[:, :, : self.n]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.n + query_length, 0

    def get_seq_length(self) -> int:
        return self.n

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.n, self.is_initialized = 0, False  # buffers are re-allocated on the next update (batch may change)
        self.keys = self.values = None  # freed now, not when the next update re-allocates them
        self.capacity = self.initial_capacity
        self.slot = self.sink_keys = None

    def compact_copy(self) -> "SinkLayer":
        """A copy holding only the ``n`` filled columns (capacity ``n``; it grows again as tokens arrive)."""
        other = SinkLayer(1, self.max_capacity)
        if self.is_initialized:
            other.keys, other.values = self.keys[:, :, : self.n].clone(), self.values[:, :, : self.n].clone()
            other.device, other.n, other.capacity, other.is_initialized = self.device, self.n, max(self.n, 1), True
        other.sink_keys = None if self.sink_keys is None else self.sink_keys.clone()
        return other

    def place_sinks(self, sinks: int, delta: int, shift: RopeShift) -> None:
        """Write the ``sinks`` first keys rotated to positions ``delta + 0..sinks-1``, from an fp32 copy at ``0..``.

        The copy is taken the first time (the keys must then sit at ``0..sinks-1``), so no rounding accumulates.
        """
        if not self.is_initialized or not sinks:
            return
        if self.sink_keys is None:
            self.sink_keys = self.keys[:, :, :sinks].float().clone()
        self.keys[:, :, :sinks] = shift.rotate(self.sink_keys, delta) if delta else self.sink_keys

    def rotate_recent(self, sinks: int, delta: int, shift: RopeShift) -> None:
        """Rotate every recent key (columns ``sinks..n-1``, in any order) by ``delta`` positions, in place."""
        if self.is_initialized and delta and self.n > sinks:
            shift.rotate_into(self.keys[:, :, sinks : self.n], self.keys[:, :, sinks : self.n], delta)

    def unroll(self, sinks: int, head: int) -> None:
        """Put the ring of recent columns back in stream order (oldest at column ``sinks``); keys are not rotated."""
        if self.is_initialized and head:
            for buf in (self.keys, self.values):
                buf[:, :, sinks : self.n] = torch.roll(buf[:, :, sinks : self.n], -head, dims=2)

    def shift_window(self, sinks: int, keep: int, shift: RopeShift | None) -> None:
        """Keep ``sinks`` + the last ``keep`` tokens (no padding), moving the latter left; re-rotated unless
        ``shift`` is None (ring mode: keys keep their frame positions)."""
        n, moved = self.n, self.n - keep - sinks
        if keep and moved:
            if shift is None:
                self.keys[:, :, sinks : sinks + keep] = self.keys[:, :, n - keep : n].clone()
            else:
                shift.rotate_into(self.keys[:, :, sinks : sinks + keep], self.keys[:, :, n - keep : n], -moved)
            self.values[:, :, sinks : sinks + keep] = self.values[:, :, n - keep : n].clone()
        self.n = sinks + keep

    def gather(self, index: torch.Tensor, delta: torch.Tensor, shift: RopeShift) -> None:
        """General path (padded rows): keep columns ``index`` (B, N') per row, re-rotating each by ``delta`` (B, N')."""
        idx = index[:, None, :, None]
        keys = torch.gather(self.keys[:, :, : self.n], 2, idx.expand(-1, self.keys.shape[1], -1, self.keys.shape[-1]))
        values = torch.gather(self.values[:, :, : self.n], 2,
                              idx.expand(-1, self.values.shape[1], -1, self.values.shape[-1]))
        m = index.shape[1]
        self.keys[:, :, :m] = shift.rotate(keys, delta)
        self.values[:, :, :m] = values
        self.n, self.sink_keys = m, None


class HeldElsewhereLayer(CacheLayerMixin):
    """A placeholder layer for a ``Cache`` whose own ``update`` keeps the keys and values somewhere else (the rows'
    own sink caches in continuous batching, the buffers handed to a compiled decode step): it holds nothing."""

    is_sliding = False
    is_compileable = True

    def lazy_initialization(self, key_states, value_states):
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__} holds no keys: its cache's update writes them")

    def get_mask_sizes(self, query_length: int):
        return query_length, 0

    def get_seq_length(self) -> int:
        return 0

    def get_max_length(self) -> int:
        return -1


class SlidingLayer(CacheLayerMixin):
    """A sliding-window layer of a hybrid model (Gemma 2/3, gpt-oss, Cohere 2): its own last ``sliding_window`` tokens.

    Such a layer was trained to see the last ``sliding_window`` tokens at their true distances, so that is what it
    keeps, whatever the sink cache's window: keys stay in the frame of the full-attention layers' recent tokens
    (the cache rotates them, with this layer's own RoPE frequencies, whenever that frame moves), and the columns are
    a ring while decoding (one token replaces the one that just left the window) and stream order during a chunk.
    """

    is_sliding = True
    is_compileable = False
    is_croppable = False

    def __init__(self, sliding_window: int, shift: RopeShift, capacity: int, max_capacity: int):
        super().__init__()
        self.sliding_window, self.shift = sliding_window, shift
        self.capacity = self.initial_capacity = capacity
        self.max_capacity = max_capacity
        self.n = 0
        self.slot: int | None = None
        self.sink_keys = None  # no sinks here (nbytes reads it)

    lazy_initialization = SinkLayer.lazy_initialization
    _grow = SinkLayer._grow
    update = SinkLayer.update
    get_seq_length = SinkLayer.get_seq_length
    get_max_length = SinkLayer.get_max_length
    reset = SinkLayer.reset

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.n + query_length, 0

    def compact_copy(self) -> "SlidingLayer":
        other = SlidingLayer(self.sliding_window, self.shift, 1, self.max_capacity)
        if self.is_initialized:
            other.keys, other.values = self.keys[:, :, : self.n].clone(), self.values[:, :, : self.n].clone()
            other.device, other.n, other.capacity, other.is_initialized = self.device, self.n, max(self.n, 1), True
        return other

    def unroll(self, head: int) -> None:
        """Put the ring back in stream order (oldest column first)."""
        if self.is_initialized and head:
            for buf in (self.keys, self.values):
                buf[:, :, : self.n] = torch.roll(buf[:, :, : self.n], -head, dims=2)

    def keep_last(self, keep: int) -> None:
        """Keep the last ``keep`` columns (stream order), moved to the front."""
        if keep < self.n:
            if keep:
                self.keys[:, :, :keep] = self.keys[:, :, self.n - keep : self.n].clone()
                self.values[:, :, :keep] = self.values[:, :, self.n - keep : self.n].clone()
            self.n = keep

    def follow(self, delta) -> None:
        """Rotate every kept key by ``delta`` positions (an int, or a (B,) tensor per row): the frame moved."""
        if not self.is_initialized or not self.n:
            return
        if isinstance(delta, int):
            self.shift.rotate_into(self.keys[:, :, : self.n], self.keys[:, :, : self.n], delta)
        elif bool((delta != 0).any()):
            per_column = delta.to(self.keys.device)[:, None].expand(-1, self.n)
            self.keys[:, :, : self.n] = self.shift.rotate(self.keys[:, :, : self.n], per_column)


class SinkCache(Cache):
    """StreamingLLM's rolling KV cache: ``num_sinks`` attention sinks + the ``window`` most recent tokens.

    Needs :func:`enable_streaming` on the model (it assigns the in-cache positions).
    Settings come as ``config`` (a :class:`~tenfold.streaming.SinkConfig`) or as the same-named keywords
    ``num_sinks``, ``window``, ``prefill_chunk`` (inputs longer than this are fed in chunks when called from
    ``generate``), ``rerotate`` and ``rebase_at`` (ring mode keeps frame positions below it, and below the model's
    original context when its RoPE changes frequencies past it: dynamic NTK, LongRoPE); ``config`` wins.
    ``initial_capacity``: columns allocated at first (default: all ``num_sinks + window``); a smaller start grows
    by doubling as tokens arrive, so a short conversation holds memory for its own tokens only.
    Per-row state: ``tokens_seen`` and ``evicted`` ((B,) int64 counters) and :meth:`fill`.
    Raises ValueError for settings out of range.
    """

    def __init__(self, num_sinks: int = DEFAULT_SINKS, window: int = DEFAULT_WINDOW, prefill_chunk: int | None = None,
                 initial_capacity: int | None = None, rerotate: bool = False, rebase_at: int | None = None, *,
                 config: SinkConfig | None = None):
        if config is None:
            config = SinkConfig(num_sinks, window, prefill_chunk=prefill_chunk, rebase_at=rebase_at, rerotate=rerotate)
        self.config = config
        size = config.size
        self._first = size if initial_capacity is None else max(1, min(initial_capacity, size))
        super().__init__(layer_class_to_replicate=lambda: SinkLayer(self._first, size))
        self.num_sinks, self.window = config.num_sinks, config.window
        self.prefill_chunk, self.rerotate, self.rebase_at = config.chunk, config.rerotate, config.rebase_limit
        self.shift: RopeShift | None = None
        self.layout: StreamingLayout | None = None  # the model's layer kinds, known from the first step
        # Hybrid models: which columns of the sliding-window layers hold real tokens, and their ring's oldest slot.
        self.sliding_valid: torch.Tensor | None = None  # (B, N_s)
        self.sliding_head = 0
        self.valid: torch.Tensor | None = None  # (B, N) which cached columns are real tokens (not padding)
        # Ring mode (all columns real tokens): frame position of the next token (None: frame = in-cache
        # positions), ring slot of the oldest recent token, and where the sinks sit now (positions delta + i).
        self.frame: int | None = None
        self.head = 0
        self.sink_delta = 0
        self.rebases = 0
        self._slot = False  # this step overwrites a ring slot instead of appending a column
        self.column = 0  # the column a deferred one-token step (begin_ring_decode) writes
        self.seen_columns = 0  # input columns consumed so far (what generate() calls the sequence length)
        self.tokens_seen = _no_rows()  # (B,) real tokens streamed through the cache so far, per batch row
        self.evicted = _no_rows()  # (B,) real tokens evicted so far, per batch row
        self._pending = 0  # tokens in the step being processed

    # -- state ---------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.num_sinks + self.window

    def fill(self) -> torch.Tensor:
        """(B,) real tokens held now, per batch row (CPU, int64; empty before the first step)."""
        return _no_rows() if self.valid is None else self.valid.sum(1).cpu()

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_columns

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    @property
    def full_layers(self) -> list[SinkLayer]:
        """The layers that keep sinks + window (all of them in a model without sliding-window layers)."""
        return [layer for layer in self.layers if isinstance(layer, SinkLayer)]

    @property
    def sliding_layers(self) -> list[SlidingLayer]:
        return [layer for layer in self.layers if isinstance(layer, SlidingLayer)]

    # Inside a step (after begin_step) the columns already include the step's new tokens. The 2-D mask handed to the
    # model is [full-layer columns | sliding-layer columns]: each layer kind reads its own part through kv_offset,
    # and queries sit at the end of that part (transformers' mask functions compare indices, not positions).
    def _is_sliding_layer(self, layer_idx: int) -> bool:
        return layer_idx < len(self.layers) and isinstance(self.layers[layer_idx], SlidingLayer)

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        if self.valid is None:
            return query_length, 0
        if self._is_sliding_layer(layer_idx):
            return self.sliding_valid.shape[1], self.valid.shape[1]
        return self.valid.shape[1], 0

    def get_query_offset(self, layer_idx: int = 0) -> int:
        if self.valid is None:
            return 0
        end = self.valid.shape[1] + (self.sliding_valid.shape[1] if self._is_sliding_layer(layer_idx) else 0)
        return end - self._pending

    def step_mask(self) -> torch.Tensor | None:
        """The 2-D (B, columns) mask of the step begun last, or None when every column is a real token."""
        parts = [self.valid] + ([self.sliding_valid] if self.sliding_valid is not None else [])
        if all(bool(p.all()) for p in parts):
            return None
        return torch.cat(parts, dim=1).long()

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()
        self.valid, self.seen_columns, self._pending = None, 0, 0
        self.tokens_seen, self.evicted = _no_rows(), _no_rows()
        self.frame, self.head, self.sink_delta, self.rebases, self._slot = None, 0, 0, 0, False
        self.sliding_valid, self.sliding_head = None, 0

    def copy(self) -> "SinkCache":
        """An independent copy of the cache's state that holds only the filled columns, not the pre-allocated room.

        Used to fork one prefilled prompt into ``n`` continuations: each copy costs the tokens it holds.
        """
        other = SinkCache(config=self.config, initial_capacity=1)
        other.layers = [layer.compact_copy() for layer in self.layers]
        other.valid = None if self.valid is None else self.valid.clone()
        other.seen_columns = self.seen_columns
        other.tokens_seen, other.evicted = self.tokens_seen.clone(), self.evicted.clone()
        other.frame, other.head, other.sink_delta, other.rebases = self.frame, self.head, self.sink_delta, self.rebases
        other.shift, other.layout = self.shift, self.layout
        other.sliding_valid = None if self.sliding_valid is None else self.sliding_valid.clone()
        other.sliding_head = self.sliding_head
        return other

    def compact(self) -> "SinkCache":
        """This cache when its buffers hold no unused room, else :meth:`copy` (only the filled columns).

        Used when a conversation goes idle: a parked session then costs the tokens it holds, not the room its
        buffers grew to (up to twice that). The result continues exactly as this cache would."""
        if all(not layer.is_initialized or layer.n >= layer.capacity for layer in self.layers):
            return self
        return self.copy()

    def nbytes(self) -> int:
        """Bytes held by the key/value buffers (allocated room included)."""
        total = 0
        for layer in self.layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None) if layer.is_initialized else None
                if t is not None:
                    total += t.numel() * t.element_size()
            if layer.sink_keys is not None:
                total += layer.sink_keys.numel() * layer.sink_keys.element_size()
        return total

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("beam search is not supported with the sink cache")

    # -- one step -------------------------------------------------------------------------
    def _build_layers(self, layout: StreamingLayout) -> None:
        """One cache layer per model layer, of the layer's kind (sliding-window layers keep their own window)."""
        if self.layers:
            if len(self.layers) != len(layout.kinds) or any(
                    isinstance(layer, SlidingLayer) != (kind == SLIDING) for layer, kind in zip(self.layers, layout.kinds)):
                raise ValueError("this sink cache was filled by a model with other layer kinds; reset() it first")
            return
        size, sw = self.size, layout.sliding_window
        room = sw - 1 + self.prefill_chunk if sw else 0  # a sliding layer holds its window - 1 plus one chunk at most
        self.layers = [SinkLayer(self._first, size) if kind != SLIDING
                       else SlidingLayer(sw, sh, min(self._first, room), room)
                       for kind, sh in zip(layout.kinds, layout.shifts)]

    def begin_step(self, new_valid: torch.Tensor, layout: StreamingLayout) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Evict to make room for ``new_valid.shape[1]`` tokens; return their (position_ids, 2-D attention mask or
        None when no column is padding)."""
        q = new_valid.shape[1]
        if q > self.window:
            raise ValueError(f"a step of {q} tokens is longer than the window ({self.window}); "
                             f"feed it in chunks of at most {self.window} tokens (tenfold.streaming.prefill does)")
        self._build_layers(layout)
        self.layout, self.shift = layout, layout.shift
        if self.valid is None:
            self.valid = new_valid.new_zeros((new_valid.shape[0], 0))
            self.tokens_seen, self.evicted = _no_rows(new_valid.shape[0]), _no_rows(new_valid.shape[0])
        elif self.valid.shape[0] != new_valid.shape[0]:
            raise ValueError(f"batch size changed from {self.valid.shape[0]} to {new_valid.shape[0]}; reset() the cache first")
        self._slot = False
        if not self.rerotate and bool(self.valid.all()) and bool(new_valid.all()):
            positions = self._ring_step(q)
        else:
            self._to_cache_positions()
            budget = self.size - q  # old tokens that may stay while these q are processed
            counts = self.valid.sum(1)
            if bool((counts > budget).any()):
                self.evicted += (counts - budget).clamp(min=0).cpu()
                self._evict(budget)
                counts = self.valid.sum(1)
            positions = counts[:, None] + new_valid.long().cumsum(1) - 1
            positions = positions.masked_fill(~new_valid, 0)
            self.valid = torch.cat([self.valid, new_valid], dim=1)
        if layout.hybrid:
            self._sliding_step(new_valid)
        self.seen_columns += q
        self.tokens_seen += new_valid.sum(1).cpu()
        self._pending = q
        return positions, self.step_mask()

    def _sliding_step(self, new_valid: torch.Tensor) -> None:
        """Make room in the sliding-window layers for the step's tokens: decoding a full window overwrites the ring's
        oldest column (the token that just left the window); anything else keeps the last ``sliding_window - 1``
        columns in stream order and appends."""
        q, sw, layers = new_valid.shape[1], self.layout.sliding_window, self.sliding_layers
        if self.sliding_valid is None:
            self.sliding_valid = new_valid.new_zeros((new_valid.shape[0], 0))
        n = self.sliding_valid.shape[1]
        if q == 1 and n == sw:
            for layer in layers:
                layer.slot = self.sliding_head
            self.sliding_valid[:, self.sliding_head] = new_valid[:, 0]
            self.sliding_head = (self.sliding_head + 1) % sw
            return
        keep = min(n, sw - 1)
        if self.sliding_head:
            for layer in layers:
                layer.unroll(self.sliding_head)
            self.sliding_valid = torch.roll(self.sliding_valid, -self.sliding_head, dims=1)
            self.sliding_head = 0
        for layer in layers:
            layer.keep_last(keep)
        self.sliding_valid = torch.cat([self.sliding_valid[:, n - keep:], new_valid], dim=1)

    def _follow(self, delta) -> None:
        """The recent tokens' frame moved by ``delta`` (int, or (B,) per row): the sliding layers' keys move with it."""
        for layer in self.sliding_layers:
            layer.follow(delta)

    # -- ring mode --------------------------------------------------------------------------
    def _ring_step(self, q: int, deferred: bool = False) -> torch.Tensor:
        """Evict for ``q`` new tokens of a padding-free batch without re-rotating the window; their frame positions.

        ``deferred`` (one-token steps of :meth:`begin_ring_decode`): leave the new token's write and the sinks'
        rotation to the caller, which writes column ``self.column`` and the sinks at ``self.sink_delta``."""
        n = self.valid.shape[1]
        if self.frame is None:
            self.frame, self.head, self.sink_delta = n, 0, 0  # frame positions start as the in-cache ones
        budget = self.size - q
        limit = self.rebase_at
        if self.shift.position_limit is not None:  # dynamic RoPE: frame positions must not leave its original context
            limit = min(limit, self.shift.position_limit)
        if self.frame + q > limit:  # re-base so the new tokens take their in-cache positions after this eviction
            self._rebase(n if n <= budget else (n - 1 if q == 1 else budget))
        if n > budget:
            self.evicted += n - budget
            sinks = self.num_sinks
            if q == 1:  # decoding a full cache: the token takes the oldest recent token's slot
                self.column = sinks + self.head
                for layer in self.full_layers:
                    layer.slot = None if deferred else self.column
                self.head = (self.head + 1) % (n - sinks)
                self._slot = True
                kept = n - 1
            else:  # a chunk: back to stream order, then drop the oldest (moved, not rotated)
                for layer in self.full_layers:
                    layer.unroll(sinks, self.head)
                    layer.shift_window(sinks, budget - sinks, None)
                self.head = 0
                kept = budget
                self.valid = self.valid[:, :kept]
            delta = self.frame - kept  # in-cache position of the first new token is `kept`
            if deferred:
                self._copy_sinks()
            elif delta != self.sink_delta:
                for layer in self.full_layers:
                    layer.place_sinks(sinks, delta, self.shift)
            self.sink_delta = delta
        else:
            kept = n
            if deferred:  # the caller writes the token after the filled columns
                self.column = n
                self._copy_sinks()
                for layer in self.full_layers:
                    layer.n += 1
        batch = self.valid.shape[0]
        positions = torch.arange(self.frame, self.frame + q, device=self.valid.device).expand(batch, q)
        self.frame += q
        if not self._slot:
            self.valid = torch.cat([self.valid, self.valid.new_ones((batch, q))], dim=1)
        return positions

    def _copy_sinks(self) -> None:
        """Take each full layer's float32 copy of its sinks at positions 0..S-1, if not taken yet."""
        sinks = min(self.num_sinks, self.valid.shape[1])
        for layer in self.full_layers:
            if layer.sink_keys is None and sinks:  # none yet: the sinks sit at 0..S-1 (sink_delta is 0)
                layer.sink_keys = layer.keys[:, :, :sinks].float().clone()

    def begin_ring_decode(self, batch: int) -> tuple[int, int, int, int]:
        """Bookkeeping of a one-token step whose writes the caller does (the compiled decode step).

        The cache must hold its sinks and no padding, in ring mode, batch ``batch``: see
        :meth:`tenfold.streaming.compiled.CompiledDecoder.can_compile`. Grows every full layer's buffers to
        ``size`` columns. Returns ``(position, column, sink_delta, filled)``: the new token's frame position, the
        column it is to be written to, the position offset the sinks are to be rotated to from their float32 copy
        (``layer.sink_keys``), and the columns filled after the write."""
        if self.valid is None or self.valid.shape[0] != batch:
            raise ValueError("begin_ring_decode needs a cache already filled with this batch")
        for layer in self.full_layers:
            if layer.capacity < self.size:
                layer._grow(self.size)
        self._slot = False
        self._ring_step(1, deferred=True)
        position = self.frame - 1
        self.seen_columns += 1
        self.tokens_seen += 1
        self._pending = 0
        return position, self.column, self.sink_delta, self.valid.shape[1]

    def _rebase(self, n: int) -> None:
        """Rotate all recent keys back by one offset so that the next token's frame position is ``n``: the in-cache
        position it takes (once per ``rebase_at``)."""
        offset = self.frame - n
        if offset:
            sinks = min(self.num_sinks, self.valid.shape[1])
            for layer in self.full_layers:
                layer.rotate_recent(sinks, -offset, self.shift)
            self._follow(-offset)
            self.frame -= offset
            self.rebases += 1

    def _to_cache_positions(self) -> None:
        """Leave ring mode: stream order, in-cache positions, sinks at 0..S-1 (what the padded path expects)."""
        if self.frame is None:
            return
        n = self.valid.shape[1]
        sinks = min(self.num_sinks, n)
        for layer in self.full_layers:
            layer.unroll(sinks, self.head)
        self.head = 0
        self._rebase(n)
        if self.sink_delta:
            for layer in self.full_layers:
                layer.place_sinks(sinks, 0, self.shift)
        for layer in self.full_layers:
            layer.sink_keys = None
        self.frame, self.sink_delta = None, 0

    def _evict(self, budget: int) -> None:
        sinks, keep = min(self.num_sinks, budget), max(0, budget - self.num_sinks)
        # every row's recent tokens move back by as many positions as that row evicts; sliding layers follow
        self._follow(-(self.valid.sum(1) - budget).clamp(min=0))
        if bool(self.valid.all()):
            for layer in self.full_layers:
                layer.shift_window(sinks, keep, self.shift)
            self.valid = self.valid[:, : sinks + keep]
            return
        rows, deltas, kept = [], [], []
        for row in self.valid:
            cols = row.nonzero().flatten()
            count = cols.numel()
            if count > budget:
                take = torch.cat([torch.arange(sinks), torch.arange(count - keep, count)]).to(cols.device)
            else:
                take = torch.arange(count, device=cols.device)
            rows.append(cols[take])
            deltas.append(torch.arange(take.numel(), device=cols.device) - take)
            kept.append(take.numel())
        width = max(kept)
        index = torch.zeros((len(rows), width), dtype=torch.long, device=self.valid.device)
        delta = torch.zeros_like(index)
        valid = torch.zeros((len(rows), width), dtype=torch.bool, device=self.valid.device)
        for b, (cols, d, k) in enumerate(zip(rows, deltas, kept)):  # right-align: padding stays on the left
            index[b, width - k :], delta[b, width - k :], valid[b, width - k :] = cols, d, True
        for layer in self.full_layers:
            layer.gather(index, delta, self.shift)
        self.valid = valid

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        layer = self.layers[layer_idx] if layer_idx < len(self.layers) else None
        held = layer.n if layer is not None else 0
        if isinstance(layer, SlidingLayer):
            added = 0 if layer.slot is not None else key_states.shape[-2]
            expected = None if self.sliding_valid is None else self.sliding_valid.shape[1]
        else:
            added = 0 if self._slot else key_states.shape[-2]
            expected = None if self.valid is None else self.valid.shape[1]
        if expected is None or held + added != expected:
            raise RuntimeError("SinkCache: call tenfold.streaming.enable_streaming(model) before using the cache "
                               "(it assigns the StreamingLLM in-cache positions at every step)")
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)


def _input_of(args, kwargs):
    if args and "input_ids" not in kwargs:
        kwargs["input_ids"], args = args[0], args[1:]
    x = kwargs.get("input_ids")
    return (x if x is not None else kwargs.get("inputs_embeds")), args, kwargs


def _sink_pre_hook(module: nn.Module, args, kwargs):
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if not isinstance(cache, SinkCache):
        return None
    check_cache_fits(module, cache.size)
    x, args, kwargs = _input_of(args, kwargs)
    batch, q = x.shape[0], x.shape[1]
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.ndim != 2:
        raise ValueError("the sink cache needs a 2-D attention mask (batch, columns)")
    new_valid = (mask[:, -q:] != 0) if mask is not None else torch.ones((batch, q), dtype=torch.bool, device=x.device)
    layout = module._custom_generate_streaming
    key = "input_ids" if kwargs.get("input_ids") is not None else "inputs_embeds"
    if q > cache.window:
        # generate() hands over a whole long prompt: stream all but its last chunk through the cache first.
        if kwargs.get("logits_to_keep") != 1:
            raise ValueError(f"an input of {q} tokens is longer than the sink cache's window ({cache.window}); "
                             f"feed it in chunks (tenfold.streaming.prefill) or through generate()")
        chunk = cache.prefill_chunk
        head = q - ((q - 1) % chunk + 1)
        with torch.no_grad():
            for start in range(0, head, chunk):
                module(**{key: kwargs[key][:, start : start + chunk]}, attention_mask=new_valid[:, start : start + chunk].long(),
                       cache=cache, use_cache=True, logits_to_keep=1)
        kwargs[key], new_valid = kwargs[key][:, head:], new_valid[:, head:]
    positions, step_mask = cache.begin_step(new_valid, layout)
    # Without padding the plain causal mask is right; passing None lets attention skip the mask entirely.
    kwargs["position_ids"] = positions
    kwargs["attention_mask"] = step_mask
    if "past_key_values" in kwargs and "cache" not in kwargs:
        kwargs["cache"] = kwargs.pop("past_key_values")
    return args, kwargs


def enable_streaming(model: nn.Module) -> nn.Module:
    """Let ``model`` run with a :class:`SinkCache` (idempotent). Raises TenfoldError for models without RoPE, with
    unsupported attention or with layer types a rolling cache cannot keep exact (see :func:`check_supported`)."""
    if getattr(model, "_custom_generate_streaming", None) is None:
        model._custom_generate_streaming = check_supported(model)
        model.register_forward_pre_hook(_sink_pre_hook, with_kwargs=True)
    return model


@torch.no_grad()
def prefill(model: nn.Module, cache: SinkCache, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            chunk: int | None = None, logits_to_keep: int = 0):
    """Stream ``input_ids`` (B, T) of any length through ``cache`` in chunks; return the last chunk's logits
    (B, chunk, vocab), or only its last ``logits_to_keep`` positions (transformers' argument: the output
    projection then runs on those positions alone; 1 is what a decoding loop needs and saves a chunk x vocab
    float32 array, 50 MB per 255 tokens for the bundled model). 0 keeps every position."""
    enable_streaming(model)
    # the caller's ids may be on the CPU (a tokenizer's output): inputs go to the model (its first weights' device)
    device = getattr(model, "device", None)
    device = device if isinstance(device, torch.device) else next(model.parameters()).device
    input_ids = input_ids.to(device)
    attention_mask = None if attention_mask is None else attention_mask.to(device)
    chunk = chunk or cache.prefill_chunk
    out = None
    extra = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}
    for start in range(0, input_ids.shape[1], chunk):
        part = input_ids[:, start : start + chunk]
        mask = None if attention_mask is None else attention_mask[:, start : start + chunk]
        out = model(input_ids=part, attention_mask=mask, cache=cache, use_cache=True, **extra)
    return out.logits
