"""`python -m cardap_sim.loadsvc` = `cardap-loadsvc`."""

from cardap_sim.loadsvc.cli import main

raise SystemExit(main())
