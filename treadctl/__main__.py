"""``python -m treadctl``: the same as the ``treadctl`` console script."""

import sys

from treadctl.cli import main

sys.exit(main())
