"""`python -m kiln_runtime` is the `kiln-runtime` command."""

from .cli import main

raise SystemExit(main())
