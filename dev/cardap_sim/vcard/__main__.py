"""`python -m cardap_sim.vcard` runs the `cardap-sim` CLI."""

import sys

from .cli import main

sys.exit(main())
