"""``/v1/embeddings`` with the bundled MiniLM, and vLLM's ``/tokenize`` / ``/detokenize`` (issue 38 item 3), through
the openai SDK, LangChain's ``OpenAIEmbeddings`` and raw HTTP."""
import httpx
import numpy as np
import openai
import pytest

pytestmark = pytest.mark.slow

MODEL, EMBEDDER = "smollm2-135m-instruct", "all-minilm-l6-v2"
TEXTS = ["The cat sat on the mat.", "A feline rested on a rug.", "Stock markets fell sharply today."]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0, timeout=120)


def test_embeddings_are_the_bundled_embedders_own_vectors(client, server):
    from tenfold.retrieval.embedder import Embedder

    assert EMBEDDER in [m.id for m in client.models.list().data]
    out = client.embeddings.create(model=EMBEDDER, input=TEXTS)  # the SDK asks for base64 and decodes it
    got = np.array([d.embedding for d in sorted(out.data, key=lambda d: d.index)])
    want = Embedder().encode(TEXTS)
    assert got.shape == (3, 384) and np.allclose(got, want, atol=1e-5)
    assert got[0] @ got[1] > got[0] @ got[2] + 0.3  # paraphrases closer than unrelated text
    assert out.usage.prompt_tokens == out.usage.total_tokens > len(" ".join(TEXTS).split())
    floats = httpx.post(server + "/v1/embeddings", json={"model": EMBEDDER, "input": TEXTS[0],
                                                          "encoding_format": "float"}, timeout=60).json()
    assert np.allclose(floats["data"][0]["embedding"], want[0], atol=1e-5)


def test_langchain_openai_embeddings(server):
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model=EMBEDDER, base_url=server + "/v1", api_key="none", max_retries=0,
                           check_embedding_ctx_length=False)  # text, not tiktoken ids
    docs = emb.embed_documents(TEXTS)
    query = emb.embed_query(TEXTS[0])
    assert len(docs) == 3 and np.allclose(query, docs[0], atol=1e-6)


@pytest.mark.parametrize("body, param", [
    ({"input": [[1, 2, 3]]}, "input"), ({"input": [5, 6]}, "input"), ({"input": "word " * 400}, "input"),
    ({"input": "x", "dimensions": 64}, "dimensions"), ({"input": ""}, "input"), ({"input": []}, "input"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"), ({"input": "x", "model": MODEL}, "model"),
    ({"input": "x", "truncate_prompt_tokens": 5}, "truncate_prompt_tokens")])
def test_embedding_requests_it_cannot_serve_are_4xx(server, body, param):
    r = httpx.post(server + "/v1/embeddings", json={"model": EMBEDDER, **body}, timeout=60)
    assert r.status_code in (400, 404), r.text
    err = r.json()["error"]
    assert param in (err["param"] or "") or param in err["message"], err
    if body["input"] == [[1, 2, 3]]:
        assert "check_embedding_ctx_length" in err["message"]  # what a LangChain user must change


def test_tokenize_and_detokenize_in_vllms_shapes(client, server):
    text = "Hello there, tokenizer!"
    tok = httpx.post(server + "/tokenize", json={"model": MODEL, "prompt": text, "return_token_strs": True}).json()
    assert tok["count"] == len(tok["tokens"]) == len(tok["token_strs"]) and tok["max_model_len"] == 2000
    assert httpx.post(server + "/detokenize", json={"tokens": tok["tokens"]}).json()["prompt"] == text
    messages = [{"role": "user", "content": "What is two plus two?"}]
    chat = httpx.post(server + "/tokenize", json={"messages": messages}).json()
    used = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1).usage.prompt_tokens
    assert chat["count"] == used  # the same prompt the chat endpoint feeds
    bare = httpx.post(server + "/tokenize", json={"messages": messages, "add_generation_prompt": False}).json()
    assert bare["count"] < chat["count"]
    for path, body in (("/tokenize", {"prompt": "x", "messages": messages}), ("/tokenize", {}),
                       ("/detokenize", {"tokens": [10**9]}), ("/detokenize", {"tokens": [True]}),
                       ("/tokenize", {"prompt": "x", "model": "gpt-17"}), ("/tokenize", {"prompt": "x", "bogus": 1})):
        r = httpx.post(server + path, json=body)
        assert 400 <= r.status_code < 500 and r.json()["error"]["message"], (path, body, r.text)
