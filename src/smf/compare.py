"""`smf compare`: the whole study from one config — who learned what, and at what cost.

Stages, each skipped when its output already exists (a stopped study resumes):

    base/result.json            the base model on the task, extra tasks and probes
    memory_model/               the retrofitted model (+ healed) with background statistics
    runs/<label>/seed<s>/       one training run per method setting and seed:
        train_config.json, log.jsonl (losses and curve evaluations), result.json
    results.json, report.md, *.png   written at the end from everything above

A label is a method setting: `smf-tfidf`, `smf-kl`, `smf-tf`, `smf-all`, `smf-random`,
`lora`, `full`, each with TrainConfig overrides; list values sweep (`top_t: [100, 1000]`
gives two settings). Every setting trains on the same data, steps, batch and seed.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from smf.errors import SmfError, reject_unknown_keys
from smf.io import read_json, read_yaml_mapping, write_json_atomic
from smf.memory.config import MemoryConfig
from smf.train import TrainConfig

FAMILIES = {
    "smf-tfidf": {"method": "smf", "selection": "tfidf"},
    "smf-kl": {"method": "smf", "selection": "kl"},
    "smf-tf": {"method": "smf", "selection": "tf"},
    "smf-all": {"method": "smf", "selection": "all"},
    "smf-random": {"method": "smf", "selection": "random"},
    "lora": {"method": "lora"},
    "full": {"method": "full"},
}
DEFAULT_METHODS = {"smf-tfidf": {}, "smf-kl": {}, "lora": {}, "full": {}}


@dataclass
class StudyConfig:
    """A comparison study. Defaults live here; YAML files only override them.

    model: hub id, folder, or None for the offline default.
    memory: MemoryConfig fields for the SMF model. heal: None, or {data, steps, lr,
    batch_size, max_length} to heal the memory on general text first. background:
    {data, batches, batch_size, max_length} for the access statistics.
    data: the training source (smf.sources). train: TrainConfig fields shared by all.
    methods: {label: TrainConfig overrides}; labels name a family (FAMILIES),
    optionally with a suffix after a space ("lora r4"); list values sweep.
    task: the headline task (an evaluation task spec); extra_tasks: reported beside it;
    probes: forgetting probes. selection and selection_probes: the validation task and
    validation probes that choose each family's setting (never the reported ones): the
    rule set by `selection_tolerance` (points of drift allowed; pp for accuracy, % for
    perplexity) or, when set, `selection_min_gain` (points of gain required); see
    `_choose_on_validation`.
    curve: {every, limit, documents} evaluation points during training (every 0 = none),
    on the first `limit` items of the task and probes (`documents` for perplexity).
    """

    name: str = "study"
    model: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    memory: dict[str, Any] = field(default_factory=dict)
    heal: dict[str, Any] | None = None
    background: dict[str, Any] = field(default_factory=lambda: {"data": "pydoc", "batches": 32, "batch_size": 8, "max_length": 256})
    data: Any = "facts"
    train: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_METHODS))
    task: Any = "facts"
    extra_tasks: list[Any] = field(default_factory=list)
    probes: list[Any] = field(default_factory=lambda: ["pydoc", "capitals"])
    selection: Any = None
    selection_probes: list[Any] = field(default_factory=list)
    selection_tolerance: float = 1.0
    selection_min_gain: float | None = None
    curve: dict[str, int] = field(default_factory=lambda: {"every": 0, "limit": 40, "documents": 2})
    eval_batch_size: int = 16
    keep_models: bool = False

    @classmethod
    def load(cls, path: str | Path) -> "StudyConfig":
        return cls.from_dict(read_yaml_mapping(path, "study settings"), where=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "study config") -> "StudyConfig":
        reject_unknown_keys(cls, raw, where)
        config = cls(**raw)
        config.validate(where)
        return config

    def validate(self, where: str) -> None:
        MemoryConfig.from_dict(self.memory)
        if not self.seeds or not all(isinstance(s, int) for s in self.seeds):
            raise SmfError(f"{where}: seeds must be a non-empty list of integers")
        if not isinstance(self.methods, dict) or not self.methods:
            raise SmfError(f"{where}: methods must map labels (e.g. smf-tfidf, lora, full) to settings")
        for key in ("selection_tolerance", "selection_min_gain"):
            value = getattr(self, key)
            if (value is not None or key == "selection_tolerance") and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
            ):
                raise SmfError(f"{where}: {key} must be a number of points ≥ 0, got {value!r}")
        for run in self.runs():
            run.train_config(self, seed=self.seeds[0])  # every setting must make a valid TrainConfig
        from smf.evaluate.tasks import parse_spec

        for spec in self.eval_specs():
            parse_spec(spec)

    def runs(self) -> list["RunSpec"]:
        """Every method setting, sweeps expanded, in config order."""
        out = []
        for label, settings in self.methods.items():
            family = label.split(" ")[0]
            if family not in FAMILIES:
                raise SmfError(f"unknown method '{family}'; choose from {', '.join(FAMILIES)}")
            settings = dict(settings or {})
            swept = {k: v for k, v in settings.items() if isinstance(v, list) and k != "lora_targets"}
            fixed = {k: v for k, v in settings.items() if k not in swept}
            for values in itertools.product(*swept.values()):
                point = dict(zip(swept, values))
                name = label + "".join(f" {k}={v}" for k, v in point.items())  # entry_of(name) == label
                out.append(RunSpec(name, family, {**FAMILIES[family], **fixed, **point}))
        labels = [r.label for r in out]
        if len(set(labels)) != len(labels):
            raise SmfError("two method settings have the same label; give one a suffix, e.g. 'lora r4'")
        return out

    def eval_specs(self) -> list[Any]:
        specs = [self.task, *self.extra_tasks, *self.probes]
        return specs + ([self.selection] if self.selection is not None else []) + list(self.selection_probes)

    def needs_memory(self) -> bool:
        return any(r.settings["method"] == "smf" for r in self.runs())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def entry_of(run_label: str) -> str:
    """The methods entry a run label was expanded from: 'lora lr=0.001' → 'lora'; 'lora r4' → 'lora r4'."""
    return " ".join(word for word in run_label.split(" ") if "=" not in word)


@dataclass
class RunSpec:
    label: str
    family: str
    settings: dict[str, Any]

    def train_config(self, study: StudyConfig, seed: int) -> TrainConfig:
        return TrainConfig.from_dict({**study.train, **self.settings, "seed": seed}, where=f"method '{self.label}'")

    def folder(self, out: Path, seed: int) -> Path:
        return out / "runs" / self.label.replace(" ", "_").replace("/", "-") / f"seed{seed}"


def run_study(config: StudyConfig, out: str | Path, *, seeds: list[int] | None = None, progress: bool = True) -> dict:
    """Run (or resume) the study in `out`; return the aggregated results."""
    from smf.evaluate.tasks import load_task
    from smf.models import resolve_model

    out = Path(out)
    if seeds:
        config = dataclasses.replace(config, seeds=list(seeds))
    _claim(out, config)
    from smf.sources import training_examples

    # bad data fails before any work
    tasks = {spec_label(s): load_task(s) for s in config.eval_specs()}
    training_examples(config.data)
    base_dir = resolve_model(config.model)
    base = _base_results(config, base_dir, tasks, out)
    memory_dir = _memory_model(config, base_dir, out, progress) if config.needs_memory() else None
    for seed in config.seeds:
        for run in config.runs():
            _train_and_evaluate(config, run, seed, base_dir, memory_dir, tasks, out, progress)
    from smf.report import write_report

    results = collect_results(config, out, base)
    write_json_atomic(out / "results.json", results)
    write_report(results, out)
    return results


def spec_label(spec: Any) -> str:
    from smf.evaluate.tasks import parse_spec

    return parse_spec(spec).label


# Settings that change no run, only how runs are gathered: a study may change them.
AGGREGATION_ONLY = ("seeds", "selection_tolerance", "selection_min_gain", "name", "keep_models")


def _claim(out: Path, config: StudyConfig) -> None:
    """A study folder holds one study: a different config is refused, never overwritten.

    A study may grow: new method entries can be added (the finished runs of the
    entries it already had are kept); changing or removing an entry is a different study.
    """
    marker = out / "study.json"
    mine = {k: v for k, v in config.to_dict().items() if k not in AGGREGATION_ONLY}
    if marker.is_file():
        theirs = {k: v for k, v in read_json(marker).items() if k not in AGGREGATION_ONLY}
        old_methods = theirs.get("methods") or {}
        if all(mine["methods"].get(label) == settings for label, settings in old_methods.items()):
            theirs["methods"] = mine["methods"]  # only additions
        if theirs != mine:
            changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise SmfError(f"{out} holds a different study (differs in: {', '.join(changed)}); choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise SmfError(f"{out} is not empty and holds no study.json; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, config.to_dict())


def _evaluate(model, tokenizer, tasks: dict, config: StudyConfig, progress: bool) -> dict:
    from smf.evaluate.evaluator import evaluate

    return evaluate(model, tokenizer, list(tasks.values()), batch_size=config.eval_batch_size, progress=progress)["tasks"]


def _base_results(config: StudyConfig, base_dir, tasks: dict, out: Path) -> dict:
    path = out / "base" / "result.json"
    if path.is_file():
        return read_json(path)
    from smf.models import load_model

    model, tokenizer = load_model(base_dir)
    start = time.perf_counter()
    result = {"label": "base", "model": str(base_dir), "tasks": _evaluate(model, tokenizer, tasks, config, True)}
    if config.curve.get("every"):
        result["curve"] = _evaluate(model, tokenizer, _curve_tasks(config, tasks), config, False)
    result["eval_seconds"] = time.perf_counter() - start
    write_json_atomic(path, result)
    return result


def _memory_model(config: StudyConfig, base_dir, out: Path, progress: bool) -> Path:
    """Retrofit (and heal) the base model once; background statistics beside it."""
    from smf.memory.retrofit import load_retrofitted, retrofit, save_retrofitted
    from smf.models import load_model
    from smf.selection import BACKGROUND_FILE, collect_background
    from smf.sources import general_texts
    from smf.train import TrainConfig, collate, text_chunks, train

    folder = out / "memory_model"
    if not (folder / "smf_memory.json").is_file():
        model, tokenizer = load_model(base_dir)
        retrofit(model, MemoryConfig.from_dict(config.memory))
        save_retrofitted(model, tokenizer, folder, overwrite=True, extra={"base_model": str(base_dir)})
    if config.heal:
        healed = out / "heal" / "model"
        if not (healed / "smf_memory.json").is_file():
            h = dict(config.heal)
            texts = general_texts(h.pop("data", "pydoc"))
            heal_config = TrainConfig.from_dict({"method": "heal", **h}, where="heal")
            model = load_retrofitted(folder)
            tokenizer = load_model_tokenizer(folder)
            chunks = text_chunks(texts, tokenizer, heal_config.max_length)
            shutil.rmtree(out / "heal", ignore_errors=True)
            train(model, tokenizer, chunks, heal_config, out / "heal", model_dir=folder, progress=progress)
        folder = healed
    if not (folder / BACKGROUND_FILE).is_file():
        b = {"data": "pydoc", "batches": 32, "batch_size": 8, "max_length": 256, **config.background}
        tokenizer = load_model_tokenizer(folder)
        chunks = text_chunks(general_texts(b["data"]), tokenizer, b["max_length"])
        needed = b["batches"] * b["batch_size"]
        if len(chunks) < needed:
            raise SmfError(f"background data gives {len(chunks)} sequences; {b['batches']} batches of {b['batch_size']} need {needed}")
        batches = [collate(chunks[i : i + b["batch_size"]], tokenizer.pad_token_id) for i in range(0, needed, b["batch_size"])]
        collect_background(load_retrofitted(folder), batches, progress=progress).save(folder)
    return folder


def load_model_tokenizer(folder: Path):
    from smf.models import load_tokenizer

    return load_tokenizer(folder)


def _curve_tasks(config: StudyConfig, tasks: dict) -> dict:
    """The tasks evaluated during training: task and probes, first `limit` items each."""
    from smf.evaluate.tasks import Task

    keep = [spec_label(s) for s in [config.task, *config.probes]]
    out = {}
    for label, t in tasks.items():
        if label in keep:
            limit = config.curve.get("documents", 2) if t.kind == "perplexity" else config.curve.get("limit")
            out[label] = Task(t.label, t.definition, t.items[:limit] if limit else t.items, t.options, t.data_options)
    return out


def _train_and_evaluate(config: StudyConfig, run: RunSpec, seed: int, base_dir, memory_dir, tasks: dict, out: Path, progress: bool) -> None:
    from smf.memory.retrofit import load_retrofitted
    from smf.models import load_model
    from smf.sources import training_examples
    from smf.train import train

    folder = run.folder(out, seed)
    if (folder / "result.json").is_file():
        return
    train_config = run.train_config(config, seed)
    if train_config.method == "smf":
        model_dir = memory_dir
        model, tokenizer = load_retrofitted(model_dir), load_model_tokenizer(model_dir)
    else:
        model_dir = base_dir
        model, tokenizer = load_model(base_dir)
    every = config.curve.get("every") or 0
    curve_tasks = _curve_tasks(config, tasks) if every else {}
    train_config = dataclasses.replace(train_config, eval_every=every)
    eval_fn = (lambda m, step: _evaluate(m, tokenizer, curve_tasks, config, False)) if every else None
    resume = (folder / "train_config.json").is_file()
    if resume and (folder / "summary.json").is_file():
        shutil.rmtree(folder)  # trained but not evaluated, and the model was not kept: train again
        resume = False
    if resume and not (folder / "checkpoint").is_dir():
        shutil.rmtree(folder)
        resume = False
    if progress:
        print(f"== {run.label}, seed {seed}")
    start = time.perf_counter()
    result = train(model, tokenizer, training_examples(config.data), train_config, folder, model_dir=model_dir,
                   resume=resume, eval_fn=eval_fn, save_model=config.keep_models, progress=progress)
    train_wall = time.perf_counter() - start
    evaluated = _evaluate(result.model, tokenizer, tasks, config, progress)
    record = {
        "label": run.label, "family": run.family, "seed": seed, "settings": run.settings,
        "train_config": train_config.to_dict(), "summary": result.summary,
        "wall_seconds": train_wall + 0.0, "eval_seconds": time.perf_counter() - start - train_wall, "tasks": evaluated,
    }
    write_json_atomic(folder / "result.json", record)
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    del model, result
    torch.cuda.empty_cache() if torch.cuda.is_available() else None


# ---------------------------------------------------------------- aggregation


def _delta(kind: str, value: float, base: float) -> float:
    """Change from base: points for accuracies, relative % for perplexities."""
    if kind == "perplexity":
        return 100.0 * (value / base - 1.0)
    return 100.0 * (value - base)


def _paired_stderr(records: list[dict], base_records: list[dict]) -> float | None:
    """Stderr (in points) of the per-item difference in correctness, items matched by id."""
    base = {r["id"]: float(r["correct"]) for r in base_records if "correct" in r}
    diffs = [float(r["correct"]) - base[r["id"]] for r in records if "correct" in r and r["id"] in base]
    if len(diffs) < 2:
        return None
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return 100.0 * math.sqrt(var / len(diffs))


def _mean_std(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def collect_results(config: StudyConfig, out: Path, base: dict) -> dict:
    """Gather every finished run into results.json's structure."""
    task_label = spec_label(config.task)
    probe_labels = [spec_label(p) for p in config.probes]
    extra_labels = [spec_label(t) for t in config.extra_tasks]
    selection_label = spec_label(config.selection) if config.selection is not None else None
    base_tasks = base["tasks"]
    runs = []
    for run in config.runs():
        for seed in config.seeds:
            path = run.folder(out, seed) / "result.json"
            if not path.is_file():
                continue
            r = read_json(path)
            metrics = {}
            for label, t in r["tasks"].items():
                b = base_tasks[label]
                kind, value, base_value = t["kind"], t["headline"]["value"], b["headline"]["value"]
                metrics[label] = {
                    "metric": t["headline"]["metric"], "kind": kind, "value": value, "stderr": t["headline"]["stderr"],
                    "base": base_value, "delta": _delta(kind, value, base_value),
                    "delta_unit": "%" if kind == "perplexity" else "pp",
                    "delta_stderr": _paired_stderr(t.get("records", []), b.get("records", [])) if kind != "perplexity" else None,
                    "n": t["n"],
                }
            s = r["summary"]
            curve = []
            log_file = run.folder(out, seed) / "log.jsonl"
            if log_file.is_file():
                for line in log_file.read_text().splitlines():
                    rec = json.loads(line)
                    if "loss" in rec:
                        curve.append({"step": rec["step"], "loss": rec["loss"]})
                    elif "eval" in rec:
                        curve.append({"step": rec["step"], "eval": {k: v["headline"]["value"] for k, v in rec["eval"].items()}})
            runs.append({
                "label": r["label"], "family": r["family"], "seed": seed, "settings": r["settings"], "metrics": metrics,
                "trainable_parameters": s["trainable_parameters"], "train_tokens_per_s": s["train_tokens_per_s"],
                "peak_memory_bytes": s["peak_memory_bytes"], "optimizer_state_bytes": s["optimizer_state_bytes"],
                "train_seconds": s["train_seconds"], "wall_seconds": r["wall_seconds"], "eval_seconds": r["eval_seconds"],
                "final_loss": s["final_loss"], "curve": curve, "train_config": r["train_config"],
            })
    summary = []
    for run in config.runs():
        mine = [r for r in runs if r["label"] == run.label]
        if not mine:
            continue
        row = {"label": run.label, "family": run.family, "settings": run.settings, "seeds": [r["seed"] for r in mine]}
        for label in mine[0]["metrics"]:
            row[label] = {"value": _mean_std([r["metrics"][label]["value"] for r in mine]),
                          "delta": _mean_std([r["metrics"][label]["delta"] for r in mine]),
                          "delta_stderr": mine[0]["metrics"][label]["delta_stderr"] if len(mine) == 1 else None}
        for key in ("train_tokens_per_s", "peak_memory_bytes", "optimizer_state_bytes", "train_seconds", "trainable_parameters"):
            row[key] = _mean_std([r[key] for r in mine])
        summary.append(row)
    selection_probe_labels = [spec_label(p) for p in config.selection_probes]
    chosen = (_choose_on_validation(summary, selection_label, selection_probe_labels, config.selection_tolerance,
                                    config.selection_min_gain) if selection_label else {})
    base_curve = {k: v["headline"]["value"] for k, v in base.get("curve", {}).items()}
    return {
        "study": config.name,
        "config": config.to_dict(),
        "task": task_label, "probes": probe_labels, "extra_tasks": extra_labels, "selection_task": selection_label,
        "selection_probes": selection_probe_labels, "selection_tolerance": config.selection_tolerance,
        "selection_min_gain": config.selection_min_gain,
        "base": {label: {"metric": t["headline"]["metric"], "kind": t["kind"], "value": t["headline"]["value"],
                         "stderr": t["headline"]["stderr"], "n": t["n"]} for label, t in base_tasks.items()},
        "base_curve": base_curve,
        "summary": summary,
        "chosen_on_validation": chosen,
        "runs": runs,
        "machine": _machine(),
    }


