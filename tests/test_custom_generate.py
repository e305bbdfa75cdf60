"""tenfold's sink cache as a transformers ``custom_generate`` repository (hub/sink-cache), run from the local path the
way transformers documents it: ``model.generate(..., custom_generate=FOLDER, trust_remote_code=True, num_sinks=..,
window=..)``."""
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "hub" / "sink-cache"


def _export():
    spec = importlib.util.spec_from_file_location("export_custom_generate", ROOT / "scripts" / "export_custom_generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_folder_is_the_generated_copy_of_the_source():
    files = _export().render()
    on_disk = {str(p.relative_to(FOLDER)) for p in FOLDER.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk == set(files)
    for rel, text in files.items():
        assert (FOLDER / rel).read_text(encoding="utf-8") == text, \
            f"hub/sink-cache/{rel} is out of date: run python scripts/export_custom_generate.py"
    for rel in files:  # the repository stands alone: no tenfold import anywhere in its code
        if rel.endswith(".py"):
            lines = (FOLDER / rel).read_text().splitlines()
            assert not any(line.lstrip().startswith(("from tenfold", "import tenfold")) for line in lines), rel


def _generate(model, ids, **kw):
    return model.generate(ids, custom_generate=str(FOLDER), trust_remote_code=True, do_sample=False,
                          return_dict_in_generate=True, **kw)


def _reference(model, ids, sinks, window, **kw):
    from tenfold.streaming import SinkCache, enable_streaming

    enable_streaming(model)
    return model.generate(ids, cache=SinkCache(sinks, window), do_sample=False, **kw)


def test_a_tiny_random_llama_streams_far_past_its_positions():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 128, (1, 50))  # a prompt longer than the window, then 100 tokens: 5x the positions
    out = _generate(model, ids, num_sinks=2, window=16, max_new_tokens=100, min_new_tokens=100, pad_token_id=0)
    assert out.sequences.shape == (1, 150)
    cache = out.cache
    assert type(cache).__module__.startswith("transformers_modules.")  # the folder's copy, not tenfold's class
    assert cache.fill() <= 18 and cache.tokens_seen == 149 and cache.evicted == 149 - cache.fill()  # (1,) per row
    ref = _reference(model, ids, 2, 16, max_new_tokens=100, min_new_tokens=100, pad_token_id=0)
    assert torch.equal(out.sequences, ref)  # token for token what tenfold's own SinkCache gives
    with pytest.raises(ValueError, match="makes its own cache"):
        _generate(model, ids, num_sinks=2, window=16, max_new_tokens=2, cache=ref)
    # settings that would change the result are refused, never silently replaced
    with pytest.raises(ValueError, match="prefill_chunk must be between 1 and window"):
        _generate(model, ids, num_sinks=2, window=16, max_new_tokens=2, prefill_chunk=0, pad_token_id=0)
    with pytest.raises(ValueError, match="use_cache=False"):
        _generate(model, ids, num_sinks=2, window=16, max_new_tokens=2, use_cache=False, pad_token_id=0)
    from transformers import GenerationConfig

    with pytest.raises(ValueError, match="beam search"):
        _generate(model, ids, num_sinks=2, window=16, generation_config=GenerationConfig(num_beams=2, max_new_tokens=2),
                  pad_token_id=0)


@pytest.mark.parametrize("family", ["gemma3", "gpt_oss"])
def test_hybrid_models_stream_through_the_folder(family):
    """Issue 37: the folder streams hybrid sliding-window models (and gpt-oss's learned sinks) as tenfold does."""
    from streaming.conftest import SLIDING_WINDOW, tiny

    model = tiny(family)
    ids = torch.randint(1, 128, (1, 30))
    out = _generate(model, ids, num_sinks=2, window=10, max_new_tokens=40, min_new_tokens=40, pad_token_id=0)
    cache = out.cache
    assert out.sequences.shape == (1, 70) and cache.fill().tolist() == [12]
    assert all(layer.n == SLIDING_WINDOW for layer in cache.sliding_layers) and cache.sliding_layers
    ref = _reference(model, ids, 2, 10, max_new_tokens=40, min_new_tokens=40, pad_token_id=0)
    assert torch.equal(out.sequences, ref)


@pytest.mark.slow
def test_the_bundled_model_generates_past_the_window(lm):
    from tenfold.models import chat_ids

    model, tok = lm
    story = " ".join(f"Day {i}: the ship sailed north and the crew counted {i} gulls." for i in range(12))
    ids = chat_ids(tok, [{"role": "user", "content": f"{story}\nWhat happened next?"}])
    assert ids.shape[1] > 68  # the prompt alone overflows the 4 + 64 cache
    out = _generate(model, ids, num_sinks=4, window=64, max_new_tokens=40, min_new_tokens=40,
                    pad_token_id=tok.pad_token_id)
    assert out.sequences.shape[1] == ids.shape[1] + 40 and out.cache.fill() <= 68
    ref = _reference(model, ids, 4, 64, max_new_tokens=40, min_new_tokens=40, pad_token_id=tok.pad_token_id)
    assert torch.equal(out.sequences, ref)
    assert tok.decode(out.sequences[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_the_publishing_commands_exist_in_the_installed_hub_cli():
    """Each line of the README's 'Publishing it on the Hub' block is a command of the installed ``hf`` (huggingface_hub
    >= 1 has no ``huggingface-cli``): ``hf <command words> --help`` answers for every one."""
    import re
    import subprocess
    import sys

    readme = (FOLDER / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Publishing it on the Hub\s+```bash\n(.*?)```", readme, re.S).group(1)
    lines = [line.split("#")[0].split() for line in block.splitlines() if line.strip()]
    assert lines and all(words[0] == "hf" for words in lines), block
    hf = Path(sys.executable).with_name("hf")
    for words in lines:
        command = [w for w in words[1:4] if re.fullmatch(r"[a-z]+", w)][:2]  # 'auth login', 'repos create', 'upload'
        res = subprocess.run([str(hf), *command, "--help"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, (words, res.stderr[-500:])


def test_a_sliding_window_shorter_than_the_cache_is_refused():
    """Mistral's model-wide ``sliding_window`` masks all but its last tokens: shorter than the cache, the sinks would
    be cached but never seen (it was accepted). At least as long as the cache, it masks nothing and streams."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, sliding_window=8, max_position_embeddings=64)
    ids = torch.randint(1, 128, (1, 12))
    with pytest.raises(ValueError, match="sliding_window"):
        _generate(MistralForCausalLM(cfg).eval(), ids, num_sinks=2, window=16, max_new_tokens=4, pad_token_id=0)
    cfg.sliding_window = 18  # = num_sinks + window
    model = MistralForCausalLM(cfg).eval()
    out = _generate(model, ids, num_sinks=2, window=16, max_new_tokens=30, min_new_tokens=30, pad_token_id=0)
    assert out.sequences.shape == (1, 42) and out.cache.fill() <= 18
    assert torch.equal(out.sequences, _reference(model, ids, 2, 16, max_new_tokens=30, min_new_tokens=30, pad_token_id=0))
