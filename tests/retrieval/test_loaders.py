"""Every supported format loads with its structure; every kind of bad file is named with its reason."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from helpline.platform.errors import DataError
from helpline.retrieval.ingest import loaders
from helpline.retrieval.ingest.chunking import chunk_document
from helpline.retrieval.ingest.loaders import IngestLimits, load_directory, load_file, load_files
from helpline.testing.documents import slow_pdf, text_pdf, with_zip_member


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


# access levels: every file can carry one; an upload must state one ------------------------------


def test_a_sidecar_gives_a_pdf_or_docx_its_access_title_and_metadata(tmp_path: Path) -> None:
    write(tmp_path, "fraud-checklist.pdf", text_pdf("Check the billing address"))
    write(tmp_path, "fraud-checklist.pdf.yaml", "access: internal\ntitle: Fraud checklist\nowner: risk\n")
    write(tmp_path, "gift.docx", docx_bytes())
    write(tmp_path, "gift.docx.yaml", "access: internal\n")
    docs, failures = load_directory(tmp_path)
    assert failures == []
    by_id = {d.doc_id: d for d in docs}
    assert sorted(by_id) == ["fraud-checklist", "gift"]  # a sidecar is no document of its own
    fraud = by_id["fraud-checklist"]
    assert (fraud.access, fraud.title, fraud.metadata) == ("internal", "Fraud checklist", {"owner": "risk"})
    assert by_id["gift"].access == "internal"


def test_a_sidecar_that_contradicts_its_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "fees.md", "---\naccess: public\n---\n# Fees\nNo fee.\n")
    write(tmp_path, "fees.md.yaml", "access: internal\n")
    with pytest.raises(DataError, match=r"fees\.md\.yaml says access: internal, the file says public"):
        load_file(path)


def test_without_a_default_a_file_must_state_who_may_see_it(tmp_path: Path) -> None:
    pdf = write(tmp_path, "policy.pdf", text_pdf("Refunds take five days"))
    with pytest.raises(DataError, match="does not say who may see it"):
        load_file(pdf, default_access=None)
    assert load_file(pdf, default_access="internal").access == "internal"
    stated = write(tmp_path, "fees.md", "---\naccess: public\n---\n# Fees\nNo fee.\n")
    assert load_file(stated, default_access=None).access == "public"


# hostile files: refused with the reason, and the rest of the folder still loads --------------------


def test_a_docx_that_unpacks_past_the_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = write(tmp_path, "bomb.docx", with_zip_member(docx_bytes(), "word/media/zeros.bin", 60 * 2**20))
    assert path.stat().st_size < 2**20
    with pytest.raises(DataError, match=r"unpacks to 60\.\d MB, over the 50 MB limit"):
        load_file(path)


def test_a_pdf_over_the_page_limit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "long.pdf", text_pdf("one", "two", "three"))
    with pytest.raises(DataError, match="has 3 pages, over the 2-page limit"):
        load_file(path, limits=IngestLimits(max_pdf_pages=2))
    assert "three" in load_file(path, limits=IngestLimits(max_pdf_pages=3)).text


def test_a_pdf_that_parses_too_slowly_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    path = write(tmp_path, "slow.pdf", slow_pdf(100_000))  # seconds of text extraction
    started = time.monotonic()
    with pytest.raises(DataError, match=r"took longer than 0\.5 s"):
        load_file(path, limits=IngestLimits(pdf_timeout_s=0.5))
    assert time.monotonic() - started < 3


def test_a_csv_field_over_the_csv_limit_fails_only_its_file(tmp_path: Path) -> None:
    write(tmp_path, "good.md", "# Good\nReturns take 30 days.")
    write(tmp_path, "faq.csv", 'question,answer\n"Long?","' + "x" * (200 * 1024) + '"\n')
    docs, failures = load_directory(tmp_path)
    assert [d.doc_id for d in docs] == ["good"]
    assert [f.doc_id for f in failures] == ["faq"] and "longer than 128 KiB" in failures[0].reason


def test_front_matter_keys_that_are_not_names_are_coerced_or_fail_only_their_file(tmp_path: Path) -> None:
    dated = write(tmp_path, "dated.md", "---\n2024: reviewed\ntrue: yes\n---\n# Dated\nBody.")
    assert load_file(dated).metadata == {"2024": "reviewed", "True": "True"}
    write(tmp_path, "nameless.md", "---\n~: nothing\n---\n# Nameless\nBody.")
    docs, failures = load_directory(tmp_path)
    assert [d.doc_id for d in docs] == ["dated"]
    assert [f.doc_id for f in failures] == ["nameless"] and "front matter key None" in failures[0].reason
