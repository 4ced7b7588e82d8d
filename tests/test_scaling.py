import math

import numpy as np
import pytest

from gptlib.scaling import (
    CHINCHILLA,
    CHINCHILLA_REFIT,
    CHINCHILLA_TOKENS_PER_PARAM,
    PowerLaw,
    chinchilla_loss,
    chinchilla_optimal,
    fit_power_law,
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


# ---------------------------------------------------------------------- fitting a power law
@pytest.mark.parametrize(
    "law",
    [PowerLaw(50.0, -0.15, 1.7), PowerLaw(3e3, -0.3, 0.4), PowerLaw(0.5, 0.2, 2.0)],
    ids=["gpt4-like", "steep", "rising"],
)
def test_fit_power_law_recovers_exact_laws_with_an_irreducible_term(law: PowerLaw) -> None:
    compute = np.geomspace(1e8, 1e12, 6)
    fitted = fit_power_law(compute, law(compute))
    assert fitted.a == pytest.approx(law.a, rel=1e-4)
    assert fitted.b == pytest.approx(law.b, rel=1e-4)
    assert fitted.c == pytest.approx(law.c, rel=1e-4)
    assert fitted(1e14) == pytest.approx(law(1e14), rel=1e-4)  # extrapolates 100x further


def test_fit_power_law_without_the_term_is_a_straight_line_in_log_log() -> None:
    law = PowerLaw(7.0, -0.076)
    compute = [1e3, 1e5, 1e7]
    fitted = fit_power_law(compute, law(np.array(compute)), irreducible=False)
    assert (fitted.a, fitted.b, fitted.c) == (pytest.approx(7.0), pytest.approx(-0.076), 0.0)


def test_the_irreducible_term_matters_when_extrapolating_a_curve_that_flattens() -> None:
    # Chinchilla's surface at a fixed 10B tokens is a power law in N plus a constant: a pure
    # power law fitted to the small models predicts too low a loss for a 100x larger one.
    sizes = np.geomspace(1e7, 1e9, 5)
    losses = np.array([chinchilla_loss(n, 1e10) for n in sizes])
    with_term, pure = fit_power_law(sizes, losses), fit_power_law(sizes, losses, False)
    truth = chinchilla_loss(1e11, 1e10)
    assert with_term(1e11) == pytest.approx(truth, rel=1e-4)
    assert pure(1e11) < truth - 0.03
    assert with_term.c == pytest.approx(CHINCHILLA["E"] + CHINCHILLA["B"] / 1e10**0.28, rel=1e-4)


def test_fit_power_law_with_noise_keeps_c_below_the_smallest_value() -> None:
    rng = np.random.default_rng(0)
    compute = np.geomspace(1e6, 1e10, 8)
    noisy = PowerLaw(20.0, -0.2, 1.0)(compute) * np.exp(rng.normal(0, 0.01, 8))
    fitted = fit_power_law(compute, noisy)
    assert 0 <= fitted.c < noisy.min()
    assert fitted(compute) == pytest.approx(noisy, rel=0.03)
    # Data with no floor at all: the fit settles on c = 0, the pure power law.
    assert fit_power_law(compute, PowerLaw(5.0, -0.1)(compute)).c == pytest.approx(0, abs=1e-3)


@pytest.mark.parametrize(
    "x, y, irreducible, message",
    [
        ([1, 2], [3, 2], True, "at least 3 points"),
        ([1], [3], False, "at least 2 points"),
        ([1, 2, 3], [3, 2], True, "equal length"),
        ([1, 2, 3], [3, 0, 1], True, "finite, positive"),
        ([1, -2, 3], [3, 2, 1], False, "finite, positive"),
        ([1, 2, float("nan")], [3, 2, 1], True, "finite, positive"),
    ],
)
def test_fit_power_law_refuses_bad_input(x, y, irreducible, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_power_law(x, y, irreducible)


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


def test_chinchilla_refit_frontier_is_near_twenty_tokens_per_parameter() -> None:
    # Besiroglu et al. 2024 refit: about 20 tokens per parameter, where Eq. 10 gives 50-120
    for flops in (1e21, 3.15e23, 1e25):
        n_opt, d_opt = chinchilla_optimal(flops, CHINCHILLA_REFIT)
        assert 6 * n_opt * d_opt == pytest.approx(flops)
        assert 15 < d_opt / n_opt < 25
        assert chinchilla_optimal(flops)[1] / chinchilla_optimal(flops)[0] > 45
    n_opt, d_opt = chinchilla_optimal(1e21, CHINCHILLA_REFIT)
    best = chinchilla_loss(n_opt, d_opt, CHINCHILLA_REFIT)
    for factor in (0.8, 1.25):
        n = n_opt * factor
        assert chinchilla_loss(n, 1e21 / (6 * n), CHINCHILLA_REFIT) > best


def test_chinchilla_constants_must_be_complete() -> None:
    with pytest.raises(ValueError, match="missing"):
        chinchilla_optimal(1e21, {"A": 1.0, "B": 1.0, "alpha": 0.3})
    with pytest.raises(ValueError, match="beta"):
        chinchilla_loss(1e9, 1e10, {**CHINCHILLA, "beta": 0.0})
