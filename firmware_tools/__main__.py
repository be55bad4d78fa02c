"""``python -m firmware_tools``: the update-bundle command line."""

from firmware_tools.cli import main

raise SystemExit(main())
