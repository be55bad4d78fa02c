"""`python -m agent` runs the same CLI as `camera-agent`."""

import sys

from agent.cli import main

sys.exit(main())
