"""`dtf run -n 2` against plain pytest and pytest-xdist on public projects' own test suites.

Each suite is a released project from PyPI, installed at pinned versions into a virtual
environment of its own, and run with its own tests:

| suite | installed | pytest arguments | run from |
|---|---|---|---|
| attrs 26.1.0 | sdist, with hypothesis, pympler, cloudpickle | `tests` | the sdist root |
| boltons 26.2.0 | sdist | `--doctest-modules boltons tests` | the sdist root |
| click 8.5.1 | sdist | `tests` | the sdist root |
| dateutil 4.0.0 | sdist, with freezegun, hypothesis, attrs, pytest-cov | `tests` | the sdist root |
| more-itertools 11.2.1 | sdist | `tests` | the sdist root |
| pyparsing 3.3.3 | sdist, `[diagrams]` | `tests` | the sdist root |
| toolz 1.2.0 | sdist | `--doctest-modules toolz` | the sdist root |
| sympy 1.14.0 | wheel, with hypothesis | `--pyargs sympy.sets` | an empty directory |
| pandas 3.1.1 | wheel, with hypothesis | `--pyargs pandas.tests.indexes` | an empty directory |
| pytest 9.2.0 | sdist, with its `dev` extra less coverage | `testing/python` | the sdist root |

Installing. `bench/corpus/NAME.constraints.txt` is the `pip freeze` (dtf left out) of
the environment each suite was measured in; every install goes through `pip install -c`
with it, so every machine measures the same code. A suite's folder in the cache (default
`~/.cache/dtf-corpus/NAME`) holds its venv (made by this interpreter, `-m venv`), its
downloaded sdist (`pip download --no-deps --no-binary :all:`) and the sdist unpacked. The
venv gets the project (from the sdist where there is one), the packages its tests need,
pytest-xdist, and dtf from this repository (`pip install -e`). A marker file records the
install as complete for the content of the constraints file (and the suite's definition);
later runs reuse it unless `--reinstall`. After installing, the venv is compared with the
constraints file and any package that differs is reported. An install takes 30 to 45 s per
suite from PyPI (all ten 6 to 7 minutes on a 2-core machine); the cache takes about 4 GB,
400 MB a venv, as each holds dtf's own dependencies.

Measuring. For each suite, back to back, each the wall clock of the whole command, from
its start to its exit (the venv's own `python -m pytest` and `dtf`):

- pytest: `python -m pytest ARGS`, serial
- xdist: `python -m pytest -n 2 ARGS`
- dtf first: `dtf run -n 2 --data-dir DATA -- ARGS`, DATA a new directory (no recorded
  durations, no last collection, no cluster: the run starts one)
- dtf second: the same command again with the same DATA, using whatever the first run
  left there (durations, its last collection, a cluster it left running), as a second
  run of the same command does; `dtf down --data-dir DATA` then stops any cluster left
- dtf warm: after an untimed `dtf run -n 2 --keep --data-dir DATA2 -- ARGS`, the timed
  `dtf run -n 2 --data-dir DATA2 -- ARGS` on the cluster it kept; `dtf down` stops it

Every command also gets `--junitxml PATH`, nothing else: the suites run with the
arguments above and their own configuration. PYTHONDONTWRITEBYTECODE is removed from the
commands' environment (bytecode is cached, as on a developer's machine), and the venv's
bin directory leads PATH with VIRTUAL_ENV set, as in an activated venv, for tests that
start `python` or a script. Each command may run `--timeout` seconds (default 900);
one that runs longer is killed, with its process group, and its cluster stopped. A
failing suite, whether it does not install or its commands fail, does not stop the
others.

Checking. Every run is compared with plain pytest's run of the same repetition: its exit
code, the counts of pytest's final summary line (`3 failed, 120 passed, 2 skipped, 4
deselected, 1 xfailed, 1 error, ... in 4.21s`), and each test's outcome in the JUnit
report, (classname, name) -> passed, failed, skipped or error. A run matches when its exit
code and counts are equal and no test's outcome differs. Warnings are not compared: pytest
counts them per process, so xdist's differ by design. xdist's summary also leaves out
deselected tests, so xdist differs on click, whose configuration deselects its stress
tests. Some suites fail under plain pytest too (on the reference machine: attrs 1 test,
`TestPipe::test_wrapped_annotation`; dateutil 3, whose expectations do not hold for the
system's /usr/share/zoneinfo); the comparison is with plain pytest's own result, not
with a green run.

Every command's full output, its JUnit report, the first differing tests of a run that
does not match, and the data directory's logs of a dtf run that does not match are kept
in the log directory (default `~/.cache/dtf-corpus/logs/TIMESTAMP`, `--logs`).

    python bench/corpus.py [--suites attrs,click] [--repetitions 1] [--workers 2]
        [--cache DIR] [--logs DIR] [--json PATH] [--timeout 900] [--skip-install] [--reinstall]

The table has one row per suite: the number of tests (plain pytest's passed, failed,
skipped, xfailed, xpassed and errors), each tool's median seconds over the repetitions,
dtf's against xdist's, and whether each tool matched plain pytest ("yes", or what
differed). `--json PATH` writes every run's raw figures. With the installs cached, one
repetition of all ten suites takes 20 to 25 minutes on a 2-core machine, each suite 20 s
(toolz) to 5 minutes (pyparsing, pandas); `--suites` and `--repetitions` scale it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
if not console.is_terminal:
    console = Console(width=200)  # the table stays readable in a log file

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "bench" / "corpus"
DEFAULT_CACHE = Path.home() / ".cache" / "dtf-corpus"
INSTALL_TIMEOUT_S = 1800.0
DOWN_TIMEOUT_S = 120.0
TERM_GRACE_S = 30.0  # after SIGTERM, before SIGKILL: a dtf run stops its cluster in this time
DIFF_LINES = 50  # differing tests written per run

# Every command runs as on a developer's machine, where Python caches compiled modules (and
# pytest its rewritten test files). Where PYTHONDONTWRITEBYTECODE is set, as on some CI
# images, every run would compile every module again.
BASE_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


@dataclass(frozen=True)
class Suite:
    name: str  # also its constraints file's name
    project: str
    version: str
    args: tuple[str, ...]
    sdist: bool = True  # installed from its sdist and run from the unpacked root; else a wheel
    extras: str = ""  # the project's own extras
    packages: tuple[str, ...] = ()  # what else its tests need; versions from the constraints

    @property
    def constraints(self) -> Path:
        return CORPUS / f"{self.name}.constraints.txt"


SUITES = (
    Suite("attrs", "attrs", "26.1.0", ("tests",), packages=("hypothesis", "pympler", "cloudpickle")),
    Suite("boltons", "boltons", "26.2.0", ("--doctest-modules", "boltons", "tests")),
    Suite("click", "click", "8.5.1", ("tests",)),
    Suite(
        "dateutil", "python-dateutil", "4.0.0", ("tests",), packages=("freezegun", "hypothesis", "attrs", "pytest-cov")
    ),
    Suite("more-itertools", "more-itertools", "11.2.1", ("tests",)),
    Suite("pyparsing", "pyparsing", "3.3.3", ("tests",), extras="diagrams"),
    Suite("toolz", "toolz", "1.2.0", ("--doctest-modules", "toolz")),
    Suite("sympy", "sympy", "1.14.0", ("--pyargs", "sympy.sets"), sdist=False, packages=("hypothesis",)),
    Suite("pandas", "pandas", "3.1.1", ("--pyargs", "pandas.tests.indexes"), sdist=False, packages=("hypothesis",)),
    # pytest's `dev` extra less coverage, which the measured environment did not have
    # (numpy comes with dtf, setuptools with the venv).
    Suite(
        "pytest",
        "pytest",
        "9.2.0",
        ("testing/python",),
        packages=("argcomplete", "attrs", "hypothesis", "mock", "pexpect", "pyyaml", "requests", "xmlschema"),
    ),
)
SUITES_BY_NAME = {s.name: s for s in SUITES}

PYTEST = "pytest"
XDIST = "xdist"
DTF_FIRST = "dtf first"
DTF_SECOND = "dtf second"
DTF_WARMUP = "dtf warm-up"  # untimed: starts the warm cluster
DTF_WARM = "dtf warm"
COMPARED = (XDIST, DTF_FIRST, DTF_SECOND, DTF_WARM)
TIMED = (PYTEST, *COMPARED)


@dataclass
class Settings:
    cache: Path
    logs: Path
    workers: int
    timeout_s: float
    repetitions: int


@dataclass
class Place:
    """Where a suite lives in the cache."""

    dir: Path

    @property
    def venv(self) -> Path:
        return self.dir / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def dtf(self) -> Path:
        return self.venv / "bin" / "dtf"

    @property
    def download(self) -> Path:
        return self.dir / "download"

    @property
    def src(self) -> Path:
        return self.dir / "src"

    @property
    def marker(self) -> Path:
        return self.dir / "installed.json"

    @property
    def install_log(self) -> Path:
        return self.dir / "install.log"

    def sdist_root(self) -> Path:
        """The unpacked sdist's top directory (an sdist holds exactly one)."""
        (root,) = [p for p in self.src.iterdir() if p.is_dir()]
        return root


