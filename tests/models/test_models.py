import pytest
import torch

from tenfold.errors import TenfoldError
from tenfold.models import chat_ids, load_embedder, load_lm


@pytest.mark.slow
def test_bundled_model_knows_paris(lm):
    model, tok = lm
    ids = chat_ids(tok, [{"role": "user", "content": "What is the capital of France?"}])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("name", ["no-such-model", "./nowhere", "a/b/c"])
def test_unknown_model_is_a_clear_error(name):
    with pytest.raises(TenfoldError, match="unknown model|not a model"):
        load_lm(name)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(TenfoldError, match="not a model directory"):
        load_lm(str(tmp_path))


@pytest.mark.slow
def test_bundled_embedder_embeds():
    emb = load_embedder()
    vecs = emb.encode(["Elizabeth Bennet", "Mr. Darcy", "a quantum chromodynamics lattice"], normalize_embeddings=True)
    assert vecs.shape == (3, 384)
    assert float(vecs[0] @ vecs[1]) > float(vecs[0] @ vecs[2])
