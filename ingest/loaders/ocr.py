"""OCR for images and for PDF pages without a text layer: RapidOCR (models inside its wheel) or tesseract.

`ingest.ocr.engine=auto` takes tesseract where it is installed (apt-get install tesseract-ocr) and the
PyPI-only RapidOCR otherwise, so a machine without apt still reads scans. Each engine returns lines with
a box and a confidence; they become positioned layout lines, so OCRed pages get paragraphs and headings
like born-digital ones.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol

from ingest.documents import TITLE, Element
from ingest.loaders.errors import one_line
from ingest.loaders.layout import Line, layout_elements
from rag.errors import DocumentError

logger = logging.getLogger(__name__)

OCR_ENGINES = frozenset({"auto", "rapidocr", "tesseract", "none"})
_INSTALL_HINT = "pip install rapidocr-onnxruntime --no-deps pyclipper shapely, or apt-get install tesseract-ocr"


@dataclass(frozen=True)
class OcrOptions:
    """What `ingest.ocr` configures (see rag/config.py for the help text)."""

    engine: str = "auto"
    languages: str = "eng"
    dpi: int = 200
    max_megapixels: float = 50.0
    timeout_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: Any) -> OcrOptions:
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__ if hasattr(settings, name)})


@dataclass(frozen=True)
class OcrLine:
    """One line of recognised text, its box in pixels (top-left origin) and the engine's confidence (0-1)."""

    text: str
    left: float
    top: float
    right: float
    bottom: float
    confidence: float


class OcrEngine(Protocol):
    name: str

    def read(self, image: Any) -> list[OcrLine]: ...


