"""``python -m soak``: run the fault campaign (docs/soak.md)."""

import sys

from soak.virtual import main

sys.exit(main())
