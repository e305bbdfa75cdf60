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

from tenfold.streaming.rope import RopeShift, check_cache_fits, check_supported


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
        self.keys = key_states.new_empty((b, h, self.capacity, d))
        self.values = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
        self.n, self.is_initialized = 0, True

    def _grow(self, needed: int) -> None:
        cap = max(needed, min(2 * self.capacity, max(self.max_capacity, needed)))
        keys = self.keys.new_empty((*self.keys.shape[:2], cap, self.keys.shape[-1]))
        values = self.values.new_empty((*self.values.shape[:2], cap, self.values.shape[-1]))
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


class SinkCache(Cache):
    """StreamingLLM's rolling KV cache: ``num_sinks`` attention sinks + the ``window`` most recent tokens.

    Needs :func:`enable_streaming` on the model (it assigns the in-cache positions).
    ``prefill_chunk``: inputs longer than this are fed in chunks when called from ``generate``.
    ``initial_capacity``: columns allocated at first (default: all ``num_sinks + window``); a smaller start grows
    by doubling as tokens arrive, so a short conversation holds memory for its own tokens only.
    ``rerotate``: re-rotate the whole window at every eviction (the original implementation) instead of
    the ring buffer (see the module docstring); both give the same scores up to rounding.
    ``rebase_at``: ring mode keeps frame positions below this (default ``2 * (num_sinks + window)``), and below the
    model's original context when its RoPE changes frequencies past it (dynamic NTK, LongRoPE).
    Raises ValueError for settings out of range.
    """

    def __init__(self, num_sinks: int = 4, window: int = 1020, prefill_chunk: int | None = None,
                 initial_capacity: int | None = None, rerotate: bool = False, rebase_at: int | None = None):
        if not isinstance(num_sinks, int) or num_sinks < 0:
            raise ValueError(f"num_sinks must be an integer >= 0, got {num_sinks!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        if window < num_sinks:
            raise ValueError(f"window ({window}) must not be smaller than num_sinks ({num_sinks})")
        size = num_sinks + window
        first = size if initial_capacity is None else max(1, min(initial_capacity, size))
        super().__init__(layer_class_to_replicate=lambda: SinkLayer(first, size))
        self.num_sinks, self.window = num_sinks, window
        self.prefill_chunk = max(1, window // 4) if prefill_chunk is None else prefill_chunk
        if not 1 <= self.prefill_chunk <= window:
            raise ValueError(f"prefill_chunk must be between 1 and window ({window}), got {prefill_chunk}")
        self.rerotate = bool(rerotate)
        self.rebase_at = 2 * size if rebase_at is None else rebase_at
        if not isinstance(self.rebase_at, int) or self.rebase_at < size + window:
            raise ValueError(f"rebase_at must be an integer >= num_sinks + 2 * window ({size + window}), "
                             f"got {rebase_at!r}")
        self.shift: RopeShift | None = None
        self.valid: torch.Tensor | None = None  # (B, N) which cached columns are real tokens (not padding)
        # Ring mode (all columns real tokens): frame position of the next token (None: frame = in-cache
        # positions), ring slot of the oldest recent token, and where the sinks sit now (positions delta + i).
        self.frame: int | None = None
        self.head = 0
        self.sink_delta = 0
        self.rebases = 0
        self._slot = False  # this step overwrites a ring slot instead of appending a column
        self.seen_columns = 0  # input columns consumed so far (what generate() calls the sequence length)
        self.tokens_seen = 0  # real tokens streamed through the cache so far (batch row 0)
        self.evicted = 0  # real tokens evicted so far (batch row 0)
        self._pending = 0  # tokens in the step being processed

    # -- state ---------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.num_sinks + self.window

    def fill(self) -> int:
        """Real tokens held now (batch row 0)."""
        return 0 if self.valid is None else int(self.valid[0].sum())

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_columns

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    # Inside a step (after begin_step) the columns already include the step's new tokens.
    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return (query_length if self.valid is None else self.valid.shape[1]), 0

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return 0 if self.valid is None else self.valid.shape[1] - self._pending

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()
        self.valid, self.seen_columns, self.tokens_seen, self.evicted, self._pending = None, 0, 0, 0, 0
        self.frame, self.head, self.sink_delta, self.rebases, self._slot = None, 0, 0, 0, False

    def copy(self) -> "SinkCache":
        """An independent copy of the cache's state that holds only the filled columns, not the pre-allocated room.

        Used to fork one prefilled prompt into ``n`` continuations: each copy costs the tokens it holds.
        """
        other = SinkCache(self.num_sinks, self.window, prefill_chunk=self.prefill_chunk, initial_capacity=1,
                          rerotate=self.rerotate, rebase_at=self.rebase_at)
        other.layers = [layer.compact_copy() for layer in self.layers]
        other.valid = None if self.valid is None else self.valid.clone()
        other.seen_columns, other.tokens_seen, other.evicted = self.seen_columns, self.tokens_seen, self.evicted
        other.frame, other.head, other.sink_delta, other.rebases = self.frame, self.head, self.sink_delta, self.rebases
        other.shift = self.shift
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
    def begin_step(self, new_valid: torch.Tensor, shift: RopeShift) -> tuple[torch.Tensor, torch.Tensor]:
        """Evict to make room for ``new_valid.shape[1]`` tokens; return their (position_ids, 2-D attention mask)."""
        q = new_valid.shape[1]
        if q > self.window:
            raise ValueError(f"a step of {q} tokens is longer than the window ({self.window}); "
                             f"feed it in chunks of at most {self.window} tokens (tenfold.streaming.prefill does)")
        self.shift = shift
        if self.valid is None:
            self.valid = new_valid.new_zeros((new_valid.shape[0], 0))
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
                self.evicted += max(0, int(counts[0]) - budget)
                self._evict(budget)
                counts = self.valid.sum(1)
            positions = counts[:, None] + new_valid.long().cumsum(1) - 1
            positions = positions.masked_fill(~new_valid, 0)
            self.valid = torch.cat([self.valid, new_valid], dim=1)
        self.seen_columns += q
        self.tokens_seen += int(new_valid[0].sum())
        self._pending = q
        return positions, self.valid.long()

    # -- ring mode --------------------------------------------------------------------------
    def _ring_step(self, q: int) -> torch.Tensor:
        """Evict for ``q`` new tokens of a padding-free batch without re-rotating the window; their frame positions."""
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
                for layer in self.layers:
                    layer.slot = sinks + self.head
                self.head = (self.head + 1) % (n - sinks)
                self._slot = True
                kept = n - 1
            else:  # a chunk: back to stream order, then drop the oldest (moved, not rotated)
                for layer in self.layers:
                    layer.unroll(sinks, self.head)
                    layer.shift_window(sinks, budget - sinks, None)
                self.head = 0
                kept = budget
                self.valid = self.valid[:, :kept]
            delta = self.frame - kept  # in-cache position of the first new token is `kept`
            if delta != self.sink_delta:
                for layer in self.layers:
                    layer.place_sinks(sinks, delta, self.shift)
                self.sink_delta = delta
        else:
            kept = n
        batch = self.valid.shape[0]
        positions = torch.arange(self.frame, self.frame + q, device=self.valid.device).expand(batch, q)
        self.frame += q
        if not self._slot:
            self.valid = torch.cat([self.valid, self.valid.new_ones((batch, q))], dim=1)
        return positions

    def _rebase(self, n: int) -> None:
        """Rotate all recent keys back by one offset so that the next token's frame position is ``n``: the in-cache
        position it takes (once per ``rebase_at``)."""
        offset = self.frame - n
        if offset:
            sinks = min(self.num_sinks, self.valid.shape[1])
            for layer in self.layers:
                layer.rotate_recent(sinks, -offset, self.shift)
            self.frame -= offset
            self.rebases += 1

    def _to_cache_positions(self) -> None:
        """Leave ring mode: stream order, in-cache positions, sinks at 0..S-1 (what the padded path expects)."""
        if self.frame is None:
            return
        n = self.valid.shape[1]
        sinks = min(self.num_sinks, n)
        for layer in self.layers:
            layer.unroll(sinks, self.head)
        self.head = 0
        self._rebase(n)
        if self.sink_delta:
            for layer in self.layers:
                layer.place_sinks(sinks, 0, self.shift)
        for layer in self.layers:
            layer.sink_keys = None
        self.frame, self.sink_delta = None, 0

    def _evict(self, budget: int) -> None:
        sinks, keep = min(self.num_sinks, budget), max(0, budget - self.num_sinks)
        if bool(self.valid.all()):
            for layer in self.layers:
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
        for layer in self.layers:
            layer.gather(index, delta, self.shift)
        self.valid = valid

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        held = self.layers[layer_idx].n if layer_idx < len(self.layers) else 0
        added = 0 if self._slot else key_states.shape[-2]
        if self.valid is None or held + added != self.valid.shape[1]:
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
    shift = module._tenfold_rope_shift
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
    positions, full_mask = cache.begin_step(new_valid, shift)
    # Without padding the plain causal mask is right; passing None lets attention skip the mask entirely.
    kwargs["position_ids"] = positions
    kwargs["attention_mask"] = None if bool(cache.valid.all()) else full_mask
    if "past_key_values" in kwargs and "cache" not in kwargs:
        kwargs["cache"] = kwargs.pop("past_key_values")
    return args, kwargs


def enable_streaming(model: nn.Module) -> nn.Module:
    """Let ``model`` run with a :class:`SinkCache` (idempotent). Raises for models without RoPE or with unsupported attention."""
    if getattr(model, "_tenfold_rope_shift", None) is None:
        model._tenfold_rope_shift = check_supported(model)
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
