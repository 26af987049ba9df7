"""smf: Sparse Memory Finetuning.

Retrofit a pretrained causal LM with product-key memory layers, finetune only the
memory rows a batch reads most specifically, and measure what was learned against
what was forgotten, beside LoRA and full finetuning.
"""

from smf.errors import SmfError

__version__ = "0.1.0"
__all__ = ["SmfError", "__version__"]
