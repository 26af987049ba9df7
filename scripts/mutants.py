"""`make mutants`: mutmut over the core modules, on a seeded random sample of its mutants.

mutmut ([tool.mutmut] in pyproject.toml) makes one small change at a time to selection.py,
optim.py, methods/, memory/layer.py and study/report.py (about 2,900 mutants) and runs the
tests that cover the changed function; a mutant survives when they all still pass. All of
them take many hours on 2 cores, so this script draws a seeded random sample, runs mutmut on
exactly those, and records the survival rate with a 95 % interval (Wilson) for the whole
population: an estimate, stated as one. `--sample 0` runs every mutant.

Statuses: killed (a test failed), timeout (the tests ran past mutmut's CPU-time limit: the
change made the code hang or crawl; counted as detected), survived (every covering test
passed), no tests (no test in the selection runs that function: undetected by construction).
The survival rate counts survived and no-tests mutants as undetected.

Writes docs/mutants/mutmut.json and the "Mutation testing (mutmut)" section of BENCHMARKS.md.
Run: .venv/bin/python scripts/mutants.py [--sample 150] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
MUTMUT = [sys.executable, "-m", "mutmut"]
DETECTED = {"killed", "timeout"}
UNDETECTED = {"survived", "no tests"}


def _mutmut(*args: str) -> str:
    # one torch thread per child: mutmut runs as many children as cores
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([*MUTMUT, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"mutmut {' '.join(args[:2])} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def statuses() -> dict[str, str]:
    """{mutant name: status} for every mutant mutmut generated."""
    out = _mutmut("results", "--all", "true")
    found = re.findall(r"^\s*(\S+__mutmut_\d+): (.+?)\s*$", out, re.M)
    return dict(found)


def module_of(name: str) -> str:
    """smf.methods.smf.xǁSmfMethodǁsave__mutmut_3 → smf/methods/smf.py"""
    return "/".join(name.split(".x")[0].split(".")) + ".py"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarise(sampled: dict[str, str], population: int) -> dict:
    counts = Counter(sampled.values())
    undetected = sum(counts[s] for s in UNDETECTED)
    with_tests = sum(counts[s] for s in DETECTED) + counts["survived"]
    by_module: dict[str, Counter] = {}
    for name, status in sampled.items():
        by_module.setdefault(module_of(name), Counter())[status] += 1
    low, high = wilson(undetected, len(sampled))
    return {
        "population": population, "sampled": len(sampled), "statuses": dict(counts),
        "survival_rate": undetected / len(sampled), "survival_ci95": [low, high],
        "survival_rate_with_tests": counts["survived"] / with_tests if with_tests else None,
        "survival_with_tests_ci95": list(wilson(counts["survived"], with_tests)),
        "by_module": {m: dict(c) for m, c in sorted(by_module.items())},
    }


def render(result: dict) -> str:
    s = result["summary"]
    st = s["statuses"]
    lo, hi = s["survival_ci95"]
    lines = [
        f"`python scripts/mutants.py --sample {result['sample']} --seed {result['seed']}` (`make mutants`): mutmut "
        f"{result['mutmut']} over {', '.join(result['modules'])}, with the tests of `[tool.mutmut]` in pyproject.toml. Of its "
        f"{s['population']:,} mutants, a seeded random sample of {result['sample']} was drawn and {s['sampled']} of them ran "
        f"({result['minutes']:.0f} minutes on {result['cores']} cores){_gone(result)}; the rates are estimates for all "
        f"{s['population']:,}, with Wilson 95 % intervals.",
        "",
        "| status | mutants |", "|---|---|",
        *[f"| {k} | {st.get(k, 0)} |" for k in ("killed", "timeout", "survived", "no tests")],
        "",
        f"**Survival rate {100 * s['survival_rate']:.1f} %** (95 % interval {100 * lo:.1f}–{100 * hi:.1f} %): survived and "
        "no-tests mutants over all sampled. Among mutants whose function a selected test runs: "
        f"{100 * s['survival_rate_with_tests']:.1f} % survive ({100 * s['survival_with_tests_ci95'][0]:.1f}–"
        f"{100 * s['survival_with_tests_ci95'][1]:.1f} %). Timeouts count as detected (the change made the tests hang).",
        "",
        "| module | killed | timeout | survived | no tests |", "|---|---|---|---|---|",
        *[f"| {m} | {c.get('killed', 0)} | {c.get('timeout', 0)} | {c.get('survived', 0)} | {c.get('no tests', 0)} |"
          for m, c in s["by_module"].items()],
    ]
    if result["survivors"]:
        rechecked = result.get("rechecked", {})
        lines += ["", "Surviving mutants (the change, as mutmut shows it)"
                  + ("; after each, what it is against the tests added since (`--recheck-survivors`)" if rechecked else "") + ":", ""]
        lines += [f"- `{name}`: `{diff}`" + (f" — now **{rechecked[name]}**" if name in rechecked else "")
                  for name, diff in result["survivors"].items()]
        if rechecked:
            killed = sum(v in DETECTED for v in rechecked.values())
            lines += ["", f"Against today's tests, {killed} of the {len(rechecked)} survivors are killed; the rest are "
                          "listed above (the rates above are those of the sample's own run)."]
    return "\n".join(lines)


def _gone(result: dict) -> str:
    n = len(result.get("gone", []))
    return f"; {n} left out, its code edited away while the sample ran" if n else ""


def show(name: str) -> str:
    out = _mutmut("show", name)
    changed = [line[1:].strip() for line in out.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return " / ".join(changed)[:200].replace("`", "'").replace("|", "\\|")


def main() -> None:
    from common import update_section

    from smf.io import read_json, write_json_atomic

    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=int, default=150, help="mutants to run (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render", action="store_true", help="rewrite the BENCHMARKS.md section from docs/mutants/mutmut.json")
    parser.add_argument("--recheck-survivors", action="store_true",
                        help="run the recorded survivors again against today's tests and record which are killed now")
    args = parser.parse_args()
    path = ROOT / "docs" / "mutants" / "mutmut.json"
    if args.render:
        update_section("Mutation testing (mutmut)", render(read_json(path)))
        return
    if args.recheck_survivors:
        result = read_json(path)
        _mutmut("run", *result["survivors"])
        now = statuses()
        result["rechecked"] = {n: now.get(n, "gone") for n in result["survivors"]}
        _publish(path, result)
        return
    start = time.perf_counter()
    # Generate the mutants and collect which tests cover which function (mutmut needs a name to run:
    # one that has no tests costs nothing).
    if not (ROOT / "mutants").is_dir():
        print("generating mutants and test coverage (minutes)", flush=True)
        _mutmut("run", "smf.memory.layer.xǁProductKeyMemoryǁextra_repr__mutmut_1")
    everything = statuses()
    names = sorted(everything)
    # The draw is kept beside the mutants, so a run that stops (or a rerun) goes on with the same sample.
    drawn = ROOT / "mutants" / "sample.json"
    plan = read_json(drawn) if drawn.is_file() else {}
    if plan.get("sample") != args.sample or plan.get("seed") != args.seed:
        chosen = names if args.sample <= 0 else sorted(random.Random(args.seed).sample(names, min(args.sample, len(names))))
        plan = {"sample": args.sample, "seed": args.seed, "population": len(names), "chosen": chosen, "minutes": 0.0}
        write_json_atomic(drawn, plan)
    todo = [n for n in plan["chosen"] if everything.get(n) == "not checked"]
    print(f"{len(names)} mutants; {len(plan['chosen'])} sampled, {len(todo)} to run", flush=True)
    for i in range(0, len(todo), 40):  # in batches, so an interrupted run keeps what it finished
        _mutmut("run", *todo[i : i + 40])
        print(f"  {min(i + 40, len(todo))}/{len(todo)}", flush=True)
    plan["minutes"] += (time.perf_counter() - start) / 60
    write_json_atomic(drawn, plan)
    after = statuses()
    # mutmut regenerates its mutants from the source at every call: a sampled mutant whose code
    # was edited away meanwhile no longer exists, and is left out (and counted).
    gone = [n for n in plan["chosen"] if n not in after]
    sampled = {n: after[n] for n in plan["chosen"] if n in after}
    unfinished = [n for n, s in sampled.items() if s == "not checked"]
    if unfinished:
        raise SystemExit(f"{len(unfinished)} sampled mutants were not run (e.g. {unfinished[0]}); run again to finish")
    import mutmut

    result = {
        "mutmut": mutmut.__version__, "sample": args.sample, "seed": args.seed, "cores": os.cpu_count(),
        "minutes": plan["minutes"], "gone": gone,
        "modules": ["selection.py", "optim.py", "methods/", "memory/layer.py", "study/report.py"],
        "summary": summarise(sampled, plan["population"]),
        "survivors": {n: show(n) for n, s in sampled.items() if s == "survived"},
        "statuses": sampled,
    }
    _publish(path, result)


def _publish(path: Path, result: dict) -> None:
    """The JSON, and its BENCHMARKS.md section."""
    from common import update_section

    from smf.io import write_json_atomic

    write_json_atomic(path, result)
    body = render(result)
    update_section("Mutation testing (mutmut)", body)
    print(body)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