@dataclass
class Install:
    ok: bool
    seconds: float = 0.0
    cached: bool = False
    error: str | None = None
    deviations: list[str] = field(default_factory=list)  # the venv against the constraints
    log: str = ""


@dataclass
class Run:
    tool: str
    repetition: int
    command: list[str]
    log: str
    junit: str
    seconds: float | None = None  # None: timed out
    exit_code: int | None = None
    summary: str | None = None  # pytest's summary line
    counts: dict[str, int] = field(default_factory=dict)
    ids_differ: int | None = None  # None: no comparison (no report)
    mismatch: list[str] = field(default_factory=list)  # against plain pytest; empty: matches
    # (classname, name) -> outcomes from the JUnit report; None: no readable report
    outcomes: dict[tuple[str, str], tuple[str, ...]] | None = field(default=None, repr=False)

    def figures(self) -> dict[str, Any]:
        """What the JSON keeps of a run."""
        data = asdict(self)
        del data["outcomes"]
        data["matches"] = not self.mismatch if self.tool in COMPARED else None
        return data


# --- installing -----------------------------------------------------------------------


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_key(suite: Suite) -> str:
    """What a complete install was made from: the constraints' content, the suite, the
    interpreter, the dtf checkout. A different key means installing again."""
    digest = hashlib.sha256(suite.constraints.read_bytes()).hexdigest()
    return f"{digest} {suite!r} {sys.executable} {sys.version.split()[0]} {REPO}"


