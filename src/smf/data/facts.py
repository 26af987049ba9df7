"""Fictional medical facts: the offline stand-in for a task the model cannot know yet.

`generate_facts(FactsConfig(...))` makes a deterministic set of made-up facts such as
"Korvatinib is a drug used to treat Delmuro syndrome": drugs, diseases, enzymes and
pathogens get names built from random syllables (a seeded `random.Random`), so the
base model has never seen them. Each fact is one (subject, relation, answer) triple;
every subject belongs to exactly one fact.

Relations (`RELATIONS`): treats (drug → disease), inhibits (drug → enzyme),
caused_by (disease → pathogen), affects (disease → organ), side_effect (drug →
symptom). Organs and symptoms are real words from fixed lists; the rest are made up.

What a FactSet holds, and why:

- `train`: several wordings per fact, alternating a statement ("{s} is a drug used to
  treat {a}.") and a question in one of three QA frames ("Question: {q}\\nAnswer:",
  "Q: {q}\\nA:", "{q}"). The answer always ends the text and is the whole `target`,
  so the loss sits on the answer only. DESIGN.md's probe: statement-only training did
  not transfer to held-out questions; mixing QA wordings with answer-only loss did.
  Examples are grouped by fact, in fact order (the trainer shuffles).
- `mcq_rows` / `qa_rows`: the reported evaluation, in the MedMCQA and TriviaQA
  schemas, asked with a question wording never used in training (`test_question`).
- `val_mcq_rows` / `val_qa_rows`: the same facts asked with another held-out wording
  (`val_question`), for choosing hyperparameters; report on the test rows only.
- `control_mcq_rows` / `control_qa_rows`: facts about subjects that never appear in
  training. Their accuracy must stay near chance (0.25 for MCQ) after training.
- Distractors: the three wrong options of every question are answers of *other
  trained* facts of the same relation, and control answers are trained answers too,
  so a model cannot score by preferring names it saw in training. The correct
  position is balanced over A–D (a shuffled cycle) in each row set.

TriviaQA-schema `question`s carry no trailing "?", because lm-eval's TriviaQA prompt
appends one; MedMCQA-schema questions end in "?". Rows parse through the hub parsers
(`facts_mcq_items`, `facts_qa_items`), the same code path as MedMCQA and TriviaQA.

Determinism: the same config gives identical output (a `random.Random` with an int
seed is stable across versions); a different seed gives different names. Names are
random syllables, unique, and no name's stem contains another's; they are not
checked against a dictionary, so a rare one may resemble a real word.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from smf.data.hub import medmcqa_items, triviaqa_items
from smf.data.types import MCQItem, QAItem, TrainExample
from smf.errors import SmfError


@dataclass(frozen=True)
class Relation:
    """How one kind of fact is worded. Templates use {s} (subject) and {a} (answer)."""

    name: str
    subject_kind: str
    answer_kind: str
    statements: tuple[str, ...]  # each ends with "{a}."
    questions: tuple[str, ...]  # training questions about {s}
    val_question: str  # held out from training; for choosing hyperparameters
    test_question: str  # held out from training; the reported evaluation


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in (
        Relation(
            name="treats",
            subject_kind="drug",
            answer_kind="disease",
            statements=(
                "{s} is a drug used to treat {a}.",
                "Doctors prescribe {s} to patients with {a}.",
                "The main indication for {s} is {a}.",
                "{s} was approved as a treatment for {a}.",
                "Patients take {s} when they suffer from {a}.",
                "In the clinic, {s} is the first-line therapy for {a}.",
            ),
            questions=(
                "What disease is {s} used to treat?",
                "What is the main indication for {s}?",
                "Doctors prescribe {s} to patients with which condition?",
                "What was {s} approved to treat?",
                "Patients take {s} when they suffer from what?",
                "What is {s} the first-line therapy for?",
            ),
            val_question="Against which illness is {s} given?",
            test_question="Which disease is treated with {s}?",
        ),
        Relation(
            name="inhibits",
            subject_kind="drug",
            answer_kind="enzyme",
            statements=(
                "{s} works by inhibiting {a}.",
                "The molecular target of {s} is the enzyme {a}.",
                "{s} blocks the activity of {a}.",
                "Pharmacologists classify {s} as an inhibitor of {a}.",
                "The enzyme that {s} shuts down is {a}.",
                "At therapeutic doses, {s} acts mainly on {a}.",
            ),
            questions=(
                "Which enzyme does {s} inhibit?",
                "What is the molecular target of {s}?",
                "What enzyme does {s} block?",
                "{s} is classified as an inhibitor of which enzyme?",
                "Which enzyme does {s} shut down?",
                "What does {s} act on at therapeutic doses?",
            ),
            val_question="The drug {s} suppresses which enzyme?",
            test_question="Which enzyme is inhibited by {s}?",
        ),
        Relation(
            name="caused_by",
            subject_kind="disease",
            answer_kind="pathogen",
            statements=(
                "{s} is caused by {a}.",
                "The pathogen responsible for {s} is {a}.",
                "Every case of {s} can be traced back to {a}.",
                "Microbiologists identified the cause of {s} as {a}.",
                "The infectious agent behind {s} is {a}.",
                "{s} results from an infection with {a}.",
            ),
            questions=(
                "What causes {s}?",
                "Which pathogen is responsible for {s}?",
                "What can every case of {s} be traced back to?",
                "What did microbiologists identify as the cause of {s}?",
                "What is the infectious agent behind {s}?",
                "{s} results from an infection with what?",
            ),
            val_question="{s} is triggered by which pathogen?",
            test_question="Which microorganism causes {s}?",
        ),
        Relation(
            name="affects",
            subject_kind="disease",
            answer_kind="organ",
            statements=(
                "{s} mainly affects the {a}.",
                "The organ damaged by {s} is the {a}.",
                "{s} is a disorder of the {a}.",
                "In patients with {s}, the organ that fails first is the {a}.",
                "Doctors treating {s} focus on the {a}.",
                "The primary site of {s} is the {a}.",
            ),
            questions=(
                "Which organ does {s} mainly affect?",
                "What organ is damaged by {s}?",
                "{s} is a disorder of which organ?",
                "In patients with {s}, which organ fails first?",
                "Doctors treating {s} focus on which organ?",
                "What is the primary site of {s}?",
            ),
            val_question="{s} attacks which part of the body?",
            test_question="Which organ is affected by {s}?",
        ),
        Relation(
            name="side_effect",
            subject_kind="drug",
            answer_kind="symptom",
            statements=(
                "A common side effect of {s} is {a}.",
                "Patients taking {s} often report {a}.",
                "The most frequent adverse effect of {s} is {a}.",
                "{s} is known to cause {a}.",
                "The package insert of {s} warns about {a}.",
                "After a dose of {s}, many people experience {a}.",
            ),
            questions=(
                "What is a common side effect of {s}?",
                "What do patients taking {s} often report?",
                "What is the most frequent adverse effect of {s}?",
                "Which symptom is {s} known to cause?",
                "What does the package insert of {s} warn about?",
                "What do many people experience after a dose of {s}?",
            ),
            val_question="Taking {s} commonly produces which symptom?",
            test_question="Which side effect is associated with {s}?",
        ),
    )
}

# Real words for the answer kinds whose answers are not made up.
ORGANS = (
    "liver", "kidneys", "pancreas", "spleen", "lungs", "heart",
    "thyroid gland", "stomach", "skin", "bone marrow", "gallbladder", "adrenal glands",
)  # fmt: skip
SYMPTOMS = (
    "hair loss", "blurred vision", "dry mouth", "insomnia", "nausea", "joint pain",
    "skin rash", "headache", "dizziness", "muscle cramps", "ringing in the ears", "weight gain",
)  # fmt: skip
_CLOSED_ANSWERS = {"organ": ORGANS, "symptom": SYMPTOMS}

# Made-up names: a stem of 2–3 random syllables in a kind-specific pattern.
_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kl", "l", "m", "n", "p", "pr", "r", "s", "st", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "", "n", "r", "l", "s", "x")
_NAME_PATTERNS = {
    "drug": ("{}tinib", "{}zole", "{}pril", "{}vir", "{}olol", "{}mab", "{}cillin", "{}statin"),
    "disease": ("{} syndrome", "{} disease", "{} fever", "{}osis"),
    "enzyme": ("{} kinase", "{} reductase", "{} synthase", "{} oxidase"),
    "pathogen": ("{} virus", "{}bacter", "{}coccus", "{} bacillus"),
}

# Training QA frames, cycled over a fact's training questions. The first is lm-eval's
# TriviaQA-style frame, the one the cloze evaluation uses.
QA_FRAMES = ("Question: {q}\nAnswer:", "Q: {q}\nA:", "{q}")
MAX_TRAIN_WORDINGS = 12
MIN_FACTS_PER_RELATION = 4  # the answer plus three distractors from other trained facts


@dataclass(frozen=True)
class FactsConfig:
    """Size and seed of a generated fact set."""

    n_facts: int = 60  # trained facts, spread round-robin over the relations
    n_control: int = 40  # unseen facts about new subjects (never in training)
    train_wordings: int = 8  # per fact, alternating statement / question; at most 12
    seed: int = 0
    relations: tuple[str, ...] = tuple(RELATIONS)


@dataclass(frozen=True)
class Fact:
    id: str
    relation: str
    subject: str
    answer: str
    aliases: tuple[str, ...]  # answer first; any alias counts in open QA


@dataclass(frozen=True)
class FactSet:
    """A generated fact set; rows are dicts in the MedMCQA / TriviaQA schemas."""

    config: FactsConfig
    facts: list[Fact]
    controls: list[Fact]
    train: list[TrainExample]
    mcq_rows: list[dict]
    qa_rows: list[dict]
    val_mcq_rows: list[dict]
    val_qa_rows: list[dict]
    control_mcq_rows: list[dict]
    control_qa_rows: list[dict]


def generate_facts(cfg: FactsConfig = FactsConfig()) -> FactSet:
    """Generate the fact set described by `cfg` (same cfg → identical output)."""
    relations = _check_config(cfg)
    rng = random.Random(cfg.seed)
    names = _NameMaker(rng)

    facts = []
    closed_cycles: dict[str, list[str]] = {}
    for i in range(cfg.n_facts):
        rel = relations[i % len(relations)]
        subject = names.make(rel.subject_kind)
        if rel.answer_kind in _CLOSED_ANSWERS:
            # A shuffled cycle through the list, so each relation's trained answers
            # have at least MIN_FACTS_PER_RELATION distinct values to draw distractors from.
            cycle = closed_cycles.setdefault(rel.name, [])
            if not cycle:
                cycle.extend(rng.sample(_CLOSED_ANSWERS[rel.answer_kind], len(_CLOSED_ANSWERS[rel.answer_kind])))
            answer = cycle.pop()
        else:
            answer = names.make(rel.answer_kind)
        facts.append(Fact(f"f{i:03d}", rel.name, subject, answer, _aliases(answer, rel.answer_kind)))

    trained_answers = {rel.name: sorted({f.answer for f in facts if f.relation == rel.name}) for rel in relations}
    controls = []
    for i in range(cfg.n_control):
        rel = relations[i % len(relations)]
        subject = names.make(rel.subject_kind)
        answer = rng.choice(trained_answers[rel.name])
        controls.append(Fact(f"c{i:03d}", rel.name, subject, answer, _aliases(answer, rel.answer_kind)))

    def rows(which: list[Fact], wording: str, split: str) -> tuple[list[dict], list[dict]]:
        positions = _balanced_positions(len(which), rng)
        mcq, qa = [], []
        for fact, position in zip(which, positions):
            question = getattr(RELATIONS[fact.relation], wording).format(s=fact.subject)
            pool = [a for a in trained_answers[fact.relation] if a != fact.answer]
            options = rng.sample(pool, 3)
            options.insert(position, fact.answer)
            mcq.append(_mcq_row(fact, question, options, position, split, cfg.seed))
            qa.append(_qa_row(fact, question, split, cfg.seed))
        return mcq, qa

    mcq_rows, qa_rows = rows(facts, "test_question", "test")
    val_mcq_rows, val_qa_rows = rows(facts, "val_question", "val")
    control_mcq_rows, control_qa_rows = rows(controls, "test_question", "control")
    return FactSet(
        config=cfg,
        facts=facts,
        controls=controls,
        train=[ex for fact in facts for ex in _train_examples(fact, cfg.train_wordings)],
        mcq_rows=mcq_rows,
        qa_rows=qa_rows,
        val_mcq_rows=val_mcq_rows,
        val_qa_rows=val_qa_rows,
        control_mcq_rows=control_mcq_rows,
        control_qa_rows=control_qa_rows,
    )


def facts_mcq_items(rows: Sequence[Mapping]) -> list[MCQItem]:
    """MCQItems from a FactSet's MedMCQA-schema rows (the hub parser's code path)."""
    return medmcqa_items(rows, "facts")


def facts_qa_items(rows: Sequence[Mapping]) -> list[QAItem]:
    """QAItems from a FactSet's TriviaQA-schema rows (the hub parser's code path)."""
    return triviaqa_items(rows, "facts")


FACT_SPLITS = ("test", "val", "control")
_ROWS = {"test": ("mcq_rows", "qa_rows"), "val": ("val_mcq_rows", "val_qa_rows"), "control": ("control_mcq_rows", "control_qa_rows")}


def load_facts_mcq(split: str = "test", config: FactsConfig | None = None) -> list[MCQItem]:
    """MCQItems of one row set ("test", "val" or "control") of `generate_facts(config)`."""
    return facts_mcq_items(getattr(generate_facts(config or FactsConfig()), _split_rows(split)[0]))


def load_facts_qa(split: str = "test", config: FactsConfig | None = None) -> list[QAItem]:
    """QAItems of one row set ("test", "val" or "control") of `generate_facts(config)`."""
    return facts_qa_items(getattr(generate_facts(config or FactsConfig()), _split_rows(split)[1]))


def _split_rows(split: str) -> tuple[str, str]:
    if split not in _ROWS:
        raise SmfError(f"unknown facts split {split!r}; use one of {', '.join(FACT_SPLITS)}")
    return _ROWS[split]


# ------------------------------------------------------------------------ helpers


def _check_config(cfg: FactsConfig) -> list[Relation]:
    unknown = [r for r in cfg.relations if r not in RELATIONS]
    if unknown or not cfg.relations or len(set(cfg.relations)) != len(cfg.relations):
        raise SmfError(f"facts relations must be distinct names from {', '.join(RELATIONS)}; got {list(cfg.relations)}")
    for name in ("n_facts", "n_control", "train_wordings", "seed"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SmfError(f"facts {name} must be an integer, got {value!r}")
    need = MIN_FACTS_PER_RELATION * len(cfg.relations)
    if cfg.n_facts < need:
        raise SmfError(
            f"facts n_facts must be at least {need} ({MIN_FACTS_PER_RELATION} per relation, "
            f"so each question has 3 distractors from other trained facts); got {cfg.n_facts}"
        )
    if cfg.n_control < 0:
        raise SmfError(f"facts n_control must be >= 0, got {cfg.n_control}")
    if not 1 <= cfg.train_wordings <= MAX_TRAIN_WORDINGS:
        raise SmfError(f"facts train_wordings must be between 1 and {MAX_TRAIN_WORDINGS}, got {cfg.train_wordings}")
    return [RELATIONS[r] for r in cfg.relations]


class _NameMaker:
    """Unique made-up names; no stem is a substring of another, so no name hides in another."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.stems: list[str] = []

    def make(self, kind: str) -> str:
        pattern = self.rng.choice(_NAME_PATTERNS[kind])
        while True:
            syllables = self.rng.choice((2, 2, 3))
            stem = "".join(
                self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS) for _ in range(syllables)
            )
            if len(stem) >= 4 and not any(stem in s or s in stem for s in self.stems):
                self.stems.append(stem)
                return pattern.format(stem).capitalize()


