"""Which of the run's pytest arguments every batch gets.

A batch runs the run's own arguments, positional ones included, from the same
directory, so that its pytest collects the same tests under the same node ids; it then
keeps only its own (`parameters.select`). Left out are the options whose work belongs to
the run's session alone: choosing tests from pytest's cache (`--lf`, `--ff`, `--nf`,
`--sw`: the session has chosen already), writing reports (`--junitxml`, `--html`,
`--report-log`: the session writes them from every batch's reports), distributing
(pytest-xdist's, and the run's own) and debugging (`--pdb`, `--trace`: a batch has no
terminal).
"""

from __future__ import annotations

from collections.abc import Sequence

# Options that take a value as the next argument, among those dropped: needed to drop
# the value with the option.
_DROPPED_WITH_VALUE = frozenset(
    {
        "--junitxml", "--junit-xml", "--junit-prefix", "--html", "--report-log", "--resultlog",
        "-n", "--numprocesses", "--dist", "--maxprocesses", "--max-worker-restart", "--tx",
        "--rsyncdir", "--rsyncignore", "--pdbcls", "--dtf", "--dtf-data-dir", "--dtf-token",
        "--dtf-reruns", "--dtf-timeout", "--dtf-idle-timeout", "--dtf-connection",
    }
)  # fmt: skip
_DROPPED_FLAGS = frozenset(
    {
        "--lf", "--last-failed", "--ff", "--failed-first", "--nf", "--new-first", "--sw", "--stepwise",
        "--sw-skip", "--stepwise-skip", "--sw-reset", "--stepwise-reset", "--lfnf", "--cache-clear",
        "--cache-show", "--self-contained-html", "-d", "--distload", "--looponfail", "-f", "--pdb",
        "--trace", "--dtf-keep", "--dtf-no-snapshot", "--dtf-no-head-start",
    }
)  # fmt: skip


def batch_pytest_args(args: Sequence[str]) -> list[str]:
    """The run's pytest arguments less what belongs to the run's session alone (see the
    module's docstring). `--opt=value`, `-nVALUE` and `--` are understood."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out.extend(args[i - 1 :])
            break
        name, equals, _ = arg.partition("=")
        if name in _DROPPED_FLAGS or (name in _DROPPED_WITH_VALUE and equals):
            continue
        if name in _DROPPED_WITH_VALUE:
            i += 1  # and its value
            continue
        if arg.startswith("-n") and not arg.startswith("--") and len(arg) > 2:
            continue  # "-n4", "-nauto"
        out.append(arg)
    return out
