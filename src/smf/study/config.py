"""A study's configuration: typed sections, merged over their defaults and checked at load.

    name, model, seeds
    memory:      MemoryConfig         the memory layers of the SMF model
    heal:        HealConfig | null    dense memory training on general text first
    background:  BackgroundConfig     the access statistics that tfidf and kl rank against
    data:        the training data (a source of `smf.data.sources`)
    train:       the training settings every method shares (TrainConfig's shared keys)
    methods:     {label: settings}    one entry per method setting (see below)
    evaluation:  EvaluationConfig     the reported task, extra tasks and forgetting probes
    validation:  ValidationConfig     the validation task and probes that choose settings
    tolerance:   drift that counts as "within base"
    curve:       CurveConfig          evaluation points during training
    stream:      StreamConfig         a continual stream of fact chunks (smf.study.stream); none = one run

A method label starts with a family (`smf-tfidf`, `smf-kl`, ..., `lora`, `full`: the
registered methods' `families()`), optionally followed by a suffix after a space
("lora r4"). Its settings are TrainConfig keys of that method; a list value sweeps
(`top_t: [100, 1000]` gives two runs, labelled "smf-tfidf top_t=100" ...).
"""

from __future__ import annotations

import itertools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from smf.config import Config, at, check_keys, choice, coerce, field_types, read_config, setting
from smf.data.registry import DATASETS, FACTS, fact_range
from smf.data.sources import _is_file, _split, check_source
from smf.errors import SmfError
from smf.evaluate.evaluator import BATCH_SIZE, GENERATE_BATCH_SIZE
from smf.evaluate.tasks import resolve_task
from smf.memory.config import MemoryConfig
from smf.methods import METHODS, Family, TrainConfig, families
from smf.methods.base import option_owners
from smf.methods.heal import HealConfig
from smf.models import PRECISIONS
from smf.selection import BackgroundConfig


@dataclass
class EvaluationConfig(Config):
    """What the study reports: a task, tasks beside it, and forgetting probes."""

    task: Any = setting("facts", "the headline task: a task name or mapping of options (see smf eval --list)")
    extra_tasks: list[Any] = setting(help="tasks reported beside the headline task", factory=list)
    probes: list[Any] = setting(help="forgetting probes, each a task", factory=lambda: ["pydoc", "capitals"])
    batch_size: int = setting(BATCH_SIZE, "questions or prompts per forward pass")
    generate_batch_size: int = setting(GENERATE_BATCH_SIZE, "prompts per batch of greedy generation (qa tasks and probes)")
    probes_apart_from_background: bool = setting(
        False, "refuse a forgetting probe (reported or validation) drawn from the same source as the background statistics")
    mixed_precision: str = setting("auto", "auto (bf16 autocast on a GPU, full precision on the CPU), no, or bf16")
    healed: bool = setting(False, "report the healed memory model, before any training, as its own row (needs heal)")

    def specs(self) -> list[Any]:
        return [self.task, *self.extra_tasks, *self.probes]

    def check(self, where: str) -> None:
        for name in ("batch_size", "generate_batch_size"):
            if getattr(self, name) < 1:
                raise SmfError(f"{at(where, name)}: must be >= 1, got {getattr(self, name)}")
        choice(self.mixed_precision, PRECISIONS, "mixed precision", at(where, "mixed_precision"))


@dataclass
class ValidationConfig(Config):
    """Validation data that chooses each family's setting; never the reported task or probes.

    Without `min_gain`: the best validation-task score among settings whose validation
    probes all drift at most the study's `tolerance` (else the least drift). With
    `min_gain`: the least drift among settings that gain at least `min_gain` points on
    the validation task (else the largest gain). See `smf.study.results.choose_on_validation`.
    """

    task: Any = setting(None, "the validation task; none = no choice of settings")
    probes: list[Any] = setting(help="validation probes (disjoint from the reported ones)", factory=list)
    min_gain: float | None = setting(None, "points of validation gain a setting needs before its drift counts")

    def specs(self) -> list[Any]:
        return ([self.task] if self.task is not None else []) + list(self.probes)

    def check(self, where: str) -> None:
        if self.min_gain is not None and self.min_gain < 0:
            raise SmfError(f"{at(where, 'min_gain')}: must be a number of points >= 0, got {self.min_gain}")
        if self.probes and self.task is None:
            raise SmfError(f"{at(where, 'probes')}: validation probes need a validation task (validation.task)")


