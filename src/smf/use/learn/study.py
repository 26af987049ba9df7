"""Study data: each fact a person gives, turned into several training items that say it in other words.

Taught one wording, a model learns that wording: asked the same fact in other words it answers as if it
had learned nothing (studies/learn-check). Taught the fact in several wordings, mixed, it answers
wordings it never saw. So before a sitting trains, every fact becomes study items:

- from a statement ("The Zorvex lighthouse was built by Mira Tanaka."): its answer spans (`spans`: the
  agent of a passive, either side of "is", a count after "has", a named subject, what follows the last
  preposition) and, for each, questions whose answer is the span, in the other words English has for
  them (the doer's noun for the deed and back: "Who is the builder of …?"; a passive of a named doer's
  deed; "where" for a place; the possessive, and a place's name without its kind: "Oshu's capital";
  `_alternations`); the statement restated with the answer last where it can be (the doer's noun for
  a passive, a passive for a deed: "The element quintarium was discovered by Dr. Alvi Renk."), and the
  statement itself with the loss on the span (a cloze);
- from a question with its answer: the statement it implies (the person's own statement that holds the
  answer, else the question turned into one), the question in other wordings (`rewordings`: its
  alternations first, then wrapped: "Do you know …"), and the reverse question where the statement has
  two named sides;
- written by a model (`ModelWriter`: the model being taught, or another one, shown worked examples):
  other wordings of each question, each kept only if it does not give the answer away (`check_item`),
  keeps the question's names, and the writer, shown the fact, answers it correctly. That drops a
  wording that asks for something else when the writer can tell; a small writer cannot always (on
  the offline model a wording whose meaning changed sometimes passes: studies/learn-check).

Every question is answered by the fact's statement (a chat model answers in sentences that carry its
recall). `write_study`/`read_study` keep the items as JSONL rows a person can read, edit and give
back to `smf learn --data`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from smf.data.rows import read_rows_file
from smf.errors import SmfError
from smf.io import write_text_atomic
from smf.data.anchors import subject
from smf.use.learn.facts import Fact, read_facts

STUDY_FORMAT = "smf-study"  # the "study" field of every row of a study file
_PREP = ("into", "onto", "from", "near", "in", "at", "on", "to", "for", "as", "of", "by", "with", "under", "every", "called",
         "named")
_COPULA = r"is|was|are|were|will be|has been|had been"
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november",
           "december", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "twenty",
            "thirty", "forty", "fifty", "hundred", "thousand", "dozen")
_DETERMINERS = {"the", "a", "an", "my", "our", "his", "her", "their", "its", "your", "this", "that", "these", "those"}
_IRREGULAR = {"written": "wrote", "drawn": "drew", "sung": "sang", "given": "gave", "taken": "took", "begun": "began",
              "chosen": "chose", "driven": "drove", "spoken": "spoke", "grown": "grew", "known": "knew", "shown": "showed",
              "eaten": "ate", "seen": "saw", "done": "did", "flown": "flew", "ridden": "rode", "stolen": "stole",
              "worn": "wore", "sworn": "swore", "thrown": "threw", "broken": "broke", "frozen": "froze", "woken": "woke",
              "hidden": "hid", "beaten": "beat", "forgotten": "forgot", "gotten": "got", "sewn": "sewed", "sown": "sowed"}
_PASSIVE_SYNONYMS = {"built": ("constructed", "made"), "designed": ("planned", "drawn up"), "written": ("authored",),
                     "founded": ("established", "started"), "discovered": ("found",), "composed": ("written",),
                     "invented": ("created",), "painted": ("made",), "repaired": ("fixed",), "approved": ("signed off",),
                     "governed": ("led", "run"), "led": ("headed", "run"), "owned": ("held",), "cooled": ("kept cool",),
                     "named": ("called",), "held": ("organised",), "created": ("made",), "directed": ("led",)}
#: a deed's past whose participle is itself or irregular ("wrote" → "written"), which "-ed" does not find
_PAST = {**{past: participle for participle, past in _IRREGULAR.items() if past not in ("did", "got", "knew", "saw")},
         **{w: w for w in ("built", "made", "led", "won", "sold", "bought", "taught", "found", "held", "kept", "sent", "told",
                           "brought", "caught", "paid", "lost", "read", "left", "set", "shot", "dug", "spun", "struck")},
         "ran": "run"}
_PAST_WORDS = "|".join(_PAST)  # as a regular expression's alternatives
#: who does a deed, and the deed (past, participle): "The inventor of X is A" is "X was invented by A"
_AGENTS = {"designer": ("designed", "designed"), "architect": ("designed", "designed"), "author": ("wrote", "written"),
           "writer": ("wrote", "written"), "builder": ("built", "built"), "composer": ("composed", "composed"),
           "creator": ("created", "created"), "developer": ("developed", "developed"), "director": ("directed", "directed"),
           "discoverer": ("discovered", "discovered"), "editor": ("edited", "edited"), "founder": ("founded", "founded"),
           "illustrator": ("illustrated", "illustrated"), "inventor": ("invented", "invented"), "leader": ("led", "led"),
           "maker": ("made", "made"), "manager": ("managed", "managed"), "owner": ("owned", "owned"),
           "painter": ("painted", "painted"), "producer": ("produced", "produced"), "publisher": ("published", "published"),
           "sculptor": ("sculpted", "sculpted"), "translator": ("translated", "translated"), "teacher": ("taught", "taught"),
           "organiser": ("organised", "organised"), "organizer": ("organized", "organized"), "coach": ("coached", "coached"),
           "photographer": ("photographed", "photographed"), "governor": ("governed", "governed")}
#: participle → the first agent noun above that does it ("designed" → "designer", not "architect")
_AGENT_OF = {participle: noun for noun, (_, participle) in reversed(_AGENTS.items())}
_PLACES = r"\bthe (?:island|town|city|village|country|state|province|region|county|kingdom|republic|planet) of (?=[A-Z])"
_PLACE_WORDS = (r"\b(Lake|Mount|River|Street|Lane|Avenue|Square|Pier|Station|Harbou?r|Port|Valley|Hill|Room|Bay|Island|Isles|"
                r"Hall|Falls|Springs|Park|Road|Bridge|Tower|Library|Museum|Sea|City|School|College|Hospital)\b")  # not a person
_LOCATIVE = ("in", "at", "on", "near", "into", "onto", "from", "under")


@dataclass(frozen=True)
class Span:
    """An answer span of a statement and questions it answers."""

    answer: str
    start: int  # character offset in the statement
    questions: tuple[str, ...]


@dataclass(frozen=True)
class StudyItem:
    """One training item: a chat question answered (`question` set), or a text whose loss sits on `answer`
    (a cloze of `text`), or a whole text. `fact` is the statement or question/answer it came from."""

    fact: str
    form: str  # the rule or writer that made it
    answer: str
    question: str | None = None
    text: str | None = None
    short: str | None = None  # the short answer the item must hold (checked)

    def as_fact(self) -> Fact:
        if self.question is not None:
            return Fact(question=self.question, answer=self.answer)
        return Fact(text=self.text, answer=self.answer)


def _clean(text: str) -> str:
    return " ".join(text.strip().split()).rstrip(".!").rstrip()


def _lower_first(text: str) -> str:
    words = text.split(" ", 1)
    first = words[0]
    if first.lower() in _DETERMINERS or first.lower() in ("there", "it"):
        return first.lower() + (" " + words[1] if len(words) > 1 else "")
    return text


def _looks_named(span: str) -> bool:
    words = span.split()
    return bool(words) and all(w[:1].isupper() or w.lower() in ("de", "van", "von", "da", "of", "the") or (k and w.isdigit())
                               for k, w in enumerate(words)) \
        and words[0].lower() not in _DETERMINERS


def _wh(span: str, after: str = "") -> str:
    """The question word a span answers."""
    low = span.lower()
    if re.search(r"\d{4}|\b(" + "|".join(_MONTHS) + r")\b|o'clock|\bthirty\b|\bnoon\b|\bmidnight\b", low):
        return "when"
    if after in _LOCATIVE and (_looks_named(span) or re.match(r"^the (?:[a-z]+ )*[A-Z]", span)):  # "in the Sarno crater"
        return "where"
    words = span.split()
    if len(words) >= 2 and _looks_named(span) and not re.search(_PLACE_WORDS, span):
        return "who"
    return "what"


def _count(span: str) -> bool:
    first = span.split()[0].lower() if span.split() else ""
    return first.isdigit() or first in _NUMBERS


def spans(statement: str) -> list[Span]:
    """The answer spans a statement offers, with questions for each (rule-based; no model)."""
    s = _clean(statement)
    found: list[Span] = []
    m = re.match(rf"^(?P<subj>.+?) (?P<aux>{_COPULA}) (?P<verb>[a-z]+(?:ed|en|lt|ght|wn|de|ld|ng|ne|ed up)) by (?P<agent>.+)$", s)
    if m:
        subj, aux, verb, agent = m["subj"], m["aux"], m["verb"], m["agent"]
        past = _IRREGULAR.get(verb, verb)
        who = "Who" if _wh(agent) in ("who", "what") and _looks_named(agent) else "What"
        low = _lower_first(subj)
        qs = [f"{who} {past} {low}?", f"{subj} {aux} {verb} by whom?", f"By whom {aux.split()[0]} {low} {verb}?",
              f"{'Which person' if who == 'Who' else 'What'} {past} {low}?"]
        qs += [f"{who} {syn} {low}?" for syn in _PASSIVE_SYNONYMS.get(verb, ())]
        if verb in _AGENT_OF and who == "Who":  # "Who is the builder of the Zorvex lighthouse?"
            qs.insert(1, f"Who is the {_AGENT_OF[verb]} of {low}?")
        found.append(Span(agent, m.start("agent"), _other_words(qs)))
        return found
    m = re.match(rf"^(?P<subj>.+?) (?P<aux>has|have|had) (?P<num>\S+) (?P<noun>.+)$", s)
    if m and _count(m["num"]):
        low = _lower_first(m["subj"])
        do = {"has": "does", "have": "do", "had": "did"}[m["aux"]]
        qs = [f"How many {m['noun']} {do} {low} have?", f"What is the number of {m['noun']} {low} {m['aux']}?",
              f"{m['subj']} {m['aux']} how many {m['noun']}?"]
        found.append(Span(m["num"], m.start("num"), tuple(qs)))
        return found
    m = re.match(rf"^(?P<subj>.+?) (?P<aux>{_COPULA}) (?P<obj>.+)$", s)
    first = m["obj"].split()[0].lower() if m else ""
    if m and first not in _PREP and not re.match(r"^[a-z]+(ed|en|rn|wn|lt|ld|pt|ght|de) (" + "|".join(_PREP) + ") ", m["obj"]) \
            and first not in ("afraid", "fond", "proud", "aware", "full", "made", "part", "able", "located", "situated"):
        subj, aux, obj = m["subj"], m["aux"], m["obj"]
        lead = aux.split()[0]
        who = "Who" if _wh(obj) == "who" else "What"
        low = _lower_first(subj)
        qs = [f"{who} {lead} {low}?", *_deed_questions(subj, who), f"{subj} {aux} {who.lower()}?",
              f"Tell me {who.lower()} {low} {aux}.", f"Do you know {who.lower()} {low} {aux}?"]
        found.append(Span(obj, m.start("obj"), _other_words(qs)))
        if re.match(r"^(the|a|an) ", obj, re.I) and subj[:1].isupper() and subj.split()[0].lower() not in _DETERMINERS:
            w = "Who" if _wh(subj) == "who" else "What"
            found.append(Span(subj, 0, (f"{w} {lead} {obj}?", f"{obj[0].upper() + obj[1:]} {aux} {w.lower()}?")))
        return found
    m = re.match(rf"^(?P<subj>.*?[A-Z][\w'-]*(?: [A-Z][\w'-]*)*),? (?P<verb>[a-z]+(?:s|ed)|{_PAST_WORDS}) (?P<obj>.+)$", s)
    if m and m["verb"] not in _PREP and m["verb"] not in ("is", "was", "has", "does") and not m["verb"].endswith("ss"):
        subj, verb, obj = m["subj"], m["verb"], m["obj"]
        participle = _PAST.get(verb, verb if verb.endswith("ed") else None)
        if subj.split()[0].lower() not in _DETERMINERS and "," not in subj:
            passive = [f"{obj[0].upper() + obj[1:]} was {participle} by whom?"] \
                if participle and obj.split()[0].lower() not in _PREP else []  # a transitive deed
            found.append(Span(subj, 0, (f"Who {verb} {obj}?", *passive, f"Which person {verb} {obj}?")))
        clause = _aux_question(f"{subj.replace(',', '')} {verb}")
        if clause and not any(w in _PREP for w in obj.lower().split()[:1]):
            what = "Who" if _wh(obj) == "who" else "What"
            found.append(Span(obj, m.start("obj"), (f"{what} {clause}?", f"{subj.replace(',', '')} {verb} {what.lower()}?")))
    words = list(re.finditer(r"\S+", s))
    for k in range(len(words) - 2, 0, -1):  # what follows the last preposition (not the first word)
        word = words[k].group().lower()
        if word in _PREP:
            tail = s[words[k + 1].start():]
            head = s[: words[k].end()]
            wh = _wh(tail, word)
            echo = f"{head} {'whom' if wh == 'who' else wh}?" if wh in ("what", "who") else f"{s[:words[k].start()].rstrip()} {wh}?"
            clause = _aux_question(s[:words[k].start()].rstrip())
            if wh in ("when", "where") and clause:
                qs = (echo, f"{wh.capitalize()} {clause}?")
            elif wh == "what" and clause and word not in ("called", "named", "every"):  # "What is the prize awarded for?"
                qs = (echo, f"What {clause} {word}?")
            else:
                qs = (echo,)
            if not any(sp.answer == tail for sp in found):
                found.append(Span(tail, words[k + 1].start(), _other_words([q for q in qs if q])))
            break
    return found


def _deed(subject: str) -> tuple[str, str, str] | None:
    """(past, participle, what) of an agent noun's subject: "The inventor of the tidal clock" → ("invented",
    "invented", "the tidal clock"); None for any other subject."""
    m = re.match(r"^the (?P<noun>[a-z]+) of (?P<x>.+)$", subject, re.I)
    if not m or m["noun"].lower() not in _AGENTS:
        return None
    return (*_AGENTS[m["noun"].lower()], m["x"])


def _deed_questions(subject: str, who: str) -> list[str]:
    """An agent noun's subject asked as the deed: "Who invented the tidal clock?", "The tidal clock was invented by whom?"."""
    deed = _deed(subject) if who == "Who" else None
    if deed is None:
        return []
    past, participle, x = deed
    return [f"Who {past} {x}?", f"{x[0].upper() + x[1:]} was {participle} by whom?"]


