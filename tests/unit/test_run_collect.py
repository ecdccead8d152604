"""Collecting a suite with a real pytest subprocess on small suites written to tmp_path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dtf.run import collect_plugin
from dtf.run.args import batch_pytest_args
from dtf.run.collect import CollectionError, PendingCollection, collect
from dtf.run.collection_cache import CollectionCache, command_key
from dtf.run.warm_pytest import WarmPytest


@pytest.fixture(autouse=True)
def without_installed_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed pytest plugins cost a second per subprocess and change nothing here."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def with_installed_plugins(without_installed_plugins: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a user's run has them."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")


def write(root: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    return root


SUITE = {
    "tests/test_plain.py": """
        def test_one(): pass
        def test_two(): pass
    """,
    "tests/test_shapes.py": """
        import pytest

        class TestGroup:
            def test_method(self): pass

            @pytest.mark.parametrize("v", ["a b", "x::y", "[z]", "ü"])
            def test_param(self, v): pass

        @pytest.mark.parametrize("n", [1, 2])
        def test_numbers(n): pass
    """,
}


@pytest.mark.usefixtures("with_installed_plugins")
def test_files_classes_and_parametrised_ids_in_collection_order(tmp_path: Path) -> None:
    collection = collect([], write(tmp_path, SUITE))
    assert collection.node_ids == [
        "tests/test_plain.py::test_one",
        "tests/test_plain.py::test_two",
        "tests/test_shapes.py::TestGroup::test_method",
        "tests/test_shapes.py::TestGroup::test_param[a b]",
        "tests/test_shapes.py::TestGroup::test_param[x::y]",
        "tests/test_shapes.py::TestGroup::test_param[[z]]",
        "tests/test_shapes.py::TestGroup::test_param[\\xfc]",
        "tests/test_shapes.py::test_numbers[1]",
        "tests/test_shapes.py::test_numbers[2]",
    ]
    assert collection.cwd == tmp_path
    assert collection.rootdir == tmp_path
    assert collection.arguments == {}
    assert collection.argument("tests/test_plain.py::test_one") == "tests/test_plain.py::test_one"


def test_selection_with_k_and_paths(tmp_path: Path) -> None:
    write(tmp_path, SUITE)
    assert collect(["-k", "numbers or two"], tmp_path).node_ids == [
        "tests/test_plain.py::test_two",
        "tests/test_shapes.py::test_numbers[1]",
        "tests/test_shapes.py::test_numbers[2]",
    ]
    assert collect(["tests/test_shapes.py::TestGroup::test_method"], tmp_path).node_ids == [
        "tests/test_shapes.py::TestGroup::test_method"
    ]


def test_printing_and_warnings_do_not_leak_into_ids(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "conftest.py": "print('conftest.py::not_a_test')\n",
            "test_noisy.py": """
                import warnings
                print("test_noisy.py::printed")
                warnings.warn("collected with a warning::here")

                def test_real(): pass
            """,
        },
    )
    assert collect(["-W", "default"], tmp_path).node_ids == ["test_noisy.py::test_real"]


def test_an_empty_selection_is_an_empty_list(tmp_path: Path) -> None:
    write(tmp_path, SUITE)
    assert collect(["-k", "nothing_matches_this"], tmp_path).node_ids == []


def test_a_syntax_error_is_a_collection_error_naming_the_file(tmp_path: Path) -> None:
    write(tmp_path, {**SUITE, "tests/test_broken.py": "def test_x(:\n    pass\n"})
    with pytest.raises(CollectionError) as caught:
        collect([], tmp_path)
    assert caught.value.exit_code == 2
    assert "tests/test_broken.py" in caught.value.output
    assert "SyntaxError" in caught.value.output
    assert caught.value.field == "pytest_args"


def test_a_usage_error_is_a_collection_error(tmp_path: Path) -> None:
    with pytest.raises(CollectionError) as caught:
        collect(["--no-such-option"], write(tmp_path, SUITE))
    assert caught.value.exit_code == 4
    assert "--no-such-option" in caught.value.output


def test_pyargs_of_an_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = write(
        tmp_path / "site",
        {
            "shipped/__init__.py": "",
            "shipped/tests/__init__.py": "",
            "shipped/tests/test_shipped.py": """
                def test_installed(): pass
            """,
        },
    )
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(site))
    collection = collect(["--pyargs", "shipped.tests"], project)
    assert [node_id.rsplit("::", 1)[1] for node_id in collection.node_ids] == ["test_installed"]
    (node_id,) = collection.node_ids
    assert collection.argument(node_id) == f"{site / 'shipped/tests/test_shipped.py'}::test_installed"


def test_ids_below_a_rootdir_above_cwd_get_arguments_valid_from_cwd(tmp_path: Path) -> None:
    write(tmp_path, {"pytest.ini": "[pytest]\n", "sub/test_sub.py": "def test_s(): pass\n"})
    collection = collect([], tmp_path / "sub")
    assert collection.rootdir == tmp_path
    assert collection.node_ids == ["sub/test_sub.py::test_s"]
    assert collection.argument("sub/test_sub.py::test_s") == "test_sub.py::test_s"


def test_plugin_does_nothing_without_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded into a plain run by accident, the plugin neither writes nor touches the session."""
    monkeypatch.delenv(collect_plugin.OUTPUT_ENV, raising=False)
    collect_plugin.pytest_collection_finish(session=None)  # type: ignore[arg-type]


