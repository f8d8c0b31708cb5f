"""The repository cites no file that is not in it.

Every tracked text file (md, py, toml, service, conf, acl, sh, json, ...) is scanned for:

* relative markdown links ``[text](target)`` whose target does not exist;
* repository paths (``docs/x.md``, ``treadctl/limits.py``, ``systemd/treadctl.service``,
  ``examples/daemon.toml``, ``tests/x.py::test_y``, globs such as
  ``treadctl/firmware_profiles/*.toml``, and directories written with their slash, such as
  ``soak/``) that name nothing in the tree. A path is accepted relative to the repository
  root or to the citing file's directory;
* ``python -m MODULE`` where MODULE is one of the repository's own packages
  (``python -m soak``) but does not exist;
* any mention of notes that live outside the repository (the shared contract, protocol,
  style and review notes by their file names, or a ``../shared`` path).

The checker is a plain function (:func:`find_problems`), so the tests below also show it
failing on planted bad references in a temporary tree.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCANNED_SUFFIXES = frozenset(
    {".md", ".py", ".toml", ".service", ".conf", ".acl", ".sh", ".json", ".rules", ".cfg",
     ".ini", ".txt", ".yml", ".yaml"}
)
# Directories of the repository (current and former names), so a path into one that
# moved (firmware_profiles/, simulator/) is still recognised as a repository path.
REPO_DIRS = ("docs", "treadctl", "systemd", "examples", "tests", "benchmarks", "soak",
             "fuzz", "scripts", "simulator", "firmware_profiles")
# What a cited file ends with. A token without one of these (an MQTT topic such as
# treadctl/lane-1/state, a Python module path) is not treated as a file path.
FILE_EXTENSIONS = ("md", "py", "toml", "service", "conf", "acl", "sh", "json", "rules",
                   "txt", "yml", "yaml", "cfg", "ini", "png", "csv")
# Packages of this repository that `python -m` may name.
REPO_PACKAGES = ("treadctl", "soak", "benchmarks", "fuzz", "simulator", "tests")

# Notes that live outside the repository. Built from parts so this file does not match
# itself.
_MD = "." + "md"
OUTSIDE_NOTES = tuple(
    name + _MD for name in ("CONTRACT", "REVERSE", "PROTOCOLS", "FTMS", "STYLE", "REVIEW")
)
_OUTSIDE_RE = re.compile(
    r"(?<![\w/.-])(?:" + "|".join(re.escape(n) for n in OUTSIDE_NOTES) + r")\b"
    r"|\bCONTRACT\s*§"
    r"|(?:\.\./|/work/)" + "shared" + r"\b"
)

_DIRS = "|".join(REPO_DIRS)
_EXTS = "|".join(FILE_EXTENSIONS)
# A repository file path anywhere in the text: starts at a boundary (not inside another
# path such as /opt/treadctl/src/systemd/...), ends with a known extension, may carry a
# pytest node id (::test_x) or a glob.
_PATH_RE = re.compile(
    r"(?<![\w/.$~@<>{}-])((?:" + _DIRS + r")/[\w./*-]*?\.(?:" + _EXTS + r"))"
    r"(?![\w-])"
)
# A repository directory, written with its trailing slash: `soak/`, treadctl/simulator/.
_DIR_RE = re.compile(
    r"(?<![\w/.$~@<>{}+#-])((?:" + _DIRS + r")/(?:[\w.-]+/)*)(?=[\s`'\",;:)]|$)"
)
# Markdown link or image target (no nested parentheses in the target).
_LINK_RE = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_PYTHON_M_RE = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")


def repository_files(root: Path) -> list[Path]:
    """Tracked (and new, not ignored) files that exist in the work tree."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"],
            capture_output=True, check=True, timeout=60,
        ).stdout.decode()
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "dist", "__pycache__"}
        names = [
            str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not (set(p.relative_to(root).parts) & skip)
            and not any(part.endswith(".egg-info") for part in p.relative_to(root).parts)
        ]
    return sorted({root / n for n in names if (root / n).is_file()})


# Placeholders that stand for any name in a cited path (treadctl/programs/builtin/NAME.toml).
PLACEHOLDERS = frozenset({"NAME", "ID", "FILE", "PROFILE", "PROGRAM", "N", "X"})


def _with_placeholders(target: str) -> str:
    parts = []
    for part in target.split("/"):
        stem, dot, ext = part.partition(".")
        parts.append("*" + dot + ext if stem in PLACEHOLDERS else part)
    return "/".join(parts)


def _package_data_dirs(root: Path, path: Path) -> list[Path]:
    """pyproject.toml's package-data globs are relative to their package's directory."""
    if path.name != "pyproject.toml":
        return []
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    packages = data.get("tool", {}).get("setuptools", {}).get("package-data", {})
    return [path.parent.joinpath(*name.split(".")) for name in packages]


