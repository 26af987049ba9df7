"""`smf compare`: run a comparison study from a config."""

from __future__ import annotations

import argparse
from pathlib import Path

from smf.config import parse_flag
from smf.lock import output_lock
from smf.names import REPORT_FILE, RESULTS_FILE
from smf.study.config import StudyConfig
from smf.study.report import markdown
from smf.study.runner import run_study
from smf.study.stream import stream_markdown


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run a study: base, smf, lora, full → results.json, report.md, plots")
    p.add_argument("--config", required=True, type=Path, help="study YAML (see configs/ and smf.study.config)")
    p.add_argument("--out", required=True, type=Path, help="study folder; running again resumes, skipping finished runs")
    p.add_argument("--seeds", type=lambda text: parse_flag(text, list[int]), default=None,
                   help="override the config's seeds, e.g. 0,1,2")
    p.set_defaults(run=run_compare)


def run_compare(args) -> None:
    config = StudyConfig.load(args.config)
    with output_lock(args.out):
        results = run_study(config, args.out, seeds=list(args.seeds) if args.seeds else None)
    if results.get("stream"):
        print(stream_markdown(results))
    else:
        print(markdown(results))
    print(f"\nwritten: {args.out / RESULTS_FILE}, {args.out / REPORT_FILE}, plots in {args.out}")