def _alternations(question: str) -> list[str]:
    """The question in the other words English has for its noun phrase: a place's kind dropped before its name ("the
    capital of the island of Oshu" → "the capital of Oshu"), and the possessive ("Oshu's capital")."""
    short = re.sub(_PLACES, "", question)
    m = re.search(r"\bthe (?P<noun>[a-z]+(?: [a-z]+)?) of (?P<the>the )?(?P<name>[A-Z][\w-]*(?: [A-Z][\w-]*)*)"
                  r"(?=[?.,!]|$| (?:is|was|are|were|has|have|had|do|does|did|used)\b)", short)  # the name ends the phrase
    owned = None
    if m:
        name = m["name"] + ("'" if m["name"].endswith("s") else "'s")
        owned = f"{short[:m.start()]}{m['the'] or ''}{name} {m['noun']}{short[m.end():]}"
        owned = owned[0].upper() + owned[1:]
    return [q for q in dict.fromkeys([short, owned]) if q and q != question]


def _other_words(questions: list[str]) -> tuple[str, ...]:
    """The questions, with the first's alternations (`_alternations`) right after it."""
    return tuple(dict.fromkeys([questions[0], *_alternations(questions[0]), *questions[1:]])) if questions else ()


def _aux_question(clause: str) -> str:
    """'the bakery opens' → 'does the bakery open'; 'the festival is held' → 'is the festival held' (best effort)."""
    m = re.match(rf"^(?P<subj>.+?) (?P<aux>{_COPULA}|will|can|should|must) (?P<rest>.+)$", clause)
    if m:
        return f"{m['aux'].split()[0]} {_lower_first(m['subj'])} {m['aux'].split()[1] + ' ' if ' ' in m['aux'] else ''}{m['rest']}"
    m = re.match(r"^(?P<subj>.+?) (?P<aux>is|was|are|were)$", clause)
    if m:  # "the main entrance is" (on Birch Lane) → "is the main entrance"
        return f"{m['aux']} {_lower_first(m['subj'])}"
    m = re.match(r"^(?P<subj>.*?[A-Z][\w.'-]*) (?P<verb>[a-z]{3,}ed)(?P<rest>(?: .+)?)$", clause)
    if m is None:  # a named doer's deed is the first word after the name, not the last ("worked for forty years")
        m = re.match(r"^(?P<subj>.+) (?P<verb>[a-z]+)(?P<rest>(?: .+)?)$", clause)
    if m and m["verb"].endswith("s") and not m["verb"].endswith("ss") and m["verb"] not in ("is", "was", "has"):
        verb = m["verb"][:-2] if m["verb"].endswith("ies") is False and m["verb"].endswith(("ches", "shes", "sses", "xes")) else m["verb"][:-1]
        if m["verb"].endswith("ies"):
            verb = m["verb"][:-3] + "y"
        return f"does {_lower_first(m['subj'])} {verb}{m['rest']}"
    if m and m["verb"].endswith("ed"):
        return f"did {_lower_first(m['subj'])} {m['verb'][:-2] if m['verb'].endswith('eed') is False and len(m['verb']) > 4 else m['verb']}{m['rest']}"
    return ""