@dataclass
class CurveConfig(Config):
    """Evaluation points during training, on the first items of the task and probes."""

    every: int = setting(0, "steps between evaluation points during training (0 = none)")
    limit: int = setting(40, "items of the task and of each accuracy probe at each point")
    documents: int = setting(2, "documents of each perplexity probe at each point")

    def check(self, where: str) -> None:
        for name in ("every", "limit", "documents"):
            if getattr(self, name) < (0 if name == "every" else 1):
                raise SmfError(f"{at(where, name)}: must be {'>= 0' if name == 'every' else '>= 1'}, got {getattr(self, name)}")


BACKGROUND_MODES = ("fixed", "accumulate")
LORA_MODES = ("continue", "merge")


@dataclass
class StreamConfig(Config):
    """A continual stream: the training facts cut into chunks, learned one after another.

    Each method setting learns chunk 1, then chunk 2 from where chunk 1 left it, and so
    on, with the study's training settings per chunk (an equal budget per chunk). After
    each chunk it is evaluated on every chunk's held-out questions and on the probes.
    """

    chunks: Any = setting(None, "K (the training facts in K equal chunks, in order) or a list of fact ranges 'a:b'; "
                                "none = no stream")
    background: str = setting("accumulate", "SMF's background statistics: accumulate (each learned chunk's reads added to "
                                            "them, so later chunks avoid its rows) or fixed (the study's, for every chunk)")
    lora: str = setting("continue", "LoRA across chunks: continue (one adapter) or merge (merge after each chunk, start a new one)")
    probes_after: str = setting("every", "evaluate the probes and extra tasks after every chunk, or only after the last "
                                         "(the chunks' questions are evaluated after every chunk either way)")

    def check(self, where: str) -> None:
        choice(self.background, BACKGROUND_MODES, "background", where)
        choice(self.lora, LORA_MODES, "lora", where)
        choice(self.probes_after, ("every", "last"), "probes_after", where)
        c = self.chunks
        if c is None:
            return
        if isinstance(c, bool) or not isinstance(c, (int, list)):
            raise SmfError(f"{at(where, 'chunks')}: give a number of chunks (e.g. 5) or a list of fact ranges ('0:12', ...), got {c!r}")
        if (c if isinstance(c, int) else len(c)) < 2:
            raise SmfError(f"{at(where, 'chunks')}: a stream needs at least 2 chunks, got {c!r}; "
                           "for one chunk run the study without a stream")

    def ranges(self, n_facts: int, where: str = "stream") -> list[range]:
        """The chunks as ranges of fact indices; overlapping chunks are refused."""
        if isinstance(self.chunks, int):
            if self.chunks > n_facts:
                raise SmfError(f"{at(where, 'chunks')}: {self.chunks} chunks of {n_facts} facts; give at most {n_facts}")
            bounds = [round(k * n_facts / self.chunks) for k in range(self.chunks + 1)]
            return [range(a, b) for a, b in zip(bounds, bounds[1:])]
        out = [fact_range(text, n_facts, at(where, "chunks")) for text in self.chunks]
        for i, a in enumerate(out):
            for j, b in enumerate(out[:i]):
                if set(a) & set(b):
                    raise SmfError(f"{at(where, 'chunks')}: chunks {j + 1} ({self.chunks[j]}) and {i + 1} ({self.chunks[i]}) "
                                   "share facts; give each fact to one chunk")
        return out


def _default_methods() -> dict[str, Any]:
    return {"smf-tfidf": {}, "smf-kl": {}, "lora": {}, "full": {}}


