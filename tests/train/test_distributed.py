"""Training in several processes (torch.distributed, gloo on this CPU) takes the steps of one process.

Two processes split each global batch; smf, lora, full and heal must then apply the
gradient one process applies (summed over the processes), select the same rows, and end
with the same weights on every process. SMF sums only access counts and the selected
rows' gradients: its unselected value rows stay bit-identical on every process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import memory_folder

WORKER = Path(__file__).with_name("distributed_worker.py")
METHODS = ["smf", "smf-sgd", "smf-dense", "smf-micro", "lora", "full", "heal"]
SLOTS, LAYERS, TOP_T, BATCH = 256, (1, 2), 6, 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], processes: int, cwd: Path) -> subprocess.CompletedProcess:
    """Run `python -m ...args` in `processes` processes (torchrun, as a user would on CPUs)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if processes == 1:
        command = [sys.executable, *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer):
    """The worker's runs: one process (micro-batches of one example) and two processes."""
    from smf.memory import MemoryConfig
    root = tmp_path_factory.mktemp("distributed")
    model = memory_folder(root / "model", tokenizer, MemoryConfig(layers=LAYERS, slots=SLOTS, heads=2, topk=4, key_dim=16))
    # One process with grad_accum 4 runs the same micro-batches (one example each) as two with grad_accum 2.
    one = launch([str(WORKER), "--model", str(model), "--out", str(root / "one"), "--grad-accum", "4"], 1, root)
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch([str(WORKER), "--model", str(model), "--out", str(root / "two"), "--grad-accum", "2"], 2, root)
    assert two.returncode == 0, two.stderr[-3000:]
    return root, model


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_apply_the_one_process_gradient(runs, method):
    root, _ = runs
    one, r0, r1 = (load(root / d / method / f"grad{r}.safetensors") for d, r in (("one", 0), ("two", 0), ("two", 1)))
    assert one and one.keys() == r0.keys() == r1.keys()
    for name, g in one.items():
        assert torch.equal(r0[name], r1[name]), f"{method}: the processes applied different gradients to {name}"
        scale = g.abs().max().clamp_min(1e-12)
        assert (r0[name] - g).abs().max() <= 1e-6 * scale, f"{method}: {name}: the summed gradient is not one process's"


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_end_with_the_one_process_weights(runs, method):
    root, model = runs
    base = load(model / "model.safetensors")
    one, r0, r1 = (load(root / d / method / f"rank{r}.safetensors") for d, r in (("one", 0), ("two", 0), ("two", 1)))
    moved = 0
    for name, w in one.items():
        assert torch.equal(r0[name], r1[name]), f"{method}: the processes' weights differ in {name}"
        if name not in base or torch.equal(w, base[name]):
            continue
        moved += 1
        update = (w - base[name]).abs().max()
        # SGD is linear in the gradient; Adam divides by sqrt(v), which magnifies float noise
        # in the near-zero gradient entries (see test above: the gradients agree to 1e-6).
        tolerance = 1e-5 if method == "smf-sgd" else 1e-2
        assert (r0[name] - w).abs().max() <= tolerance * update, f"{method}: {name} ends elsewhere with two processes"
    assert moved, f"{method}: nothing trained"


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in METHODS if m.startswith("smf")])
def test_smf_selects_the_same_rows_and_leaves_the_others_bit_identical(runs, method):
    root, model = runs
    one, r0, r1 = (json.loads((root / d / method / f"rows{r}.json").read_text()) for d, r in (("one", 0), ("two", 0), ("two", 1)))
    if method == "smf-micro":  # one selection per micro-batch: 4 per step, 2 in each process
        assert len(one) == 3 * 4 * len(LAYERS) and sorted(map(str, one)) == sorted(map(str, r0 + r1))
        r0 = r0 + r1
    else:
        assert len(one) == 3 * len(LAYERS) and one == r0 == r1
    base = load(model / "model.safetensors")
    for rank in (0, 1):
        weights = load(root / "two" / method / f"rank{rank}.safetensors")
        for layer in LAYERS:
            name = f"model.layers.{layer}.mlp.memory.values"
            selected = torch.tensor(sorted({r for call in r0 if call["layer"] == layer for r in call["rows"]}))
            outside = torch.ones(SLOTS, dtype=torch.bool)
            outside[selected] = False
            assert torch.equal(weights[name][outside], base[name][outside]), f"rank {rank}: unselected rows of layer {layer} moved"
            assert not torch.equal(weights[name][selected], base[name][selected])


@pytest.mark.slow
def test_smf_sends_counts_and_selected_rows_only(runs):
    """Per step SMF's payload is one int32 count per slot and t rows of d floats per layer;
    full finetuning's is every weight (float32)."""
    root, model = runs
    config = json.loads((model / "config.json").read_text())
    d = config["hidden_size"]
    for method in ("smf", "smf-sgd", "smf-dense", "smf-micro"):
        log = [json.loads(line) for line in (root / "two" / method / "log.jsonl").read_text().splitlines()]
        rows = [sum(r["rows_selected_per_layer"].values()) for r in log]
        assert [r["allreduce_bytes"] for r in log] == [len(LAYERS) * SLOTS * 4 + n * d * 4 for n in rows]
        assert rows == [len(LAYERS) * TOP_T] * 3 if method != "smf-micro" else all(n >= len(LAYERS) * TOP_T for n in rows)
        summary = json.loads((root / "two" / method / "summary.json").read_text())
        assert summary["processes"] == 2
    full = json.loads((root / "two" / "full" / "summary.json").read_text())
    assert full["allreduce_bytes_per_step"] == 4 * sum(t.numel() for t in load(model / "model.safetensors").values())
    # one process sends nothing but logs the same payload, so the numbers compare across runs
    assert json.loads((root / "one" / "smf" / "summary.json").read_text())["allreduce_bytes_per_step"] == len(LAYERS) * (SLOTS * 4 + TOP_T * d * 4)


