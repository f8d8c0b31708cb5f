"""``python -m treadctl.soak``: run the fault campaign (docs/soak.md)."""

import sys

from treadctl.soak.virtual import main

sys.exit(main())
