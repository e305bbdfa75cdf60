"""Log-probabilities in OpenAI's two response shapes: chat ``logprobs.content`` and completions ``logprobs``.

Chat (``logprobs: true, top_logprobs: k``): ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}``.
Completions (``logprobs: k``, optionally ``echo``): ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``
where ``top_logprobs`` maps token text to log-probability per position (None for the first prompt token).
Log-probabilities are natural logs under the model's raw distribution (before temperature and top-p), as in
vLLM's default ``raw_logprobs`` mode.
"""
from __future__ import annotations

from functools import lru_cache

from tenfold.serve.engine import TokenLogprob


def _byte_level_alphabet() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: each byte 0..255 as the printable character that stands for it in token
    pieces (printable Latin-1 bytes stand for themselves, the rest are moved to code points from 256 on)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class TokenText:
    """Each token id's own bytes and text (byte-level BPE pieces may be partial UTF-8 characters)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        byte_level = type(getattr(backend, "decoder", None)).__name__ == "ByteLevel"
        self._byte_of = {c: b for b, c in _byte_level_alphabet().items()} if byte_level else {}
        self.bytes = lru_cache(maxsize=65536)(self._bytes)

    def _bytes(self, token_id: int) -> bytes:
        piece = self.tok.convert_ids_to_tokens(int(token_id))
        if isinstance(piece, str) and piece and self._byte_of and all(c in self._byte_of for c in piece):
            return bytes(self._byte_of[c] for c in piece)
        return self.tok.decode([int(token_id)]).encode("utf-8")

    def text(self, token_id: int) -> str:
        """The token's text; bytes that are not whole UTF-8 characters appear as ``bytes:\\xNN`` (as OpenAI does)."""
        raw = self.bytes(token_id)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def chat_content(entries: list[TokenLogprob], texts: TokenText) -> list[dict]:
    """Chat ``logprobs.content`` items for generated tokens."""
    def item(token, lp):
        return {"token": texts.text(token), "logprob": lp, "bytes": list(texts.bytes(token))}

    return [{**item(token, lp), "top_logprobs": [item(t, v) for t, v in alts]} for token, lp, alts in entries]


def completion_logprobs(entries: list[TokenLogprob], texts: TokenText, offset: int = 0) -> dict:
    """Completions ``logprobs`` for prompt and/or generated tokens; ``offset``: characters before the first token."""
    tokens, token_lps, tops, offsets = [], [], [], []
    for token, lp, alts in entries:
        text = texts.text(token)
        tokens.append(text)
        token_lps.append(lp)
        top = None
        if lp is not None:
            top = {}
            for t, v in alts:
                top.setdefault(texts.text(t), v)
            top.setdefault(text, lp)  # OpenAI: the k most likely tokens, as well as the chosen one
        tops.append(top)
        offsets.append(offset)
        offset += len(texts.bytes(token).decode("utf-8", errors="replace"))
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}
