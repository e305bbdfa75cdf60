"""Issue 26: chunks the embedder reads whole in any script, indexes bound to their documents, BM25 and hybrid."""
import json
import warnings

import numpy as np
import pytest

from tenfold.cli import main
from tenfold.retrieval import Retriever, TruncationWarning
from tenfold.retrieval.retriever import coverage

FACT = "Everyone agrees that the lighthouse keeper on the northern island is now called Bartholomew Quince."
QUESTION = "What is the lighthouse keeper on the northern island called?"


@pytest.fixture(scope="module")
def embedder():
    from tenfold.retrieval import Embedder

    return Embedder()


def _blocks(fact_at: str) -> str:
    """Six 300-word blocks from the six Austen novels; block 3 holds FACT as its first or last 15 words."""
    from tenfold.data import BOOKS, austen

    blocks = [austen(book).split()[5000 : 5300] for book in BOOKS]
    fact = FACT.split()
    assert len(fact) == 15
    blocks[2] = fact + blocks[2][:285] if fact_at == "start" else blocks[2][:285] + fact
    return "\n\n".join(" ".join(b) for b in blocks)


@pytest.mark.slow
@pytest.mark.parametrize("fact_at", ["start", "end"])
def test_a_fact_at_either_end_of_a_300_word_block_ranks_first(embedder, fact_at):
    retriever = Retriever(embedder)
    retriever.add_document(_blocks(fact_at), source=f"fact at the {fact_at}")
    assert all(m["tokens"] <= embedder.max_tokens for m in retriever.index.meta)
    assert retriever.sources[0]["share_embedded"] == 1.0 and len(retriever) > 6  # 300 words > one chunk
    assert "Bartholomew Quince" in retriever.search(QUESTION, 1)[0].text


@pytest.mark.slow
def test_text_longer_than_the_embedder_reads_is_counted_and_warned(embedder):
    block = _blocks("end").split("\n\n")[2]  # 300 words: more than 254 word pieces
    retriever = Retriever(embedder)
    before = dict(embedder.coverage)
    with pytest.warns(TruncationWarning, match=r"1 of 2 texts are longer than the 256 tokens .*: \d+ of their"):
        retriever.add_texts([block, "A short line."])
    cut = embedder.coverage["tokens_beyond_limit"] - before["tokens_beyond_limit"]
    assert cut == embedder.count_tokens(block) - embedder.max_tokens > 0


