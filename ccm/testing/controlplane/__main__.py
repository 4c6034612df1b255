"""``python -m ccm.testing.controlplane``: see :func:`ccm.testing.controlplane.cli.main`."""

import sys

from ccm.testing.controlplane.cli import main

sys.exit(main())
