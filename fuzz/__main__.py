"""``python -m fuzz``: run every fuzz target under atheris (libFuzzer), in parallel processes.

    python -m fuzz [--runs N] [--target NAME ...] [--jobs J] [--update-corpus]

Each target runs in its own process (``--worker``), ``--jobs`` at a time (default 2: the
machines this runs on have 2 cores). A worker instruments ``treadctl``/``simulator`` for
coverage, seeds libFuzzer with the generated seeds (:mod:`fuzz.seeds`) and the committed
corpus, and runs ``--runs`` inputs (default 1,000,000). The parent prints per target: inputs
executed, exec/s, crashes, corpus size, coverage, and exits 1 when any target crashed (an
exception other than the documented ones, or an oracle failure; the crashing input is kept
as ``crash-*`` in the work directory and its path is printed).

``--update-corpus`` merges what the run found into ``fuzz/corpus/<target>/`` with
libFuzzer's ``-merge=1`` (keeps only inputs that add coverage), so the committed corpus
stays small; the regression test replays it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAMES = ("lane", "framing", "mqtt", "ftms", "hr",  # slowest first, so two jobs finish together
         "biodex", "woodway", "bertec", "trackmaster")  # fuzz/protocol_targets.py


@dataclass
class Result:
    target: str
    runs: int = 0
    exec_per_s: float = 0.0
    crashes: int = 0
    corpus: int = 0
    committed: int = 0
    cov: int = 0
    seconds: float = 0.0
    returncode: int = 0
    artifacts: tuple[str, ...] = ()
    log: str = ""


def _worker(target: str, runs: int, workdir: Path, merge: bool, passthrough: list[str]) -> int:
    """Run inside the child process: libFuzzer owns the process from here on."""
    import logging

    import atheris

    logging.disable(logging.CRITICAL)  # the lane's e-stops log loudly; only crashes matter
    with atheris.instrument_imports(include=["treadctl", "simulator"]):
        from fuzz import seeds, targets
    t = targets.TARGETS[target]
    run = t.run
    count = 0

    def one_input(data: bytes) -> None:
        nonlocal count
        run(data)
        count += 1
        if target == "lane" and (count % 100_000 == 0 or count == runs):
            # What the state-change oracle checked so far (refusals, acks, e-stops).
            print(f"lane outcomes after {count}: {targets.lane_harness().stats}", flush=True)

    seed_dir = workdir / "seeds"
    new_dir = workdir / "new"
    new_dir.mkdir(parents=True, exist_ok=True)
    seeds.write_seeds(target, seed_dir)
    committed = seeds.CORPUS / target
    committed.mkdir(parents=True, exist_ok=True)
    args = [sys.argv[0], f"-max_len={t.max_len}", "-print_final_stats=1",
            f"-artifact_prefix={workdir}/", "-timeout=60"]
    if passthrough:
        # libFuzzer re-running us as a merge child (through the wrapper script below).
        args = [str(workdir / "worker.sh"), *passthrough]
    elif merge:
        # libFuzzer's merge re-executes argv[0]: give it a script that lands back here.
        script = workdir / "worker.sh"
        script.write_text(f"#!/bin/sh\ncd {ROOT}\nexec {sys.executable} -m fuzz --worker "
                          f"{target} --workdir {workdir} -- \"$@\"\n")
        script.chmod(0o755)
        # Inputs of every directory that add coverage land in the (emptied) merged dir.
        merged = workdir / "merged"
        merged.mkdir(exist_ok=True)
        args = [str(script), f"-max_len={t.max_len}", "-merge=1",
                f"-merge_control_file={workdir}/merge.ctl",
                str(merged), str(committed), str(new_dir), str(seed_dir)]
    else:
        args += [f"-runs={runs}", str(new_dir), str(seed_dir), str(committed)]
    atheris.Setup(args, one_input)
    atheris.Fuzz()
    return 0


def _parse(result: Result, log: str) -> None:
    stats = dict(re.findall(r"stat::(\w+):\s*(\d+)", log))
    result.runs = int(stats.get("number_of_executed_units", 0))
    result.exec_per_s = float(stats.get("average_exec_per_sec", 0))
    if result.seconds > 0:
        result.exec_per_s = max(result.exec_per_s, result.runs / result.seconds)
    done = re.findall(r"#\d+\s+(?:DONE|INITED|NEW|REDUCE|pulse)\s+cov: (\d+) ft: \d+ corp: (\d+)/",
                      log)
    if done:
        result.cov, result.corpus = int(done[-1][0]), int(done[-1][1])
    result.artifacts = tuple(re.findall(r"Test unit written to (\S+)", log))
    crashed = "Uncaught Python exception" in log or bool(result.artifacts)
    result.crashes = 1 if crashed or result.returncode != 0 else 0


def _spawn(target: str, runs: int, work: Path, merge: bool, log: Path) -> tuple[int, str]:
    """Run a worker; its output goes to ``log`` as it runs (tail it to watch progress)."""
    cmd = [sys.executable, "-m", "fuzz", "--worker", target, "--runs", str(runs),
           "--workdir", str(work)]
    if merge:
        cmd.append("--merge")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                              check=False)
    return proc.returncode, log.read_text(errors="replace")


def _run_target(target: str, runs: int, base: Path, update: bool) -> Result:
    work = base / target
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    rc, log = _spawn(target, runs, work, merge=False, log=work / "fuzz.log")
    res = Result(target, seconds=time.monotonic() - t0, returncode=rc, log=log)
    _parse(res, res.log)
    if update and not res.crashes:
        merged = work / "merged"
        shutil.rmtree(merged, ignore_errors=True)
        mrc, _ = _spawn(target, 0, work, merge=True, log=work / "merge.log")
        if mrc == 0 and merged.is_dir():
            dest = HERE / "corpus" / target
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(merged, dest)
    dest = HERE / "corpus" / target
    res.committed = len(list(dest.iterdir())) if dest.is_dir() else 0
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    p.add_argument("--target", action="append", choices=NAMES,
                   help="run only this target (repeatable; default: all)")
    p.add_argument("--jobs", type=int, default=2, help="targets run in parallel")
    p.add_argument("--update-corpus", action="store_true",
                   help="merge new coverage into fuzz/corpus/<target>/ (minimized)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where libFuzzer keeps its working corpus and crash files")
    p.add_argument("--worker", choices=NAMES, help=argparse.SUPPRESS)
    p.add_argument("--merge", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    passthrough: list[str] = []
    if "--" in argv:  # libFuzzer flags for a merge child
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    args = p.parse_args(argv)

    if args.worker:
        return _worker(args.worker, args.runs, args.workdir, args.merge, passthrough)

    names = [n for n in NAMES if not args.target or n in args.target]
    base = args.workdir or Path(tempfile.mkdtemp(prefix="treadctl-fuzz-"))
    print(f"fuzzing {', '.join(names)}: {args.runs:,} inputs each, {args.jobs} jobs, "
          f"work dir {base}", flush=True)
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(_run_target, n, args.runs, base, args.update_corpus)
                   for n in names]
        results: list[Result] = []
        for f in futures:
            r = f.result()
            results.append(r)
            print(f"  {r.target}: done in {r.seconds:.0f} s", flush=True)

    print(f"\n{'target':<10}{'inputs':>12}{'exec/s':>10}{'crashes':>9}{'corpus':>8}"
          f"{'committed':>11}{'cov':>7}{'time s':>9}")
    for r in results:
        print(f"{r.target:<10}{r.runs:>12,}{r.exec_per_s:>10,.0f}{r.crashes:>9}{r.corpus:>8}"
              f"{r.committed:>11}{r.cov:>7}{r.seconds:>9.0f}")
    print(f"total {time.monotonic() - t0:.0f} s")
    bad = [r for r in results if r.crashes or r.runs < args.runs]
    for r in bad:
        print(f"\n{r.target}: exit {r.returncode}, crash files {list(r.artifacts)}; log "
              f"{base / r.target / 'fuzz.log'}")
        tail = "\n".join(r.log.splitlines()[-40:])
        print(tail)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