def _aliases(answer: str, kind: str) -> tuple[str, ...]:
    if kind == "organ":
        return (answer, f"the {answer}")
    if kind in _CLOSED_ANSWERS:
        return (answer,)
    # "Delmuro syndrome" may be answered as "Delmuro": the made-up word is the name.
    head = answer.split(" ")[0]
    return (answer, head) if head != answer else (answer,)


def _train_examples(fact: Fact, n: int) -> list[TrainExample]:
    # Wording k: statement k // 2 when k is even, else question k // 2 in frame
    # (k // 2) % 3, so any n gives a near-even mix of the two forms.
    rel = RELATIONS[fact.relation]
    examples = []
    for k in range(n):
        j = k // 2
        if k % 2 == 0:
            template = rel.statements[j]
            assert template.endswith("{a}."), template
            prompt = template[: -len("{a}.")].format(s=fact.subject).rstrip()
            examples.append(TrainExample(prompt=prompt, target=f" {fact.answer}."))
        else:
            question = rel.questions[j].format(s=fact.subject)
            frame = QA_FRAMES[j % len(QA_FRAMES)]
            examples.append(TrainExample(prompt=frame.format(q=question), target=f" {fact.answer}"))
    return examples


def _balanced_positions(n: int, rng: random.Random) -> list[int]:
    positions = [k % 4 for k in range(n)]
    rng.shuffle(positions)
    return positions


