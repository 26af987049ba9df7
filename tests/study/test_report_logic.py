"""The study's arithmetic and claims: change from base, paired standard errors, the validation
choice, and the verdict (validation-only choice, dominance beyond noise)."""

import math

import pytest

from smf.stats import dominates, mean_std, noise, paired_stderr
from smf.study.report import verdict, within_words
from smf.study.results import choose_on_validation, delta


def test_delta_is_points_for_accuracy_and_percent_for_perplexity():
    assert delta("mcq", 0.55, 0.50) == pytest.approx(5.0)
    assert delta("perplexity", 22.0, 20.0) == pytest.approx(10.0)


def test_paired_stderr_matches_items_by_id():
    base = [{"id": str(i), "correct": i % 2 == 0} for i in range(6)]
    run = [{"id": str(i), "correct": True} for i in reversed(range(6))]  # order must not matter
    diffs = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    mean = sum(diffs) / 6
    expected = 100 * math.sqrt(sum((d - mean) ** 2 for d in diffs) / 5 / 6)
    assert paired_stderr(run, base) == pytest.approx(expected)
    assert paired_stderr(run[:1], base) is None


def test_mean_std():
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": math.sqrt(2), "n": 2}
    assert mean_std([None]) == {"mean": None, "std": None, "n": 0}


def row(label, family, gain, drifts, std=0.0, n=3, val_gain=None, val_drift=0.0):
    cell = lambda v: {"value": {"mean": v, "std": std, "n": n}, "delta": {"mean": v, "std": std, "n": n}, "delta_stderr": None}  # noqa: E731
    r = {"label": label, "family": family, "task": cell(gain)}
    r.update({f"probe{i}": cell(d) for i, d in enumerate(drifts)})
    r["val"] = cell(gain if val_gain is None else val_gain)
    r["valprobe"] = cell(val_drift)
    return r


def results(rows, chosen=None):
    return {"task": "task", "probes": ["probe0", "probe1"], "tolerance": 1.0, "summary": rows,
            "validation": {"chosen": chosen or {}}}


def test_the_validation_choice():
    rows = [row("smf-tfidf a", "smf-tfidf", 10, [0, 0], val_gain=10, val_drift=0.5),
            row("smf-tfidf b", "smf-tfidf", 20, [0, 0], val_gain=20, val_drift=3.0),
            row("smf-tfidf c", "smf-tfidf", 15, [0, 0], val_gain=15, val_drift=0.9)]
    assert choose_on_validation(rows, "val", ["valprobe"], tolerance=1.0) == {"smf-tfidf": "smf-tfidf c"}
    assert choose_on_validation(rows, "val", ["valprobe"], tolerance=1.0, min_gain=12) == {"smf-tfidf": "smf-tfidf c"}
    assert choose_on_validation(rows, "val", ["valprobe"], tolerance=0.1) == {"smf-tfidf": "smf-tfidf a"}  # least drift
    assert choose_on_validation(rows[:1], "val", ["valprobe"], tolerance=1.0) == {}  # one setting: nothing to choose


def test_the_verdict_reports_the_validation_choice_not_the_best_on_reported_probes():
    good_on_test = row("smf-tfidf best-on-test", "smf-tfidf", 30, [0.1, 0.2])
    chosen = row("smf-tfidf chosen", "smf-tfidf", 10, [2.0, 0.5])
    text = verdict(results([good_on_test, chosen], {"smf-tfidf": "smf-tfidf chosen"}))
    assert "chosen on validation: **smf-tfidf chosen**" in text and "not every probe within 1" in text
    assert "best-on-test**" not in text
    text = verdict(results([good_on_test, chosen]))
    assert "2 settings and no validation task" in text


def test_dominance_needs_an_advantage_beyond_noise():
    lora = row("lora", "lora", 10, [5.0, 5.0], std=1.0)
    close = row("smf-kl", "smf-kl", 10.6, [4.5, 4.8], std=1.0)  # better in every mean, all within noise
    clear = row("smf-tfidf", "smf-tfidf", 10.6, [0.5, 4.8], std=1.0)  # probe0 drift better by far more than noise
    worse = row("smf-tf", "smf-tf", 9.0, [0.0, 0.0], std=1.0)  # less drift, but a lower gain
    assert not dominates(close, lora, "task", ["probe0", "probe1"])
    assert dominates(clear, lora, "task", ["probe0", "probe1"])
    assert not dominates(worse, lora, "task", ["probe0", "probe1"])
    text = verdict(results([close, clear, worse, lora]))
    assert "smf-tfidf Pareto-dominates lora beyond noise" in text
    assert "smf-kl Pareto-dominates" not in text


