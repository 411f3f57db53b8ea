"""Documents built by the tests (benign text only): a minimal PDF with text pages, DOCX, ODT and
EPUB containers, and hostile variants (zip bombs, entity bombs, external entities)."""

from __future__ import annotations

import io
import textwrap
import zipfile
from html import escape


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A PDF with one Helvetica text page per string (lines wrapped at 90 characters)."""
    n = len(pages)
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(n))}] /Count {n} >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, text in enumerate(pages):
        lines = [ln for para in text.splitlines() for ln in (textwrap.wrap(para, 90) or [""])]
        shown = " ".join(
            "(" + ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") '"
            for ln in lines
        )
        content = f"BT /F1 9 Tf 11 TL 30 820 Td {shown} ET"
        objs.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>"
        )
        objs.append(f"<< /Length {len(content)} >>\nstream\n{content}\nendstream")
    info = None
    if title is not None:
        objs.append(f"<< /Title ({title}) >>")
        info = len(objs)
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for k, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(f"{k} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    trailer = f"<< /Size {len(objs) + 1} /Root 1 0 R" + (f" /Info {info} 0 R" if info else "")
    out.write(f"trailer\n{trailer} >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def encrypt_pdf(data: bytes, user_password: str, owner_password: str = "owner") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _zip(members: list[tuple[str, bytes | str]], stored_first: bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, (name, body) in enumerate(members):
            raw = body.encode("utf-8") if isinstance(body, str) else body
            kind = zipfile.ZIP_STORED if stored_first and k == 0 else zipfile.ZIP_DEFLATED
            zf.writestr(zipfile.ZipInfo(name), raw, compress_type=kind)
    return out.getvalue()


W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def docx_xml(text: str, prolog: str = "") -> str:
    paras = "".join(
        f'<w:p><w:r><w:t xml:space="preserve">{escape(line)}</w:t></w:r></w:p>'
        for line in text.splitlines()
    )
    head = '<?xml version="1.0" encoding="UTF-8"?>'
    return f"{head}{prolog}<w:document {W}><w:body>{paras}</w:body></w:document>"


def make_docx(text: str, title: str = "", document_xml: str | None = None) -> bytes:
    core = (
        '<?xml version="1.0"?><cp:coreProperties '
        'xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
        f'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{escape(title)}</dc:title>'
        "</cp:coreProperties>"
    )
    return _zip(
        [
            ("[Content_Types].xml", '<?xml version="1.0"?><Types/>'),
            ("word/document.xml", document_xml if document_xml is not None else docx_xml(text)),
            ("docProps/core.xml", core),
        ]
    )


def make_odt(text: str, title: str = "") -> bytes:
    ns = (
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
    )
    lines = text.splitlines()
    body = f"<text:h>{escape(lines[0])}</text:h>" + "".join(
        # a span and a tab inside a paragraph: the text around them is kept
        f"<text:p>{escape(ln[:5])}<text:span>{escape(ln[5:10])}</text:span>{escape(ln[10:])}</text:p>"
        for ln in lines[1:]
    )
    content = (
        f'<?xml version="1.0"?><office:document-content {ns}><office:body><office:text>'
        f"{body}</office:text></office:body></office:document-content>"
    )
    meta = (
        '<?xml version="1.0"?><office:document-meta xmlns:office="urn:oasis:names:tc:'
        'opendocument:xmlns:office:1.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<office:meta><dc:title>{escape(title)}</dc:title></office:meta></office:document-meta>"
    )
    return _zip(
        [
            ("mimetype", "application/vnd.oasis.opendocument.text"),
            ("content.xml", content),
            ("meta.xml", meta),
        ],
        stored_first=True,
    )


def make_epub(chapters: list[str], title: str = "") -> bytes:
    container = (
        '<?xml version="1.0"?><container version="1.0" '
        'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
        '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    )
    # the spine lists the chapters in reverse name order: reading order is the spine's
    names = [f"ch{len(chapters) - i:02d}.xhtml" for i in range(len(chapters))]
    manifest = "".join(
        f'<item id="c{i}" href="text/{n}" media-type="application/xhtml+xml"/>'
        for i, n in enumerate(names)
    )
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(names)))
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        f'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{escape(title)}'
        f"</dc:title></metadata><manifest>{manifest}</manifest><spine>{spine}</spine></package>"
    )
    members: list[tuple[str, bytes | str]] = [
        ("mimetype", "application/epub+zip"),
        ("META-INF/container.xml", container),
        ("OEBPS/content.opf", opf),
    ]
    for n, text in zip(names, chapters, strict=True):
        paras = "".join(f"<p>{escape(p)}</p>" for p in text.splitlines())
        members.append(
            (
                f"OEBPS/text/{n}",
                '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
                f"<title>{escape(title)}</title><style>p {{ margin: 0 }}</style></head>"
                f"<body>{paras}</body></html>",
            )
        )
    return _zip(members, stored_first=True)


def zip_with(members: list[tuple[str, bytes | str]], stored_first: bool = False) -> bytes:
    return _zip(members, stored_first)


BILLION_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
)
EXTERNAL_ENTITY = '<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>'
