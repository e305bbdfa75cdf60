import pytest

from tenfold.data import BOOKS, austen, book_key, read_text
from tenfold.errors import TenfoldError


@pytest.mark.slow
def test_six_novels_and_pride_and_prejudice():
    texts = {b: austen(b) for b in BOOKS}
    assert len(texts) == 6 and all(len(t) > 300_000 for t in texts.values())
    pp = austen("Pride and Prejudice")
    assert "It is a truth universally acknowledged" in pp
    assert 120_000 <= len(pp.split()) <= 125_000
    everything = austen()
    assert everything.index("SENSE AND SENSIBILITY") < everything.index("PRIDE AND PREJUDICE") < everything.index("Persuasion")


def test_book_names_normalise():
    assert book_key("Pride and Prejudice") == "prideprejudice"
    assert book_key("sense-and-sensibility") == "sensesensibility"
    with pytest.raises(TenfoldError, match="unknown Austen novel"):
        book_key("Ulysses")


@pytest.mark.parametrize(
    "content,message",
    [(None, "not found"), (b"", "empty"), (b"  \n\t", "empty"), (b"abc\x00def", "binary"), (b"caf\xe9", "not UTF-8")],
)
def test_read_text_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "doc.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TenfoldError, match=message):
        read_text(path)


def test_read_text_reads_utf8(tmp_path):
    (tmp_path / "ok.txt").write_text("Émma Woodhouse, handsome, clever", encoding="utf-8")
    assert read_text(tmp_path / "ok.txt").startswith("Émma")
    with pytest.raises(TenfoldError, match="directory"):
        read_text(tmp_path)


def test_missing_apt_is_a_clear_error(tmp_path, monkeypatch):
    import importlib

    austen_module = importlib.import_module("tenfold.data.austen")
    debian = importlib.import_module("tenfold.data.debian")

    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path))
    monkeypatch.setattr(austen_module, "SYSTEM_COPY", tmp_path / "absent.rdx")
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(TenfoldError, match="apt-get is not available.*--text PATH"):
        austen_module.austen("emma")
    assert not (tmp_path / "data" / "austen" / "emma.txt").exists()