def _exists(root: Path, base: Path, target: str, extra: Iterable[Path] = ()) -> bool:
    """``target`` names a file or directory relative to ``base`` or the repository root."""
    target = _with_placeholders(target.split("::", 1)[0].rstrip("/") or ".")
    for start in (base, root, *extra):
        if any(ch in target for ch in "*?["):
            parent, _, pattern = target.rpartition("/")
            directory = start / parent if parent else start
            if directory.is_dir() and any(
                fnmatch.fnmatch(p.name, pattern) for p in directory.iterdir()
            ):
                return True
        elif (start / target).exists():
            return True
    return False


def _module_exists(root: Path, module: str) -> bool:
    path = root.joinpath(*module.split("."))
    return (path / "__main__.py").is_file() or (path / "__init__.py").is_file() or (
        path.with_suffix(".py").is_file()
    )


def _markdown_links(text: str) -> Iterable[tuple[int, str]]:
    fenced = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if _FENCE_RE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        for match in _LINK_RE.finditer(line):
            yield lineno, match.group(1)


def check_text(root: Path, path: Path, text: str) -> list[str]:
    """Problems in one file's text (``path`` is where it lives, for relative links)."""
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    base = path.parent
    extra = _package_data_dirs(root, path)
    problems: list[str] = []
    lines = text.splitlines()
    for lineno, line in enumerate(lines, 1):
        for match in _OUTSIDE_RE.finditer(line):
            problems.append(f"{rel}:{lineno}: cites a note outside the repository: "
                            f"{match.group(0)!r}")
        # A markdown link's target is checked as a link (below), not again as a path.
        link_targets = ([m.span(1) for m in _LINK_RE.finditer(line)]
                        if path.suffix == ".md" else [])
        for match in _PATH_RE.finditer(line):
            if any(lo <= match.start(1) < hi for lo, hi in link_targets):
                continue
            if not _exists(root, base, match.group(1), extra):
                problems.append(f"{rel}:{lineno}: no such file in the repository: "
                                f"{match.group(1)}")
        for match in _DIR_RE.finditer(line):
            if not _exists(root, base, match.group(1)):
                problems.append(f"{rel}:{lineno}: no such directory in the repository: "
                                f"{match.group(1)}")
        for match in _PYTHON_M_RE.finditer(line):
            module = match.group(1).rstrip(".")
            if module.split(".")[0] in REPO_PACKAGES and not _module_exists(root, module):
                problems.append(f"{rel}:{lineno}: `python -m {module}`: no such module in "
                                "the repository")
    if path.suffix == ".md":
        for lineno, target in _markdown_links(text):
            if re.match(r"^[a-zA-Z][\w+.-]*:", target) or target.startswith("#"):
                continue  # a URL (https:, mailto:) or an anchor in the same file
            file_part = target.split("#", 1)[0].split("?", 1)[0]
            if file_part.startswith("/"):
                ok = (root / file_part.lstrip("/")).exists()
            else:
                ok = (base / file_part).exists()
            if not ok:
                problems.append(f"{rel}:{lineno}: broken link: {target}")
    return problems


def find_problems(root: Path, files: Iterable[Path] | None = None) -> list[str]:
    files = repository_files(root) if files is None else list(files)
    me = Path(__file__).resolve()
    problems: list[str] = []
    for path in files:
        if path.suffix not in SCANNED_SUFFIXES or path.resolve() == me:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        problems.extend(check_text(root, path, text))
    return problems


# --- the repository itself -----------------------------------------------------------------


def test_the_repository_cites_only_files_that_are_in_it() -> None:
    problems = find_problems(ROOT)
    assert problems == [], "\n".join(problems)


def test_the_scan_covers_the_files_that_matter() -> None:
    # Guards the test above: an empty or partial file list would pass vacuously.
    names = {str(p.relative_to(ROOT)) for p in repository_files(ROOT)}
    for expected in ("README.md", "docs/safety.md", "docs/reverse-training.md", "docs/cli.md",
                     "systemd/treadctl.service", "examples/daemon.toml",
                     "docs/examples/mosquitto/treadctl.acl", "treadctl/limits.py"):
        assert expected in names, expected


# --- the checker, on planted references -------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "safety.md").write_text("# Safety\n")
    (tmp_path / "treadctl" / "simulator").mkdir(parents=True)
    (tmp_path / "treadctl" / "__init__.py").write_text("")
    (tmp_path / "treadctl" / "limits.py").write_text("")
    (tmp_path / "treadctl" / "simulator" / "__init__.py").write_text("")
    (tmp_path / "soak").mkdir()
    (tmp_path / "soak" / "__main__.py").write_text("")
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "daemon.toml").write_text("")
    return tmp_path


def _problems(tree: Path, name: str, text: str) -> list[str]:
    path = tree / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return find_problems(tree, [path])


GOOD = """\
See [safety](safety.md), [the top](#top), [examples](../examples/daemon.toml) and
<https://example.org/x.md>, [web](https://example.org/CHANGES.md).
Code: `treadctl/limits.py`, treadctl/simulator/, `soak/`, `examples/*.toml`,
`tests/x.py` is not cited here. Topics: `treadctl/lane-1/state`, `treadctl/+/cmd/#`,
paths outside the tree: /opt/treadctl/src/systemd/treadctl.service, /etc/treadctl/x.toml.
Run `python -m soak` or `python3 -m venv`.
```
[inside a code block](nowhere.md)
```
"""


