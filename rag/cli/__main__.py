"""`python -m rag.cli`, the same as the `rag` entry point."""

import sys

from rag.cli.main import main

sys.exit(main())
