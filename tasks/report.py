"""The report task: report.md and report.html from every table the pipeline wrote."""

from pruneflow.steps.report import REPORT
from tasks.common import as_task

report = as_task(REPORT)
