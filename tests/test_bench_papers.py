"""`python -m bench papers`: its line format and the functions that decide each claim, on small
synthetic figures (the bench itself trains for minutes and is not run here)."""

from __future__ import annotations

import math

from bench import papers


def verdict(result: tuple[bool, str]) -> bool:
    ok, why = result
    assert isinstance(ok, bool) and why  # every verdict says why
    return ok


def test_a_line_carries_ours_and_the_papers_figure():
    assert papers.beside("0.712", "0.80…0.91") == "0.712 (paper: 0.80…0.91)"
    assert papers.beside("0.712") == "0.712"  # no parenthesis where the paper gives nothing
    assert papers.num(0.71234) == "0.712" and papers.num(66.66, 1) == "66.7"
    assert papers.num(float("nan")) == papers.num(None) == "nan"
    assert papers.claim(True, "why").startswith("reproduced — ")
    assert papers.claim(False, "why").startswith("not reproduced — ")
    assert papers.interval([0.9, 0.9, 0.9]) == "0.900 ± 0.000 (3 seeds)"


def test_proxies_confidence_and_bi_acc_must_both_beat_holdout_retraining():
    good = {"confidence": 0.8, "bi_acc": 0.7, "ho_ret": 0.6, "loss": 0.9}
    ok, why = papers.judge_proxies(good)
    assert ok and "closest of all: loss" in why
    assert not verdict(papers.judge_proxies({**good, "bi_acc": 0.5}))
    assert not verdict(papers.judge_proxies({"confidence": 0.8, "ho_ret": 0.6}))  # bi_acc missing: not judged true


def test_flipped_needs_a_model_that_fits_them():
    assert verdict(papers.judge_flipped(0.97, 0.99))
    assert not verdict(papers.judge_flipped(0.90, 0.99))
    ok, why = papers.judge_flipped(0.99, 0.4)  # a high AUROC on a model that never fitted them does not count
    assert not ok and "fits only" in why
    assert not verdict(papers.judge_flipped(0.99, None))


def test_rum_must_beat_vanilla_beyond_the_seeds_noise():
    assert verdict(papers.judge_rum([0.95, 0.96, 0.94], [0.90, 0.90, 0.91], [0.9] * 3))
    ok, why = papers.judge_rum([0.95, 0.85, 0.93], [0.90, 0.90, 0.91], [0.9] * 3)
    assert not ok and "holds 0" in why
    ok, why = papers.judge_rum([0.80, 0.81, 0.79], [0.90, 0.90, 0.91], [0.9] * 3)
    assert not ok and "vanilla is better" in why
    ok, why = papers.judge_rum([0.95], [0.90], [0.9])
    assert not ok and "no interval" in why


def test_mnemonic_needs_all_three_bars():
    assert verdict(papers.judge_mnemonic(0.0, 0.005, 500.0))
    assert not verdict(papers.judge_mnemonic(0.2, 0.005, 500.0))  # the class still recognised
    assert not verdict(papers.judge_mnemonic(0.0, 0.03, 500.0))  # the other classes lost 3 points
    assert not verdict(papers.judge_mnemonic(0.0, 0.0, 3.0))  # not faster than the baselines were


def test_deepobliviate_takes_the_median_speed_up_and_the_worst_accuracy():
    assert verdict(papers.judge_deepobliviate([70.0, 80.0, 10.0], [99.5, 100.0, 99.1], [1, 1, 9], 100))
    assert not verdict(papers.judge_deepobliviate([70.0, 20.0, 10.0], [100.0] * 3, [1, 4, 9], 100))
    ok, why = papers.judge_deepobliviate([90.0] * 3, [99.5, 98.0, 100.0], [1, 1, 1], 100)
    assert not ok and "98.0%" in why


def test_sd_loss_is_judged_on_paired_runs():
    assert verdict(papers.judge_sd([(1.0, 0.5), (2.0, 1.0), (1.0, 1.5)]))
    ok, why = papers.judge_sd([(1.0, 0.5), (1.0, 1.5)])  # one of two is not "most"
    assert not ok and "1 of 2" in why


def test_rank_needs_a_positive_significant_correlation():
    assert verdict(papers.judge_rank(0.8, 0.001, 18))
    assert not verdict(papers.judge_rank(0.8, 0.2, 4))
    assert not verdict(papers.judge_rank(-0.8, 0.001, 18))
    assert not verdict(papers.judge_rank(math.nan, math.nan, 18))


def _case(forget=0.0, retained=0.95, before=0.95):
    return {"forget": forget, "retained": retained, "retained_before": before}


def test_mnemonic_under_the_papers_protocol_needs_every_case():
    assert verdict(papers.judge_mnemonic_classes([_case(), _case(retained=0.955)], 300.0))
    ok, why = papers.judge_mnemonic_classes([_case(), _case(forget=0.4)], 300.0)  # one class still recognised
    assert not ok and "1 of 2 cases" in why
    ok, why = papers.judge_mnemonic_classes([_case(), _case(retained=0.92)], 300.0)  # 3 points lost on one
    assert not ok and "lost 3.0 points" in why
    assert not verdict(papers.judge_mnemonic_classes([_case()], 2.0))  # not faster than retraining enough
    assert not verdict(papers.judge_mnemonic_classes([], 300.0))


def test_sd_loss_under_the_papers_protocol_needs_one_weight_lower_on_every_seed_at_no_accuracy_cost():
    lower = [(1.0, 0.8, 0.95, 0.95), (1.2, 1.0, 0.94, 0.945)]
    mixed = [(1.0, 0.8, 0.95, 0.95), (1.0, 1.1, 0.95, 0.95)]
    ok, why = papers.judge_sd_protocol({1.0: mixed, 5.0: lower})
    assert ok and "λ 5: lower in 2 of 2 seeds" in why and "λ 1: lower in 1 of 2" in why
    assert not verdict(papers.judge_sd_protocol({1.0: mixed}))
    costly = [(1.0, 0.5, 0.95, 0.90), (1.0, 0.5, 0.95, 0.92)]  # lower, but 4 points of test accuracy lost
    ok, why = papers.judge_sd_protocol({25.0: costly})
    assert not ok and "−4.0 points" in why
    assert not verdict(papers.judge_sd_protocol({5.0: [(1.0, 0.5, 0.9, 0.9)]}))  # one seed cannot show it
    assert not verdict(papers.judge_sd_protocol({}))


def test_deepobliviate_bounds_say_what_each_rule_can_reach():
    text = papers.deepobliviate_bounds([51, 100, 91], 100)  # chains of 50, 1 and 10 blocks
    assert "median 10.0×" in text and "B/2 = 50.0×" in text and "B/15 = 6.7×" in text