def test_noise_is_the_seed_spread_with_the_items_share_else_the_paired_stderr():
    cell = lambda std, n, se: {"delta": {"mean": 1.0, "std": std, "n": n}, "delta_stderr": se}  # noqa: E731
    assert noise(cell(3.0, 4, None)) == pytest.approx(1.5)  # several seeds: std / sqrt(n)
    assert noise(cell(3.0, 4, 2.0)) == pytest.approx(2.5)  # with the items' share beside it: hypot(1.5, 2)
    assert noise(cell(2.0, 2, None)) == pytest.approx(2.0 / math.sqrt(2))  # two seeds are several
    assert noise(cell(0.0, 1, 1.7)) == 1.7  # one seed: its paired standard error
    assert noise(cell(5.0, 1, 1.7)) == 1.7  # (even with a std given)
    assert noise(cell(None, 3, 1.7)) == 1.7
    assert noise(cell(None, 1, None)) == 0.0  # nothing known: no noise


def test_dominance_at_its_margins():
    """No worse on every axis (ties count), and better by more than 2·hypot(se_s, se_o) on one."""

    def one_seed(label, gain, drifts, stderr):
        r = row(label, label, gain, drifts, std=0.0, n=1)
        for axis in ("task", "probe0", "probe1"):
            r[axis]["delta_stderr"] = stderr
        return r

    lora = one_seed("lora", 10, [3.0, 3.0], 0.3)
    smf = lambda gain, d0, d1: one_seed("smf-tfidf", gain, [d0, d1], 0.4)  # noqa: E731
    probes = ["probe0", "probe1"]
    margin = 2 * math.hypot(0.4, 0.3)  # 1.0: both sides' errors combined (one side alone: 0.8 or 0.6; 3·: 1.5)
    assert dominates(smf(10, 3.0 - margin - 0.01, 3.0), lora, "task", probes)  # tied on two axes, beyond on one
    assert not dominates(smf(10, 3.0 - margin + 0.01, 3.0), lora, "task", probes)  # within two combined errors
    assert dominates(smf(10 + 1.2, 3.0, 3.0), lora, "task", probes)  # gain beyond 1.0 (not beyond 1.5), drifts tied
    assert not dominates(smf(10 + 0.9, 3.0, 3.0), lora, "task", probes)  # beyond 0.8 but not 1.0
    assert not dominates(smf(10 + 1.2, 3.0, 3.0 + 1e-9), lora, "task", probes)  # a worse drift, however small
    assert not dominates(smf(10, 3.0, 3.0), lora, "task", probes)  # equal everywhere: not better
    exact = one_seed("smf-tfidf", 10.5, [3.0, 3.0], 0.0)  # margin 2·hypot(0, 0.25) = 0.5 exactly
    for axis in ("task", "probe0", "probe1"):
        lora[axis]["delta_stderr"] = 0.25
    assert not dominates(exact, lora, "task", probes)  # better by exactly the margin is not beyond it


def test_perplexity_change_has_a_paired_bootstrap_stderr():
    from smf.stats import perplexity_change_stderr

    base = [{"id": f"d{i}", "loglikelihood": -2.0 * w, "words": w} for i, w in enumerate([50, 80, 120, 200, 40, 90])]
    uniform = [{**r, "loglikelihood": r["loglikelihood"] - 0.01 * r["words"]} for r in base]
    # the same change per word in every document: every draw agrees, no uncertainty
    assert perplexity_change_stderr(uniform, base, "word_perplexity") == pytest.approx(0.0, abs=1e-9)
    mixed = [{**r, "loglikelihood": r["loglikelihood"] - (0.05 if i % 2 else -0.03) * r["words"]} for i, r in enumerate(base)]
    se = perplexity_change_stderr(mixed, base, "word_perplexity")
    assert 0.5 < se < 10
    assert se == perplexity_change_stderr(mixed, base, "word_perplexity")  # seeded
    # the change it is the error of: 100·(ppl_run/ppl_base − 1)
    ppl = lambda rs: math.exp(-sum(r["loglikelihood"] for r in rs) / sum(r["words"] for r in rs))  # noqa: E731
    assert delta("perplexity", ppl(uniform), ppl(base)) == pytest.approx(100 * (math.exp(0.01) - 1))
    # documents are paired by id; too few, or no unit for the metric: none
    assert perplexity_change_stderr(mixed[:1], base, "word_perplexity") is None
    assert perplexity_change_stderr(mixed, base, "bits_per_byte") is None
    assert perplexity_change_stderr(list(reversed(mixed)), base, "word_perplexity") == pytest.approx(se, rel=0.5)


def test_speed_is_the_median_over_seeds_and_a_disturbed_setting_is_marked():
    from smf.study.report import _speed

    steady, disturbed = row("smf-tfidf top_t=300", "smf-tfidf", 30, [0, 0]), row("lora", "lora", 30, [0, 0])
    res = results([steady, disturbed])
    res["runs"] = ([{"label": steady["label"], "train_tokens_per_s": v} for v in (100.0, 110.0, 104.0)]
                   + [{"label": "lora", "train_tokens_per_s": v} for v in (60.0, 25.0, 58.0)])
    assert _speed(res, steady) == "104"
    assert _speed(res, disturbed) == "58 †"  # 60 / 25 > 2: one run shared the machine
    res["runs"][-2]["train_tokens_per_s"] = 31.0  # 60 / 31 < 2: not marked
    assert _speed(res, disturbed) == "58"


