"""Which of the user's pytest arguments every batch gets.

Node ids already encode the selection, so a batch gets the user's *options* but neither
positional paths nor the options that select or stop tests.
"""

from __future__ import annotations

from collections.abc import Sequence

# pytest options that take a value as the next argument. Needed to tell an option's
# value from a positional path when splitting the user's arguments.
_VALUE_OPTIONS = frozenset(
    {
        "-p", "-o", "-c", "-W", "-k", "-m", "-r",
        "--override-ini", "--config-file", "--rootdir", "--tb", "--import-mode", "--pythonwarnings",
        "--deselect", "--ignore", "--ignore-glob", "--confcutdir", "--basetemp", "--maxfail",
        "--junitxml", "--junit-xml", "--junit-prefix", "--durations", "--durations-min", "--capture",
        "--log-level", "--log-format", "--log-date-format", "--log-cli-level", "--log-file",
        "--log-file-level", "--log-file-format", "--log-file-date-format", "--show-capture",
        "--color", "--code-highlight", "--debug", "--cov", "--cov-report", "--timeout",
        "--dist", "--numprocesses", "-n", "--report-log", "--html",
    }
)  # fmt: skip
# Options that select or stop tests: node ids already encode the selection, and stopping
# one batch early would leave tests without a result.
_DROPPED = frozenset(
    {
        "-k", "-m", "--deselect", "--ignore", "--ignore-glob", "--pyargs", "-x", "--exitfirst",
        "--maxfail", "--lf", "--last-failed", "--ff", "--failed-first", "--sw", "--stepwise",
        "--stepwise-skip", "--nf", "--new-first", "--co", "--collect-only", "--collectonly",
        "--junitxml", "--junit-xml", "-n", "--numprocesses", "--dist",
    }
)  # fmt: skip


def batch_pytest_args(args: Sequence[str]) -> list[str]:
    """The user's pytest options to pass to every batch: everything but positional paths
    and the options in `_DROPPED` (with their values). `--opt=value`, `-kEXPR` and
    `-- ` are understood; an unknown option is taken to be a flag."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break  # everything after is positional
        if not arg.startswith("-") or arg == "-":
            continue  # a path or node id
        name, equals, _ = arg.partition("=")
        has_value = bool(equals)
        if not has_value and len(arg) > 2 and arg[1] != "-" and arg[:2] in _VALUE_OPTIONS:
            name, has_value = arg[:2], True  # "-kexpr", "-pno:cacheprovider"
        takes_next = not has_value and name in _VALUE_OPTIONS
        words = [arg, args[i]] if takes_next and i < len(args) else [arg]
        if takes_next:
            i += 1
        if name not in _DROPPED:
            out.extend(words)
    return out


# Options that narrow the tests pytest runs below what a file holds.
_SELECTING = frozenset(
    {
        "-k", "-m", "--deselect", "--ignore", "--ignore-glob", "--pyargs", "--lf", "--last-failed",
        "--ff", "--failed-first", "--sw", "--stepwise", "--stepwise-skip", "--nf", "--new-first",
    }
)  # fmt: skip


def selects_within_files(args: Sequence[str]) -> bool:
    """Whether the arguments may run fewer tests of a file than the file holds: a selecting
    option, or a node id. When they do not, a batch that runs every collected test of a
    file may name the file instead of each test."""
    for arg in args:
        if arg == "--":
            continue
        name = arg.partition("=")[0]
        if name in _SELECTING or arg[:2] in {"-k", "-m"} or (not arg.startswith("-") and "::" in arg):
            return True
    return False