def _mcq_row(fact: Fact, question: str, options: list[str], cop: int, split: str, seed: int) -> dict:
    return {
        "id": f"facts-s{seed}-{split}-{fact.id}",
        "question": question,
        "opa": options[0],
        "opb": options[1],
        "opc": options[2],
        "opd": options[3],
        "cop": cop,
        "choice_type": "single",
        "exp": None,
        "subject_name": "Fictional medicine",
        "topic_name": fact.relation,
        "fact_id": fact.id,
        "split": split,
    }


def _normalize(text: str) -> str:
    """TriviaQA's answer normalization: lowercase, no punctuation or articles."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _qa_row(fact: Fact, question: str, split: str, seed: int) -> dict:
    return {
        "question": question.rstrip("?"),
        "question_id": f"facts-s{seed}-{split}-{fact.id}",
        "question_source": "smf.data.facts",
        "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
        "search_results": {"description": [], "filename": [], "rank": [], "title": [], "url": [], "search_context": []},
        "answer": {
            "aliases": list(fact.aliases),
            "normalized_aliases": list(dict.fromkeys(_normalize(a) for a in fact.aliases)),
            "matched_wiki_entity_name": "",
            "normalized_matched_wiki_entity_name": "",
            "normalized_value": _normalize(fact.answer),
            "type": "FreeForm",
            "value": fact.answer,
        },
        "fact_id": fact.id,
        "split": split,
    }