@dataclass
class StudyConfig(Config):
    """A comparison study. Defaults live here; YAML files only override them."""

    name: str = setting("study", "the study's name, in its report")
    model: str | None = setting(None, "hub id or folder of the base model; none = the offline default")
    seeds: list[int] = setting(help="every method setting trains once per seed", factory=lambda: [0])
    memory: MemoryConfig = setting(help="memory layers of the SMF model", factory=MemoryConfig)
    heal: HealConfig | None = setting(None, "heal the memory on general text before the background statistics; none = no")
    background: BackgroundConfig = setting(help="background access statistics", factory=BackgroundConfig)
    data: Any = setting("facts", "training data: a source name or mapping of options")
    train: dict[str, Any] = setting(help="training settings every method shares (steps, batch_size, ...)", factory=dict)
    methods: dict[str, Any] = setting(help="label → settings; a list value sweeps", factory=_default_methods)
    evaluation: EvaluationConfig = setting(help="reported task and probes", factory=EvaluationConfig)
    validation: ValidationConfig = setting(help="validation data that chooses settings", factory=ValidationConfig)
    tolerance: float = setting(1.0, "drift counted as 'within base' (pp for accuracy, % for perplexity): the report's aims, "
                                    "the plots' band, and the validation rule without min_gain")
    curve: CurveConfig = setting(help="evaluation points during training", factory=CurveConfig)
    keep_models: bool = setting(False, "keep each run's trained model (SMF: its changed rows; LoRA: its adapter; full: a model copy)")
    stream: StreamConfig = setting(help="a continual stream of fact chunks (smf.study.stream); none = one training run",
                                   factory=StreamConfig)

    RENAMED: ClassVar[dict[str, str]] = {
        "selection": "validation.task", "selection_probes": "validation.probes", "selection_min_gain": "validation.min_gain",
        "selection_tolerance": "tolerance", "task": "evaluation.task", "extra_tasks": "evaluation.extra_tasks",
        "probes": "evaluation.probes", "eval_batch_size": "evaluation.batch_size",
    }
    #: settings that change no run, only how runs are gathered: a study folder may change them
    AGGREGATION_ONLY: ClassVar[tuple[str, ...]] = ("name", "seeds", "tolerance", "keep_models", "validation.min_gain")

    @classmethod
    def load(cls, path: str | Path) -> "StudyConfig":
        raw = read_config(path, "study settings")
        if not raw:
            raise SmfError(f"{path}: the study config is empty; give at least its methods (see configs/offline.yaml)")
        if "methods" not in raw:
            raise SmfError(f"{path}: the study config has no 'methods'; list the methods to compare, e.g. methods: {{smf-tfidf: {{}}, lora: {{}}}}")
        heal = raw.get("heal")
        if isinstance(heal, dict) and heal.get("data") is None:
            raise SmfError(f"{path}: heal: give the general text to heal on, e.g. data: pydoc (or wikitext, oasst1, a .txt/.jsonl file)")
        config = cls.from_dict(raw, where=str(path))
        evaluation = raw.get("evaluation")
        if not isinstance(evaluation, dict) or "task" not in evaluation:
            raise SmfError(f"{path}: the study config names no task; give the one it reports, e.g. evaluation: {{task: facts}}")
        return config

    def check(self, where: str) -> None:
        if not self.seeds:
            raise SmfError(f"{at(where, 'seeds')}: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise SmfError(f"{at(where, 'seeds')}: a seed is repeated")
        if self.tolerance < 0:
            raise SmfError(f"{at(where, 'tolerance')}: must be a number of points >= 0, got {self.tolerance}")
        shared = [n for n in TrainConfig.shared_names() if n not in ("method", "seed")]
        owners = option_owners()
        hints = field_types(TrainConfig)
        for key, value in self.train.items():
            if key in TrainConfig.REMOVED:
                raise SmfError(f"{at(where, 'train')}: '{key}' is not a training setting: {TrainConfig.REMOVED[key]}")
            if key in hints and key not in ("method", "seed", "options"):
                coerce(value, hints[key], at(where, f"train.{key}"))
            if key == "method":
                raise SmfError(f"{at(where, 'train.method')}: each entry under methods names its method")
            if key == "seed":
                raise SmfError(f"{at(where, 'train.seed')}: a study's seeds are its top-level 'seeds'")
            if key in owners and key not in shared:
                raise SmfError(f"{at(where, 'train')}: '{key}' is an option of {', '.join(owners[key])}; set it in their entries under methods")
        check_keys(TrainConfig, self.train, at(where, "train"), known=shared)
        if not self.methods:
            raise SmfError(f"{at(where, 'methods')}: list at least one method, e.g. smf-tfidf, lora, full")
        runs = self.runs(where)
        for run in runs:
            run.train_config(self, self.seeds[0], where)  # every setting must make a valid TrainConfig
        check_source(self.data, "train", at(where, "data"))
        if self.evaluation.healed and self.heal is None:
            raise SmfError(f"{at(where, 'evaluation.healed')}: a healed row needs a heal; give heal: {{data: ...}} or set healed: false")
        labels = []
        for section, specs in (("evaluation", self.evaluation.specs()), ("validation", self.validation.specs())):
            for spec in specs:
                labels.append(resolve_task(spec, where=at(where, section)).label)
        _check_validation_apart(self, where)
        if self.evaluation.probes_apart_from_background:
            _check_probes_apart(self, where)
        if self.stream.chunks is not None:
            self.stream_chunks(where)
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise SmfError(f"{where}: two tasks are both called '{repeated[0]}'; give one another name with 'as'")

    def runs(self, where: str = "study") -> list["RunSpec"]:
        """Every method setting, sweeps expanded, in config order."""
        known = families()
        out = []
        for label, settings in self.methods.items():
            family = str(label).split(" ")[0]
            choice(family, known, "method", at(where, "methods"))
            if settings is None:
                settings = {}
            if not isinstance(settings, dict):
                raise SmfError(f"{at(where, 'methods.' + str(label))}: expected a mapping of settings, got {settings!r}")
            fam = known[family]
            for key in fam.settings:
                if key in settings:
                    raise SmfError(f"{at(where, 'methods.' + str(label))}: '{key}' is set by the family {family} "
                                   f"({key}: {fam.settings[key]}); choose another family instead")
            swept = {k: v for k, v in settings.items() if isinstance(v, list) and _sweeps(fam.method, k, v)}
            fixed = {k: v for k, v in settings.items() if k not in swept}
            for values in itertools.product(*swept.values()):
                point = dict(zip(swept, values))
                name = str(label) + "".join(f" {k}={v}" for k, v in point.items())  # entry_of(name) == label
                out.append(RunSpec(name, fam, {"method": fam.method, **fam.settings, **fixed, **point}))
        labels = [r.label for r in out]
        if len(set(labels)) != len(labels):
            raise SmfError(f"{at(where, 'methods')}: two method settings have the same label; give one a suffix, e.g. 'lora r4'")
        return out

    def stream_chunks(self, where: str = "study") -> list[dict[str, Any]]:
        """A stream's chunks: per chunk its label, fact range, training data and task specs."""
        data = {"name": self.data} if isinstance(self.data, str) else dict(self.data)
        task = self.evaluation.task
        task = {"name": task} if isinstance(task, str) else dict(task)
        if data.get("name") != "facts" or task.get("name") != "facts" or data.get("facts") is not None:
            raise SmfError(f"{at(where, 'stream')}: a stream cuts the generated facts into chunks; it needs data: facts "
                           "(without a 'facts' range) and evaluation.task: facts")
        facts_options = {k: v for k, v in data.items() if k in FACTS}
        if {k: v for k, v in task.items() if k in FACTS} != facts_options:
            raise SmfError(f"{at(where, 'evaluation.task')}: a stream's task must ask about the trained facts "
                           "(the same facts options as data)")
        n = int(data.get("n_facts", FACTS["n_facts"]))
        chunks = []
        for k, r in enumerate(self.stream.ranges(n, at(where, "stream")), 1):
            span = f"{r.start}:{r.stop}"
            chunks.append({"label": f"chunk{k}", "facts": span, "data": {**data, "facts": span},
                           "task": {**task, "facts": span, "as": f"chunk{k}"}})
        return chunks

    def eval_specs(self) -> list[Any]:
        return self.evaluation.specs() + self.validation.specs()

    def needs_memory(self) -> bool:
        return any(METHODS[r.family.method].uses_memory(r.train_config(self, self.seeds[0])) for r in self.runs())

    def identity(self) -> dict[str, Any]:
        """The settings that decide the runs (a study folder holds one identity)."""
        d = self.to_dict()
        for path in self.AGGREGATION_ONLY:
            section, _, key = path.partition(".")
            if key:
                d[section].pop(key, None)
            else:
                d.pop(section, None)
        return d


def _same_items(a, b) -> bool:
    """Whether two task specs may score the same items: the same loader with the same data
    options (any limit), two ranges of the capitals that intersect, or the same half of the
    world probe (any size)."""
    if a.dataset.eval.load is not b.dataset.eval.load:
        return False
    da, db = dict(a.data_options), dict(b.data_options)
    if "offset" in da and "n" in da:  # capitals: countries offset .. offset + n (cut by limit)
        ra = range(da.pop("offset"), da.pop("n") + a.data_options["offset"])
        rb = range(db.pop("offset"), db.pop("n") + b.data_options["offset"])
        ra, rb = ra[: a.limit or len(ra)], rb[: b.limit or len(rb)]
        return da == db and bool(set(ra) & set(rb))
    if "half" in da:  # the world probe: each half's items are the same whatever per_kind and limit keep
        return da["half"] == db["half"]
    return da == db


def _check_validation_apart(study: "StudyConfig", where: str) -> None:
    """Validation tasks choose settings; they must not score the reported items."""
    reported = [resolve_task(s) for s in study.evaluation.specs()]
    for spec in study.validation.specs():
        v = resolve_task(spec)
        for r in reported:
            if _same_items(v, r):
                raise SmfError(f"{at(where, 'validation')}: the validation task {v.label} scores items of the reported "
                               f"task {r.label}; validate on items the report does not score (e.g. facts-val, pydoc-val, capitals-val)")


def _origin(spec, where: str) -> str:
    """The file or dataset source a general-text spec reads."""
    name, _ = _split(spec, where)
    return str(Path(name).resolve()) if _is_file(name) else DATASETS[name].source()


def _check_probes_apart(study: "StudyConfig", where: str) -> None:
    """No forgetting probe may come from the text the background statistics count (TF-IDF steers away from the
    rows that text reads, so such a probe would flatter selection), nor from the general text a method trains
    on (replay, kl-anchor: the probe would measure what the run rehearsed)."""
    texts = {}  # origin → what reads it
    if study.needs_memory():
        texts[_origin(study.background.data, at(where, "background.data"))] = "the text the background statistics count"
    for run in study.runs(where):
        general = getattr(run.train_config(study, study.seeds[0], where).options, "general", None)
        if general is not None:
            texts.setdefault(_origin(general, at(where, f"methods.{entry_of(run.label)}.general")), f"the general text {run.label} trains on")
    for section, specs in (("evaluation", study.evaluation.probes), ("validation", study.validation.probes)):
        for spec in specs:
            probe = resolve_task(spec, where=at(where, section))
            source = probe.data_options.get("source")
            theirs = str(Path(source).resolve()) if source and _is_file(str(source)) else probe.dataset.source()
            if theirs in texts:
                raise SmfError(f"{at(where, 'evaluation.probes_apart_from_background')}: the {section} probe {probe.label} "
                               f"is drawn from {theirs}, {texts[theirs]}; take that text from another source (e.g. "
                               "docstrings) or drop the probe")


def _sweeps(method: str, key: str, value: list) -> bool:
    """Whether a list value is a sweep: always, unless the setting itself takes a list
    (then only a list of lists sweeps)."""
    cls = METHODS[method].Options
    hints = {**field_types(TrainConfig), **field_types(cls)}
    hint = hints.get(key)
    takes_list = hint is not None and any(typing.get_origin(a) in (list, tuple) for a in (typing.get_args(hint) or (hint,)))
    return not takes_list or all(isinstance(v, list) for v in value)


def entry_of(run_label: str) -> str:
    """The methods entry a run label was expanded from: 'lora lr=0.001' → 'lora'; 'lora r4' → 'lora r4'."""
    return " ".join(word for word in run_label.split(" ") if "=" not in word)


@dataclass
class RunSpec:
    label: str
    family: Family
    settings: dict[str, Any]  # TrainConfig keys: the family's and the entry's

    def train_config(self, study: StudyConfig, seed: int, where: str = "study") -> TrainConfig:
        return TrainConfig.from_dict({**study.train, **self.settings, "seed": seed}, where=at(where, f"methods.{entry_of(self.label)}"))

    def folder(self, out: Path, seed: int) -> Path:
        return out / "runs" / self.label.replace(" ", "_").replace("/", "-") / f"seed{seed}"
