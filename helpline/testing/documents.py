"""Files for loader tests, built by hand so that no PDF or DOCX writer is needed to make them."""

from __future__ import annotations

import io
import zipfile
import zlib


def text_pdf(*pages: str) -> bytes:
    """A minimal PDF with one page per argument, each page showing its text (one page "" when none)."""
    pages = pages or ("",)
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode()]
    font = 3 + 2 * n
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R"
            f" /Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _pdf(objects)


def slow_pdf(operations: int) -> bytes:
    """A one-page PDF of a few kilobytes whose compressed page repeats one text operation
    ``operations`` times, so that extracting its text takes seconds."""
    stream = zlib.compress(b"BT /F1 12 Tf 72 720 Td (ab) Tj ET\n" * operations)
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
            b" /Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
    )


def _pdf(objects: list[bytes]) -> bytes:
    """Numbered objects (the first is the catalog) with their cross-reference table."""
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


def with_zip_member(archive: bytes, name: str, size: int) -> bytes:
    """``archive`` (a DOCX) plus a member of ``size`` zero bytes: tiny compressed, huge unpacked."""
    out = io.BytesIO(archive)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as z, z.open(name, "w", force_zip64=True) as f:
        block = bytes(1 << 20)
        for _ in range(size // len(block)):
            f.write(block)
        f.write(bytes(size % len(block)))
    return out.getvalue()
