"""The general pretraining corpus and tokenizer for the from-scratch pause experiment (Goyal et al. 2023, Sec. 3.1).

The paper pretrains on C4. Here: Jane Austen's novels (real English prose, from Debian's janeaustenr) mixed
with generated "generic" text in which arithmetic, lists and counting occur in running sentences, so that the
downstream tasks' skills have something to build on. A byte-level BPE tokenizer (the ``tokenizers`` library,
digits split one per token) is trained on that corpus; ``<pad>`` and ``<eos>`` are its special tokens and
``<pause>`` is added later with :func:`tenfold.pause.add_pause_token`, exactly as for any pretrained model.
"""
from __future__ import annotations

import random
import re

from tenfold.errors import TenfoldError

PAD, EOS = "<pad>", "<eos>"


def generic_lines(n: int, seed: int = 0) -> list[str]:
    """Sentences with arithmetic, lists and counts in them."""
    from tenfold.pause.tasks import NAMES, THINGS

    rng = random.Random(f"generic:{seed}")
    out = []
    for _ in range(n):
        kind = rng.randrange(6)
        if kind == 0:
            a, b = rng.randrange(1000), rng.randrange(1000)
            out.append(f"{a}+{b}={a + b}")
        elif kind == 1:
            a, b = rng.randrange(100), rng.randrange(100)
            out.append(f"If you add {a} and {b} you get {a + b}.")
        elif kind == 2:
            xs = [rng.randrange(10) for _ in range(rng.randint(3, 7))]
            out.append(f"The numbers {' '.join(map(str, xs))} in order are {' '.join(map(str, sorted(xs)))}.")
        elif kind == 3:
            s = "".join(rng.choice("abcd") for _ in range(rng.randint(5, 14)))
            c = rng.choice("abcd")
            out.append(f"In {s} the letter {c} occurs {s.count(c)} times.")
        elif kind == 4:
            n_, t, k = rng.choice(NAMES), rng.choice(THINGS), rng.randrange(2, 20)
            out.append(f"{n_} had {k} {t} and gave {min(k, 2)} away, so {n_} kept {k - min(k, 2)}.")
        else:
            xs = rng.sample(range(1, 50), rng.randint(3, 6))
            out.append(f"Of {', '.join(map(str, xs))} the largest is {max(xs)} and the smallest is {min(xs)}.")
    return out


def pretraining_text(generic_fraction: float = 0.3, seed: int = 0, max_chars: int | None = None) -> str:
    """Austen's paragraphs interleaved with generic lines (about ``generic_fraction`` of the characters)."""
    from tenfold.data.austen import austen

    if not 0 <= generic_fraction < 1:
        raise TenfoldError(f"generic_fraction must be in [0, 1) (got {generic_fraction})")
    paragraphs = re.split(r"\n\s*\n", austen())
    prose = [" ".join(p.split()) for p in paragraphs if p.strip()]  # paragraphs, wrapped lines joined
    if max_chars:
        kept, size = [], 0
        for ln in prose:
            kept.append(ln)
            size += len(ln) + 1
            if size >= max_chars * (1 - generic_fraction):
                break
        prose = kept
    want = sum(len(p) + 1 for p in prose) * generic_fraction / (1 - generic_fraction)
    per_line = sum(len(g) + 1 for g in generic_lines(200, seed)) / 200
    lines = prose + generic_lines(int(want / per_line), seed)
    random.Random(f"mix:{seed}").shuffle(lines)  # paragraphs stay whole; their order is shuffled
    return "\n".join(lines)


MIN_VOCAB = 256 + 2  # the byte alphabet and <pad>, <eos>: a smaller BPE vocabulary cannot exist


def check_vocab_size(vocab_size: int) -> None:
    """Refuse a vocabulary smaller than :data:`MIN_VOCAB` (the BPE trainer would silently make it that large)."""
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise TenfoldError(f"--vocab-size must be at least {MIN_VOCAB} (the 256 bytes, {PAD} and {EOS}; "
                           f"got {vocab_size})")


def train_tokenizer(text: str, vocab_size: int = 1024):
    """A byte-level BPE ``PreTrainedTokenizerFast`` (digits one per token) trained on ``text``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    check_vocab_size(vocab_size)
    if not text.strip():
        raise TenfoldError("cannot train a tokenizer on empty text")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    chunks = text.split("\n")
    tok.train_from_iterator(chunks, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS)
