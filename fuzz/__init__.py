"""Coverage-guided fuzzing of treadctl's input surfaces (issue 7, item 1).

``python -m fuzz`` runs every target under atheris (libFuzzer); :mod:`fuzz.targets` holds
the targets and their oracles as plain functions of ``bytes`` (no atheris needed), so the
committed corpus under ``fuzz/corpus/<target>/`` replays in the normal test suite
(``tests/reliability/test_fuzz_regressions.py``). See docs/fuzzing.md.
"""