# -- the last collection of a command, as a prediction -----------------------------------


def test_a_stored_collection_is_predicted_until_a_file_it_depends_on_changes(tmp_path: Path) -> None:
    project = write(tmp_path / "project", SUITE)
    cache = CollectionCache(tmp_path / "data")
    key = command_key(project, [])
    collection = collect([], project)
    cache.store(key, collection)

    predicted = cache.load(key)
    assert predicted is not None and predicted.node_ids == collection.node_ids

    (project / "tests" / "test_plain.py").write_text("def test_one(): pass\n")
    assert cache.load(key) is None


@pytest.mark.parametrize(
    "change",
    [
        "tests/test_new.py",  # a new test file beside the others
        "tests/conftest.py",  # a conftest that may add or deselect tests
        "conftest.py",  # one further up
        "pytest.ini",  # configuration
    ],
)
def test_new_files_that_may_change_the_collection_end_the_prediction(tmp_path: Path, change: str) -> None:
    project = write(tmp_path / "project", SUITE)
    cache = CollectionCache(tmp_path / "data")
    key = command_key(project, [])
    cache.store(key, collect([], project))

    write(project, {change: "\n"})

    assert cache.load(key) is None


def test_a_test_file_added_where_pytest_looked_and_found_none_ends_the_prediction(tmp_path: Path) -> None:
    project = write(tmp_path / "project", {**SUITE, "tests/fixtures/data.txt": "x\n"})
    cache = CollectionCache(tmp_path / "data")
    key = command_key(project, [])
    cache.store(key, collect([], project))
    assert cache.load(key) is not None

    write(project, {"tests/fixtures/test_late.py": "def test_late(): pass\n"})

    assert cache.load(key) is None


def test_each_command_has_its_own_prediction(tmp_path: Path) -> None:
    env = {"PATH": "/bin", "HOME": "/h"}
    key = command_key(tmp_path, ["-k", "x"], env)
    assert key == command_key(tmp_path, ["-k", "x"], {**env, "OLDPWD": "/elsewhere", "SHLVL": "3"})
    assert key != command_key(tmp_path, ["-k", "y"], env)
    assert key != command_key(tmp_path / "sub", ["-k", "x"], env)
    assert key != command_key(tmp_path, ["-k", "x"], {**env, "RUN_SLOW": "1"})
    assert CollectionCache(tmp_path).load(key) is None  # never stored


# -- collecting in a warm pytest server ---------------------------------------------------

# What the conftest imports logs each time it is imported.
COUNTED = {
    "counted_helpers.py": """
        from pathlib import Path

        with (Path(__file__).parent / "imports.log").open("a") as log:
            log.write("imported\\n")
    """,
    "conftest.py": "import counted_helpers\n",
}


def _pending_in_warm_server(args: list[str], root: Path) -> tuple[PendingCollection, WarmPytest]:
    warm = WarmPytest.launch(root, batch_pytest_args(args))
    assert warm is not None and warm.proc is not None  # a new key: this process starts its server
    return PendingCollection(args, root, warm=warm), warm


def test_a_collection_in_the_warm_server_is_what_a_fresh_pytest_collects(tmp_path: Path) -> None:
    write(tmp_path, {**SUITE, **COUNTED})
    fresh = collect(["-k", "not two"], tmp_path)
    pending, warm = _pending_in_warm_server(["-k", "not two"], tmp_path)
    try:
        warmed = pending.result(120)
    finally:
        warm.close()

    assert warmed.node_ids == fresh.node_ids
    assert "tests/test_plain.py::test_two" not in warmed.node_ids
    assert (warmed.rootdir, warmed.arguments, warmed.inipath) == (fresh.rootdir, fresh.arguments, fresh.inipath)
    assert sorted(warmed.files) == sorted(fresh.files)
    # The fresh collection and the server's warm-up imported the conftest's imports; the
    # warm collection, forked from the server, found them in memory.
    assert (tmp_path / "imports.log").read_text() == "imported\n" * 2


def test_a_collection_error_in_the_warm_server_is_reported_as_a_fresh_one(tmp_path: Path) -> None:
    write(tmp_path, {**SUITE, "tests/test_broken.py": "def test_x(:\n    pass\n"})
    pending, warm = _pending_in_warm_server([], tmp_path)
    try:
        with pytest.raises(CollectionError) as caught:
            pending.result(120)
    finally:
        warm.close()

    assert caught.value.exit_code == 2
    assert "tests/test_broken.py" in caught.value.output
    assert "SyntaxError" in caught.value.output