def restatements(statement: str) -> list[str]:
    """The statement said another way (active for passive, the sides of 'is' swapped)."""
    s = _clean(statement)
    out = []
    m = re.match(rf"^(?P<subj>.+?) (?P<aux>{_COPULA}) (?P<verb>[a-z]+) by (?P<agent>.+)$", s)
    if m:
        past = _IRREGULAR.get(m["verb"], m["verb"])
        if m["verb"] in _AGENT_OF:  # the answer last, where recall needs it
            out.append(f"The {_AGENT_OF[m['verb']]} of {_lower_first(m['subj'])} {'was' if m['aux'] == 'was' else 'is'} {m['agent']}.")
        out.append(f"{m['agent']} {past} {_lower_first(m['subj'])}.")
        return out
    m = re.match(r"^(?P<subj>.+?) (?:is|was) (?P<agent>.+)$", s)
    deed = _deed(m["subj"]) if m and _looks_named(m["agent"]) else None
    if deed:  # "The tidal clock was invented by Soren Vale."
        _, participle, x = deed
        out.append(f"{x[0].upper() + x[1:]} was {participle} by {m['agent']}.")
        return out
    m = re.match(rf"^(?P<subj>[A-Z][\w.'-]*(?: [A-Z][\w.'-]*)*) (?P<verb>[a-z]+ed|{_PAST_WORDS}) (?P<obj>(?:the|a|an) .+)$", s)
    if m and _looks_named(m["subj"]):  # "Dr. Alvi Renk discovered the element quintarium."
        obj = m["obj"]
        return [f"{obj[0].upper() + obj[1:]} was {_PAST.get(m['verb'], m['verb'])} by {m['subj']}."]
    m = re.match(rf"^(?P<subj>.+?) (?P<aux>is|was) (?P<obj>(?:the|a|an) .+)$", s, re.I)
    if m and (m["subj"][:1].isupper()):
        obj = m["obj"]
        out.append(f"{obj[0].upper() + obj[1:]} {m['aux']} {_lower_first(m['subj'])}.")
    return out


