"""What `smf learn` does: the train, memory and background configs it nests, under one preset.

`smf learn` trains with the same configs as `smf train`, `smf retrofit` and `smf background`
(TrainConfig with SmfOptions, MemoryConfig, BackgroundConfig), each at its own defaults,
except where the learn check chose otherwise for one person's facts: LEARN_PRESET names
those settings once. A mapping (a script's settings, the command line's flags) may give a
nested section (`train: {lr: 1.0}`) or a flat shortcut known from `smf learn`'s flags
(`lr: 1.0`, `slots: 16384`, `background: wikitext`; SHORTCUTS). Training steps: `epochs` (the
preset's) decides them, unless a mapping gives `steps` without `epochs`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping

from smf.config import Config, closest, field_types, merge, setting
from smf.errors import SmfError
from smf.memory.config import MemoryConfig
from smf.methods import TrainConfig
from smf.selection import BackgroundConfig

PRESET_STUDY = "studies/learn-check"
#: Where `smf learn` differs from the configs' defaults, and why (studies/learn-check): taught one
#: person's few facts, SGD at lr 1e5 (on zero-initialised values its gradients are tiny; lazy Adam
#: at lr 1.0, smf train's default, taught less and cost the probes more) for 8 passes over the study
#: data (8 items a fact) in batches of 16, t = 1000 rows a layer and step (on the validation facts:
#: 20 of 20 taught and 6 in other words, against 15 and 2 with 5 passes, and 8 taught with 12 items a
#: fact, 3 passes and t = 300; the probes within noise of base at 5 and 8 passes); background statistics
#: of 16 batches of 8 pydoc sequences, each paragraph in a chat turn (the offline study's docstrings
#: per sequence did not carry over to sittings).
LEARN_PRESET: dict[str, dict[str, Any]] = {
    "train": {"method": "smf", "optimizer": "sgd", "lr": 1e5, "epochs": 8.0, "batch_size": 16, "max_length": 128,
              "top_t": 1000},
    "background": {"data": "pydoc", "batches": 16, "batch_size": 8},
}
#: The same sitting through LoRA or full finetuning (`smf learn --method`): the same study data, passes and
#: batches as SMF's, each method's AdamW at the learning rate the offline sweep chose for it on validation
#: data (studies/sweep: 40 steps of 16 examples, as a sitting).
METHOD_PRESETS: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora", "lr": 1e-3},
    "full": {"method": "full", "lr": 1e-4},
}
LEARN_METHODS = ("smf", "lora", "full")
#: smf learn's flat names → the nested settings they set
SHORTCUTS: dict[str, tuple[str, ...]] = {
    "method": ("train.method",), "epochs": ("train.epochs",), "steps": ("train.steps",), "top_t": ("train.top_t",),
    "lr": ("train.lr",), "optimizer": ("train.optimizer",), "batch_size": ("train.batch_size",),
    "max_length": ("train.max_length",), "count": ("train.count",), "seed": ("train.seed", "memory.seed"),
    "slots": ("memory.slots",), "background": ("background.data",), "background_batches": ("background.batches",),
    "background_batch_size": ("background.batch_size",),
}
QUESTIONS = "docstring-questions"  # background: chats of questions about the standard library, answered
LEARN_OPTIMIZERS = ("adam", "rowwise_adagrad", "sgd")  # the strictly sparse ones


def _preset(section: str, cls):
    return lambda: cls.from_dict(LEARN_PRESET.get(section, {}), where=f"LEARN_PRESET: {section}")


@dataclass
class LearnConfig(Config):
    """What `smf learn` does: the nested configs at LEARN_PRESET, and the settings of its own stages
    (one seed each; studies/learn-check)."""

    train: TrainConfig = setting(help="the training run (TrainConfig, method smf)", factory=_preset("train", TrainConfig))
    memory: MemoryConfig = setting(help="the memory a model without one gets", factory=_preset("memory", MemoryConfig))
    background: BackgroundConfig = setting(help="the background statistics a model without memory gets (data: also "
                                                f"{QUESTIONS}, chats of questions about the standard library)",
                                           factory=_preset("background", BackgroundConfig))
    show: int = setting(5, "questions whose answers are printed before and after")
    per_fact: int = setting(8, "study items per fact at most (its questions in other wordings, the statement restated, "
                                "the statement with its answer to fill in; smf.use.learn.study), every form in turn; 0: all "
                                f"({PRESET_STUDY})")
    study_model: str = setting("none", "who writes more wordings of each question besides the rules: none (the rules only), "
                                       "self (the model being taught) or a model (hub id or folder); a wording is kept only "
                                       "when it keeps the question's names and the writer, shown the fact, answers it right. "
                                       "On the validation facts the offline model keeps 15 of the 47 it writes (74 s); with "
                                       "keep and anchors at 0 the sitting answers 8 of 20 in other words against 7 without, "
                                       f"world probe -7.3 against -1.3 points: no gain shown on this model ({PRESET_STUDY})")
    study_wordings: int = setting(3, "wordings the study model writes per question (0 to 3: one per set of worked examples)")
    answer_in: Literal["statement", "question", "answer"] = setting(
        "statement", "how a study question is answered: statement (the fact's statement) or question (in the question's "
                     "own words where a rule fits, \"Who composed X?\" → \"Ines Vautrin composed X.\", as a chat model "
                     "answers; else the statement) or answer (the short answer, then the statement) ({PRESET_STUDY}: with "
                     "keep and anchors at 0, on the validation facts, 7 of 20 in other words with statement or question, the "
                     "world probe -8.7 ± 2.2 and -1.3 ± 2.1 points; 10 of 20 with answer, -10.2 ± 2.5; answer with keep and "
                     "anchors: 0 of 20)")
    protect: Literal["trained", "reads", "off"] = setting(
        "trained", "what a later sitting spares: reads (what these facts read is added to the background statistics saved "
                   "with the model, one document per fact, so TF-IDF ranks those rows as common), trained (that, and the "
                   "rows this sitting trained count as read by every document: TF-IDF scores them 0), or off "
                   f"({PRESET_STUDY}: 18 of 19 answers kept, against 5 of 19 off)")
    stop: bool = setting(True, "teach the end of each answer (the chat's end-of-turn token after it); false leaves where the "
                               f"model stops answering to the model ({PRESET_STUDY})")
    anchors: int = setting(1, "per question with a subject, questions about made-up subjects (\"What is the capital of "
                              "Mirilber?\") answered by the model itself, whose reads count as background for this sitting "
                              f"(anchor_reads; smf.use.anchors); 0: none. What keeps the model's general answers, "
                              "and what holds back a fact asked in other words, which is also a question about an unknown "
                              f"subject ({PRESET_STUDY}: on the person's facts, at 0 with answer_in question, 7 to 9 of 20 in "
                              "other words against 4 to 7, and 7 to 13 points of the world probe lost)")
    anchor_reads: Literal["exclude", "document"] = setting(
        "exclude", "how the anchors' reads count: exclude (every row an anchor reads counts as read by every document: "
                   "TF-IDF scores it 0, so this sitting does not train it) or document (each anchor one document of the "
                   f"background statistics: rows that any subject of the relation reads score low) ({PRESET_STUDY})")
    keep: int = setting(0, "per question with a subject, questions about made-up subjects answered by the model before the "
                           "sitting, whose answers the training keeps: it adds keep_weight × the KL divergence of the model's "
                           "next-token distributions along them from the ones before the sitting to the loss "
                           "(smf.train.keep; 0: none). Off by default: beside the anchors it kept nothing more on the "
                           "validation facts (with it 1 of 20 in other words and the world probe -3.0 points, without it 2 "
                           f"and -2.0) and doubled the training (349 s a sitting against 176 s) ({PRESET_STUDY})")
    keep_general: int = setting(0, "general questions (about the standard library's functions: smf.data.docstrings, offline, "
                                   "no probe's) answered by the model before the sitting, whose answers the training keeps "
                                   "as keep keeps its own")
    keep_weight: float = setting(3.0, "the weight of the kept answers' term in the loss (the facts' loss has weight 1) "
                                      f"({PRESET_STUDY})")
    keep_divergence: Literal["forward", "symmetric"] = setting(
        "forward", "the kept answers' term: forward, KL(before ‖ now) along them, or symmetric, that plus KL(now ‖ before), "
                   "which also charges mass moving onto a token the model before the sitting found unlikely "
                   f"(smf.train.keep) ({PRESET_STUDY})")
    keep_from: Literal["base", "start"] = setting(
        "base", "whose answers keep and keep_general keep: base (the model before any sitting, i.e. with its memory reading "
                "zeros; a later sitting also keeps the earlier sittings' kept answers, saved with the model) or start (the "
                "model this sitting starts from, this sitting's questions only); the same in a first sitting "
                f"({PRESET_STUDY})")
    keep_per_step: int = setting(64, "at most this many kept answers enter each step's term, in whole batches of batch_size "
                                     "taken in turn (0: all, every step), so that a model taught in many sittings keeps "
                                     "all their answers at a bounded cost per step (bench/keep_cost.py)")

    NESTED: ClassVar[tuple[str, ...]] = ("train", "memory", "background")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "learn settings") -> "LearnConfig":
        """The config of `raw` (nested sections and flat SHORTCUTS) over LEARN_PRESET over the defaults."""
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            return super().from_dict(raw, where)  # its one-line refusal
        nested = {k: v for k, v in raw.items() if k not in SHORTCUTS}
        for key, value in raw.items():
            for path in SHORTCUTS.get(key, ()):
                section, _, name = path.partition(".")
                if not isinstance(nested.get(section, {}), Mapping):
                    break  # the section's own error, from super
                nested[section] = {**nested.get(section, {}), name: value}
        train = nested.get("train")
        method = train.get("method", "smf") if isinstance(train, Mapping) else "smf"
        if method not in LEARN_METHODS:  # before the preset adds one method's options
            hint = closest(str(method), LEARN_METHODS)
            raise SmfError(f"{where}: method: smf learn teaches with {', '.join(LEARN_METHODS)}, not {method!r}"
                           + (f"; did you mean '{hint}'?" if hint else ""))
        if isinstance(train, Mapping) and "steps" in train and "epochs" not in train:
            nested["train"] = {**train, "epochs": None}  # steps given: they decide, not the preset's passes
        shared = {k: v for k, v in LEARN_PRESET["train"].items() if k in ("epochs", "batch_size", "max_length")}
        preset = LEARN_PRESET if method == "smf" else {**LEARN_PRESET, "train": {**shared, **METHOD_PRESETS[method]}}
        return super().from_dict(merge(preset, nested), where)

    def check(self, where: str) -> None:
        if self.train.method not in LEARN_METHODS:
            raise SmfError(f"{where}: method: smf learn teaches with {', '.join(LEARN_METHODS)}, not {self.train.method}")
        if self.train.method == "smf" and self.train.options.optimizer not in LEARN_OPTIMIZERS:
            raise SmfError(f"{where}: optimizer must be a strictly sparse one ({', '.join(LEARN_OPTIMIZERS)}), "
                           f"got {self.train.options.optimizer!r}")
        for name in ("anchors", "keep", "keep_general", "keep_per_step", "per_fact", "study_wordings"):
            if getattr(self, name) < 0:
                raise SmfError(f"{where}: {name} must be >= 0, got {getattr(self, name)}")
        if self.study_wordings > 3:
            raise SmfError(f"{where}: study_wordings must be 0 to 3 (one wording per set of worked examples), got "
                           f"{self.study_wordings}")
        if not self.keep_weight > 0:
            raise SmfError(f"{where}: keep_weight must be > 0, got {self.keep_weight}")


def nested_field(path: str):
    """(dataclass field, type hint, LearnConfig's default, the default without LEARN_PRESET) of a nested setting
    such as 'train.top_t' (a method option is found in the train config's options)."""
    section, _, name = path.partition(".")
    ours = _owner(getattr(LearnConfig(), section), name)
    plain = _owner(type(getattr(LearnConfig(), section))(), name)
    found = next(f for f in dataclasses.fields(ours) if f.name == name)
    return found, field_types(type(ours))[name], getattr(ours, name), getattr(plain, name)


def _owner(config, name: str):
    """`config`, or its method options, whichever has the field `name`."""
    for owner in (config, getattr(config, "options", None)):
        if owner is not None and name in {f.name for f in dataclasses.fields(owner)}:
            return owner
    raise KeyError(name)
