"""The Bitext customer-support CSV, read in one place: its columns, its usable rows, the rows left out.

A file in the Bitext layout is a UTF-8 CSV whose header names at least ``instruction`` (the customer's
request), ``response`` (the agent's reply, with ``{{Order Number}}``-style placeholders) and ``intent``
(``cancel_order``, ...), and usually ``category`` (``ORDER``, ...); other columns (``flags``, ``tags``,
...) are ignored and a cell may span lines. Training sources (``data prepare --source bitext:FILE``,
distillation prompts) and the regression suite's generated cases read it through here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from helpline.platform.errors import DataError, NotFoundError

REQUIRED_COLUMNS = ("instruction", "response", "intent")


@dataclass(frozen=True)
class BitextRow:
    """One usable row, each text stripped of surrounding blanks."""

    instruction: str
    response: str
    intent: str
    category: str  # "" when the file has no category column or the cell is empty
    row: int  # as a spreadsheet numbers it: the header is row 1 and a cell spanning lines stays in one row


def read_bitext(path: str | Path) -> tuple[list[BitextRow], list[str]]:
    """The usable rows of a Bitext CSV and one problem per row left out (``row 7: empty column(s) response``).

    A missing file is a NotFoundError; a missing required column or a file that is not UTF-8 text is a
    DataError naming the fix, since no row of such a file can be used.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(
            f"{path} does not exist",
            hint="pass the path of a Bitext CSV, e.g. ../shared/data/bitext/bitext_support.csv",
        )
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            _check_columns(path, reader.fieldnames or [])
            return _rows(reader)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start} of a line)",
            hint="save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`",
        ) from e


def _check_columns(path: Path, columns: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})",
            hint=f"a bitext CSV needs the columns {', '.join(REQUIRED_COLUMNS)}; use chat:FILE.jsonl for chat data",
        )


def _rows(reader: csv.DictReader) -> tuple[list[BitextRow], list[str]]:
    rows, problems = [], []
    for number, record in enumerate(reader, start=2):  # row 1 is the header
        text = {c: (record.get(c) or "").strip() for c in (*REQUIRED_COLUMNS, "category")}
        empty = [c for c in REQUIRED_COLUMNS if not text[c]]
        if empty:
            problems.append(f"row {number}: empty column(s) {', '.join(empty)}")
            continue
        rows.append(BitextRow(**text, row=number))
    return rows, problems