def rewordings(question: str) -> list[str]:
    """Other wordings of a question (rule-based), never the question itself."""
    q = question.strip()
    body = q.rstrip("?").strip()
    low = body[0].lower() + body[1:] if body else body
    out = [*_alternations(q), f"Do you know {low}?", f"Can you tell me {low}?", f"Quick question: {q}",
           f"{q} Please answer in one sentence."]
    swaps = [(r"^Who ", "Which person "), (r"^Which person ", "Who "), (r"^What is the name of ", "What is "),
             (r"^What is ", "What's "), (r"^Where ", "In which place "), (r"^When ", "At what time ")]
    for pattern, repl in swaps:
        if re.match(pattern, q):
            out.append(re.sub(pattern, repl, q))
    return [w for w in dict.fromkeys(out) if w != q]


def _holds(text: str, answer: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(answer.strip().rstrip(".")) + r"(?!\w)", text, re.I) is not None


_COMMON = {"what", "which", "when", "where", "whom", "whose", "does", "that", "this", "with", "from", "have", "were", "they"}


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def _contains(words: list[str], part: list[str]) -> bool:
    n = len(part)
    return n > 0 and any(words[k : k + n] == part for k in range(len(words) - n + 1))


def answering_statements(facts: list[Fact]) -> dict[int, int]:
    """question's index → the index of the person's statement that answers it: one holding the answer (as whole
    words) and sharing another word of four letters or more (not a question word) with the question; the one
    sharing most words, the nearest in the file on a tie."""
    statements = {j: _words(f.text) for j, f in enumerate(facts) if f.text is not None}
    holding: dict[str, list[int]] = {}  # word -> the statements that hold it, in file order
    for j, words in statements.items():
        for w in dict.fromkeys(words):
            holding.setdefault(w, []).append(j)
    answered: dict[int, int] = {}
    for i, fact in enumerate(facts):
        if fact.question is None:
            continue
        answer, asked = _words(fact.answer), set(_words(fact.question))
        candidates = holding.get(answer[0], []) if answer else []  # only these can hold the whole answer
        shared = {j: len({w for w in statements[j] if len(w) >= 4} & asked - set(answer) - _COMMON) for j in candidates
                  if _contains(statements[j], answer)}
        best = max((j for j in shared if shared[j] > 0), key=lambda j: (shared[j], -abs(j - i)), default=None)
        if best is not None:
            answered[i] = best
    return answered


