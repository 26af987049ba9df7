"""`smf retrofit` and `smf info`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors import safe_open

from smf.config import add_arguments, given
from smf.errors import SmfError
from smf.io import check_output_path, read_json, reading
from smf import MemoryConfig
from smf.memory.delta import delta_base, folder_bytes, is_delta
from smf.memory.retrofit import retrofit, save_retrofitted
from smf.models import load_model, resolve_model
from smf.names import BACKGROUND_FILE, DELTA_FILE, HF_CONFIG_FILE, MEMORY_FILE
from smf.use.inspect import inspect

MEMORY_FLAGS: list[str] = []


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrofit", help="add product-key memory layers to a pretrained model and save it")
    p.add_argument("--model", default=None, help="hub id, local folder, or omit for the offline default (SmolLM2-135M-Instruct)")
    MEMORY_FLAGS[:] = add_arguments(p, MemoryConfig, skip=("seed_per_run",))  # a study's setting: one retrofit draws one memory
    p.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    p.set_defaults(run=run_retrofit)

    p = sub.add_parser("inspect", help="where an SMF run (or each chunk of a stream) wrote in memory: rows, overlaps, row use")
    p.add_argument("path", type=Path, help="an SMF run's model folder, run folder, or stream run folder (runs/<label>/seed<s>)")
    p.add_argument("--out", type=Path, default=None, help="where inspect.json and the plots go (default: PATH/inspect)")
    p.add_argument("--question", default=None, help="a question: report the rows its answer reads and which stage wrote them")
    p.add_argument("--answer", default=None, help="the answer to --question")
    p.set_defaults(run=run_inspect)

    p = sub.add_parser("info", help="describe a model folder: memory configuration and parameter counts")
    p.add_argument("path", type=Path, help="a model folder")
    p.set_defaults(run=run_info)


def run_retrofit(args: argparse.Namespace) -> None:
    config = MemoryConfig.from_dict(given(args, MEMORY_FLAGS), where="command line")
    check_output_path(args.out)
    if args.out.exists():
        raise SmfError(f"{args.out} already exists; choose another --out or remove it")
    model, tokenizer = load_model(args.model)
    config.check("command line", num_layers=model.config.num_hidden_layers)
    probe = tokenizer("Memory layers should leave this sentence's logits unchanged.", return_tensors="pt")
    with torch.no_grad():
        before = model(**probe).logits
        retrofit(model, config)
        after = model(**probe).logits
    save_retrofitted(model, tokenizer, args.out, extra={"base_model": str(args.model or "default")})
    print(describe(args.out))
    print(f"max |logit change| on a probe sentence: {(after - before).abs().max().item():.3g}")


def run_info(args: argparse.Namespace) -> None:
    path = resolve_model(args.path) if args.path.is_dir() else args.path  # a run folder: its model
    print(describe(path))


def parameter_counts(path: Path) -> dict[str, int]:
    """Count base and memory parameters from a saved folder's weights header (model*.safetensors:
    background statistics and other files are not parameters)."""
    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise SmfError(f"{path}: no model weights (model.safetensors) found")
    counts = {"base": 0, "memory": 0}
    for file in files:
        with reading(file, "the model folder is damaged or incomplete; write it again"), safe_open(str(file), "pt") as f:
            for key in f.keys():
                n = 1
                for dim in f.get_slice(key).get_shape():
                    n *= dim
                counts["memory" if ".mlp.memory." in key else "base"] += n
    return counts


def describe_delta(path: Path) -> str:
    """A compact SMF run model: what it changed, its size against its base, then the base."""
    base = delta_base(path)
    changed = read_json(path / DELTA_FILE).get("changed", {})
    size, base_size = folder_bytes(path), folder_bytes(base)
    return "\n".join([
        f"run model (changed weights only): {path}",
        f"  changed: {changed.get('rows', 0):,} rows in {changed.get('tensors', 0)} tensors, {changed.get('parameters', 0):,} parameters",
        f"  size: {size / 1e6:.1f} MB ({100 * size / max(base_size, 1):.1f}% of its base's {base_size / 1e6:.1f} MB); "
        f"standalone copy: smf export {path} --out DIR",
        f"  base (fingerprint verified): {base}",
        describe(base),
    ])


def describe(path: Path) -> str:
    """A short, human-readable description of a model folder."""
    if not path.is_dir():
        raise SmfError(f"{path} is not a folder; give a model folder written by smf retrofit")
    if is_delta(path):
        return describe_delta(path)
    arch = read_json(path / HF_CONFIG_FILE)
    kind = arch.get("base_model_type", arch.get("model_type", "?"))
    lines = [f"model folder: {path}", f"architecture: {kind}, {arch.get('num_hidden_layers', '?')} layers, hidden size {arch.get('hidden_size', '?')}"]
    if "auto_map" in arch:
        lines.append("loads in transformers: AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)")
    memory_file = path / MEMORY_FILE
    counts = parameter_counts(path)
    if memory_file.is_file():
        meta = read_json(memory_file)
        if not isinstance(meta, dict) or "memory" not in meta:
            raise SmfError(f"{memory_file}: no 'memory' section; was this folder written by smf?")
        c = MemoryConfig.from_dict(meta["memory"], where=str(memory_file))
        lines += [
            f"memory: {c.mode} at layers {', '.join(map(str, c.layers))}"
            + (" (the published study's layer: biased projections, the raw FFN input)" if c.variant == "published" else ""),
            f"  slots {c.slots:,} per layer ({c.sub_keys}×{c.sub_keys} product keys), heads {c.heads}, top-k {c.topk}, "
            f"key dim {c.key_dim}, value dim {c.value_dim or arch.get('hidden_size')}",
        ]
        background = path / BACKGROUND_FILE
        if background.is_file():
            with safe_open(str(background), "pt") as f:
                lines.append(f"background statistics: {f.metadata()['batches']} batches (tfidf and kl selection ready)")
        else:
            lines.append("background statistics: none yet (run smf background before tfidf or kl training)")
    else:
        lines.append("memory: none (a plain model)")
    total = counts["base"] + counts["memory"]
    lines.append(f"parameters: base {counts['base']:,}, memory {counts['memory']:,} ({100 * counts['memory'] / max(total, 1):.1f}% of {total:,})")
    return "\n".join(lines)


def run_inspect(args: argparse.Namespace) -> None:
    if (args.question is None) != (args.answer is None):
        raise SmfError("--question and --answer go together: the rows the answer's tokens read are reported")
    out = args.out or args.path / "inspect"
    check_output_path(out)
    _check_inspect_out(out)
    report = inspect(args.path, out, question=args.question, answer=args.answer)
    for stage in report["stages"]:
        extra = (f", all among the {stage['rows_selected_total']} selected" if stage.get("changed_outside_selected") == 0
                 else f", {stage['changed_outside_selected']} outside the selected rows" if "changed_outside_selected" in stage else "")
        print(f"{stage['name']}: wrote {stage['rows_changed_total']} rows "
              f"({', '.join(f'layer {k}: {v}' for k, v in stage['rows_changed'].items())}){extra}")
    for layer, use in report["row_use"].items():
        if "slots" in use:
            print(f"layer {layer}: background reads {use['rows_read_by_background']} of {use['slots']} rows; "
                  f"{use['rows_changed']} written, {use['changed_rows_never_read_by_background']} of them never read by the background")
    link = report.get("overlap_vs_forgetting")
    if link:
        print(f"overlap vs forgetting over {link['n']} (later chunk, earlier chunk) pairs: "
              f"Pearson {_num(link['pearson'])}, Spearman {_num(link['spearman'])}")
    if "question" in report:
        for layer, q in report["question"]["layers"].items():
            print(f"answer reads {q['rows_read']} rows in layer {layer}, {q['rows_written']} of them written by training")
    print(f"written: {out / 'inspect.json'}, {out / 'inspect.png'}")


INSPECT_FILES = ("inspect.json", "inspect.png", "access.png")


def _check_inspect_out(out: Path) -> None:
    """`out` is new, empty, or an earlier smf inspect's output (whose files a new report replaces)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SmfError(f"--out {out} is a file; give a folder for the report")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in INSPECT_FILES)
    if foreign:
        raise SmfError(f"--out {out} holds files smf inspect did not write ({', '.join(foreign[:3])}); choose a new or empty folder")
    report = out / "inspect.json"
    if report.exists():
        try:  # bounded: --out may name any folder of the user's
            ours = isinstance(read_json(report).get("stages"), list)
        except (OSError, SmfError, AttributeError):
            ours = False
        if not ours:
            raise SmfError(f"--out {out}: its inspect.json is not a report smf inspect wrote; choose a new or empty folder")


def _num(x) -> str:
    return "–" if x is None else f"{x:+.2f}"
