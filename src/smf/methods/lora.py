"""LoRA finetuning through PEFT: adapters on every linear layer by default, AdamW.

Saved as a PEFT adapter folder, with smf_base.json naming its base folder relative to the
run, absolute, and by content (`smf.memory.delta.fingerprint`); `smf.models.load_model`
loads it onto that base, refusing another, and merges it, so the result evaluates like
any plain model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smf.config import Config, setting
from smf.errors import SmfError
from smf.io import atomic_dir, write_json_atomic
from smf.memory.delta import base_record
from smf.memory.retrofit import memory_layers
from smf.methods.base import Method
from smf.models import load_model
from smf.names import ADAPTER_BASE_FILE


@dataclass
class LoraOptions(Config):
    """PEFT LoraConfig's main settings."""

    rank: int = setting(16, "LoRA rank r")
    alpha: int = setting(32, "LoRA alpha (the update is scaled by alpha / rank)")
    dropout: float = setting(0.05, "dropout on the LoRA input")
    targets: str | list[str] = setting("all-linear", "modules that get adapters: all-linear, or a list of module names")

    def check(self, where: str) -> None:
        if self.rank < 1 or self.alpha < 1:
            raise SmfError(f"{where}: LoRA rank and alpha must be >= 1, got {self.rank} and {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise SmfError(f"{where}: LoRA dropout must be in [0, 1), got {self.dropout}")


class LoraMethod(Method):
    name = "lora"
    about = "PEFT LoRA adapters, AdamW"
    Options = LoraOptions
    default_lr = 2e-4
    color = "#ff7f0e"
    saves_compactly = True

    def prepare(self, model, model_dir: Path | None):
        from peft import LoraConfig, PeftModel, get_peft_model  # why: as in continue_from

        o = self.options
        if model_dir is None:
            raise SmfError("lora training needs the base model as a folder, so the adapter can name its base")
        targets = o.targets if isinstance(o.targets, str) else list(o.targets)
        config = LoraConfig(
            r=o.rank, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=targets,
            # memory layers are SMF's, not LoRA's
            exclude_modules=r".*\.memory\..*" if memory_layers(model) else None,
            task_type="CAUSAL_LM",
        )
        # PEFT records its base from the model's name_or_path, which a retrofitted model smf built itself lacks
        model.name_or_path = model.config._name_or_path = str(Path(model_dir).resolve())
        if isinstance(model, PeftModel):  # an adapter trained before (a stream's earlier chunks): train it on
            for name, p in model.named_parameters():
                p.requires_grad_("lora_" in name)
            return model
        try:
            return get_peft_model(model, config)
        except ValueError as e:
            raise SmfError(f"LoRA target modules {targets!r} do not fit this model: {str(e).splitlines()[0]}") from None

    def save(self, model, tokenizer, out: Path, standalone: bool = False) -> None:
        base = Path(model.peft_config["default"].base_model_name_or_path)
        with atomic_dir(out, overwrite=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json_atomic(tmp / ADAPTER_BASE_FILE, base_record(base, out))

    def export(self, model):
        return model.merge_and_unload()

    @classmethod
    def continue_from(cls, saved, start, *, merge):
        """The base with the latest adapter to train on, or (merge) every earlier adapter merged in,
        in order, for a new adapter on top."""
        from peft import PeftModel  # why: peft imports transformers' model code, seconds; only LoRA needs it

        model, tokenizer = load_model(start)
        if not merge:
            return PeftModel.from_pretrained(model, saved[-1], is_trainable=True), tokenizer, start
        for folder in saved:
            model = PeftModel.from_pretrained(model, folder).merge_and_unload()
        return model, tokenizer, start
