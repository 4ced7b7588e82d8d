"""Scaling laws: loss against model size (Kaplan et al. 2020), Chinchilla's loss surface and
compute-optimal frontier (Hoffmann et al. 2022), the budget C = 6·N·D that links them, and the
fit of a power law with an irreducible term that predicts a large run from small ones.

Taught in notebooks/09_gpt3.ipynb; notebooks/01_history.ipynb uses the budget and the rule of
about 20 tokens per parameter; notebooks/13_gpt4_era.ipynb fits and extrapolates. Constants: Kaplan et al. 2020 §1.2 and Hoffmann et al. 2022
Eq. 10, refitted by Besiroglu et al. 2024 (full references in notebooks/references.md). Kaplan's N counts non-embedding parameters
and its losses are nats per token on WebText2 with the GPT-2 tokenizer; Chinchilla's N counts
all parameters. Neither set of constants transfers to another tokenizer or data set. Every
function takes finite positive numbers (NumPy numbers and one-element tensors too) and returns
floats; anything else (a string, a bool, NaN, inf, 0) raises a TypeError or ValueError that
names the argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .sampling import check_real

# Kaplan et al. 2020 §1.2, L(N) = (N_c / N) ** alpha_N
KAPLAN_ALPHA_N = 0.076
KAPLAN_N_C = 8.8e13
# Hoffmann et al. 2022 Eq. 10 (Approach 3), L(N, D) = E + A / N**alpha + B / D**beta
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
# Besiroglu et al. 2024: the same surface refitted to a reconstruction of Hoffmann et al.'s data
CHINCHILLA_REFIT = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
# Hoffmann et al. 2022 §3 and Table 3 (Approaches 1 and 2): about 20 tokens per parameter
CHINCHILLA_TOKENS_PER_PARAM = 20.0


def _check_positive(**values: float) -> list[float]:
    """The values as finite positive floats; TypeError or ValueError naming a bad one.

    A string ("1e9"), a bool, NaN or inf is refused: each formula would give a number that
    means nothing (inf parameters have a loss of 0) or a deep TypeError.
    """
    checked = []
    for name, value in values.items():
        number = check_real(name, value, "a finite positive number")
        if not number > 0:
            raise ValueError(f"{name} must be a finite positive number, got {value!r}")
        checked.append(number)
    return checked


def kaplan_loss(n_params: float) -> float:
    """Kaplan et al.'s predicted loss (nats/token) of a model with n_params non-embedding
    parameters trained to convergence: (8.8e13 / N) ** 0.076."""
    (n_params,) = _check_positive(n_params=n_params)
    return (KAPLAN_N_C / n_params) ** KAPLAN_ALPHA_N


def _check_constants(constants: dict[str, float]) -> None:
    missing = {"E", "A", "B", "alpha", "beta"} - set(constants)
    if missing:
        raise ValueError(
            f"constants must give E, A, B, alpha and beta (like CHINCHILLA); missing {sorted(missing)}"
        )
    _check_positive(**{name: constants[name] for name in ("A", "B", "alpha", "beta")})


def chinchilla_loss(
    n_params: float, n_tokens: float, constants: dict[str, float] = CHINCHILLA
) -> float:
    """Chinchilla's fitted loss E + A/N^alpha + B/D^beta for N parameters trained on D tokens.

    `constants` defaults to Eq. 10 of Hoffmann et al. 2022 (CHINCHILLA); CHINCHILLA_REFIT is
    Besiroglu et al.'s 2024 refit. Raises ValueError for a non-positive N or D, or constants
    missing one of E, A, B, alpha, beta.
    """
    n_params, n_tokens = _check_positive(n_params=n_params, n_tokens=n_tokens)
    _check_constants(constants)
    c = constants
    return c["E"] + c["A"] / n_params ** c["alpha"] + c["B"] / n_tokens ** c["beta"]


def chinchilla_optimal(
    flops: float, constants: dict[str, float] = CHINCHILLA
) -> tuple[float, float]:
    """The (N, D) that minimise chinchilla_loss under the budget C = 6·N·D FLOPs.

    N_opt = G·(C/6)^a and D_opt = (C/6)^b / G, with G = (alpha·A / (beta·B))^(1/(alpha+beta)),
    a = beta/(alpha+beta), b = alpha/(alpha+beta) (Hoffmann et al. 2022, Eq. 4), for the
    constants of Eq. 10 (CHINCHILLA, the default) or another fit such as CHINCHILLA_REFIT.
    Raises ValueError for a non-positive budget or incomplete constants.
    """
    (flops,) = _check_positive(flops=flops)
    _check_constants(constants)
    c = constants
    total = c["alpha"] + c["beta"]
    g = (c["alpha"] * c["A"] / (c["beta"] * c["B"])) ** (1 / total)
    n_opt = g * (flops / 6) ** (c["beta"] / total)
    d_opt = (flops / 6) ** (c["alpha"] / total) / g
    return n_opt, d_opt


def training_flops(n_params: float, n_tokens: float) -> float:
    """Training compute C ≈ 6·N·D FLOPs of N parameters trained on D tokens.

    Two FLOPs per parameter per token for the forward pass and four for the backward pass
    (Kaplan et al. 2020 §2.1; Hoffmann et al. 2022 use the same C = 6ND). Taught in
    notebooks/01_history.ipynb.
    """
    n_params, n_tokens = _check_positive(n_params=n_params, n_tokens=n_tokens)
    return 6.0 * n_params * n_tokens


def optimal_size_for_ratio(
    flops: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM
) -> tuple[float, float]:
    """The (N, D) that spend `flops` = 6·N·D with D = tokens_per_param · N.

    Solving gives N = sqrt(C / (6·r)) and D = r·N. With r = 20 this is the rule of thumb read
    off Chinchilla's Approaches 1 and 2 (Hoffmann et al. 2022 §3, Table 3); chinchilla_optimal
    gives the frontier of the fitted Eq. 10 instead, which favours more tokens per parameter.
    Taught in notebooks/01_history.ipynb.
    """
    flops, tokens_per_param = _check_positive(flops=flops, tokens_per_param=tokens_per_param)
    n_params = (flops / (6.0 * tokens_per_param)) ** 0.5
    return n_params, tokens_per_param * n_params


@dataclass(frozen=True)
class PowerLaw:
    """y = a·x^b + c: a power law with an irreducible term c (c = 0: a pure power law).

    Call it on x (a number or a NumPy array) to evaluate it. Made by `fit_power_law`.
    """

    a: float
    b: float
    c: float = 0.0

    def __call__(self, x: ArrayLike) -> np.ndarray | float:
        return self.a * np.asarray(x, dtype=float) ** self.b + self.c


def fit_power_law(x: ArrayLike, y: ArrayLike, irreducible: bool = True) -> PowerLaw:
    """Fit y = a·x^b + c (irreducible=True) or y = a·x^b (False) to points with x, y > 0.

    The GPT-4 report fits the final loss against training compute this way, L(C) = a·C^b + c
    with an irreducible term c, from runs with up to 10,000x less compute (OpenAI 2023, §3.1,
    following Henighan et al. 2020); Kaplan et al. 2020 fit pure power laws. The fit
    minimises the squared error of log y, i.e. relative errors, so every point counts alike
    whatever its size; c is kept in [0, min y). Needs 3 points with the irreducible term, 2
    without; with exactly that many the curve passes through them. Taught in
    notebooks/13_gpt4_era.ipynb. Raises ValueError for mismatched lengths, too few points,
    or a value that is not positive and finite.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    needed = 3 if irreducible else 2
    if x.shape != y.shape or len(x) < needed:
        raise ValueError(
            f"fit_power_law needs x and y of equal length, at least {needed} points "
            f"({'a, b and c' if irreducible else 'a and b'}); got {len(x)} and {len(y)}"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and x.min() > 0 and y.min() > 0):
        raise ValueError("fit_power_law needs finite, positive x and y (it fits their logarithms)")
    scale = float(np.exp(np.log(x).mean()))  # fit on x / scale: a well-conditioned problem
    log_u, log_y = np.log(x / scale), np.log(y)

    def line(c: float) -> tuple[float, float, float]:
        """(log a, b, squared error) of the log-log line through y - c."""
        b, log_a = np.polyfit(log_u, np.log(y - c), 1)
        error = float(((np.log(np.exp(log_a) * np.exp(b * log_u) + c) - log_y) ** 2).sum())
        return log_a, b, error

    if not irreducible:
        log_a, b, _ = line(0.0)
        return PowerLaw(float(np.exp(log_a) * scale**-b), float(b))
    # Start from the best of a grid of c, then Gauss-Newton steps on (log a, b, c).
    grid = y.min() * (1 - np.geomspace(1.0, 1e-4, 200))
    c = min(grid, key=lambda c: line(c)[2])
    log_a, b, error = line(c)
    params = np.array([log_a, b, c])
    for _ in range(100):
        power = np.exp(params[0] + params[1] * log_u)
        model = power + params[2]
        residual = np.log(model) - log_y
        jacobian = np.stack([power, power * log_u, np.ones_like(log_u)], axis=1) / model[:, None]
        step = np.linalg.lstsq(jacobian, -residual, rcond=None)[0]
        for shrink in 0.5 ** np.arange(20):  # halve the step until the error falls
            trial = params + shrink * step
            trial[2] = min(max(trial[2], 0.0), y.min() * (1 - 1e-9))
            trial_model = np.exp(trial[0] + trial[1] * log_u) + trial[2]
            trial_error = float(((np.log(trial_model) - log_y) ** 2).sum())
            if trial_error < error:
                params, error = trial, trial_error
                break
        else:
            break
    log_a, b, c = params
    return PowerLaw(float(np.exp(log_a) * scale**-b), float(b), float(c))
