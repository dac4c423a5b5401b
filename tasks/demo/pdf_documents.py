"""The demo's PDF files, built in code: topic documents with text and drawings, a truncated copy
and an AES-256 encrypted one written byte for byte (a seeded key, so reruns change nothing)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

import pymupdf
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_PDF_PAGE_SIZE = (595, 842)  # A4 in points
_MARGIN = 56
_PDF_SAVE_OPTIONS: dict[str, Any] = {"garbage": 4, "deflate": True, "no_new_id": True}


@dataclass(frozen=True)
class PdfTopic:
    """A demo PDF, ``pdfs/<slug>.pdf``: the title on page 1, its page count, its metadata year."""

    slug: str
    title: str
    pages: int
    year: int
    sentences: str = ""  # one sentence a line, drawn from for each page's paragraph


def topic_pdf(topic: PdfTopic, seed: int) -> bytes:
    """A ``topic.pages``-page PDF of readable text and vector drawings, the same for ``seed``.

    Each page has a heading (the title on page 1), a paragraph of the topic's sentences, a bar
    chart, circles and a frame; sentences, bars and circles vary by page and seed.
    """
    rng = random.Random(f"pdf:{topic.slug}:{seed}")
    width, height = _PDF_PAGE_SIZE
    document = pymupdf.open()
    for number in range(1, topic.pages + 1):
        page = document.new_page(width=width, height=height)
        heading = topic.title if number == 1 else f"{topic.title}, part {number}"
        page.insert_text((_MARGIN, 90), heading, fontsize=26 if number == 1 else 18)
        page.draw_line((_MARGIN, 104), (width - _MARGIN, 104), color=(0.2, 0.3, 0.5), width=1.5)
        paragraph = " ".join(rng.sample(topic.sentences.strip().splitlines(), k=4))
        page.insert_textbox((_MARGIN, 120, width - _MARGIN, 260), paragraph, fontsize=12)
        _draw_bar_chart(page, pymupdf.Rect(_MARGIN, 300, width - _MARGIN, 560), rng)
        for _ in range(3):
            centre = (rng.uniform(100, width - 100), rng.uniform(640, 730))
            fill = (rng.random(), rng.random(), rng.random())
            page.draw_circle(centre, rng.uniform(15, 40), color=(0.1, 0.1, 0.1), fill=fill)
        page.draw_rect((30, 30, width - 30, height - 30), color=(0.5, 0.5, 0.5))
        footer = f"{topic.title}: page {number} of {topic.pages}"
        page.insert_text((_MARGIN, height - 45), footer, fontsize=9)
    document.set_metadata({"title": topic.title})  # no dates, so saving twice gives equal bytes
    return document.tobytes(**_PDF_SAVE_OPTIONS)


def pdf_without_last_page(pdf: bytes) -> bytes:
    """``pdf`` (unencrypted, two pages or more) without its last page, saved reproducibly."""
    with pymupdf.open(stream=pdf, filetype="pdf") as document:
        document.delete_page(-1)
        return document.tobytes(**_PDF_SAVE_OPTIONS)


def encrypted_pdf(text: str, password: str, seed: int) -> bytes:
    """A one-page PDF showing ``text`` (ASCII), AES-256 encrypted (V5 R6) for ``password``.

    Written by hand because MuPDF draws the salts, file key and IVs from the operating system,
    so a PDF it encrypts differs on every save; here they come from ``seed``. The owner password
    is ``password + "-owner"``.
    """
    rng = random.Random(f"encrypted-pdf:{seed}")
    file_key, salts = rng.randbytes(32), [rng.randbytes(8) for _ in range(4)]
    user_pw, owner_pw = password.encode(), f"{password}-owner".encode()
    user = _r6_hash(user_pw, salts[0]) + salts[0] + salts[1]
    owner = _r6_hash(owner_pw, salts[2], user) + salts[2] + salts[3]
    user_key = _aes(_r6_hash(user_pw, salts[1]), modes.CBC(bytes(16)), file_key)
    owner_key = _aes(_r6_hash(owner_pw, salts[3], user), modes.CBC(bytes(16)), file_key)
    permissions = -4  # all rights once open: the password is the obstacle, not the rights
    perms_block = permissions.to_bytes(4, "little", signed=True) + b"\xff" * 4 + b"Tadb"
    perms = _aes(file_key, modes.ECB(), perms_block + rng.randbytes(4))
    content = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode("ascii")
    iv, padding = rng.randbytes(16), 16 - len(content) % 16
    stream = iv + _aes(file_key, modes.CBC(iv), content + bytes([padding]) * padding)
    encrypt = (
        f"<< /Filter /Standard /V 5 /R 6 /Length 256 /P {permissions} /StmF /StdCF /StrF /StdCF"
        " /CF << /StdCF << /AuthEvent /DocOpen /CFM /AESV3 /Length 32 >> >>"
        f" /U <{user.hex()}> /O <{owner.hex()}> /UE <{user_key.hex()}> /OE <{owner_key.hex()}>"
        f" /Perms <{perms.hex()}> >>"
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 5 0 R"
        b" /Resources << /Font << /F1 4 0 R >> >> >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        encrypt.encode(),
    ]
    document_id = hashlib.sha256(f"{text}:{seed}".encode()).hexdigest()[:32]
    return _pdf_file(objects, f"/Encrypt 6 0 R /ID [<{document_id}> <{document_id}>]")


def _draw_bar_chart(page: pymupdf.Page, area: pymupdf.Rect, rng: random.Random) -> None:
    page.draw_line(area.bl, area.tl, color=(0, 0, 0), width=1)
    page.draw_line(area.bl, area.br, color=(0, 0, 0), width=1)
    slot = area.width / 6
    for index in range(6):
        top = area.y1 - rng.uniform(0.15, 0.95) * area.height
        left = area.x0 + index * slot + slot * 0.2
        bar = pymupdf.Rect(left, top, left + slot * 0.6, area.y1)
        page.draw_rect(bar, color=(0.1, 0.2, 0.4), fill=(0.3, 0.5, 0.8 - 0.1 * index))
        page.insert_text((left, area.y1 + 14), f"Q{index + 1}", fontsize=9)


def _r6_hash(password: bytes, salt: bytes, user_entry: bytes = b"") -> bytes:
    """ISO 32000-2 algorithm 2.B: the hash behind the U, O, UE and OE entries of an R6 handler."""
    digest, rounds = hashlib.sha256(password + salt + user_entry).digest(), 0
    while True:
        block = (password + digest + user_entry) * 64
        encrypted = _aes(digest[:16], modes.CBC(digest[16:32]), block)
        hash_name = ("sha256", "sha384", "sha512")[int.from_bytes(encrypted[:16], "big") % 3]
        digest, rounds = hashlib.new(hash_name, encrypted).digest(), rounds + 1
        if rounds >= 64 and encrypted[-1] <= rounds - 32:
            return digest[:32]


def _aes(key: bytes, mode: modes.Mode, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), mode).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _pdf_file(objects: list[bytes], trailer_entries: str) -> bytes:
    """A PDF file of ``objects`` (numbered from 1; the first is the catalog) with its xref."""
    body, offsets = bytearray(b"%PDF-2.0\n%\xe2\xe3\xcf\xd3\n"), []
    for number, content in enumerate(objects, 1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, content)
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    trailer = f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R {trailer_entries} >>\n"
    return bytes(body + trailer.encode() + b"startxref\n%d\n%%%%EOF\n" % xref)
