"""The report as a cached step: rebuilt exactly when a table it reads appears or changes."""

from pruneflow import layout
from pruneflow.config import Params, scoped
from pruneflow.steps.data import PREPARE
from pruneflow.steps.report import REPORT, report_tables
from pruneflow.steps.timing import PROFILE


def test_report_step_reruns_only_when_its_tables_change(workdir):
    p = Params.model_validate(
        {
            "runtime": {"threads": 1, "progress": "off"},
            "spdy": {
                "dataset": "digits",
                "models": ["lenet300100"],
                "grid": {"steps": 3},
                "timing": {"max_repeats": 3, "min_repeats": 3, "max_seconds": 0.02},
            },
        }
    )
    first = REPORT.run(p)
    assert first["status"] == "computed" and first["summary"]["tables"] == 0
    html = (layout.reports_dir(p) / "report.html").read_text()
    assert "<img" not in html or "data:image/png;base64," in html
    assert REPORT.run(p)["status"] == "cached"

    q = scoped(p, "spdy:lenet300100")
    PREPARE.run(q)
    PROFILE.run(q)  # a timing table: a table the report reads appears
    assert layout.timing_table(q) in report_tables(p)
    again = REPORT.run(p)
    assert again["status"] == "computed" and again["summary"]["tables"] == 1
    assert "lenet300100" in (layout.reports_dir(p) / "report.md").read_text()


def test_the_report_imports_first_in_a_fresh_interpreter():
    # pruneflow.report reads schemas from pruneflow.steps, which registers the report step:
    # importing the report first must not run into that cycle (`pruneflow report` does)
    import subprocess
    import sys

    code = "from pruneflow.report import build_report; import pruneflow.steps; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
