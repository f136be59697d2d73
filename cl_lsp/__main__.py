"""`python -m cl_lsp`: the same as the `cl-lsp` command."""

import sys

from .cli import main

sys.exit(main())
