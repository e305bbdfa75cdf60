"""Experiment registry, result records (JSON), plots and the HTML report."""
from tenfold.report.html import build_report, load_records
from tenfold.report.papers import PAPERS
from tenfold.report.registry import PROFILES, REGISTRY, VERDICTS, Run, experiment, load_all, select
from tenfold.report.runner import run_experiments, run_one

__all__ = ["PAPERS", "PROFILES", "REGISTRY", "VERDICTS", "Run", "build_report", "experiment", "load_all",
           "load_records", "run_experiments", "run_one", "select"]