@pytest.mark.slow
def test_smf_train_command_in_two_processes(runs, tmp_path):
    """`torchrun --nproc_per_node 2 -m smf train` writes one run, reported once."""
    _, model = runs
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps({"prompt": f"Q{i}:", "target": f" answer {i}"}) + "\n" for i in range(8)))
    out = tmp_path / "run"
    done = launch(["-m", "smf", "train", "--model", str(model), "--data", str(facts), "--method", "smf", "--top-t", "4",
                   "--steps", "2", "--batch-size", "4", "--out", str(out)], 2, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained smf for 2 steps") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2 and (out / "model").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--batch-size", "1", "--grad-accum", "1"], "2 processes are more than the global batch of 1 examples"),
    (["--batch-size", "6", "--grad-accum", "2"], "does not split into 2 processes × 2 micro-batches"),
    (["--skew-background", "--methods", "smf"], "the 2 processes disagree on the background statistics' slot counts"),
])
def test_bad_process_setups_are_refused_in_one_line(runs, tmp_path, args, message):
    _, model = runs
    done = launch([str(WORKER), "--model", str(model), "--out", str(tmp_path / "run"), *args], 2, tmp_path)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("smf: ")]
    assert lines and all(message in line for line in lines), done.stderr[-3000:]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("summary.json"))


def test_flat_sums_are_bucketed_and_unpacked_in_place():
    """Gradients are summed in buckets per dtype, and each tensor gets its own slice back."""
    from smf.distributed import Comm

    comm, sent = Comm(world=2), []

    def fake_sum(t):  # stands in for the all-reduce of two processes holding the same tensor
        sent.append((t.dtype, t.numel()))
        return t.mul_(2)

    comm.sum_ = fake_sum
    tensors = [torch.arange(10.0), torch.full((3, 4), 3.0), torch.ones(5, dtype=torch.float64), torch.arange(4.0)]
    expected = [2 * t.clone() for t in tensors]
    comm.sum_flat_(tensors, bucket_bytes=50)
    assert sent == [(torch.float32, 10), (torch.float32, 12), (torch.float32, 4), (torch.float64, 5)]
    for t, e in zip(tensors, expected):
        assert torch.equal(t, e)


@pytest.mark.slow
def test_one_and_two_torch_threads_take_the_same_smf_steps(runs, tmp_path):
    """Float noise alone (torch's intra-op threads reorder sums) moves nothing that matters:
    SMF selects the same rows at every step and ends within float tolerance of the update."""
    root, model = runs
    outs = {}
    for threads in (1, 2):
        env_threads = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run([sys.executable, str(WORKER), "--model", str(model), "--out", str(tmp_path / f"t{threads}"),
                               "--methods", "smf,smf-sgd", "--threads", str(threads)], cwd=root, env=env_threads,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outs[threads] = tmp_path / f"t{threads}"
    base = load(model / "model.safetensors")
    for method in ("smf", "smf-sgd"):
        rows = [json.loads((outs[t] / method / "rows0.json").read_text()) for t in (1, 2)]
        assert rows[0] == rows[1] and rows[0]
        one, two = (load(outs[t] / method / "rank0.safetensors") for t in (1, 2))
        for name, w in one.items():
            update = (w - base[name]).abs().max()
            assert (two[name] - w).abs().max() <= (1e-5 if method == "smf-sgd" else 1e-2) * update
        losses = [json.loads((outs[t] / method / "summary.json").read_text())["final_loss"] for t in (1, 2)]
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    # the metrics a study reports: their changes from base differ by no more than the uncertainty it states
    from smf.evaluate import evaluate, load_task
    from smf.models import load_model
    from smf.stats import change_stderr
    from smf.study.results import delta

    net, tokenizer = load_model(model)
    tasks = [load_task({"name": "pydoc", "limit": 2}), load_task({"name": "facts", "limit": 20})]
    before = evaluate(net, tokenizer, tasks, progress=False)["tasks"]
    after = {}
    for threads in (1, 2):
        net.load_state_dict(load(outs[threads] / "smf" / "rank0.safetensors"), strict=False)
        after[threads] = evaluate(net, tokenizer, tasks, progress=False)["tasks"]
    for label, b in before.items():
        change = [delta(b["kind"], after[t][label]["headline"]["value"], b["headline"]["value"]) for t in (1, 2)]
        assert change[0] != 0.0 or b["kind"] != "perplexity"  # the training moved the model
        assert abs(change[0] - change[1]) <= (change_stderr(after[2][label], b) or 0.0), label
