"""Imported first by every bench script: `python bench/x.py` puts bench/ first on sys.path, where bench/ingest.py
would shadow the `ingest` package, so the repository root takes its place (or is added when run otherwise). bench/
stays on the path behind it: spawned worker processes re-run the script and must find `_path` again."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
    sys.path.append(str(REPO / "bench"))
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
