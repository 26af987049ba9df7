"""smf: Sparse Memory Finetuning.

Retrofit a pretrained causal LM with product-key memory layers, finetune only the
memory rows a batch reads most specifically, and measure what was learned against
what was forgotten, beside LoRA and full finetuning.

The public API is what `__all__` lists (docs/api.md); everything else is private and may
change with the CLI. `import smf` stays cheap: the API's names load on first use, from
`smf.api`, which imports torch and the rest only then.

    import smf
    model = smf.add_memory(model, smf.MemoryConfig())       # a transformers causal LM
    stats = smf.background_statistics(model, tokenizer)     # what general text reads
    optimizer = smf.SmfOptimizer(model, stats, top_t=300)   # Trainer(..., optimizers=(optimizer, None))
"""

from __future__ import annotations

from smf.errors import SmfError
from smf.version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING's value here, without importing typing (it costs more than smf)
if TYPE_CHECKING:  # what the lazy names below are, for type checkers and editors
    from smf.api import (BackgroundStats, MemoryConfig, SmfOptimizer, add_memory, ask, background_statistics,
                         evaluate_tasks, export, learn, load)

# The names smf.api serves, loaded on first use.
_LAZY = ("MemoryConfig", "BackgroundStats", "SmfOptimizer", "add_memory", "background_statistics", "learn", "evaluate_tasks",
         "load", "export", "ask")

__all__ = ["SmfError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import smf.api as api

        value = getattr(api, name)
        globals()[name] = value  # later uses skip this function
        return value
    raise AttributeError(f"module 'smf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
