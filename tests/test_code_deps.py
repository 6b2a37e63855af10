"""A step's code is what its compute function imports, read from the source: editing a module
it reaches only indirectly re-runs it (and what reads its outputs), editing one it does not
reach keeps it cached. The real source is never edited: the pipeline test hashes a copy of the
code tree (CODE_ROOT patched), the closure tests a project written in the test."""

from __future__ import annotations

import importlib
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

import pruneflow.steps.base as base
from pruneflow.config import Params
from pruneflow.steps import STEPS, Step
from pruneflow.steps.code_deps import closure
from pruneflow.steps.data import PREPARE
from pruneflow.steps.dense import TRAIN_DENSE

FAST = {"runtime": {"threads": 1, "progress": "off"}, "train": {"epochs": 1}}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _names(files: set[Path], root: Path) -> set[str]:
    return {f.relative_to(root).as_posix() for f in files}


def test_closure_follows_names_not_whole_packages(tmp_path):
    _write(
        tmp_path,
        {
            "pruneflow/__init__.py": "",
            "pruneflow/pkg/__init__.py": (
                "from pruneflow.pkg.heavy import big\nfrom .light import f\n"
            ),
            "pruneflow/pkg/light.py": (
                "from pruneflow import deep\n\ndef f():\n    return deep.g()\n"
            ),
            "pruneflow/pkg/heavy.py": "def big():\n    pass\n",
            "pruneflow/deep.py": "from . import leaf\n\ndef g():\n    return leaf.VALUE\n",
            "pruneflow/leaf.py": "VALUE = 1\n",
            "pruneflow/typed.py": "X = 1\n",
            "pruneflow/plots.py": "import pruneflow.heavy_plot\n",
            "pruneflow/heavy_plot.py": "",
            "pruneflow/lazy.py": "",
            "pruneflow/steps.py": """\
                from typing import TYPE_CHECKING
                from pruneflow.pkg import f
                from pruneflow import plots
                if TYPE_CHECKING:
                    from pruneflow import typed

                def _helper():
                    from pruneflow import lazy
                    return f()

                def compute(p):
                    return _helper()

                def draw(p):
                    return plots
            """,
        },
    )
    got = _names(closure("pruneflow.steps", "compute", tmp_path), tmp_path)
    # the compute function's own imports and a function-local one; the package __init__ on the
    # way, but not what it re-exports for others (heavy); nothing under TYPE_CHECKING; nothing
    # that only a sibling step of the same module uses (plots)
    assert got == {
        "pruneflow/__init__.py",
        "pruneflow/steps.py",
        "pruneflow/pkg/__init__.py",
        "pruneflow/pkg/light.py",
        "pruneflow/deep.py",
        "pruneflow/leaf.py",
        "pruneflow/lazy.py",
    }
    drawn = _names(closure("pruneflow.steps", "draw", tmp_path), tmp_path)
    assert {"pruneflow/plots.py", "pruneflow/heavy_plot.py"} <= drawn
    assert "pruneflow/deep.py" not in drawn
    whole = _names(closure("pruneflow.steps", None, tmp_path), tmp_path)
    assert whole == got | drawn


def test_every_step_lists_files_that_exist_and_the_modules_it_runs():
    p = Params()
    for name, step in STEPS.items():
        files = step.code_files(p)
        assert files == tuple(sorted(files)) and files, name
        assert all((base.CODE_ROOT / f).is_file() for f in files), name
    dense = set(TRAIN_DENSE.code_files(p))
    # train.py's own imports, which the hand-kept list missed
    assert {"pruneflow/train.py", "pruneflow/runtime.py", "pruneflow/memory_format.py"} <= dense
    assert not any(f.startswith("pruneflow/report/") for f in dense)
    # double descent's training does not depend on its plots, the plots read their template
    assert "pruneflow/sdd/plots.py" not in STEPS["sdd_level"].code_files(p)
    assert "pruneflow/sdd/dvc_curves.json" in STEPS["sdd_plots"].code_files(p)