class RapidOcrEngine:
    """PP-OCR detection + recognition ONNX models from the rapidocr-onnxruntime wheel (Latin and Chinese)."""

    name = "rapidocr"

    def __init__(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        self._engine = RapidOCR()

    def read(self, image: Any) -> list[OcrLine]:
        import numpy as np

        # RapidOCR takes BGR arrays, as OpenCV reads them.
        array = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        result, _ = self._engine(array)
        lines = []
        for box, text, score in result or []:
            xs = [float(point[0]) for point in box]
            ys = [float(point[1]) for point in box]
            if str(text).strip():
                lines.append(OcrLine(str(text).strip(), min(xs), min(ys), max(xs), max(ys), float(score)))
        return column_order(lines, float(image.width))


def column_order(lines: list[OcrLine], page_width: float) -> list[OcrLine]:
    """Two-column reading order: RapidOCR returns lines top to bottom across the page, which interleaves
    columns. Lines that cross the page's middle (titles, author blocks, full-width paragraphs) split it
    into bands; within a band the left column is read before the right one."""
    middle = page_width / 2
    ordered: list[OcrLine] = []
    band: list[OcrLine] = []

    def flush() -> None:
        left = [line for line in band if line.right <= middle + 0.02 * page_width]
        right = [line for line in band if line.right > middle + 0.02 * page_width]
        # Only a real second column reorders: a few right-side fragments (page numbers, margin notes) do not.
        if len(left) >= 3 and len(right) >= 3 and all(line.left >= middle - 0.05 * page_width for line in right):
            ordered.extend(sorted(left, key=lambda line: line.top) + sorted(right, key=lambda line: line.top))
        else:
            ordered.extend(band)
        band.clear()

    for line in lines:
        if line.left < middle - 0.02 * page_width and line.right > middle + 0.02 * page_width:
            flush()
            ordered.append(line)
        else:
            band.append(line)
    flush()
    return ordered


class TesseractEngine:
    """The `tesseract` command (Debian's tesseract-ocr), words grouped into its own lines."""

    name = "tesseract"

    def __init__(self, languages: str, timeout_s: float) -> None:
        self.languages = languages
        self.timeout_s = timeout_s

    def read(self, image: Any) -> list[OcrLine]:
        png = io.BytesIO()
        image.convert("RGB").save(png, format="PNG")
        try:
            out = subprocess.run(
                ["tesseract", "stdin", "stdout", "-l", self.languages, "--psm", "3", "tsv"],
                input=png.getvalue(),
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise OcrError(f"tesseract took over ingest.ocr.timeout_s={self.timeout_s:g} s and was stopped") from e
        if out.returncode != 0:
            message = " ".join(out.stderr.decode("utf-8", "replace").split())[:200]
            raise OcrError(f"tesseract failed ({message}): check ingest.ocr.languages={self.languages!r}")
        words: dict[tuple[int, int, int], list[tuple[str, int, int, int, int, float]]] = defaultdict(list)
        for row in out.stdout.decode("utf-8", "replace").splitlines()[1:]:
            cols = row.split("\t")
            if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
                continue
            left, top, width, height, conf = int(cols[6]), int(cols[7]), int(cols[8]), int(cols[9]), float(cols[10])
            words[(int(cols[2]), int(cols[3]), int(cols[4]))].append((cols[11], left, top, width, height, conf))
        lines = []
        for key in sorted(words):
            ws = words[key]
            lines.append(
                OcrLine(
                    " ".join(w[0] for w in ws),
                    min(w[1] for w in ws),
                    min(w[2] for w in ws),
                    max(w[1] + w[3] for w in ws),
                    max(w[2] + w[4] for w in ws),
                    sum(max(0.0, w[5]) for w in ws) / len(ws) / 100.0,
                )
            )
        return lines


class OcrError(RuntimeError):
    """An OCR engine failed on one image."""


_engines: dict[tuple[str, str], OcrEngine] = {}


def available_engines() -> list[str]:
    """The engines this machine can run, in the order `auto` tries them."""
    found = []
    if shutil.which("tesseract") is not None:
        found.append("tesseract")
    if find_spec("rapidocr_onnxruntime") is not None:
        found.append("rapidocr")
    return found


def resolve_engine(options: OcrOptions) -> OcrEngine | None:
    """The engine `options` asks for, loaded once per process; None when OCR is off or nothing is installed."""
    if options.engine == "none":
        return None
    available = available_engines()
    if options.engine == "auto":
        if not available:
            return None
        name = available[0]
    elif options.engine in available:
        name = options.engine
    else:
        return None
    key = (name, options.languages)
    if key not in _engines:
        _engines[key] = (
            RapidOcrEngine() if name == "rapidocr" else TesseractEngine(options.languages, options.timeout_s)
        )
    return _engines[key]


def missing_engine_reason(options: OcrOptions) -> str:
    if options.engine == "none":
        return "needs OCR, which is off (ingest.ocr.engine=none): set ingest.ocr.engine=auto"
    if options.engine == "auto":
        return f"needs OCR and no engine is installed: {_INSTALL_HINT}"
    return f"needs OCR with ingest.ocr.engine={options.engine}, which is not installed: {_INSTALL_HINT}"


def ocr_image_lines(
    engine: OcrEngine, image: Any, display: str, *, page_number: int, points_per_pixel: float
) -> tuple[list[Line], float, int]:
    """Layout lines of one image (y grows upwards, in points, like PDF text), mean confidence, characters read."""
    try:
        found = engine.read(image)
    except OcrError as e:
        raise DocumentError(display, f"OCR failed on page {page_number}: {e}") from e
    height = float(image.height)
    # Engines return lines in their reading order (tesseract by block/paragraph/line, RapidOCR top to
    # bottom). A line box spans ascenders to descenders, about 1.2 em, and varies by +-20% with the
    # letters in it: boxes near the page's median height get the median size, so only clearly larger
    # lines read as headings.
    heights = sorted(line.bottom - line.top for line in found)
    median = heights[len(heights) // 2] if heights else 0.0
    lines = []
    for line in found:
        box = line.bottom - line.top
        box = median if median and abs(box - median) < 0.3 * median else box
        size = round(box * points_per_pixel / 1.2 * 2) / 2
        lines.append(Line(text=line.text, y=(height - line.bottom) * points_per_pixel, size=size))
    chars = sum(len(line.text) for line in found)
    confidence = sum(line.confidence * len(line.text) for line in found) / max(1, chars)
    return lines, confidence, chars


def check_pixels(display: str, width: int, height: int, options: OcrOptions) -> None:
    """Refuse images over the pixel budget before decoding them (a decompression bomb decodes to many GB)."""
    megapixels = width * height / 1e6
    if megapixels > options.max_megapixels:
        raise DocumentError(
            display,
            f"image is {width} x {height} pixels ({megapixels:.0f} megapixels), over "
            f"ingest.ocr.max_megapixels={options.max_megapixels:g}: refused as a possible decompression bomb; "
            "downscale it or raise the limit",
        )


def load_image(path: Path, data: bytes, options: OcrOptions) -> tuple[list[Element], str | None, dict[str, Any]]:
    """OCR every frame of an image file (PNG, JPEG, TIFF, BMP, HEIC) into elements, one page per frame."""
    display = str(path)
    from PIL import Image, ImageSequence, UnidentifiedImageError

    if path.suffix.lower() == ".heic":
        try:
            from pi_heif import register_heif_opener
        except ImportError as e:
            raise DocumentError(display, "HEIC images need the Python package 'pi_heif': pip install pi_heif") from e
        register_heif_opener()
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DocumentError(display, f"not a readable image ({one_line(e)}): open and re-save it") from e
    check_pixels(display, image.width, image.height, options)
    engine = resolve_engine(options)
    if engine is None:
        raise DocumentError(display, f"image {missing_engine_reason(options)}")

    pages: list[list[Line]] = []
    confidences: list[tuple[float, int]] = []
    try:
        for page_number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            check_pixels(display, frame.width, frame.height, options)
            dpi = frame.info.get("dpi", (0, 0))[0] or 72.0
            lines, confidence, chars = ocr_image_lines(
                engine, frame, display, page_number=page_number, points_per_pixel=72.0 / float(dpi)
            )
            pages.append(lines)
            confidences.append((confidence, chars))
    except (OSError, ValueError) as e:
        raise DocumentError(display, f"could not decode the image ({one_line(e)}): open and re-save it") from e
    elements, prominent = layout_elements(pages)
    total = sum(chars for _, chars in confidences)
    metadata: dict[str, Any] = {
        "parser": f"ocr:{engine.name}",
        "ocr_engine": engine.name,
        "ocr_pages": [i + 1 for i, lines in enumerate(pages) if lines],
        "ocr_confidence": round(sum(c * n for c, n in confidences) / max(1, total), 3),
        "page_count": len(pages),
    }
    if engine.name == "tesseract":
        metadata["ocr_languages"] = options.languages
    title = prominent or next((el.text for el in elements if el.category == TITLE), None)
    return elements, title, metadata
