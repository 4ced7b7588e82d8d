import math

import pytest

from gptlib.scaling import CHINCHILLA, chinchilla_loss, chinchilla_optimal, kaplan_loss


def test_kaplan_loss_is_one_at_n_c_and_falls_with_size() -> None:
    assert kaplan_loss(8.8e13) == pytest.approx(1.0)
    assert kaplan_loss(1e9) > kaplan_loss(1e10)
    # a 10x larger model lowers the loss by a factor 10 ** 0.076
    assert kaplan_loss(1e9) / kaplan_loss(1e10) == pytest.approx(10**0.076)


def test_chinchilla_loss_approaches_e_with_infinite_model_and_data() -> None:
    assert chinchilla_loss(1e40, 1e40) == pytest.approx(CHINCHILLA["E"], abs=1e-6)
    assert chinchilla_loss(70e9, 1.4e12) < chinchilla_loss(70e9, 300e9)


def test_chinchilla_optimal_spends_the_budget_and_minimises_the_loss() -> None:
    flops = 1e21
    n_opt, d_opt = chinchilla_optimal(flops)
    assert 6 * n_opt * d_opt == pytest.approx(flops)
    best = chinchilla_loss(n_opt, d_opt)
    for factor in (0.5, 0.9, 1.1, 2.0):
        n = n_opt * factor
        assert chinchilla_loss(n, flops / (6 * n)) > best


def test_chinchilla_optimal_exponents() -> None:
    (n1, d1), (n2, d2) = chinchilla_optimal(1e20), chinchilla_optimal(1e22)
    a = CHINCHILLA["beta"] / (CHINCHILLA["alpha"] + CHINCHILLA["beta"])
    assert math.log(n2 / n1, 100) == pytest.approx(a)
    assert math.log(d2 / d1, 100) == pytest.approx(1 - a)


@pytest.mark.parametrize("bad", [0, -1.0])
def test_bad_input_names_the_argument(bad: float) -> None:
    with pytest.raises(ValueError, match="n_params"):
        kaplan_loss(bad)
    with pytest.raises(ValueError, match="n_tokens"):
        chinchilla_loss(1e9, bad)
    with pytest.raises(ValueError, match="flops"):
        chinchilla_optimal(bad)