@pytest.fixture()
def code_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the code tree that fingerprints hash instead of the real one."""
    root = tmp_path / "code"
    shutil.copytree(base.CODE_ROOT / "pruneflow", root / "pruneflow")
    monkeypatch.setattr(base, "CODE_ROOT", root)
    return root


def test_editing_an_indirect_import_reruns_the_step_and_an_unrelated_edit_does_not(
    workdir, code_copy
):
    p = Params.model_validate(FAST)
    assert PREPARE.run(p)["status"] == "computed"
    assert TRAIN_DENSE.run(p)["status"] == "computed"
    with open(code_copy / "pruneflow/report/render_html.py", "a") as fh:
        fh.write("\n# an edit no training step imports\n")
    assert PREPARE.run(p)["status"] == "cached"
    assert TRAIN_DENSE.run(p)["status"] == "cached"
    # train_dense -> pruneflow.train -> pruneflow.runtime: only reached through train.py
    with open(code_copy / "pruneflow/runtime.py", "a") as fh:
        fh.write("\n# an edit train.py's import reaches\n")
    assert PREPARE.run(p)["status"] == "cached"
    assert TRAIN_DENSE.run(p)["status"] == "computed"
    assert TRAIN_DENSE.run(p)["status"] == "cached"


def test_an_indirect_edit_that_changes_an_output_reruns_the_steps_downstream(
    workdir, tmp_path, monkeypatch
):
    """A project module outside pruneflow (as a user's model module is): the upstream step's
    compute reaches ``userproj.deep`` through ``userproj.helper``."""
    src = tmp_path / "src"
    _write(
        src,
        {
            "userproj/__init__.py": "",
            "userproj/deep.py": "VALUE = 1\n",
            "userproj/unrelated.py": "",
            "userproj/helper.py": (
                "from userproj import deep\n\ndef value():\n    return deep.VALUE\n"
            ),
            "userproj/upstream.py": """\
                from pathlib import Path
                from userproj.helper import value

                def compute(p):
                    Path("up.txt").write_text(str(value()))
                    return {}
            """,
            "userproj/downstream.py": """\
                from pathlib import Path

                def compute(p):
                    Path("down.txt").write_text(Path("up.txt").read_text() * 2)
                    return {}
            """,
        },
    )
    monkeypatch.syspath_prepend(str(src))
    for name in [m for m in sys.modules if m.startswith("userproj")]:
        monkeypatch.delitem(sys.modules, name)
    upstream, downstream = (
        importlib.import_module(f"userproj.{m}") for m in ("upstream", "downstream")
    )
    up = Step("up", (), lambda p: [], lambda p: [Path("up.txt")], upstream.compute)
    down = Step(
        "down", (), lambda p: [Path("up.txt")], lambda p: [Path("down.txt")], downstream.compute
    )
    p = Params()
    assert [s.run(p)["status"] for s in (up, down)] == ["computed", "computed"]
    (src / "userproj/unrelated.py").write_text("X = 2\n")
    assert [s.run(p)["status"] for s in (up, down)] == ["cached", "cached"]
    (src / "userproj/deep.py").write_text("VALUE = 2\n")
    importlib.reload(sys.modules["userproj.deep"])
    assert [s.run(p)["status"] for s in (up, down)] == ["computed", "computed"]
    assert Path("down.txt").read_text() == "22"


def test_a_model_named_by_import_path_joins_the_code(tmp_path, monkeypatch):
    _write(tmp_path, {"mymodels/__init__.py": "", "mymodels/net.py": "def make():\n    pass\n"})
    monkeypatch.syspath_prepend(str(tmp_path))

    class ModelByPath:  # what params give once model.name may be an import path
        def get(self, key):
            return "mymodels.net:make" if key == "model.name" else Params().get(key)

    files = TRAIN_DENSE.code_files(ModelByPath())  # type: ignore[arg-type]
    assert str((tmp_path / "mymodels/net.py").resolve()) in files
    assert set(TRAIN_DENSE.code_files(Params())) < set(files)
