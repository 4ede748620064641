"""HTML tables (unstructured's `text_as_html`) as Markdown tables: header row, separator, one line per row."""

from __future__ import annotations

from html.parser import HTMLParser


class _TableParser(HTMLParser):
    """Collects the cell grid of the first <table> in `text_as_html`, honouring rowspan/colspan."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[tuple[str, int, int]]] = []
        self._cell: list[str] | None = None
        self._span = (1, 1)
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._depth += 1
        elif self._depth > 1:
            return  # nested tables: their text lands in the enclosing cell
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            if not self.rows:
                self.rows.append([])
            values = dict(attrs)
            self._span = (_span(values.get("rowspan")), _span(values.get("colspan")))
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._depth -= 1
        elif self._depth > 1:
            return
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(("".join(self._cell), *self._span))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _span(value: str | None) -> int:
    try:
        return max(1, min(int(value or 1), 1000))
    except ValueError:
        return 1


def table_markdown(table_html: str | None) -> str | None:
    """A Markdown table (first row as header) from unstructured's `text_as_html`; None if empty."""
    if not table_html:
        return None
    parser = _TableParser()
    parser.feed(table_html)
    parser.close()
    grid = _expand_spans(parser.rows)
    if not grid or not any(any(cell for cell in row) for row in grid):
        return None
    width = max(len(row) for row in grid)
    lines = []
    for index, row in enumerate(grid):
        cells = [_md_cell(cell) for cell in row] + [""] * (width - len(row))
        lines.append("| " + " | ".join(cells) + " |")
        if index == 0:
            lines.append("|" + "|".join([" --- "] * width) + "|")
    return "\n".join(lines)


def _expand_spans(rows: list[list[tuple[str, int, int]]]) -> list[list[str]]:
    """Cell texts on a rectangular grid; merged cells keep their text in the top-left slot only."""
    grid: list[list[str]] = []
    pending: dict[tuple[int, int], str] = {}  # (row, col) slots taken by a rowspan from above
    for r, row in enumerate(rows):
        out: list[str] = []
        col = 0
        for text, rowspan, colspan in row:
            while (r, col) in pending:
                out.append(pending.pop((r, col)))
                col += 1
            for offset in range(colspan):
                out.append(text if offset == 0 else "")
                for below in range(1, rowspan):
                    pending[(r + below, col + offset)] = ""
            col += colspan
        while (r, col) in pending:
            out.append(pending.pop((r, col)))
            col += 1
        grid.append(out)
    return grid


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