def _japanese(n_sentences: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    subjects = ["私の友人", "町の図書館", "古い寺", "小さな店", "駅前の公園", "学校の先生", "隣の家族", "川沿いの道", "山の上の村"]
    predicates = ["は朝早くから賑やかです。", "について新聞に記事が出ました。", "では毎週土曜日に市場が開かれます。",
                  "の近くで桜が咲き始めました。", "は昔から地元の人々に愛されています。", "を訪れる観光客が増えています。",
                  "で祭りの準備が進んでいます。", "には静かな時間が流れています。"]
    return [str(rng.choice(subjects)) + str(rng.choice(predicates)) for _ in range(n_sentences)]


@pytest.mark.slow
@pytest.mark.parametrize("language", ["chinese", "japanese"])
def test_unspaced_text_with_a_needle_in_the_middle(embedder, language):
    if language == "chinese":
        from tenfold.data.chinese import entries

        body = [e for e in entries("chinese") if not e.isascii()][200:260]
        needle, question = "北方小岛上的灯塔看守人名叫巴塞洛缪。", "北方小岛上的灯塔看守人叫什么名字？"
    else:
        body = _japanese(300, seed=0)
        needle, question = "北の島の灯台守はクインスという名前です。", "北の島の灯台守の名前は何ですか？"
    text = "".join(body[: len(body) // 2] + [needle] + body[len(body) // 2 :])
    retriever = Retriever(embedder, method="bm25")  # MiniLM is an English model: BM25 reads any script
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)  # nothing may be cut
        n = retriever.add_document(text, source=language)
    tokens = [m["tokens"] for m in retriever.index.meta]
    record = retriever.sources[0]
    assert n >= 5 and max(tokens) <= embedder.max_tokens and record["chunks_over_limit"] == 0
    # nothing is cut; what the embedder does not read is only what its vocabulary lacks ([UNK]), and it says so
    assert record["share_embedded"] == pytest.approx(1 - record["unknown_chars"] / record["nonspace_chars"])
    assert sum(embedder.count_tokens(t) for t in retriever.index.texts) >= embedder.count_tokens(text) - n
    assert needle in retriever.search(question, 1)[0].text
    assert needle in retriever.search(question, 1, "hybrid")[0].text


def _thai(n_sentences: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    subjects = ["ชาวประมงในหมู่บ้าน", "นักเรียนหลายคน", "แม่ค้าที่ตลาดเช้า", "คุณยายของฉัน", "ครูประจำชั้น"]
    predicates = ["เดินไปที่ท่าเรือทุกเช้า", "ชอบอ่านหนังสือเก่า", "ขายผลไม้สดริมถนน", "ปลูกดอกไม้ในสวนหลังบ้าน",
                  "เล่าเรื่องฝนตกหนักเมื่อวาน"]
    return "".join(str(rng.choice(subjects)) + str(rng.choice(predicates)) + " " for _ in range(n_sentences))


@pytest.mark.slow
def test_text_the_embedder_cannot_read_is_counted_and_warned(embedder, tmp_path, capsys):
    """Thai in MiniLM's English WordPiece vocabulary is [UNK]: such chunks embed as nothing, and say so."""
    from tenfold.retrieval import UnknownTextWarning

    needle = "คนเฝ้าประภาคารบนเกาะทางเหนือชื่อบาร์โธโลมิว "
    body = _thai(200, seed=1)
    middle = body.index(" ", len(body) // 2) + 1  # between two sentences
    text = body[:middle] + needle + body[middle:] + " The harbour opens at dawn."
    assert embedder.unknown_chars("hello world") == 0 and embedder.unknown_chars("สวัสดี") == 6
    retriever = Retriever(embedder)
    with pytest.warns(UnknownTextWarning, match=r"texts hold characters .* not know: \d+ of their \d+ non-space"):
        retriever.add_document(text, source="thai")
    record = retriever.sources[0]
    assert record["unknown_chars"] > 0.9 * record["nonspace_chars"] and record["share_embedded"] < 0.1, record
    assert embedder.coverage["unknown_chars"] >= record["unknown_chars"] and embedder.share_embedded() < 1.0
    assert "ประภาคารบนเกาะ" in retriever.search("คนเฝ้าประภาคารบนเกาะทางเหนือชื่ออะไร", 1, "bm25")[0].text
    # the CLI reports the share honestly and points to BM25
    doc = tmp_path / "thai.txt"
    doc.write_text(text, encoding="utf-8")
    rc, out, err = _run(capsys, "rag", "index", str(doc), "--out", str(tmp_path / "idx"))
    share = float(out.rsplit("; ", 1)[1].split("%")[0])
    assert rc == 0 and share < 10, out
    assert "unknown to" in err and "--retriever bm25" in err, err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["chinese", "no-space ascii"])
def test_a_50000_character_line_without_whitespace(embedder, kind):
    if kind == "chinese":
        from tenfold.data.chinese import entries

        line = "".join("".join(e.split()) for e in entries("chinese") if not e.isascii())[:50_000]
    else:
        rng = np.random.default_rng(0)
        line = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789+/="), 50_000))
    assert len(line) == 50_000 and not any(ch.isspace() for ch in line)
    chunker = embedder.chunker()
    chunks = chunker.split(line)
    assert "".join(c.text for c in chunks) == line  # nothing lost, nothing repeated
    assert len(chunks) >= 16  # at most 3,000 characters each, and 254 tokens
    assert all(c.tokens <= embedder.max_tokens and len(c.text) <= chunker.max_chars for c in chunks)
    assert coverage(line, chunks, embedder.max_tokens)["share_embedded"] == 1.0


def _parcels():
    from tenfold.data import austen

    rng = np.random.default_rng(0)
    words = austen("persuasion").split()[:6000]
    codes = ["".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ"), 2)) + str(rng.integers(1000, 9999)) for _ in range(8)]
    for j, code in enumerate(codes):
        at = 400 + j * 700
        words[at:at] = f"The parcel was marked {code}.".split()
    return " ".join(words), codes


@pytest.mark.slow
def test_bm25_finds_an_exact_rare_token_dense_retrieval_misses(embedder):
    doc, codes = _parcels()
    retriever = Retriever(embedder)
    retriever.add_document(doc)
    found = {m: [c in retriever.search(c, 1, m)[0].text for c in codes] for m in ("dense", "bm25", "hybrid")}
    assert all(found["bm25"]) and all(found["hybrid"]) and not all(found["dense"]), found


def _run(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.slow
def test_rag_cli_fingerprints_append_and_retriever_flag(tmp_path, capsys, monkeypatch, lm):
    import tenfold.models

    monkeypatch.setattr(tenfold.models, "load_lm", lambda name=None, **kw: lm)  # the real model, loaded once per session
    doc_a, codes = _parcels()
    a, b, idx = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "idx"
    a.write_text(doc_a, encoding="utf-8")
    b.write_text(_blocks("end"), encoding="utf-8")
    rc, out, err = _run(capsys, "rag", "index", str(a), "--out", str(idx))
    assert rc == 0 and "100.0% of the text embedded" in out and "254 tokens" in out, (out, err)

    # an index refuses a document it was not built from: one line, exit 1, before any model is loaded
    rc, out, err = _run(capsys, "rag", "ask", "--doc", str(b), "--index", str(idx), QUESTION)
    assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "is not a document" in err and "a.txt" in err and "--append" in err

    # without --append an existing index is kept: one line, exit 1; --append and --force together are refused
    rc, out, err = _run(capsys, "rag", "index", str(b), "--out", str(idx))
    assert rc == 1 and "already holds an index" in err and "--force" in err and len(err.strip().splitlines()) == 1
    rc, out, err = _run(capsys, "rag", "index", str(b), "--out", str(idx), "--append", "--force")
    assert rc == 1 and "give one of them" in err
    assert [s["source"] for s in Retriever.load(idx).sources] == [str(a)]
    rc, out, err = _run(capsys, "rag", "index", str(b), "--out", str(idx), "--append", "--kind", "hnsw")
    assert rc == 1 and "is a flat index, not hnsw" in err and len(err.strip().splitlines()) == 1  # not ignored

    # --append adds b once; the second time is a no-op
    rc, out, _ = _run(capsys, "rag", "index", str(b), "--out", str(idx), "--append", "--json")
    first = json.loads(out)
    assert rc == 0 and first["added_chunks"] > 0 and first["source"]["share_embedded"] == 1.0
    rc, out, _ = _run(capsys, "rag", "index", str(b), "--out", str(idx), "--append", "--json")
    second = json.loads(out)
    assert rc == 0 and second["added_chunks"] == 0 and second["index_chunks"] == first["index_chunks"]
    info = json.loads((idx / "chunks.json").read_text(encoding="utf-8"))["info"]
    assert [s["source"] for s in info["sources"]] == [str(a), str(b)] and info["count"] == first["index_chunks"]
    assert info["sources"][1]["sha256"] == first["source"]["sha256"] and info["sources"][1]["chunker"]["max_tokens"] == 254

    # --retriever changes which chunk answers; --index alone answers from the index's own texts
    missed = [c for c in codes if c not in Retriever.load(idx).search(c, 1)[0].text]
    assert missed, "dense retrieval found every code: the flag cannot be told apart"
    chunks = {}
    for method in ("dense", "bm25"):
        rc, out, err = _run(capsys, "rag", "ask", "--index", str(idx), missed[0], "--retriever", method, "--k", "1",
                            "--window", "512", "--json")
        assert rc == 0, err
        chunks[method] = json.loads(out)["chunks"][0]["text"]
    assert missed[0] in chunks["bm25"] and missed[0] not in chunks["dense"]
    rc, out, err = _run(capsys, "rag", "ask", "--doc", str(b), "--index", str(idx), QUESTION, "--k", "1",
                        "--window", "1024", "--json")
    assert rc == 0 and "Bartholomew Quince" in json.loads(out)["chunks"][0]["text"], err

    # --force replaces the index: only b remains
    rc, out, err = _run(capsys, "rag", "index", str(b), "--out", str(idx), "--force", "--json")
    assert rc == 0 and [s["source"] for s in Retriever.load(idx).sources] == [str(b)], err
    assert json.loads(out)["index_chunks"] == first["added_chunks"]


@pytest.mark.slow
def test_rag_cli_max_seq_length_and_unbound_indexes(tmp_path, capsys):
    from tenfold.retrieval import VectorIndex

    doc = tmp_path / "doc.txt"
    doc.write_text(_blocks("start"), encoding="utf-8")
    sizes = {}
    for length in ("256", "128"):
        rc, out, err = _run(capsys, "rag", "index", str(doc), "--out", str(tmp_path / length), "--max-seq-length",
                            length, "--json")
        got = json.loads(out)
        assert rc == 0 and got["source"]["embedder"]["max_seq_length"] == int(length), err
        assert got["source"]["chunker"]["max_tokens"] == int(length) - 2 and got["source"]["share_embedded"] == 1.0
        sizes[length] = got["added_chunks"]
    assert sizes["128"] > sizes["256"]
    loaded = Retriever.load(tmp_path / "128")  # the index's embedder comes back as it was built
    assert loaded.embedder.max_seq_length == 128 and loaded.index.hnsw_m == 32
    rc, _, err = _run(capsys, "rag", "index", str(doc), "--out", str(tmp_path / "128"), "--append",
                      "--max-seq-length", "256")
    assert rc == 1 and "was built with max_seq_length 128" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, "rag", "index", str(doc), "--out", str(tmp_path / "x"), "--max-seq-length", "1000")
    assert rc == 1 and "beyond the embedder's 512 positions" in err and not (tmp_path / "x").exists()
    rc, _, err = _run(capsys, "rag", "ask", "what?")
    assert rc == 1 and "--doc" in err and len(err.strip().splitlines()) == 1
    # an index written before fingerprints existed cannot vouch for a document
    old = VectorIndex(384)
    old.add(np.eye(384, dtype=np.float32)[:2], ["one", "two"])
    old.save(tmp_path / "old", {"embedder": "all-minilm-l6-v2"})
    rc, _, err = _run(capsys, "rag", "ask", "--doc", str(doc), "--index", str(tmp_path / "old"), "what?")
    assert rc == 1 and "records no source documents" in err and len(err.strip().splitlines()) == 1
