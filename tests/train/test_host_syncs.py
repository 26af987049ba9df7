"""The memory lookup, its access recording, the selection of rows and the sparse optimizer's step
never wait for the device (no host sync), so a GPU step is not stalled once per layer. No GPU here: the test watches the ATen operations themselves and flags those that
need a device value on the host (a data-dependent output size, or `.item()`)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from smf.memory import MemoryConfig, ProductKeyMemory

from conftest import tiny_model

SYNCING = {"nonzero", "_local_scalar_dense", "masked_select", "_unique2", "unique_dim", "unique_consecutive",
           "bincount", "repeat_interleave", "item"}


class Syncs(TorchDispatchMode):
    """Records the operations that would sync a GPU stream with the host."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCING:
            self.found.append(name)
        elif name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None):
            self.found.append("index with a bool mask")
        return func(*args, **(kwargs or {}))


def _memory(slots=4096):
    torch.manual_seed(0)
    memory = ProductKeyMemory(32, MemoryConfig(layers=[0], slots=slots, heads=2, topk=4, key_dim=16))
    memory.to_empty(device="cpu")
    memory.reset_parameters()
    return memory


def test_the_watch_sees_a_sync():
    """Positive control: the rows of real tokens (a mask-sized result) is a sync, and is seen."""
    memory = _memory()
    memory.record = True
    memory.token_mask = torch.tensor([[1, 1, 1, 0]])
    memory(torch.randn(1, 4, 32))
    with Syncs() as watch:
        memory.last_rows
    assert watch.found == ["index with a bool mask"]
    with Syncs() as watch:
        torch.unique(torch.tensor([3, 1, 3]), return_counts=True)
    assert watch.found


@pytest.mark.parametrize("masked", [True, False])
def test_a_recorded_forward_and_its_counts_never_sync(masked):
    memory = _memory()
    memory.record = True
    memory.token_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]) if masked else None
    x = torch.randn(2, 4, 32, requires_grad=True)
    with Syncs() as watch:
        out = memory(x)
        counts = memory.read_counts()
        out.sum().backward()
    assert watch.found == []
    # the counts are those of the real tokens' rows
    rows, n = torch.unique(memory.last_rows, return_counts=True)
    assert counts.sum() == (5 if masked else 8) * 2 * 4
    assert torch.equal(counts.nonzero().flatten(), rows) and torch.equal(counts[rows], n)


@pytest.mark.parametrize("rule", ["tfidf", "kl", "tf"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rowwise_adagrad"])
def test_an_smf_step_never_syncs(tmp_path, tokenizer, rule, optimizer):
    """Forward, backward and the recording of every micro-batch add no sync to those the model
    makes without memory (transformers' mask check makes one per forward); the selection and the
    optimizer's step add none: the scored rules choose in fixed shapes on the device. Lazy Adam
    waits when its moment buffers must grow (once per layer in the first step here), not in later steps."""
    from smf.memory import retrofit
    from smf.methods import TrainConfig, make_method
    from smf.selection import BackgroundStats

    batch = {"input_ids": torch.randint(3, 96, (2, 12)), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    batch["labels"] = batch["input_ids"].clone()

    def micro_batches(model, method=None):
        with Syncs() as watch:
            for _ in range(2):
                if method:
                    method.before_forward(model, batch)
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float().mean().backward()
                if method:
                    method.after_forward(model)
        return watch.found

    plain = micro_batches(tiny_model().train())
    model = retrofit(tiny_model(), MemoryConfig(layers=[1, 2], slots=1024, heads=2, topk=4, key_dim=16))
    background = BackgroundStats.empty({1: 1024, 2: 1024})
    background.add_counts({1: torch.randint(0, 3, (1024,)), 2: torch.randint(0, 3, (1024,))})
    method = make_method(TrainConfig.from_dict({"method": "smf", "steps": 2, "batch_size": 4, "grad_accum": 2, "rule": rule,
                                                "top_t": 16, "optimizer": optimizer, "max_grad_norm": 1e-3}))
    method.background = background
    model = method.prepare(model, None)
    opt = method.make_optimizer(model)
    found = []
    for step in range(2):
        assert micro_batches(model, method) == plain
        with Syncs() as watch:
            method.before_step(model, opt)
            opt.step()
            opt.zero_grad(set_to_none=True)
        found.append(watch.found)
    assert found[1] == [] and found[0] == (["_local_scalar_dense"] * 2 if optimizer == "adam" else [])  # a growth per layer
    stats = method.step_stats(opt)  # read once the step is done
    assert stats["rows_selected"] == sum(stats["rows_selected_per_layer"].values()) > 0
    assert stats["grad_norm"] > 1e-3  # clipped, on the device
