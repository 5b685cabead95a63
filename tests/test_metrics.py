"""pass@k against brute force over k-subsets; summaries on hand-computed records."""
import itertools
import json
import math
import random

import pytest

from prompt_tree.tasks.metrics import format_table, pass_at_k, sample_passed, summarize


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (the first c correct) that hold a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 10])
def test_pass_at_k_equals_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            # the product form and the subset count agree to rounding: a few ulps per factor
            assert math.isclose(pass_at_k(n, c, k), _brute_pass_at_k(n, c, k), rel_tol=1e-12, abs_tol=1e-12)


def test_pass_at_k_random_against_exact_binomials():
    rng = random.Random(1)
    for _ in range(500):
        n = rng.randint(1, 300)
        c, k = rng.randint(0, n), rng.randint(1, n)
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)  # exact integers, one rounding
        assert math.isclose(pass_at_k(n, c, k), exact, rel_tol=1e-9, abs_tol=1e-12)


def test_pass_at_k_edges():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 6, 5) == 1.0  # n - c < k: every 5-subset has a correct sample
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert math.isnan(pass_at_k(3, 1, 5))  # k > n: not estimable
    assert pass_at_k(10**6, 1, 1) == pytest.approx(1e-6)  # large n stays stable
    for bad in [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 1, 0)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)
    with pytest.raises(TypeError):
        pass_at_k(5.0, 1, 1)


def test_sample_passed_requires_true_not_one():
    assert sample_passed([True, True])
    assert not sample_passed([])
    assert not sample_passed([True, 1])
    assert not sample_passed([True, -1])


def _records():
    return [
        # 4 samples, 2 correct; test fractions 1, 1, 1/2, 0
        {"problem_id": "a", "difficulty": "introductory",
         "results": [[True, True], [True, True], [True, False], [-2, -2]]},
        # 4 samples, none correct; fractions 2/3, 0, 0, 1/3
        {"problem_id": "b", "difficulty": "interview",
         "results": [[True, True, -1], [False] * 3, [-1] * 3, [True, False, False]]},
        # 1 sample, correct: counts for pass@1 only
        {"problem_id": "c", "difficulty": "introductory", "results": [[True]]},
    ]


def test_summarize_hand_computed():
    s = summarize(_records(), ks=(1, 2, 10))
    assert s["ks"] == [1, 2, 10]
    assert list(s["groups"]) == ["all", "introductory", "interview"]
    al = s["groups"]["all"]
    assert (al["problems"], al["samples"], al["correct_samples"]) == (3, 9, 3)
    assert al["pass_at_k"][1] == pytest.approx((0.5 + 0 + 1) / 3)
    # pass@2 over a and b only: a: 1 - C(2,2)/C(4,2) = 5/6; b: 0
    assert al["pass_at_k"][2] == pytest.approx((5 / 6 + 0) / 2) and al["pass_at_k_problems"][2] == 2
    assert al["pass_at_k"][10] is None and al["pass_at_k_problems"][10] == 0
    assert al["strict_accuracy"] == pytest.approx((0.5 + 0 + 1) / 3)
    tca_a, tca_b, tca_c = (1 + 1 + 0.5 + 0) / 4, (2 / 3 + 0 + 0 + 1 / 3) / 4, 1.0
    assert al["test_case_average"] == pytest.approx((tca_a + tca_b + tca_c) / 3)
    intro = s["groups"]["introductory"]
    assert intro["problems"] == 2 and intro["pass_at_k"][1] == pytest.approx(0.75)
    assert s["groups"]["interview"]["pass_at_k"][1] == 0.0


def test_summarize_validates_and_table_renders():
    with pytest.raises(ValueError, match="results"):
        summarize([{"problem_id": "x", "results": []}])
    with pytest.raises(ValueError, match="ks"):
        summarize(_records(), ks=(0,))
    s = summarize(_records(), ks=(1, 2, 10))
    table = format_table(s)
    lines = table.splitlines()
    assert lines[0].split("|")[1].strip() == "group" and "pass@2" in lines[0]
    assert "| all" in table and "50.00" in table and " (2)" in table and "-" in lines[2]
    # a JSON round trip (int keys become strings) still renders the same table
    assert format_table(json.loads(json.dumps(s))) == table


def test_fail_fast_records_make_the_test_case_average_a_marked_lower_bound():
    # sample 0 passed all 4 tests; sample 1 stopped at its 2nd test (fail-fast): 1 of 4 passed, not 1 of 2
    recs = [{"problem_id": "p", "difficulty": "interview", "results": [[True] * 4, [True, False]], "tests": 4}]
    g = summarize(recs, [1, 2])["groups"]["all"]
    assert g["test_case_average"] == pytest.approx((1.0 + 0.25) / 2)
    assert g["test_case_average_partial"] is True
    assert g["pass_at_k"][1] == pytest.approx(0.5) and g["strict_accuracy"] == pytest.approx(0.5)
    full = [{"problem_id": "p", "difficulty": "interview", "results": [[True] * 4, [True, False, -1, True]],
             "tests": 4}]
    gf = summarize(full, [1, 2])["groups"]["all"]
    assert gf["pass_at_k"] == g["pass_at_k"] and gf["test_case_average_partial"] is False
    assert g["test_case_average"] <= gf["test_case_average"]
    table = format_table(summarize(recs, [1]))
    assert "(partial)" in table and "lower bound" in table
    with pytest.raises(ValueError, match="tests"):
        summarize([dict(recs[0], tests=0)], [1])