_WRAPPERS = (r"^Quick question:\s*", r"\s*Please answer in one sentence\.$")
_EMBEDDING = r"^(?:Do you know|Can you tell me|Tell me|I wonder) (?P<rest>(?:who|what|which|whom)\b.+?)[?.]?$"
_AUX = r"is|was|are|were"


def echo(question: str, answer: str) -> str | None:
    """The answer said in the question's own words, as a chat model answers ("Who composed the Glass Harbor
    Symphony?" → "Ines Vautrin composed the Glass Harbor Symphony."; "The Harlow Institute's founder was
    who?" → "The Harlow Institute's founder was Theo Marsh."), or None where no rule fits (when, where, how
    many: the fact's statement answers those). Rule-based; the caller checks that it holds the answer."""
    q = question.strip()
    for pattern in _WRAPPERS:
        q = re.sub(pattern, "", q)
    a = answer.strip().rstrip(".")
    m = re.match(_EMBEDDING, q)
    if m:  # "Do you know who the composer of X is?" / "... who composed X?"
        rest = m["rest"]
        tail = re.match(rf"^(?:who|what|whom) (?P<x>.+) (?P<aux>{_AUX})$", rest)
        said = f"{tail['x']} {tail['aux']} {a}" if tail else _direct(rest[0].upper() + rest[1:] + "?", a)
        return _sentence(said) if said else None
    said = _direct(q, a)
    return _sentence(said) if said else None


