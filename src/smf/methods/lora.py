"""LoRA finetuning through PEFT: adapters on every linear layer by default, AdamW.

Saved as a PEFT adapter folder (adapter_config.json names the base model folder);
`load_adapter` loads it onto its base and merges it, so the result evaluates like
any plain model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from smf.errors import SmfError
from smf.io import atomic_dir
from smf.methods.base import Method


class LoraMethod(Method):
    name = "lora"
    default_lr = 2e-4

    def prepare(self, model, model_dir: Path | None):
        from peft import LoraConfig, get_peft_model

        c = self.config
        if model_dir is None:
            raise SmfError("lora training needs the base model as a folder, so the adapter can name its base")
        from smf.memory.retrofit import memory_layers

        targets = c.lora_targets if isinstance(c.lora_targets, str) else list(c.lora_targets)
        config = LoraConfig(
            r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout, target_modules=targets,
            # memory layers are SMF's, not LoRA's
            exclude_modules=r".*\.memory\..*" if memory_layers(model) else None,
            task_type="CAUSAL_LM",
        )
        model.config._name_or_path = str(Path(model_dir).resolve())
        try:
            return get_peft_model(model, config)
        except ValueError as e:
            raise SmfError(f"LoRA target modules {targets!r} do not fit this model: {str(e).splitlines()[0]}") from None

    def save(self, model, tokenizer, out: Path) -> None:
        with atomic_dir(out, overwrite=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

    def export(self, model):
        return model.merge_and_unload()


def load_adapter(folder: Path, *, dtype: torch.dtype = torch.float32, device="cpu"):
    """(model, tokenizer) for a LoRA adapter folder: its base with the adapter merged in."""
    from peft import PeftModel

    from smf.io import read_json
    from smf.models import load_model

    base_path = read_json(folder / "adapter_config.json").get("base_model_name_or_path")
    if not base_path:
        raise SmfError(f"{folder / 'adapter_config.json'} does not name its base model (base_model_name_or_path)")
    model, tokenizer = load_model(base_path, dtype=dtype, device=device)
    model = PeftModel.from_pretrained(model, folder).merge_and_unload()
    return model.eval(), tokenizer
