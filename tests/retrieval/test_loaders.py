"""Every supported format loads with its structure; every kind of bad file is named with its reason."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from helpline.platform.errors import DataError
from helpline.retrieval.ingest import loaders
from helpline.retrieval.ingest.chunking import chunk_document
from helpline.retrieval.ingest.loaders import load_directory, load_file, load_files


def text_pdf(text: str) -> bytes:
    """A minimal one-page PDF whose page shows ``text`` (built by hand: no PDF writer needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def encrypted_pdf() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf("Secret refund policy"))))
    writer.encrypt(user_password="s3cret", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Gift cards", level=0)
    document.add_heading("Balance", level=1)
    document.add_paragraph("Check the balance of a gift card in your account.")
    document.add_heading("Expiry", level=2)
    document.add_paragraph("Gift cards expire after three years.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def test_markdown_front_matter_sets_title_access_and_metadata(tmp_path: Path) -> None:
    path = write(tmp_path, "staff/fraud.md", "---\ntitle: Fraud checks\naccess: internal\nowner: ops\n---\n# X\nBody.")
    d = load_file(path, root=tmp_path)
    assert (d.doc_id, d.title, d.access, d.metadata) == ("staff/fraud", "Fraud checks", "internal", {"owner": "ops"})


def test_html_keeps_headings_as_sections_and_drops_scripts(tmp_path: Path) -> None:
    html = (
        "<html><head><title>Returns</title><meta name='access' content='internal'><script>var x=1;</script></head>"
        "<body><nav>Home | Shop</nav><h1>Returns</h1><p>Intro text.</p><h2>Window</h2>"
        "<p>You have <b>30 days</b>.</p><ul><li>Keep the receipt</li></ul></body></html>"
    )
    d = load_file(write(tmp_path, "returns.html", html))
    assert d.title == "Returns" and d.access == "internal"
    assert "var x" not in d.text and "Home | Shop" not in d.text
    chunks = chunk_document(d, chunk_size=500, chunk_overlap=50)
    window = [c for c in chunks if c.section == "Window"]
    assert window and "30 days" in window[0].text and "Keep the receipt" in window[0].text


def test_pdf_text_is_extracted(tmp_path: Path) -> None:
    d = load_file(write(tmp_path, "policy.pdf", text_pdf("Refunds take five days")))
    assert "Refunds take five days" in d.text and d.title == "policy"


def test_docx_headings_become_sections(tmp_path: Path) -> None:
    d = load_file(write(tmp_path, "gift.docx", docx_bytes()))
    assert d.title == "Gift cards"
    sections = {c.section: c.text for c in chunk_document(d, chunk_size=500, chunk_overlap=50)}
    assert "Balance > Expiry" in sections and "three years" in sections["Balance > Expiry"]


def test_faq_csv_and_jsonl_make_one_section_per_question(tmp_path: Path) -> None:
    csv_doc = load_file(write(tmp_path, "faq.csv", 'Question,Answer\n"Do you ship to Norway?","Yes, in 5 days."\n'))
    rows = [{"question": "Can I pay later?", "answer": "Yes, with instalments.", "access": "internal"}]
    jsonl_doc = load_file(write(tmp_path, "faq2.jsonl", "\n".join(json.dumps(r) for r in rows)))
    assert chunk_document(csv_doc, chunk_size=500, chunk_overlap=0)[0].section == "Do you ship to Norway?"
    assert jsonl_doc.access == "internal" and "instalments" in jsonl_doc.text


def test_utf8_bom_and_utf16_files_are_read(tmp_path: Path) -> None:
    assert load_file(write(tmp_path, "bom.md", "\ufeff# Hi\nBody".encode())).title == "Hi"
    assert "Grüße" in load_file(write(tmp_path, "u16.txt", "Grüße aus Köln".encode("utf-16"))).text


BAD_FILES = {
    "empty.md": (b"", "empty"),
    "blank.txt": (b"  \n\n ", "empty"),
    "image.md": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    "latin1.md": ("Caf\xe9 cr\xe8me".encode("latin-1"), "UTF-8"),
    "locked.pdf": (None, "encrypted"),
    "broken.pdf": (b"%PDF-1.4 this is not really a pdf", "PDF"),
    "scan.pdf": (None, "no extractable text"),
    "broken.docx": (b"PK\x03\x04 not a zip", "DOCX"),
    "faq-bad.csv": (b"q,a\nx,y\n", "'question' and 'answer'"),
    "faq-bad.jsonl": (b'{"question": "x"}\n', "'question' and 'answer'"),
    "mixed.jsonl": (
        b'{"question": "a", "answer": "b", "access": "public"}\n{"question": "c", "answer": "d", "access": "internal"}',
        "mixes public and internal",
    ),
    "bad-access.md": (b"---\naccess: secret\n---\nBody", "access must be"),
    "bad-yaml.md": (b"---\n: [\n---\nBody", "front matter"),
}


def _bad_content(name: str, content: bytes | None) -> bytes:
    if name == "locked.pdf":
        return encrypted_pdf()
    if name == "scan.pdf":
        return text_pdf("").replace(b"() Tj", b"")
    assert content is not None
    return content


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_error_names_the_file_and_the_reason(tmp_path: Path, name: str) -> None:
    content, reason = BAD_FILES[name]
    path = write(tmp_path, name, _bad_content(name, content))
    with pytest.raises(DataError) as info:
        load_file(path)
    assert str(path) in str(info.value) and reason in str(info.value)


def test_oversized_and_unreadable_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = write(tmp_path, "big.md", "x" * 2000)
    monkeypatch.setattr(loaders, "MAX_FILE_BYTES", 1000)
    with pytest.raises(DataError, match="over the"):
        load_file(big)
    unreadable = write(tmp_path, "secret.md", "text")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(DataError, match=r"secret\.md: cannot be read \(Permission denied\)"):
        load_file(unreadable)


def test_a_folder_of_good_and_broken_files_loads_the_good_ones_and_names_each_failure(tmp_path: Path) -> None:
    write(tmp_path, "good.md", "# Good\nReturns take 30 days.")
    write(tmp_path, "page.html", "<h1>Page</h1><p>Shipping info.</p>")
    write(tmp_path, "policy.pdf", text_pdf("Refunds take five days"))
    write(tmp_path, "notes.png", b"\x89PNG")  # not a supported type: ignored, not a failure
    for name, (content, _) in BAD_FILES.items():
        write(tmp_path, f"bad/{name}", _bad_content(name, content))
    docs, failures = load_directory(tmp_path)
    assert sorted(d.doc_id for d in docs) == ["good", "page", "policy"]
    assert sorted(f.path.name for f in failures) == sorted(BAD_FILES)
    assert all(str(f.path) in f.reason for f in failures)


def test_load_files_reports_unsupported_types_and_duplicate_ids(tmp_path: Path) -> None:
    a = write(tmp_path, "one/faq.md", "# FAQ\nText.")
    b = write(tmp_path, "two/faq.txt", "Other text.")
    c = write(tmp_path, "sheet.xlsx", b"PK")
    docs, failures = load_files([a, b, c])
    assert [d.doc_id for d in docs] == ["faq"]
    reasons = {f.path.name: f.reason for f in failures}
    assert "same id 'faq'" in reasons["faq.txt"] and "unsupported file type .xlsx" in reasons["sheet.xlsx"]