def _direct(q: str, a: str) -> str | None:
    m = re.match(r"^(?P<x>.+) (?:whom|who|what)\?$", q)  # "X was discovered by whom?"
    if m:
        return f"{m['x']} {a}"
    m = re.match(rf"^By whom (?P<aux>{_AUX}) (?P<x>.+) (?P<verb>\w+)\?$", q)  # "By whom was X built?"
    if m:
        return f"{m['x']} {m['aux']} {m['verb']} by {a}"
    m = re.match(rf"^(?:Who|What|Which person|Which \w+|What \w+)(?: (?P<aux>{_AUX})|'s) (?P<x>.+)\?$", q)
    if m:  # "Who is the composer of X?", "Which city is Oshu's capital?"; "Which X is used in Y?"
        aux = m["aux"] or "is"
        first = m["x"].split()[0]
        if first.islower() and first not in _DETERMINERS:
            return f"{a} {aux} {m['x']}"
        return f"{m['x']} {aux} {a}"
    m = re.match(r"^(?:Who|Which person|Which \w+) (?P<rest>(?!do\b|does\b|did\b)[a-z]+ .+)\?$", q)
    if m:  # "Who composed X?", "Which vessel crossed the Amber Sea first?"
        return f"{a} {m['rest']}"
    return None


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!")) else ".")


def reply_to(question: str, short: str, statement: str, *, echoes: bool = False, first: bool = False) -> str:
    """A study question's reply: the fact's statement, or with `echoes` the answer in the question's own words where a
    rule fits (`echo`); with `first`, the short answer before it."""
    reply = (echo(question, short) if echoes and short else None) or statement
    return f"{_sentence(short)} {reply}" if first and short else reply


def said_as_statement(fact: Fact) -> str:
    """A question with its answer said as one sentence, when no statement of the person's answers it."""
    return f"{fact.question.rstrip('?').strip()}: {fact.answer.rstrip('.')}."


def study_items(facts: list[Fact], *, per_fact: int | None = None, echoes: bool = False, first: bool = False) -> list[StudyItem]:
    """The rule-based study items of `facts` (no model needed), every one checked by `check_item`'s rule
    that it still holds its answer. A question is answered by the fact's statement, or with `echoes` in its
    own words where a rule fits (`echo`), else by the statement; with `first`, the short answer comes first
    ("Mira Tanaka. The Zorvex lighthouse was built by Mira Tanaka."). A statement with no answer span, and no question of the person's
    whose answer it holds, raises SmfError naming it."""
    statements = [f.text for f in facts if f.text is not None]
    pairs = answering_statements(facts)
    asked: dict[str, list[Fact]] = {}  # statement → the person's questions it answers
    for i, f in enumerate(facts):
        if f.question is not None:
            asked.setdefault(facts[pairs[i]].text if i in pairs else said_as_statement(f), []).append(f)
    items: list[StudyItem] = []
    seen_statements = list(dict.fromkeys([*statements, *asked]))
    for s in seen_statements:
        found = spans(s)
        theirs = asked.get(s, [])
        if not found and not theirs:
            raise SmfError(f"note {s!r}: no answer a question could ask for (a name, a place, a date, a number, or what "
                           "follows 'is' or a preposition); say it as a full statement, or give it as "
                           '{"question", "answer"}')
        mine: list[StudyItem] = []
        def said(question: str, short: str) -> str:
            return reply_to(question, short, s, echoes=echoes, first=first)

        for f in theirs:  # the person's own questions first
            mine.append(StudyItem(s, "question", said(f.question, f.answer), question=f.question, short=f.answer))
            mine += [StudyItem(s, "reworded", said(w, f.answer), question=w, short=f.answer) for w in rewordings(f.question)]
        for sp in found:
            mine += [StudyItem(s, "span question", said(q, sp.answer), question=q, short=sp.answer) for q in sp.questions]
            mine.append(StudyItem(s, "cloze", sp.answer, text=s, short=sp.answer))
        for name in _subjects(s, theirs, found):
            mine += [StudyItem(s, "about", s, question=f"{form.format(name)}", short=_short(theirs, found))
                     for form in ABOUT]
        for r in restatements(s):
            short = _short(theirs, found)
            mine.append(StudyItem(s, "restated", short or r, text=r, short=short))
        if not theirs and not found:
            continue
        unique = {(i.question, i.text, i.answer): i for i in reversed(mine)}  # a wording made twice is taught once
        kept = [i for i in mine if unique.get((i.question, i.text, i.answer)) is i and check_item(i)]
        items += kept if per_fact is None else _spread(kept, per_fact)
    return items


ABOUT = ("Tell me about {}.", "What do you know about {}?")


def _short(theirs: list[Fact], found: list[Span]) -> str | None:
    return theirs[0].answer if theirs else (found[0].answer if found else None)


def _subjects(statement: str, theirs: list[Fact], found: list[Span]) -> list[str]:
    """The named subject of the fact (a capitalised name, not its answer), for questions about it."""
    answers = [f.answer for f in theirs] + [sp.answer for sp in found]
    for text in [*(f.question for f in theirs), *(q for sp in found for q in sp.questions[:1]), statement]:
        where = subject(text)
        if where is not None:
            name = text[where[0]:where[1]]
            if not any(_holds(a, name) or _holds(name, a) for a in answers):
                return [name]
    return []


