"""Which file types the loaders read, and how: the one place a new format is registered.

Each extension maps to the loader family that reads it (`FORMATS`); the sets the loaders
test against are derived from it, so adding a format is one line here plus its loader.
"""

from __future__ import annotations

STRATEGIES = frozenset({"fast", "hi_res", "ocr_only", "auto"})

OOXML_EXTENSIONS = frozenset({".docx", ".pptx", ".xlsx"})
ZIP_EXTENSIONS = OOXML_EXTENSIONS | {".odt", ".epub"}
EMAIL_EXTENSIONS = frozenset({".eml", ".msg"})
HTML_EXTENSIONS = frozenset({".html", ".htm"})
# Plain-text formats whose encoding we pick ourselves (see `ingest.loaders.encoding`).
TEXT_EXTENSIONS = HTML_EXTENSIONS | {".xml", ".txt", ".text", ".md", ".rst", ".org", ".csv", ".tsv"}
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".heic"})
# Legacy and OpenDocument office formats (`ingest.loaders.legacy`): the Debian package whose
# LibreOffice converts each, and the OOXML format it is converted to. .xls is read by xlrd first.
LEGACY_OFFICE = {
    ".doc": ("libreoffice-writer-nogui", ".docx"),
    ".ppt": ("libreoffice-impress-nogui", ".pptx"),
    ".odp": ("libreoffice-impress-nogui", ".pptx"),
    ".xls": ("libreoffice-calc-nogui", ".xlsx"),
    ".ods": ("libreoffice-calc-nogui", ".xlsx"),
}
# Formats routed through unstructured's auto-partitioner (by extension, then content sniffing).
UNSTRUCTURED_EXTENSIONS = frozenset(
    {
        ".docx",
        ".pptx",
        ".xlsx",
        ".odt",
        ".rtf",
        ".epub",
        ".html",
        ".htm",
        ".xml",
        ".md",
        ".rst",
        ".org",
        ".txt",
        ".text",
        ".csv",
        ".tsv",
        ".eml",
        ".msg",
    }
)

SUPPORTED_EXTENSIONS: frozenset[str] = (
    UNSTRUCTURED_EXTENSIONS | IMAGE_EXTENSIONS | frozenset(LEGACY_OFFICE) | {".pdf", ".jsonl"}
)

# unstructured's optional extra that provides each format's parser, for "pip install" hints.
UNSTRUCTURED_EXTRA = {
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".odt": "odt",
    ".rtf": "rtf",
    ".epub": "epub",
    ".md": "md",
    ".rst": "rst",
    ".org": "org",
    ".csv": "csv",
    ".tsv": "tsv",
    ".msg": "msg",
    ".pdf": "pdf",
}

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Office encrypts OOXML by wrapping it in an OLE container with this stream (UTF-16LE name).
ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")
