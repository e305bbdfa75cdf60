"""The disk cache of int4 levels: a second load reads them (same model, bit for bit), a damaged or stale entry is
never trusted, and the cache can be turned off."""
import os

import pytest
import torch

from tenfold.models.int4_cache import FORMAT, cache_dir, pack_nibbles, unpack_nibbles
from tenfold.models.quantize import int4_available

pytestmark = pytest.mark.skipif(not int4_available(), reason="this PyTorch build has no CPU int4 kernel")


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    """A tiny random Llama checkpoint, and an empty TENFOLD_HOME for the cache."""
    from transformers import LlamaConfig, LlamaForCausalLM

    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TENFOLD_INT4_CACHE", raising=False)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _logits(model) -> torch.Tensor:
    ids = torch.arange(1, 17)[None]
    with torch.no_grad():
        return model(ids).logits


def _entries() -> list:
    return sorted(cache_dir().glob("*.safetensors")) if cache_dir().exists() else []


def test_nibble_packing_round_trips_every_level():
    q = torch.randint(0, 16, (48, 96), dtype=torch.int32)
    q[0] = torch.arange(96) % 16
    packed = pack_nibbles(q)
    assert packed.dtype == torch.uint8 and packed.shape == (48, 48)
    assert torch.equal(unpack_nibbles(packed), q)


def test_second_load_reads_the_cache_and_gives_the_same_model(checkpoint):
    from tenfold.models.int4_load import load_int4

    first = _logits(load_int4(checkpoint))
    (entry,) = _entries()
    stamp = entry.stat().st_mtime_ns
    second = _logits(load_int4(checkpoint))
    assert torch.equal(first, second)
    assert [e.name for e in _entries()] == [entry.name] and entry.stat().st_mtime_ns == stamp  # read, not rewritten


def test_the_cache_is_what_the_second_load_uses(checkpoint):
    """Change the cached scales: the second model computes differently, so its layers came from the file."""
    from safetensors.torch import load_file, save_file

    from tenfold.models.int4_load import load_int4

    first = _logits(load_int4(checkpoint))
    (entry,) = _entries()
    tensors = load_file(str(entry))
    from safetensors import safe_open

    with safe_open(str(entry), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == str(FORMAT)
    for name in tensors:
        if name.endswith("scale_zeros"):
            tensors[name] = tensors[name] * 2
    save_file(tensors, str(entry), metadata=metadata)
    assert not torch.allclose(first, _logits(load_int4(checkpoint)))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing layer"])
def test_a_damaged_entry_is_quantised_over(checkpoint, damage):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from tenfold.models.int4_load import load_int4

    first = _logits(load_int4(checkpoint))
    (entry,) = _entries()
    if damage == "truncated":
        with open(entry, "r+b") as f:
            f.truncate(entry.stat().st_size // 2)
    elif damage == "garbage":
        entry.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    else:
        with safe_open(str(entry), framework="pt") as f:
            metadata = f.metadata()
        tensors = load_file(str(entry))
        tensors.pop(next(n for n in tensors if n.endswith(".q")))
        save_file(tensors, str(entry), metadata=metadata)
    assert torch.equal(first, _logits(load_int4(checkpoint)))
    assert torch.equal(first, _logits(load_int4(checkpoint)))  # and the entry is whole again
    (again,) = _entries()
    assert again.name == entry.name
    with safe_open(str(again), framework="pt") as f:
        assert len(list(f.keys())) == 2 * 2 * 7  # 2 layers x 7 linear layers x (levels, scales)


def test_a_changed_checkpoint_is_quantised_afresh_and_its_old_entry_pruned(checkpoint):
    from tenfold.models.int4_load import load_int4

    load_int4(checkpoint)
    (old,) = _entries()
    weights = checkpoint / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    load_int4(checkpoint)
    (new,) = _entries()
    assert new.name != old.name


def test_cache_off(checkpoint, monkeypatch):
    from tenfold.models.int4_load import load_int4

    monkeypatch.setenv("TENFOLD_INT4_CACHE", "0")
    load_int4(checkpoint)
    assert _entries() == []
