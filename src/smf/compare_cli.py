"""`smf compare`: run a comparison study from a config."""

from __future__ import annotations

import argparse
from pathlib import Path

from smf.memory.commands import int_list


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run a study: base, smf, lora, full → results.json, report.md, plots")
    p.add_argument("--config", required=True, type=Path, help="study YAML (see configs/)")
    p.add_argument("--out", required=True, type=Path, help="study folder; running again resumes, skipping finished runs")
    p.add_argument("--seeds", type=int_list, default=None, help="override the config's seeds, e.g. 0,1,2")
    p.set_defaults(run=run_compare)


def run_compare(args) -> None:
    from smf.compare import StudyConfig, run_study
    from smf.report import markdown

    config = StudyConfig.load(args.config)
    results = run_study(config, args.out, seeds=list(args.seeds) if args.seeds else None)
    print(markdown(results))
    print(f"\nwritten: {args.out / 'results.json'}, {args.out / 'report.md'}, plots in {args.out}")
