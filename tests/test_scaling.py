import math

import pytest

from gptlib.scaling import (
    CHINCHILLA,
    CHINCHILLA_TOKENS_PER_PARAM,
    chinchilla_loss,
    chinchilla_optimal,
    kaplan_loss,
    optimal_size_for_ratio,
    training_flops,
)


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


def test_training_flops_is_six_n_d() -> None:
    # GPT-3 175B on 300B tokens: Brown et al. 2020, Table D.1 gives 3.14e23 FLOPs.
    assert training_flops(175e9, 300e9) == pytest.approx(3.15e23)
    with pytest.raises(ValueError, match="n_tokens"):
        training_flops(1e9, 0)


def test_optimal_size_for_ratio_spends_the_budget_at_the_ratio() -> None:
    n, d = optimal_size_for_ratio(training_flops(175e9, 300e9))
    assert d / n == pytest.approx(CHINCHILLA_TOKENS_PER_PARAM)
    assert training_flops(n, d) == pytest.approx(training_flops(175e9, 300e9))
    # At GPT-3's budget: roughly 50B parameters on 1T tokens.
    assert n == pytest.approx(51.2e9, rel=0.01) and d == pytest.approx(1.02e12, rel=0.01)
    # Chinchilla itself (70B on 1.4T) sits on the rule.
    assert optimal_size_for_ratio(training_flops(70e9, 1.4e12))[0] == pytest.approx(70e9)
    with pytest.raises(ValueError, match="tokens_per_param"):
        optimal_size_for_ratio(1e21, tokens_per_param=0)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: kaplan_loss("1e9"), TypeError, "n_params"),
        (lambda: kaplan_loss(True), TypeError, "n_params"),
        (lambda: kaplan_loss(None), TypeError, "n_params"),
        (lambda: kaplan_loss(float("inf")), ValueError, "n_params"),
        (lambda: kaplan_loss(float("nan")), ValueError, "n_params"),
        (lambda: chinchilla_loss(1e9, float("inf")), ValueError, "n_tokens"),
        (lambda: chinchilla_loss(1e9, [1e9]), TypeError, "n_tokens"),
        (lambda: chinchilla_optimal("1e21"), TypeError, "flops"),
        (lambda: training_flops(1e9, -1), ValueError, "n_tokens"),
        (lambda: optimal_size_for_ratio(1e21, "20"), TypeError, "tokens_per_param"),
        (lambda: optimal_size_for_ratio(float("inf")), ValueError, "flops"),
    ],
    ids=["text", "bool", "None", "inf params", "NaN", "inf tokens", "list", "text flops",
         "negative tokens", "text ratio", "inf flops"],
)  # fmt: skip
def test_every_bad_number_is_named_not_computed(call, error, name) -> None:
    with pytest.raises(error, match=name):
        call()


def test_numpy_numbers_and_one_element_tensors_give_floats() -> None:
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    flops = training_flops(torch.tensor(1e9), np.int64(10**10))
    assert type(flops) is float and flops == 6e19