def test_within_tolerance_means_beyond_the_95_percent_uncertainty():
    """A probe whose mean change is inside the tolerance but whose 95 % interval reaches past it
    is not claimed as within; one whose interval fits is; one whose mean is outside is not."""
    sure = row("smf-tfidf", "smf-tfidf", 30, [0.2, -0.3], std=0.5, n=4)  # bounds 0.2 + 1.96·0.25 = 0.69, 0.79
    loose = row("smf-tfidf", "smf-tfidf", 30, [0.2, -0.3], std=1.0, n=4)  # probe1: 0.3 + 1.96·0.5 = 1.28 > 1
    outside = row("smf-tfidf", "smf-tfidf", 30, [1.2, 0.0], std=0.0)
    assert within_words(sure, ["probe0", "probe1"], 1.0) == "every probe within 1 of base beyond the 95 % uncertainty."
    assert within_words(loose, ["probe0", "probe1"], 1.0) == (
        "every probe within 1 of base on the mean, not beyond the 95 % uncertainty (probe1: -0.3 ± 1.0).")
    assert within_words(outside, ["probe0", "probe1"], 1.0) == "not every probe within 1 of base."
    # one seed: the paired standard error over items is the noise
    single = row("smf-tfidf", "smf-tfidf", 30, [0.0, 0.5], n=1)
    single["probe1"]["delta_stderr"] = 0.3
    assert "not beyond" in within_words(single, ["probe0", "probe1"], 1.0)
    single["probe1"]["delta_stderr"] = 0.2
    assert "beyond the 95 % uncertainty." in within_words(single, ["probe0", "probe1"], 1.0)
    assert "beyond the 95 % uncertainty" in verdict(results([sure]))
    # 42.0 % against 43.0 % is -1.0000000000000009 points in floats: a change of exactly the tolerance is within it
    exact = row("smf-tfidf", "smf-tfidf", 30, [100 * (0.42 - 0.43), 0.0], std=0.0)
    assert within_words(exact, ["probe0", "probe1"], 1.0) == "every probe within 1 of base beyond the 95 % uncertainty."


def test_seeds_and_items_combine_in_the_noise():
    """Several seeds score the same items: the items' share of the uncertainty stays beside the
    seed spread, and results collected before it was recorded keep the seed spread alone."""
    r = row("smf-tfidf", "smf-tfidf", 30, [0.5, 0.0], std=1.0, n=3)
    assert noise(r["probe0"]) == pytest.approx(1.0 / math.sqrt(3))
    r["probe0"]["delta_stderr"] = 0.5
    assert noise(r["probe0"]) == pytest.approx(math.hypot(1.0 / math.sqrt(3), 0.5))


def test_seeds_change_stderr_averages_each_item_over_seeds():
    from smf.stats import change_stderr, perplexity_change_stderr, seeds_change_stderr

    acc = lambda flags: {"kind": "mcq", "headline": {"metric": "acc"},  # noqa: E731
                         "records": [{"id": str(i), "correct": bool(f)} for i, f in enumerate(flags)]}
    base, a, b = acc([1, 0, 1, 0]), acc([1, 1, 1, 0]), acc([1, 1, 0, 0])
    diffs = [0.0, 1.0, -0.5, 0.0]  # per item: the seeds' mean minus base
    mean = sum(diffs) / 4
    expected = 100 * math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3 / 4)
    assert seeds_change_stderr([a, b], base) == pytest.approx(expected)
    assert seeds_change_stderr([a], base) == change_stderr(a, base)
    ppl = lambda lls: {"kind": "perplexity", "headline": {"metric": "word_perplexity"},  # noqa: E731
                       "records": [{"id": str(i), "loglikelihood": ll, "words": 10} for i, ll in enumerate(lls)]}
    pb, p1 = ppl([-30.0, -25.0, -40.0]), ppl([-31.0, -25.5, -39.0])
    # two identical seeds: the same bootstrap draws, so the same number as one seed
    assert seeds_change_stderr([p1, p1], pb) == pytest.approx(perplexity_change_stderr(p1["records"], pb["records"], "word_perplexity"))
    p2 = ppl([-29.0, -24.5, -41.0])  # the mirror image of p1 around base: every draw's mean change is about 0
    assert seeds_change_stderr([p1, p2], pb) < 0.2 * perplexity_change_stderr(p1["records"], pb["records"], "word_perplexity")


def test_a_study_without_forgetting_probes_reports_its_gain_and_draws_no_tradeoff(tmp_path, monkeypatch):
    """`probes: []` (a study that compares settings on validation only) once crashed after every run had finished,
    drawing a trade-off plot with no columns."""
    import smf.study.report as report

    res = results([row("smf-tfidf", "smf-tfidf", 12.5, [])]) | {"probes": [], "runs": [{"curve": None}]}
    text = verdict(res)
    assert "+12.5 pp on task" in text and "no forgetting probes" in text and "within" not in text
    monkeypatch.setattr(report, "report_text", lambda r: "# study\n")
    report.write_report(res, tmp_path)
    assert (tmp_path / "report.md").read_text().startswith("# study") and not (tmp_path / "tradeoff.png").exists()