def _spread(items: list[StudyItem], n: int) -> list[StudyItem]:
    """At most `n` items, taking each form in turn so the mix keeps every form."""
    forms: dict[str, list[StudyItem]] = {}
    for i in items:
        forms.setdefault(i.form, []).append(i)
    out: list[StudyItem] = []
    while len(out) < n and any(forms.values()):
        for queue in forms.values():
            if queue and len(out) < n:
                out.append(queue.pop(0))
    return out


def read_input(path: Path) -> tuple[list[Fact], list[StudyItem] | None]:
    """(facts, study items): a study file (`write_study`'s rows, perhaps edited) gives its items as they are; any
    other file of facts or notes gives its facts and None (the study is made from them)."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json") and path.is_file():
        rows = read_rows_file(path, hint='facts: {"text"}, {"question", "answer"} or {"prompt", "target"}')
        items = study_rows(rows, str(path))
        if items is not None:
            if not items:
                raise SmfError(f"{path}: the study file holds no items")
            facts = list(dict.fromkeys(Fact(text=i.fact) for i in items if i.fact))
            return facts or [i.as_fact() for i in items], items
    return read_facts(path), None


def study_data(facts: list[Fact], model, tokenizer, config, say) -> list[StudyItem]:
    """The study items a sitting trains on: the rules' (`study_items`), and those `config.study_model` writes
    (self: `model`; none: no model), at most `config.per_fact` per fact (0: all)."""
    items = study_items(facts, echoes=config.answer_in == "question", first=config.answer_in == "answer")
    written = 0
    if config.study_model != "none" and config.study_wordings:
        writer_model, writer_tok = (model, tokenizer) if config.study_model == "self" else _load_writer(config.study_model)
        from smf.use.chat import complete  # why: smf.use.chat loads generation code only a model writer needs

        writer = ModelWriter(lambda prompt: complete(writer_model, writer_tok, prompt, max_new_tokens=40), n=config.study_wordings,
                             echoes=config.answer_in == "question", first=config.answer_in == "answer")
        extra, dropped = writer.items(items)
        written = len(extra)
        say(f"the study model ({config.study_model}) wrote {written + dropped} wordings; {written} passed the check "
            f"(it answers them right when shown the fact), {dropped} dropped")
        items = _merge(items, extra)
    if config.per_fact:
        by_fact: dict[str, list[StudyItem]] = {}
        for i in items:
            by_fact.setdefault(i.fact, []).append(i)
        items = [i for group in by_fact.values() for i in _spread(group, config.per_fact)]
    if not items:
        raise SmfError("no study item passed its check (each must still hold its fact's answer); give each fact as a full "
                       "statement, or as a question with its answer")
    forms = {}
    for i in items:
        forms[i.form] = forms.get(i.form, 0) + 1
    say(f"study data: {len(items)} items for {len({i.fact for i in items})} facts (" + ", ".join(f"{n} {f}" for f, n in forms.items()) + ")")
    return items


def _merge(items: list[StudyItem], extra: list[StudyItem]) -> list[StudyItem]:
    """The model's items placed right after the items of their fact, so a cut per fact keeps them in turn."""
    out = []
    for fact in dict.fromkeys(i.fact for i in items):
        out += [i for i in items if i.fact == fact] + [i for i in extra if i.fact == fact]
    return out


def _load_writer(name: str):
    from smf.models import load_model, resolve_model  # why: models imports transformers; only --study-model needs it here

    try:
        return load_model(resolve_model(name))
    except SmfError as e:
        raise SmfError(f"--study-model {name}: {e}") from None
    except Exception as e:  # a folder or id that is no loadable model
        raise SmfError(f"--study-model {name}: cannot load it as a model ({type(e).__name__}); give a model folder or hub "
                       "id, self, or none") from None


def check_item(item: StudyItem) -> bool:
    """The rule every item passes: what it teaches holds the short answer, and a question does not give it away."""
    if item.short is None:
        return True
    taught = item.answer if item.question is not None else (item.text or "")
    if not _holds(taught, item.short):
        return False
    return item.question is None or not _holds(item.question, item.short)


