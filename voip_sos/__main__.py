"""`python -m voip_sos` runs the CLI."""

from voip_sos.cli import main

raise SystemExit(main())
