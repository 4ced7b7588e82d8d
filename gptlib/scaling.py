"""Scaling laws: loss against model size (Kaplan et al. 2020), Chinchilla's loss surface and
compute-optimal frontier (Hoffmann et al. 2022), and the budget C = 6·N·D that links them.

Taught in notebooks/09_gpt3.ipynb; notebooks/01_history.ipynb uses the budget and the rule of
about 20 tokens per parameter. Constants: Kaplan et al. 2020 §1.2 and Hoffmann et al. 2022
Eq. 10 (full references in notebooks/references.md). Kaplan's N counts non-embedding parameters
and its losses are nats per token on WebText2 with the GPT-2 tokenizer; Chinchilla's N counts
all parameters. Neither set of constants transfers to another tokenizer or data set. Every
function takes finite positive numbers (NumPy numbers and one-element tensors too) and returns
floats; anything else (a string, a bool, NaN, inf, 0) raises a TypeError or ValueError that
names the argument.
"""

from __future__ import annotations

from .sampling import check_real

# Kaplan et al. 2020 §1.2, L(N) = (N_c / N) ** alpha_N
KAPLAN_ALPHA_N = 0.076
KAPLAN_N_C = 8.8e13
# Hoffmann et al. 2022 Eq. 10 (Approach 3), L(N, D) = E + A / N**alpha + B / D**beta
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
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


def chinchilla_loss(n_params: float, n_tokens: float) -> float:
    """Chinchilla's fitted loss E + A/N^alpha + B/D^beta for N parameters trained on D tokens."""
    n_params, n_tokens = _check_positive(n_params=n_params, n_tokens=n_tokens)
    c = CHINCHILLA
    return c["E"] + c["A"] / n_params ** c["alpha"] + c["B"] / n_tokens ** c["beta"]


def chinchilla_optimal(flops: float) -> tuple[float, float]:
    """The (N, D) that minimise chinchilla_loss under the budget C = 6·N·D FLOPs.

    N_opt = G·(C/6)^a and D_opt = (C/6)^b / G, with G = (alpha·A / (beta·B))^(1/(alpha+beta)),
    a = beta/(alpha+beta), b = alpha/(alpha+beta) (Hoffmann et al. 2022, Eq. 4).
    """
    (flops,) = _check_positive(flops=flops)
    c = CHINCHILLA
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