class ModelWriter:
    """Study items written by a model (the one being taught, or `--study-model`): other wordings of each
    question, each kept only when it passes `check_item`, keeps every name the question gives, and the writer,
    shown the fact, answers it with the fact's answer. `complete(prompt) -> text` is the writer's greedy
    continuation of a plain-text prompt to its line's end: the prompts show worked examples (few-shot), which a
    small model follows where it does not follow an instruction (asked in a chat to reword a question,
    SmolLM2-135M answers it instead)."""

    #: one set of worked examples per wording, each a different way to reword (other words, the asked part
    #: last, a longer phrase), so that greedy writing gives different wordings
    STYLES = (
        (("Who painted the mural in the town library?", "Which artist made the mural in the town library?"),
         ("When does the night train to Vell leave?", "At what time does the night train to Vell depart?"),
         ("Where did my uncle Bram study law?", "At which university did my uncle Bram study law?"),
         ("How many rooms does the Linden hotel have?", "What is the number of rooms in the Linden hotel?")),
        (("Who painted the mural in the town library?", "The mural in the town library was painted by whom?"),
         ("When does the night train to Vell leave?", "The night train to Vell leaves at what time?"),
         ("Where did my uncle Bram study law?", "My uncle Bram studied law where?"),
         ("How many rooms does the Linden hotel have?", "The Linden hotel has how many rooms?")),
        (("Who painted the mural in the town library?", "Can you tell me who painted the town library's mural?"),
         ("When does the night train to Vell leave?", "What is the departure time of the night train to Vell?"),
         ("Where did my uncle Bram study law?", "In which place was my uncle Bram a law student?"),
         ("How many rooms does the Linden hotel have?", "What number of rooms is there in the Linden hotel?")),
    )
    REWRITE = "Rewrite each question in other words, with the same meaning.\n\n{shots}Question: {q}\nOther words:"
    CHECK = ("Answer each question with a few words from its sentence.\n\n"
             "Sentence: The Linden hotel has 42 rooms.\nQuestion: What is the number of rooms in the Linden hotel?\nAnswer: 42\n\n"
             "Sentence: The mural in the town library was painted by Ada Quell.\n"
             "Question: Which artist made the mural in the town library?\nAnswer: Ada Quell\n\n"
             "Sentence: {fact}\nQuestion: {q}\nAnswer:")

    def __init__(self, complete: Callable[[str], str], n: int = 2, echoes: bool = False, first: bool = False):
        self.complete, self.echoes, self.first = complete, echoes, first
        self.prompts = [self.REWRITE.replace("{shots}", "".join(f"Question: {a}\nOther words: {b}\n\n" for a, b in style))
                        for style in self.STYLES[:n]]

    def items(self, items: list[StudyItem]) -> tuple[list[StudyItem], int]:
        """(kept model-written items, how many were written and dropped): wordings of each fact's first question."""
        out, dropped = [], 0
        firsts = {}
        for i in items:
            if i.question is not None and i.form in ("question", "span question") and i.fact not in firsts:
                firsts[i.fact] = i
        for item in firsts.values():
            written = [self.complete(prompt.format(q=item.question)).strip().strip('"') for prompt in self.prompts]
            for q in dict.fromkeys(written):
                said = reply_to(q, item.short, item.fact, echoes=self.echoes, first=self.first)
                candidate = StudyItem(item.fact, "model reworded", said, question=q, short=item.short)
                if q.endswith("?") and _words(q) != _words(item.question) and _keeps_names(q, item.question) \
                        and check_item(candidate) and _holds(self.complete(self.CHECK.format(fact=item.fact, q=q)), item.short):
                    out.append(candidate)
                else:
                    dropped += 1
        return out, dropped


def _keeps_names(wording: str, question: str) -> bool:
    """Whether `wording` keeps every name `question` gives (its capitalised words after the first, spelt the same):
    a wording that drops or misspells the subject ("Who designed the bridge?") asks about something else."""
    names = [w.removesuffix("'s") for w in re.findall(r"(?<!^)\b[A-Z][\w'-]*", question.strip())]
    return all(_holds(wording, n) for n in names)


def write_study(items: list[StudyItem], path: Path) -> None:
    """The study items as JSONL a person can read, edit and give back to `smf learn --data`."""
    rows = [{"study": STUDY_FORMAT, **{k: v for k, v in asdict(i).items() if v is not None}} for i in items]
    write_text_atomic(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def study_rows(rows: list[dict], where: str) -> list[StudyItem] | None:
    """The study items of a study file's rows (None when the rows are not a study file)."""
    if not rows or rows[0].get("study") != STUDY_FORMAT:
        return None
    out = []
    for n, row in enumerate(rows, 1):
        if row.get("study") != STUDY_FORMAT:
            raise SmfError(f"{where}: row {n} is not a study row (every row of a study file has \"study\": \"{STUDY_FORMAT}\")")
        question, text, answer = row.get("question"), row.get("text"), row.get("answer")
        if not isinstance(answer, str) or not answer.strip() or (question is None) == (text is None) \
                or not isinstance(question if question is not None else text, str):
            raise SmfError(f'{where}: study row {n} needs an "answer" and one of "question" or "text"')
        out.append(StudyItem(str(row.get("fact", "")), str(row.get("form", "edited")), answer.strip(),
                             question=question.strip() if question else None, text=text.strip() if text else None,
                             short=row.get("short") if isinstance(row.get("short"), str) else None))
    return out
