"""The mutants issue 14 names, each applied to a copy of the repository and run against the
tests meant to kill it. A mutant is killed when its tests fail; each test selection is first
run unmutated and must pass, or the result would mean nothing.

This is the deterministic companion of `make mutants` (mutmut over whole modules, hours on
2 cores): the mutants here are the breakages the method must never survive.

Writes docs/mutants/named.json and the "Named mutants" section of BENCHMARKS.md.
Run: .venv/bin/python scripts/named_mutants.py [--only NAME,...]   (--only keeps the others' last records)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

# name: (file, code as written, the mutant, the tests that must kill it)
MUTANTS = {
    "selection replaced by the first t rows read": (
        "src/smf/selection.py", "score = torch.where(eligible, score, -math.inf)",
        "score = torch.where(eligible, -torch.arange(n, device=device).double(), -math.inf)",
        ["tests/train/test_selection_end_to_end.py"]),
    "selection ignored (every row read trained)": (
        "src/smf/methods/smf.py", "chosen[memory.values], valid[memory.values] = self.selector.select_fixed(i, reads)",
        "chosen[memory.values] = _read_rows(reads)[0]", ["tests/train/test_selection_end_to_end.py"]),
    "clip scale dropped": (
        "src/smf/optim.py", "self._update(p, rows, g * scale if scale is not None else g, group, valid)",
        "self._update(p, rows, g, group, valid)", ["tests/methods/test_optim.py"]),
    "weight decay dropped (lazy Adam)": (
        "src/smf/optim.py", 'w = w * (1 - group["lr"] * group["weight_decay"])', "w = w", ["tests/methods/test_optim.py"]),
    "accesses from the last micro-batch only": (
        "src/smf/methods/smf.py", "self._reads[i] = counts if self._reads[i] is None else self._reads[i].add_(counts)",
        "self._reads[i] = counts",
        ["tests/train/test_selection_end_to_end.py"]),
    "padding counted": (
        "src/smf/memory/layer.py", "self._read = (rows.detach(), mask)", "self._read = (rows.detach(), None)",
        ["tests/memory/test_memory.py", "tests/methods/test_selection.py"]),
    "background df swapped for counts": (
        "src/smf/selection.py", "torch.log(self.background.df[layer].double() + 1)", "torch.log(self.background.counts[layer].double() + 1)",
        ["tests/methods/test_selection.py"]),
    "sign flip in KL": (
        "src/smf/selection.py", "p * (p.log() - self.log_q(layer, rows.device)[rows])", "p * (self.log_q(layer, rows.device)[rows] - p.log())",
        ["tests/methods/test_selection.py"]),
    "LoRA trains the base weights": (
        "src/smf/methods/lora.py", "return get_peft_model(model, config)",
        "return get_peft_model(model, config).requires_grad_(True)", ["tests/train/test_train.py::test_lora_trains_only_adapters"]),
    "verdict's tolerance off by one": (
        "src/smf/study/report.py", "limit = tolerance + 1e-9", "limit = tolerance + 1", ["tests/study/test_report_logic.py"]),
    "aggregation drops a seed": (
        "src/smf/stats.py", '{"mean": statistics.fmean(values),', '{"mean": statistics.fmean(values[1:] or values),',
        ["tests/study/test_report_logic.py"]),
    # issue 48: SmfOptimizer in transformers' Trainer and the public API
    'Trainer: reads of the last micro-batch only': (
        'src/smf/train/hf.py', '            self._method.after_forward(self.model)',
        '            self._method._reads = dict.fromkeys(self._method._reads); self._method.after_forward(self.model)', ['tests/train/test_trainer_integration.py::test_trainer_trains_as_smf_train_does']),
    'Trainer: count target ignored': (
        'src/smf/train/hf.py', '        self._method.before_forward(self.model, {"labels"',
        '        return; self._method.before_forward(self.model, {"labels"', ['tests/train/test_trainer_integration.py::test_trainer_trains_as_smf_train_does']),
    'Trainer: selected rows not clipped': (
        'src/smf/train/hf.py', 'max_grad_norm=max_grad_norm,\n                             seed=seed',
        'max_grad_norm=None,\n                             seed=seed', ['tests/train/test_trainer_integration.py::test_trainer_trains_as_smf_train_does']),
    "Trainer: saved folder without smf's model files": (
        'src/smf/train/hf.py', '    if kwargs.get("is_main_process", True):\n        write_model_files',
        '    if False:\n        write_model_files', ['tests/train/test_trainer_integration.py::test_trainer_trains_as_smf_train_does']),
    'Trainer checkpoint: Adam moments not saved': (
        'src/smf/optim.py', '"m": st["m"][at], "v"',
        '"m": st["m"][at] * 0, "v"', ['tests/train/test_trainer_integration.py::test_trainer_resume_mid_run_gives_the_same_weights']),
    'Trainer checkpoint: the table-sized slot index saved': (
        'src/smf/optim.py', '"step": st["step"][at]}',
        '"step": st["step"][at], "slot": st["slot"]}', ['tests/train/test_trainer_integration.py::test_trainer_resume_mid_run_gives_the_same_weights']),
    "Trainer checkpoint: random rule's generator not restored": (
        'src/smf/train/hf.py', '            method.selector.generator.set_state(meta["selector_rng"].cpu())',
        '            pass', ['tests/train/test_trainer_integration.py::test_trainer_resume_mid_run_gives_the_same_weights']),
    'SmfOptimizer: background of another memory accepted': (
        'src/smf/train/hf.py', '    if ours != theirs:\n        raise SmfError(f"the background',
        '    if False:\n        raise SmfError(f"the background', ['tests/test_api.py::test_bad_input_is_one_smf_error_naming_the_fix']),
    'SmfOptimizer: evaluation passes choose rows': (
        'src/smf/train/hf.py', '        if module.training and torch.is_grad_enabled():\n            self._method.after_forward',
        '        if torch.is_grad_enabled():\n            self._method.after_forward', ['tests/test_api.py::test_only_training_passes_choose_rows']),
    'import smf loads the API eagerly': (
        'src/smf/__init__.py', 'from smf.version import __version__\n',
        'from smf.version import __version__\nimport smf.api  # noqa: F401\n', ['tests/test_api.py::test_import_smf_is_cheap']),
    'the CLI imports an unlisted internal': (
        'src/smf/cli/memory.py', 'from smf import MemoryConfig\n',
        'from smf import MemoryConfig\nfrom smf.memory.layer import ProductKeyMemory  # noqa: F401\n', ['tests/cli/test_cli_imports.py']),
    # issue 47: the published study's recipe as settings, each proved against the study's own outputs
    "published layer: its input re-normalised": (
        "src/smf/memory/layer.py", "        if self.published:\n            return x\n",
        "        if False:\n            return x\n", ["tests/memory/test_published_layer.py::test_the_layer_and_its_mlp_give_the_published_outputs"]),
    "published scoring: zero-score rows excluded": (
        "src/smf/selection.py", 'if self.rule == "tfidf" and not self.published:\n            eligible &= score > 0',
        'if self.rule == "tfidf":\n            eligible &= score > 0',
        ["tests/methods/test_published_selection.py::test_selection_on_given_counts_is_the_studys"]),
    "count padded: padding left out": (
        "src/smf/methods/smf.py", 'memory.count_padding = o.count == "padded"', "memory.count_padding = False",
        ["tests/methods/test_published_selection.py::test_a_padded_batch_counts_and_chooses_as_the_study"]),
    "greedy decoding applies the repetition penalty": (
        "src/smf/evaluate/generate.py", "return stop_token_ids(model, tokenizer), 1.0",
        'return stop_token_ids(model, tokenizer), float(getattr(model.generation_config, "repetition_penalty", None) or 1.0)',
        ["tests/evaluate/test_published_generation.py::test_the_penalty_changes_the_answers_and_greedy_stays_as_it_was"]),
    "generation_config decoding stops at every end token": (
        "src/smf/evaluate/generate.py", "    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()\n    return eos,",
        "    eos = stop_token_ids(model, tokenizer)\n    return eos,",
        ["tests/evaluate/test_published_generation.py::test_generation_config_decoding_ends_only_at_the_tokenizers_eos"]),
    "MedMCQA choice filter off": (
        "src/smf/data/hub.py", 'if not isinstance(row, MCQItem) and row["choice_type"] == choice_type]',
        "if not isinstance(row, MCQItem)]", ["tests/data/test_recipe_data.py::test_medmcqa_sample_per_seed_and_tokens_are_the_studys"]),
    "OASST1 min_chars counted on stripped text": (
        "src/smf/data/hub.py", 'len(row["text"]) >= min_chars', 'len(row["text"].strip()) >= min_chars',
        ["tests/data/test_recipe_data.py::test_oasst1_messages_kept_are_the_studys"]),
    "cosine off by one step": (
        "src/smf/train/loop.py", "progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)",
        "progress = (step + 1 - config.warmup_steps) / max(1, config.steps - config.warmup_steps)",
        ["tests/methods/test_recipe_heal.py::test_heal_schedule_is_the_studys"]),
    "own_mean ignored": (
        "src/smf/train/loop.py", 'own_mean = config.micro_batch_loss == "own_mean"', "own_mean = False",
        ["tests/train/test_published_training.py::test_own_mean_sums_the_micro_batches_mean_losses"]),
    "full weights bf16 ignored": (
        "src/smf/methods/full.py", "            model.to(torch.bfloat16)", "            pass",
        ["tests/train/test_published_training.py::test_bf16_full_finetuning_keeps_bf16_weights_and_adam_state"]),
    "seed_per_run ignored (one memory for every seed)": (
        "src/smf/study/runner.py", "if config.memory.seed_per_run and seed is not None else config.memory",
        "if False else config.memory", ["tests/study/test_memory_per_seed.py::test_each_run_seed_draws_its_own_memory"]),
    # issue 49: a step that never waits for the device, and an evaluation that scores less twice
    "fixed-shape selection: ties to the higher rows": (
        "src/smf/selection.py", "chosen = above | (tied & (tied.cumsum(0) <= k - above.sum()))",
        "chosen = above | (tied & (tied.flip(0).cumsum(0).flip(0) <= k - above.sum()))", ["tests/methods/test_selection.py"]),
    "rows not valid get lazy Adam state": (
        "src/smf/optim.py", "new = valid & (at < 0)", "new = at < 0", ["tests/methods/test_optim.py"]),
    "rows not valid decay (lazy Adam's update unmasked)": (
        "src/smf/optim.py", 'p[rows] = torch.where(valid[:, None], w - group["lr"] * (m / bc1) / ((v / bc2).sqrt() + group["eps"]), p[rows])',
        'p[rows] = w - group["lr"] * (m / bc1) / ((v / bc2).sqrt() + group["eps"])', ["tests/methods/test_optim.py"]),
    "shared prefix: positions not shifted": (
        "src/smf/evaluate/generate.py", "positions = positions + shared", "positions = positions + 0",
        ["tests/evaluate/test_evaluate_engines.py"]),
    "background stops at the first memory layer": (
        "src/smf/train/stages.py", "stop = list(memories.values())[-1].register_forward_hook(_stop_forward)",
        "stop = list(memories.values())[0].register_forward_hook(_stop_forward)", ["tests/methods/test_selection.py"]),
    "replay batches dropped": (
        "src/smf/methods/replay.py", "backward(loss * self.ratio)", "pass",
        ["tests/methods/test_baselines.py::test_replay_term_is_ratio_times_the_windows_mean_token_loss",
         "tests/methods/test_baselines.py::test_replay_moves_the_model_otherwise_than_its_method_alone"]),
    "KL anchor's sign flipped": (
        "src/smf/methods/terms.py", "backward(kl * self.weight)", "backward(-kl * self.weight)",
        ["tests/methods/test_baselines.py::test_kl_term_is_the_weighted_mean_kl_from_the_frozen_start"]),
    "replay windows a step not from the ratio": (
        "src/smf/methods/replay.py", "per_step = math.ceil(self.options.ratio * self.config.batch_size)", "per_step = self.config.batch_size",
        ["tests/methods/test_baselines.py::test_baseline_through_smf_train"]),
    "anchors' rows trained after all": (
        "src/smf/methods/smf.py", "background.df[i][rows.to(background.df[i].device)] = background.batches", "pass",
        ["tests/methods/test_smf_anchors.py::test_rows_the_anchors_read_are_never_trained"]),
    "KL anchor's reference is the training model": (
        "src/smf/methods/kl_anchor.py", "frozen = copy.deepcopy(model).requires_grad_(False).eval() if", "frozen = model if",
        ["tests/methods/test_baselines.py"]),
}

COPY = ("src", "tests", "configs", "studies", "scripts", "docs", "bench", "pyproject.toml", "README.md", "BENCHMARKS.md", "Makefile")


def _pytest(tree: Path, tests: list[str]) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=tree, env=env, capture_output=True, text=True)
    tail = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode, time.perf_counter() - start, tail[-1] if tail else ""


def main() -> None:
    from smf.io import write_json_atomic

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="comma-separated mutant names (default: all)")
    args = parser.parse_args()
    chosen = {k: v for k, v in MUTANTS.items() if not args.only or k in args.only.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "repo"
        tree.mkdir()
        for name in COPY:
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, tree / name, **({"ignore": shutil.ignore_patterns("__pycache__"), "symlinks": True} if src.is_dir() else {}))  # a study's config links to configs/
        baselines = {}
        for file, old, new, tests in chosen.values():
            text = (tree / file).read_text()
            if text.count(old) != 1:
                raise SystemExit(f"{file}: the code this mutant changes appears {text.count(old)} times, not once; update MUTANTS")
            key = tuple(tests)
            if key not in baselines:
                code, seconds, last = _pytest(tree, tests)
                if code != 0:
                    raise SystemExit(f"{' '.join(tests)} fail without any mutant: {last}")
                baselines[key] = seconds
        rows = []
        for name, (file, old, new, tests) in chosen.items():
            path = tree / file
            original = path.read_text()
            path.write_text(original.replace(old, new))
            try:
                code, seconds, last = _pytest(tree, tests)
            finally:
                path.write_text(original)
            rows.append({"mutant": name, "file": file, "tests": tests, "killed": code != 0, "pytest_exit": code,
                         "seconds": round(seconds, 1), "pytest_summary": last})
            print(f"{'killed ' if code else 'SURVIVED'} {name}: {last}", flush=True)
    out = ROOT / "docs" / "mutants" / "named.json"
    if args.only and out.is_file():  # the others keep their last record, in the table's order
        ran = {r["mutant"]: r for r in rows}
        kept = {r["mutant"]: r for r in json.loads(out.read_text())["mutants"]}
        rows = [ran.get(name) or kept[name] for name in MUTANTS if name in ran or name in kept]
    result = {"mutants": rows, "killed": sum(r["killed"] for r in rows), "total": len(rows)}
    write_json_atomic(out, result)
    from common import update_section

    table = "\n".join(f"| {r['mutant']} | `{r['file']}` | {', '.join(f'`{t}`' for t in r['tests'])} | "
                      f"{'killed' if r['killed'] else '**survived**'} | {r['pytest_summary']} |" for r in rows)
    update_section("Named mutants", f"""
`python scripts/named_mutants.py` (results in `docs/mutants/named.json`): each breakage issue 14 names,
applied to a copy of the repository, against the tests meant to kill it (each test selection passes
unmutated first). **{result['killed']} of {result['total']} killed.**

| mutant | file | tests | outcome | pytest |
|---|---|---|---|---|
{table}
""")
    print(f"{result['killed']} of {result['total']} killed")
    if result["killed"] != result["total"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