def _choose_on_validation(summary: list[dict], task: str, probes: list[str], tolerance: float,
                          min_gain: float | None = None) -> dict[str, str]:
    """Per family with several settings, the setting chosen on validation data only.

    Without `min_gain`: the best mean validation-task score among settings whose
    validation probes all drift at most `tolerance` from base; if no setting qualifies,
    the smallest worst drift. With `min_gain` (points): the smallest worst drift among
    settings whose mean validation-task gain is at least `min_gain`; if none gains that
    much, the largest gain. Ties go to the earlier setting in the config.
    """
    chosen = {}
    families: dict[str, list[dict]] = {}
    for row in summary:
        families.setdefault(row["family"], []).append(row)
    for family, rows in families.items():
        if len(rows) < 2:
            continue

        def worst_drift(row):
            return max((abs(row[p]["delta"]["mean"]) for p in probes), default=0.0)

        def gain(row):
            return row[task]["delta"]["mean"]

        if min_gain is not None:
            enough = [r for r in rows if gain(r) >= min_gain]
            best = min(enough, key=worst_drift) if enough else max(rows, key=gain)
        else:
            within = [r for r in rows if worst_drift(r) <= tolerance]
            best = max(within, key=lambda r: r[task]["value"]["mean"]) if within else min(rows, key=worst_drift)
        chosen[family] = best["label"]
    return chosen


def _machine() -> dict:
    import os
    import platform

    return {
        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "platform": platform.platform(),
    }
