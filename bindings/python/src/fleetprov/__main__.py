"""``python -m fleetprov``: the fleet provisioning command (see ``fleetprov.cli``)."""

import sys

from .cli import main

sys.exit(main())
