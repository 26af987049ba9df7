"""`smf learn`: from a person's facts to a model that knows them, in one command.

    smf learn --data my_facts.jsonl --out my_model          # the offline default model
    smf ask --model my_model "Who discovered Zorvex?"
    smf learn --data more_facts.txt --model my_model --out my_model_2   # a later sitting

    from smf.use.learn import LearnConfig, learn, read_facts
    learn("facts.txt", "my_model", config=LearnConfig.from_dict({"top_t": 1000}))

A sitting's stages, one module each: reading the facts (`facts`); building the training
examples, questions answered by the person's own statements (`examples`); anchors and kept
answers, questions about made-up subjects whose reads the sitting leaves alone and whose answers
it can keep (--keep, off by default; `kept`); the background statistics a new memory counts, the
anchors added to them and the protection of what a sitting trained (`background`); the folder's files for later sittings
(`folder`); the sitting itself, `learn()` (`sitting`). What it does is `LearnConfig` (`config`):
the train, memory and background configs at their defaults, under LEARN_PRESET where the learn
check (studies/learn-check) chose otherwise.

A model folder `smf learn` wrote continues where it stopped: same memory, same background
statistics, new facts on top; what a sitting trained is spared by the later ones (protect).
"""

from smf.use.learn.config import LEARN_PRESET, SHORTCUTS, LearnConfig
from smf.use.learn.facts import Fact, read_facts
from smf.use.learn.sitting import learn

__all__ = ["LEARN_PRESET", "SHORTCUTS", "Fact", "LearnConfig", "learn", "read_facts"]