def is_installed(suite: Suite, place: Place) -> bool:
    try:
        marker = json.loads(place.marker.read_text())
    except (OSError, ValueError):
        return False
    return bool(marker.get("key") == install_key(suite) and place.python.exists())


def step(description: str, command: list[str], log: Path) -> None:
    """One install step, its output appended to the suite's install log."""
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=BASE_ENV,
            timeout=INSTALL_TIMEOUT_S,
            check=True,
        )
    console.print(f"    {escape(description)}: {time.perf_counter() - started:.0f} s")


def fetch_sdist(suite: Suite, place: Place) -> Path:
    """The suite's sdist (a .tar.gz, as sdists are), downloaded once and kept across
    reinstalls."""
    found = sorted(place.download.glob("*.tar.gz"))
    if not found:
        place.download.mkdir(parents=True, exist_ok=True)
        command = [str(place.python), "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        command += ["-d", str(place.download), f"{suite.project}=={suite.version}"]
        step("download the sdist", command, place.install_log)
        found = sorted(place.download.glob("*.tar.gz"))
    if len(found) != 1:
        raise ValueError(f"expected one sdist in {place.download}, found {[p.name for p in found]}")
    return found[0]


def venv_deviations(suite: Suite, place: Place) -> list[str]:
    """How the installed packages differ from the constraints, less pip, setuptools and
    wheel (which `pip freeze` leaves out) and dtf (left out of the constraints)."""
    listed = subprocess.run(
        [str(place.python), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        env=BASE_ENV,
        check=True,
    ).stdout
    installed = {normalize(p["name"]): p["version"] for p in json.loads(listed)}
    pinned: dict[str, str] = {}
    for line in suite.constraints.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pinned[normalize(name)] = version
    deviations = []
    for name in sorted(installed.keys() | pinned.keys()):
        if name in {"pip", "setuptools", "wheel", "dtf"}:
            continue
        have, want = installed.get(name), pinned.get(name)
        if have == want:
            continue
        if want is None:
            deviations.append(f"{name} {have} installed, not in the constraints")
        elif have is None:
            deviations.append(f"{name} {want} in the constraints, not installed")
        else:
            deviations.append(f"{name} {have} installed, {want} in the constraints")
    return deviations


def install(suite: Suite, place: Place, reinstall: bool) -> Install:
    if not reinstall and is_installed(suite, place):
        marker = json.loads(place.marker.read_text())
        # seconds: what the cached install took when it was made
        return Install(
            ok=True,
            seconds=marker.get("seconds", 0.0),
            cached=True,
            deviations=marker.get("deviations", []),
            log=str(place.install_log),
        )
    started = time.perf_counter()
    place.marker.unlink(missing_ok=True)
    shutil.rmtree(place.venv, ignore_errors=True)
    shutil.rmtree(place.src, ignore_errors=True)
    place.dir.mkdir(parents=True, exist_ok=True)
    place.install_log.write_text("")
    console.print(f"[bold]{suite.name}[/bold]: installing into {place.dir} (log {place.install_log})")
    try:
        with console.status(f"{suite.name}: installing"):
            step("create the venv", [sys.executable, "-m", "venv", str(place.venv)], place.install_log)
            if suite.sdist:
                archive = fetch_sdist(suite, place)
                shutil.unpack_archive(archive, place.src, filter="data")
                place.sdist_root()  # exactly one top directory, or fail here rather than later
                project = f"{archive}[{suite.extras}]" if suite.extras else str(archive)
            else:
                project = f"{suite.project}[{suite.extras}]" if suite.extras else suite.project
                project += f"=={suite.version}"
            command = [str(place.python), "-m", "pip", "install", "-c", str(suite.constraints), project]
            command += [*suite.packages, "pytest-xdist", "-e", str(REPO)]
            step("pip install", command, place.install_log)
            deviations = venv_deviations(suite, place)
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        seconds = time.perf_counter() - started
        console.print(f"[red]{suite.name}: install failed after {seconds:.0f} s: {escape(str(exc))}[/red]")
        tail = place.install_log.read_text(errors="replace").strip().splitlines()[-8:]
        for line in tail:
            console.print(f"    {line}", markup=False, highlight=False)
        return Install(ok=False, seconds=seconds, error=str(exc), log=str(place.install_log))
    seconds = time.perf_counter() - started
    for deviation in deviations:
        console.print(f"    [yellow]differs from the constraints: {escape(deviation)}[/yellow]")
    marker = {"key": install_key(suite), "seconds": round(seconds, 1), "deviations": deviations}
    place.marker.write_text(json.dumps(marker, indent=2) + "\n")
    console.print(f"  {suite.name}: installed in {seconds:.0f} s")
    return Install(ok=True, seconds=seconds, deviations=deviations, log=str(place.install_log))


# --- running --------------------------------------------------------------------------


def suite_env(place: Place) -> dict[str, str]:
    """As in the activated venv: tests that start `python` or a script get the venv's."""
    env = dict(BASE_ENV)
    env["VIRTUAL_ENV"] = str(place.venv)
    env["PATH"] = f"{place.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's process group (a dtf run then stops its cluster), SIGKILL to
    whatever is left after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def execute(
    command: list[str], cwd: Path, env: dict[str, str], log: Path, timeout_s: float
) -> tuple[float, int | None]:
    """Runs a command with its output in the log: wall-clock seconds and exit code (None:
    killed after timeout_s)."""
    with log.open("w") as out:
        out.write(f"$ cd {cwd} && {' '.join(command)}\n\n")
        out.flush()
        started = time.perf_counter()
        # A session of its own, so a timeout kills what it started too (xdist's workers).
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
            stop_group(proc)
        except BaseException:
            stop_group(proc)
            raise
        elapsed = time.perf_counter() - started
        status = f"exit code {code}" if code is not None else f"killed after a timeout of {timeout_s:.0f} s"
        out.write(f"\n$ {status}, {elapsed:.2f} s\n")
    return elapsed, code


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SUMMARY = re.compile(r"^=*\s*(?P<body>no tests ran|\d+ [^=]*?)\s+in\s+\d+(?:\.\d+)?s\b")
COUNT = re.compile(r"(\d+) ([a-z][a-z ]*)")
SINGULAR = {"error": "errors", "warning": "warnings"}
NOT_COMPARED = {"warnings"}  # counted per process by pytest: xdist's differ by design
TEST_COUNTS = ("passed", "failed", "skipped", "xfailed", "xpassed", "errors")


def parse_summary(output: str) -> tuple[str | None, dict[str, int]]:
    """Pytest's last summary line (`==== 3 failed, 120 passed in 4.21s ====`) and its
    counts; (None, {}) when the output has none."""
    for raw in reversed(output.splitlines()):
        line = ANSI.sub("", raw).strip()
        match = SUMMARY.match(line)
        if not match:
            continue
        body = match["body"]
        if body == "no tests ran":
            return line.strip("= "), {}
        counts: dict[str, int] = {}
        for part in body.split(", "):
            count = COUNT.fullmatch(part.strip())
            if count is None:
                break
            word = count[2].strip()
            counts[SINGULAR.get(word, word)] = int(count[1])
        else:
            return line.strip("= "), counts
    return None, {}


def case_outcome(case: ElementTree.Element) -> str:
    for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        if case.find(tag) is not None:
            return outcome
    return "passed"


def read_outcomes(path: Path) -> dict[tuple[str, str], tuple[str, ...]] | None:
    """(classname, name) -> outcomes of a JUnit report; a test can appear twice (a failure
    in its call and an error in its teardown). None when there is no readable report."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for case in root.iter("testcase"):
        found[(case.get("classname", ""), case.get("name", ""))].append(case_outcome(case))
    return {key: tuple(sorted(outcomes)) for key, outcomes in found.items()}


def compare(run: Run, reference: Run, diff_file: Path) -> list[str]:
    """What differs between a run and plain pytest's; the differing tests go to diff_file."""
    if reference.exit_code is None or reference.summary is None:
        return ["no reference: plain pytest " + ("timed out" if reference.exit_code is None else "printed no summary")]
    if run.exit_code is None:
        return ["timed out"]
    differences = []
    if run.exit_code != reference.exit_code:
        differences.append(f"exit {run.exit_code}≠{reference.exit_code}")
    if run.summary is None:
        differences.append("no summary line")
    else:
        keys = [k for k in reference.counts if k not in NOT_COMPARED]
        keys += [k for k in run.counts if k not in NOT_COMPARED and k not in reference.counts]
        for key in keys:
            got, want = run.counts.get(key, 0), reference.counts.get(key, 0)
            if got != want:
                differences.append(f"{key} {got}≠{want}")
    if run.outcomes is None or reference.outcomes is None:
        differences.append("no JUnit report" + (" from plain pytest" if reference.outcomes is None else ""))
        return differences
    differing = sorted(
        k for k in run.outcomes.keys() | reference.outcomes.keys() if run.outcomes.get(k) != reference.outcomes.get(k)
    )
    run.ids_differ = len(differing)
    if differing:
        differences.append(f"{len(differing)} ids differ")
        lines = [f"{len(differing)} tests whose outcome differs ({run.tool} against plain pytest):"]
        for classname, name in differing[:DIFF_LINES]:
            expected = ",".join(reference.outcomes.get((classname, name), ("absent",)))
            actual = ",".join(run.outcomes.get((classname, name), ("absent",)))
            lines.append(f"{classname}::{name}: pytest {expected}, {run.tool} {actual}")
        diff_file.write_text("\n".join(lines) + "\n")
    return differences


def slug(tool: str) -> str:
    return tool.replace(" ", "-")


@dataclass
class Bench:
    """One suite's runs: where they run and what they ran."""

    suite: Suite
    place: Place
    settings: Settings
    cwd: Path
    logs: Path
    env: dict[str, str]
    runs: list[Run] = field(default_factory=list)

    def pytest(self, *options: str) -> list[str]:
        return [str(self.place.python), "-m", "pytest", *options]

    def dtf_run(self, data_dir: Path, *options: str) -> list[str]:
        command = [str(self.place.dtf), "run", "-n", str(self.settings.workers), "--data-dir", str(data_dir)]
        return [*command, *options]

    def run(self, tool: str, repetition: int, command: list[str]) -> Run:
        """Runs one command with `--junitxml` added (before the `--` of a dtf command)."""
        name = f"r{repetition}-{slug(tool)}"
        junit = self.logs / f"{name}.xml"
        junit.unlink(missing_ok=True)
        split = command.index("--") if "--" in command else len(command) - len(self.suite.args)
        command = [*command[:split], "--junitxml", str(junit), *command[split:]]
        log = self.logs / f"{name}.log"
        with console.status(f"{self.suite.name} [{repetition}/{self.settings.repetitions}] {tool}"):
            seconds, code = execute(command, self.cwd, self.env, log, self.settings.timeout_s)
        summary, counts = parse_summary(log.read_text(errors="replace"))
        run = Run(tool, repetition, command, str(log), str(junit), exit_code=code, summary=summary, counts=counts)
        run.seconds = seconds if code is not None else None
        run.outcomes = read_outcomes(junit)
        reference = next((r for r in self.runs if r.repetition == repetition and r.tool == PYTEST), None)
        if tool in COMPARED and reference is not None:
            run.mismatch = compare(run, reference, self.logs / f"{name}.diff.txt")
        self.runs.append(run)
        self.show(run)
        return run

    def show(self, run: Run) -> None:
        label = f"[{run.repetition}/{self.settings.repetitions}] {run.tool}"
        took = f"{run.seconds:7.1f} s" if run.seconds is not None else "timed out"
        verdict = ""
        if run.tool in COMPARED:
            verdict = "matches" if not run.mismatch else "DIFFERS: " + "; ".join(run.mismatch)
        line = f"  {label:<22} {took:>9}  exit {run.exit_code}  {run.summary or '(no summary line)'}  {verdict}"
        console.print(line, markup=False, highlight=False)

    def down(self, data_dir: Path, repetition: int, tool: str) -> None:
        """Stops a cluster kept in data_dir (or left behind by a killed run), if one started."""
        if not (data_dir / "connection.json").exists():
            return
        command = [str(self.place.dtf), "down", "--data-dir", str(data_dir)]
        log = self.logs / f"r{repetition}-{slug(tool)}-down.log"
        _, code = execute(command, self.cwd, self.env, log, DOWN_TIMEOUT_S)
        if code != 0:
            console.print(f"  [yellow]dtf down --data-dir {data_dir}: exit {code} (see {log})[/yellow]")

    def keep_dtf_logs(self, data_dir: Path) -> None:
        """The coordinator's and workers' logs of a run that differs, for investigation."""
        source = data_dir / "logs"
        if source.is_dir():
            shutil.copytree(source, self.logs / f"{data_dir.name}-logs", dirs_exist_ok=True)

    def repetition(self, rep: int, tmp: Path) -> None:
        args = list(self.suite.args)
        workers = str(self.settings.workers)
        self.run(PYTEST, rep, self.pytest(*args))
        self.run(XDIST, rep, self.pytest("-n", workers, *args))
        # Fresh data directories per repetition: the first run has no recorded durations
        # and no last collection, and starts its own cluster.
        first_dir, warm_dir = tmp / f"dtf-first-{rep}", tmp / f"dtf-warm-{rep}"
        runs: list[Run] = []
        try:
            for tool in (DTF_FIRST, DTF_SECOND):
                runs.append(self.run(tool, rep, self.dtf_run(first_dir, "--", *args)))
        finally:
            # A run may leave its cluster running for the next one (the second run uses
            # it). Stopped here, it cannot share its pytest servers with the warm runs.
            self.down(first_dir, rep, DTF_SECOND)
        try:
            self.run(DTF_WARMUP, rep, self.dtf_run(warm_dir, "--keep", "--", *args))
            runs.append(self.run(DTF_WARM, rep, self.dtf_run(warm_dir, "--", *args)))
        finally:
            self.down(warm_dir, rep, DTF_WARM)
        if runs[0].mismatch or runs[1].mismatch:
            self.keep_dtf_logs(first_dir)
        if runs[-1].tool == DTF_WARM and runs[-1].mismatch:
            self.keep_dtf_logs(warm_dir)


def bench_suite(suite: Suite, place: Place, settings: Settings, runs: list[Run]) -> None:
    """Runs the suite's commands, appending each run to runs as it ends."""
    logs = settings.logs / suite.name
    logs.mkdir(parents=True, exist_ok=True)
    console.rule(f"{suite.name} {suite.version}: pytest {' '.join(suite.args)} (load average {load()})")
    # A process that outlives its run may still write there: cleaning up is best effort.
    with tempfile.TemporaryDirectory(prefix=f"dtf-corpus-{suite.name}-", ignore_cleanup_errors=True) as tmp_name:
        tmp = Path(tmp_name)
        if suite.sdist:
            cwd = place.sdist_root()
        else:
            # One empty directory for every command of the suite: dtf's second run finds
            # its last collection by the directory (among other things).
            cwd = tmp / "cwd"
            cwd.mkdir()
        bench = Bench(suite, place, settings, cwd, logs, suite_env(place), runs)
        console.print(f"  from {cwd}; logs in {logs}")
        for rep in range(1, settings.repetitions + 1):
            bench.repetition(rep, tmp)


def load() -> str:
    """The 1-minute load average: other work on the machine shows in every tool's times."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


# --- report ---------------------------------------------------------------------------


def median_seconds(runs: list[Run]) -> float | None:
    times = [r.seconds for r in runs if r.seconds is not None]
    return statistics.median(times) if times else None


def seconds_cell(runs: list[Run]) -> str:
    value = median_seconds(runs)
    if value is not None:
        return f"{value:.1f}"
    return "timeout" if runs else "-"


def ratio_cell(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}" if value is not None and reference else "-"


def matches_cell(runs: list[Run]) -> str:
    differing = [r for r in runs if r.mismatch]
    if not runs:
        return "-"
    if not differing:
        return "yes"
    text = "; ".join(differing[0].mismatch)
    if len(runs) > 1:
        text += f" (in {len(differing)} of {len(runs)} runs)"
    return text


def test_count(runs: list[Run]) -> str:
    totals = [sum(r.counts.get(k, 0) for k in TEST_COUNTS) for r in runs if r.summary is not None]
    return f"{statistics.median(totals):.0f}" if totals else "-"


def report(results: dict[str, list[Run]], installs: dict[str, Install], settings: Settings) -> Table:
    table = Table(
        title=f"dtf run -n {settings.workers} against pytest and xdist -n {settings.workers} on public suites"
    )
    for column in ("suite", "tests", "pytest s", "xdist s", "dtf first s", "dtf second s", "dtf warm s"):
        table.add_column(column, justify="left" if column == "suite" else "right")
    for column in ("first/xdist", "second/xdist", "warm/xdist"):
        table.add_column(column, justify="right")
    for tool in COMPARED:
        table.add_column(f"{tool} matches pytest", max_width=36)
    for name, install_result in installs.items():
        if not install_result.ok:
            table.add_row(name, "not installed", *["-"] * 12)
            continue
        runs = results.get(name, [])
        by_tool = {tool: [r for r in runs if r.tool == tool] for tool in TIMED}
        xdist = median_seconds(by_tool[XDIST])
        ratios = [ratio_cell(median_seconds(by_tool[t]), xdist) for t in (DTF_FIRST, DTF_SECOND, DTF_WARM)]
        matches = [escape(matches_cell(by_tool[t])) for t in COMPARED]
        cells = [seconds_cell(by_tool[t]) for t in TIMED]
        table.add_row(name, test_count(by_tool[PYTEST]), *cells, *ratios, *matches)
    return table


def write_json(
    path: Path,
    results: dict[str, list[Run]],
    installs: dict[str, Install],
    loads: dict[str, str],
    settings: Settings,
    started: str,
) -> None:
    suites: dict[str, Any] = {}
    for name, install_result in installs.items():
        suite = SUITES_BY_NAME[name]
        runs = results.get(name, [])
        suites[name] = {
            "project": suite.project,
            "version": suite.version,
            "args": list(suite.args),
            "install": asdict(install_result),
            "load_average_at_start": loads.get(name),
            "median_s": {t: median_seconds([r for r in runs if r.tool == t]) for t in TIMED},
            "runs": [r.figures() for r in runs],
        }
    data = {
        "started": started,
        "python": sys.version.split()[0],
        "workers": settings.workers,
        "repetitions": settings.repetitions,
        "timeout_s": settings.timeout_s,
        "logs": str(settings.logs),
        "suites": suites,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default=",".join(SUITES_BY_NAME), help="comma-separated subset (default all)")
    parser.add_argument("--repetitions", type=int, default=1, help="runs of each command per suite (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="xdist's -n and dtf's -n (default 2)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each command may run (default 900)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"installs (default {DEFAULT_CACHE})")
    parser.add_argument("--logs", type=Path, help="commands' output (default CACHE/logs/TIMESTAMP)")
    parser.add_argument("--json", type=Path, help="write every run's raw figures here")
    parser.add_argument("--skip-install", action="store_true", help="run only the suites already installed")
    parser.add_argument("--reinstall", action="store_true", help="install again even where the cache is complete")
    args = parser.parse_args()
    names = [n.strip() for n in args.suites.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITES_BY_NAME]
    if unknown:
        parser.error(f"unknown suites {unknown}; known: {', '.join(SUITES_BY_NAME)}")
    if args.repetitions < 1 or args.workers < 1:
        parser.error("--repetitions and --workers must be at least 1")
    if args.skip_install and args.reinstall:
        parser.error("--skip-install and --reinstall exclude each other")

    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    cache = args.cache.expanduser().resolve()
    logs = (args.logs or cache / "logs" / started.replace(":", "-")).expanduser().resolve()
    settings = Settings(cache, logs, args.workers, args.timeout, args.repetitions)
    console.print(
        f"{started}, Python {sys.version.split()[0]}, suites {','.join(names)}, {settings.repetitions} repetitions, "
        f"{settings.workers} workers, cache {cache}, logs {logs}"
    )

    installs: dict[str, Install] = {}
    install_started = time.perf_counter()
    for name in names:
        suite, place = SUITES_BY_NAME[name], Place(cache / name)
        if args.skip_install:
            ok = is_installed(suite, place)
            installs[name] = Install(ok=ok, cached=True, error=None if ok else "not in the cache (--skip-install)")
            if not ok:
                console.print(f"[yellow]{name}: not installed in {place.dir}, skipped[/yellow]")
        else:
            installs[name] = install(suite, place, args.reinstall)
    console.print(f"installs: {time.perf_counter() - install_started:.0f} s")

    results: dict[str, list[Run]] = {}
    loads: dict[str, str] = {}  # other work on the machine shows in every tool's times
    bench_started = time.perf_counter()
    for name in names:
        if installs[name].ok:
            results[name] = []
            loads[name] = load()
            try:
                bench_suite(SUITES_BY_NAME[name], Place(cache / name), settings, results[name])
            except Exception as exc:  # one suite's trouble must not cost the others their runs
                console.print(f"[red]{name}: stopped by {type(exc).__name__}: {escape(str(exc))}[/red]")
            if args.json:
                write_json(args.json, results, installs, loads, settings, started)  # partial results survive a crash
    if args.json:
        write_json(args.json, results, installs, loads, settings, started)

    console.rule(f"results ({time.perf_counter() - bench_started:.0f} s of runs)")
    console.print(report(results, installs, settings))
    console.print(
        f"Wall clock of each whole command, median over the repetitions ({settings.repetitions}) of every run "
        "that ended (matching or not). x/xdist: the dtf column's median over xdist's. 'matches pytest': exit "
        "code, summary counts (warnings left out) and each test's outcome in the JUnit report equal plain "
        f"pytest's in the same repetition. Output, JUnit reports and differing tests of every run: {logs}"
    )
    for name, install_result in installs.items():
        if not install_result.ok:
            console.print(f"{name}: not installed: {escape(install_result.error or '')} ({install_result.log})")
        elif install_result.deviations:
            console.print(f"{name}: venv differs from the constraints: {escape('; '.join(install_result.deviations))}")
    differing = any(r.mismatch for runs in results.values() for r in runs)
    failed = any(not i.ok for i in installs.values())
    return 1 if differing or failed else 0


if __name__ == "__main__":
    sys.exit(main())
