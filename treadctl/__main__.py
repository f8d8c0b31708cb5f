"""``python -m treadctl``: the same as the ``treadctl`` console script."""

from treadctl.cli import entry

entry()
