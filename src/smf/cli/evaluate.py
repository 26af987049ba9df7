"""`smf eval`: evaluate a model on named tasks and write metrics and records as JSON.

    smf eval --model default --tasks facts,pydoc,capitals --limit 40 --out runs/base.json
    smf eval --model runs/smf --tasks-file configs/eval.yaml --out runs/smf_eval.json

Every error a user can cause (unknown task or option, bad dataset row, empty file)
is one line on stderr and exit code 2, before any output file is written.
"""

from __future__ import annotations

from pathlib import Path

from smf.data.registry import DATASETS
from smf.errors import SmfError
from smf.evaluate.evaluator import BATCH_SIZE, GENERATE_BATCH_SIZE, evaluate
from smf.evaluate.tasks import load_task, resolve_task
from smf.io import MAX_SETTINGS_BYTES, check_output_path, parse_yaml, read_bounded, read_json, write_json_atomic
from smf.models import PRECISIONS, compute_device, load_model


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model on tasks (medmcqa, triviaqa, wikitext, facts, pydoc, capitals, ...)",
        description="Evaluate a model on tasks and write per-task metrics and per-item records as JSON.",
    )
    p.add_argument("--model", default="default", help="model folder, hub id, or 'default' (SmolLM2-135M-Instruct)")
    p.add_argument("--tasks", help="comma-separated task names; see --list")
    p.add_argument("--tasks-file", help="YAML file with a 'tasks' list of names or option mappings")
    p.add_argument("--limit", type=int, help="evaluate at most N items per task")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="questions (or prompts) per forward pass (default %(default)s)")
    p.add_argument("--generate-batch-size", type=int, default=GENERATE_BATCH_SIZE,
                   help="prompts per batch of greedy generation, for question-answering tasks (default %(default)s)")
    p.add_argument("--mixed-precision", default="auto", choices=PRECISIONS,
                   help="auto (bf16 autocast on a GPU, full precision on the CPU), no, or bf16 (default %(default)s)")
    p.add_argument("--out", help="result JSON file (written atomically)")
    p.add_argument("--no-records", action="store_true", help="leave per-item records out of the JSON")
    p.add_argument("--list", action="store_true", help="list the tasks and exit")
    p.set_defaults(run=run)


def _task_specs(args) -> list:
    specs: list = []
    if args.tasks:
        specs += [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.tasks_file:
        path = Path(args.tasks_file)
        config = parse_yaml(read_bounded(path, MAX_SETTINGS_BYTES, "YAML file of tasks"), str(path))
        listed = config.get("tasks") if isinstance(config, dict) else None
        if not isinstance(listed, list) or not all(isinstance(t, (str, dict)) for t in listed):
            raise SmfError(f"{path}: expected a 'tasks' list of task names or option mappings")
        specs += listed
    if not specs:
        raise SmfError("no tasks given; pass --tasks a,b,c or --tasks-file FILE (see smf eval --list)")
    return specs


def _is_eval_result(path: Path) -> bool:
    """Whether `path` holds results an earlier smf eval wrote (which a new run may replace)."""
    try:  # bounded: --out may name any file of the user's
        result = read_json(path)
    except (OSError, SmfError):
        return False
    return isinstance(result, dict) and "model" in result and isinstance(result.get("tasks"), dict)


def run(args) -> int:
    if args.list:
        for name, d in DATASETS.items():
            if d.eval is not None:
                print(f"{name:16s} {d.eval.kind:10s} {d.about}")
        return 0
    if not args.out:
        raise SmfError("--out FILE.json is required")
    check_output_path(args.out)
    if Path(args.out).is_dir():
        raise SmfError(f"--out {args.out} is a folder; give a file path for the results, e.g. {Path(args.out) / 'results.json'}")
    if Path(args.out).exists() and not _is_eval_result(Path(args.out)):
        raise SmfError(f"--out {args.out} already exists and is not results smf eval wrote; choose another --out or remove it")
    if args.limit is not None and args.limit < 1:
        raise SmfError(f"--limit must be a positive integer, got {args.limit}")
    for flag, value in (("--batch-size", args.batch_size), ("--generate-batch-size", args.generate_batch_size)):
        if value < 1:
            raise SmfError(f"{flag} must be a positive integer, got {value}")
    # Check every task, then load its data, before the model: bad input fails in seconds.
    specs = [resolve_task(spec, limit=args.limit) for spec in _task_specs(args)]
    tasks = [load_task(spec) for spec in specs]
    model, tokenizer = load_model(args.model, device=compute_device())
    result = evaluate(model, tokenizer, tasks, batch_size=args.batch_size, generate_batch_size=args.generate_batch_size,
                      records=not args.no_records,
                      mixed_precision=args.mixed_precision)
    result = {"model": str(args.model), **result}
    write_json_atomic(args.out, result)
    for label, r in result["tasks"].items():
        h = r["headline"]
        spread = ""
        if h.get("ci95") is not None:
            stderr = f"stderr {h['stderr']:.3f}, " if h.get("stderr") is not None else ""
            spread = f" ({stderr}95% CI {h['ci95'][0]:.3f}-{h['ci95'][1]:.3f})"
        print(f"{label:16s} n={r['n']:<5d} {h['metric']} = {h['value']:.4f}{spread}   [{r['items_per_s']:.1f} items/s]")
    print(f"wrote {args.out}")
    return 0