def test_checker_accepts_good_references(tree: Path) -> None:
    text = GOOD.replace("`tests/x.py` is not cited here. ", "")
    assert _problems(tree, "docs/page.md", text) == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("see [daemon](daemon.md)", "broken link: daemon.md"),
        ("see [daemon](daemon.md#install)", "broken link: daemon.md#install"),
        ("see ![plot](img/plot.png)", "broken link: img/plot.png"),
        ("see `docs/x.md`", "no such file in the repository: docs/x.md"),
        ("see docs/cli.md for the options", "no such file in the repository: docs/cli.md"),
        ("code in `treadctl/soak/virtual.py`", "treadctl/soak/virtual.py"),
        ("profiles in `firmware_profiles/*.toml`", "firmware_profiles/*.toml"),
        ("the unit `systemd/treadctl.service`", "systemd/treadctl.service"),
        ("config `examples/site.toml`", "examples/site.toml"),
        ("`tests/control/test_x.py::test_y`", "tests/control/test_x.py"),
        ("code moved from `simulator/`", "no such directory in the repository: simulator/"),
        ("simulator/           physics", "no such directory in the repository: simulator/"),
        ("run `python -m treadctl.soak`", "python -m treadctl.soak"),
        ("the surface is as in `" + "CONTRACT" + ".md`", "outside the repository"),
        ("(" + "CONTRACT" + " §6)", "outside the repository"),
        ("why: see " + "REVERSE" + ".md", "outside the repository"),
        ("per " + "PROTOCOLS" + ".md", "outside the repository"),
        ("the " + "FTMS" + ".md fact sheet", "outside the repository"),
        ("see " + "STYLE" + ".md", "outside the repository"),
        ("see " + "REVIEW" + ".md", "outside the repository"),
        ("../" + "shared/notes", "outside the repository"),
        ('"url": "/work/' + 'shared/x"', "outside the repository"),
    ],
)
def test_checker_catches_a_planted_bad_reference(tree: Path, text: str, needle: str) -> None:
    problems = _problems(tree, "docs/page.md", text + "\n")
    assert len(problems) == 1, problems
    assert needle in problems[0]
    assert problems[0].startswith("docs/page.md:1: ")


@pytest.mark.parametrize("suffix", [".py", ".toml", ".service", ".conf", ".acl", ".sh", ".json"])
def test_checker_scans_every_kind_of_text_file(tree: Path, suffix: str) -> None:
    problems = _problems(tree, f"systemd/x{suffix}", "# see docs/missing.md\n")
    assert problems == [f"systemd/x{suffix}:1: no such file in the repository: docs/missing.md"]


def test_checker_resolves_paths_against_the_citing_directory(tree: Path) -> None:
    # docs/examples/udev/99.rules cited from docs/ as examples/udev/99.rules is fine ...
    (tree / "docs" / "examples" / "udev").mkdir(parents=True)
    (tree / "docs" / "examples" / "udev" / "99.rules").write_text("")
    assert _problems(tree, "docs/page.md", "`examples/udev/99.rules`\n") == []
    # ... from the README (where examples/ is the top-level folder) it is not.
    assert _problems(tree, "README.md", "`examples/udev/99.rules`\n") == [
        "README.md:1: no such file in the repository: examples/udev/99.rules"
    ]


def test_checker_placeholders_and_package_data(tree: Path) -> None:
    (tree / "treadctl" / "firmware_profiles").mkdir()
    (tree / "treadctl" / "firmware_profiles" / "a.toml").write_text("")
    assert _problems(tree, "docs/page.md", "`treadctl/firmware_profiles/NAME.toml`\n") == []
    assert _problems(tree, "docs/page.md", "`treadctl/programs/NAME.toml`\n") != []
    pyproject = '[tool.setuptools.package-data]\n"treadctl" = ["firmware_profiles/*.toml"]\n'
    assert _problems(tree, "pyproject.toml", pyproject) == []
    assert _problems(tree, "pyproject.toml", pyproject.replace("*.toml", "*.json")) != []


def test_the_whole_repository_fails_with_a_planted_reference(tmp_path: Path) -> None:
    # A copy of the real docs and README with one bad reference added: the full scan
    # (not just one planted file) reports exactly that one.
    files = [p for p in repository_files(ROOT)
             if p.suffix == ".md" or p.is_relative_to(ROOT / "systemd")]
    copies: list[Path] = []
    for path in files:
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        copies.append(target)
    for path in repository_files(ROOT):  # the cited files must exist in the copy too
        target = tmp_path / path.relative_to(ROOT)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    baseline = find_problems(tmp_path, copies)
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text() + "\nSee [gone](docs/gone.md).\n")
    after = find_problems(tmp_path, copies)
    added = [p for p in after if p not in baseline]
    assert len(added) == 1 and "broken link: docs/gone.md" in added[0], added
