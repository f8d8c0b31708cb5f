"""Session store: every run recorded in SQLite (``db``), written without blocking the
control loop (``recorder``), exported as CSV/TCX/FIT (``export``), plotted (``plot``) and
browsed with ``treadctl sessions`` (``cli``). See docs/sessions.md."""
