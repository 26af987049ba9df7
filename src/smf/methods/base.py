"""What every training method provides to the trainer."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Method:
    """A training method: which parameters train, with which optimizer, and how to save.

    The trainer calls, in order: `prepare` once; then per optimizer step, for each
    micro-batch `after_forward`, and `before_step` just before `optimizer.step()`.
    """

    name = "?"
    default_lr = 1e-4
    #: whether the optimizer clips gradients itself (sparse optimizers do)
    clips_itself = False

    def __init__(self, config):
        self.config = config

    @property
    def lr(self) -> float:
        return self.config.lr if self.config.lr is not None else self.default_lr

    def prepare(self, model: nn.Module, model_dir: Path | None) -> nn.Module:
        """Freeze/wrap the model for training; return the model to train."""
        raise NotImplementedError

    def trainable(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.AdamW([p for _, p in self.trainable(model)], lr=self.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)

    def after_forward(self, model: nn.Module) -> None:
        """Called after each micro-batch's forward pass."""

    def before_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, reduce=None) -> None:
        """Called once per optimizer step, after all backward passes, before the step."""

    def step_stats(self, optimizer: torch.optim.Optimizer) -> dict:
        """Numbers for the step log (e.g. rows selected)."""
        return {}

    def optimizer_state_bytes(self, optimizer: torch.optim.Optimizer) -> int:
        return sum(t.numel() * t.element_size() for st in optimizer.state.values() for t in st.values() if torch.is_tensor(t))

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The weights a checkpoint must hold to restore training."""
        return {n: p.detach() for n, p in self.trainable(model)}

    def load_trainable_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.trainable(model))
        assert set(params) == set(state), "checkpoint does not match the method's trainable parameters"
        with torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor)

    def extra_state(self) -> dict:
        """Anything besides weights, optimizer and global RNG that resuming needs."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def save(self, model: nn.Module, tokenizer, out: Path) -> None:
        """Write the trained model (or adapter) to the folder `out` (atomically)."""
        raise NotImplementedError

    def export(self, model: nn.Module) -> nn.Module:
        """The plain model to evaluate after training (e.g. LoRA merged)."""
        return model
