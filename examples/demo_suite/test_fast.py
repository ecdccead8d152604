"""Fast tests of the demo suite: pure functions, one expected failure, one skip."""

import math
import sys

import pytest


def test_addition() -> None:
    assert 2 + 2 == 4


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_factorial_grows(n: int) -> None:
    assert math.factorial(n + 1) > math.factorial(n)


def test_string_roundtrip() -> None:
    text = "distributed testing"
    assert text.encode().decode() == text


def test_known_bug() -> None:
    # Fails on purpose: the demo shows how a failing test is reported.
    assert sorted([3, 1, 2]) == [3, 2, 1], "sorted() returns ascending order"


@pytest.mark.skipif(sys.platform != "win32", reason="Windows-only behaviour")
def test_windows_paths() -> None:
    assert "\\" in r"C:\Temp"
