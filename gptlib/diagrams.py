"""The book's diagrams, drawn with matplotlib from a config or from numbers, never pasted images.

Each function draws on a given Axes and returns it, so a chapter can put two diagrams side by
side (post-LN next to pre-LN) and a test can read back what was drawn: every box carries a
`gid` naming its part, and every size or count it prints comes from the config.

Taught in notebooks/02_first_gpt.ipynb (the whole model), 04_attention.ipynb (projections and
heads), 05_positional_encodings.ipynb (the rotation of a pair) and 06_transformer_block.ipynb
(a block, its norms and where dropout acts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from matplotlib.axes import Axes
from matplotlib.patches import Arc, FancyArrowPatch, FancyBboxPatch, Rectangle

from .config import GPTConfig
from .positional import Rotary

__all__ = [
    "draw_attention_heads",
    "draw_block",
    "draw_gpt",
    "draw_rotation",
    "parameter_breakdown",
]

COLOURS = {
    "embedding": "#d7ecfa",
    "position": "#e2f0cb",
    "attention": "#fde2e4",
    "mlp": "#fff1c1",
    "norm": "#e8dff5",
    "dropout": "#eeeeee",
    "plain": "white",
}
NORM_NAMES = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm"}


def _check(config: GPTConfig, ax: Axes) -> None:
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
    if not isinstance(ax, Axes):
        raise TypeError(
            f"ax must be a matplotlib Axes, got {type(ax).__name__}; make one with "
            "fig, ax = plt.subplots()"
        )


def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str, kind: str) -> None:
    """A rounded box centred on (x, y), tagged with gid=kind so a test can find it."""
    patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.03",
                           facecolor=COLOURS.get(kind, "white"), edgecolor="0.35", gid=kind)  # fmt: skip
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5, gid=kind)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], **style) -> None:
    style = {"color": "0.3", **style}
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, **style))


def parameter_breakdown(config: GPTConfig) -> dict[str, int]:
    """Parameters of GPT(config) by part, counted on the meta device (no memory is used).

    Keys: token_embedding, position_embedding (0 unless learned), attention, feed_forward and
    norms (each per block), final_norm, lm_head (0 when tied to the token embedding). The
    total, token + position + n_layer·(attention + feed_forward + norms) + final + head,
    equals `GPT.count_params(config)`; tests/test_diagrams.py checks it for every preset.
    Taught in notebooks/02_first_gpt.ipynb.
    """
    from .model import GPT  # model imports nothing from here; a late import avoids a cycle

    with torch.device("meta"):
        model = GPT(config)

    def count(module: torch.nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    block = model.blocks[0]
    return {
        "token_embedding": model.tok_emb.weight.numel(),
        "position_embedding": count(model.pos_emb),
        "attention": count(block.attn),
        "feed_forward": count(block.mlp),
        "norms": count(block.ln_1) + count(block.ln_2),
        "final_norm": count(model.ln_f),
        "lm_head": 0 if config.tie_embeddings else count(model.lm_head),
    }


def _mlp_label(config: GPTConfig) -> str:
    d, hidden = config.n_embd, config.d_ff
    if config.mlp == "swiglu":
        return f"SwiGLU {d} → 2×{hidden} → {d}"
    if config.mlp == "moe":
        return f"{config.n_experts} experts {d} → {hidden} → {d}, top-{config.n_experts_per_token}"
    return f"{d} → {hidden} → {d}, {config.activation}"


def _attention_label(config: GPTConfig) -> str:
    heads = f"causal, {config.n_head} heads"
    if config.n_kv_head != config.n_head:
        heads += f", {config.n_kv_head} kv"
    return heads + {"rotary": ", rotary q·k", "alibi": ", ALiBi bias"}.get(config.position, "")


def draw_gpt(config: GPTConfig, ax: Axes, title: str = "GPT") -> Axes:
    """The whole model as boxes, from token ids (bottom) to next-token probabilities (top).

    Embeddings, the stack of n_layer blocks (wired as config.norm_placement says), the final
    norm when config.final_norm, and the language-model head, tied to the token embedding (a
    dashed arrow) or a matrix of its own. Each box prints its shape and parameter count from
    `parameter_breakdown`; the title ends with the total. Returns ax. Raises TypeError for a
    config that is not a GPTConfig or an ax that is not an Axes.
    Taught in notebooks/02_first_gpt.ipynb.
    """
    _check(config, ax)
    V, T, d, L = config.vocab_size, config.block_size, config.n_embd, config.n_layer
    counts = parameter_breakdown(config)
    norm = NORM_NAMES[config.norm]
    scaled = " · √d" if config.scale_embeddings else ""
    _box(ax, 0, 0, 2.6, 0.45, f"token ids: (batch, up to {T} positions)", "plain")
    if config.position in ("learned", "sinusoidal"):
        _box(ax, -1.05, 1.1, 1.9, 0.6,
             f"token embedding{scaled}\n{V} × {d} = {counts['token_embedding']:,}", "embedding")  # fmt: skip
        table = (f"position embedding\n{T} × {d} = {counts['position_embedding']:,}"
                 if config.position == "learned" else "sinusoidal positions\nfixed, 0 parameters")  # fmt: skip
        _box(ax, 1.05, 1.1, 1.9, 0.6, table, "position")
        _arrow(ax, (-0.6, 0.23), (-1.0, 0.8))
        _arrow(ax, (0.6, 0.23), (1.0, 0.8))
        _box(ax, 0, 2.0, 0.45, 0.4, "+", "plain")
        _arrow(ax, (-1.05, 1.4), (-0.25, 1.95))
        _arrow(ax, (1.05, 1.4), (0.25, 1.95))
    else:  # rotary and ALiBi act inside attention; "none" gives no position at all
        _box(ax, 0, 1.1, 2.4, 0.6,
             f"token embedding{scaled}\n{V} × {d} = {counts['token_embedding']:,}", "embedding")  # fmt: skip
        _arrow(ax, (0, 0.23), (0, 0.8))
        _arrow(ax, (0, 1.4), (0, 2.2))
    if config.dropout:
        ax.text(0.3, 2.38, f"dropout {config.dropout:g}", fontsize=7.5, color="0.3")
    ax.add_patch(FancyBboxPatch((-1.75, 2.55), 3.5, 1.9, boxstyle="round,pad=0.05",
                                facecolor="none", edgecolor="0.5", linestyle="--"))  # fmt: skip
    per_block = counts["attention"] + counts["feed_forward"] + counts["norms"]
    ax.text(1.85, 3.5, f"× {L}\nblocks\n{per_block:,}\neach", ha="left", va="center", fontsize=8.5)
    attention = f"{_attention_label(config)}: {counts['attention']:,}"
    mlp = f"{_mlp_label(config)}: {counts['feed_forward']:,}"
    if config.norm_placement == "parallel":
        second = f"{norm}(x)" if config.shared_norm else f"{norm}₂(x)"
        _box(ax, 0, 3.5, 3.2, 1.2,
             f"x + attention({norm}(x))\n{attention}\n+ MLP({second})\n{mlp}", "attention")  # fmt: skip
        _arrow(ax, (0, 2.2), (0, 2.85))
    else:
        pre = config.norm_placement == "pre"
        first = f"x + attention({norm}(x))" if pre else f"{norm}(x + attention(x))"
        second = f"x + MLP({norm}(x))" if pre else f"{norm}(x + MLP(x))"
        _box(ax, 0, 3.0, 3.4, 0.5, f"{first}\n{attention}", "attention")
        _box(ax, 0, 4.0, 3.4, 0.5, f"{second}\n{mlp}", "mlp")
        _arrow(ax, (0, 2.2), (0, 2.75))
        _arrow(ax, (0, 3.25), (0, 3.75))
    top = 4.25
    if config.final_norm:
        _box(ax, 0, 5.0, 2.0, 0.4, f"final {norm}: {counts['final_norm']:,}", "norm")
        _arrow(ax, (0, top), (0, 4.8))
        top = 5.2
    head = ("language-model head: h · Wᵀ (tied: 0 new)" if config.tie_embeddings
            else f"language-model head: its own {d} × {V}: {counts['lm_head']:,}")  # fmt: skip
    _box(ax, 0, 5.9, 3.2, 0.5, f"{head}\nlogits: one per position and token ({V})", "embedding")
    _arrow(ax, (0, top), (0, 5.65))
    _box(ax, 0, 6.8, 3.2, 0.4, "softmax: next-token probabilities", "plain")
    _arrow(ax, (0, 6.15), (0, 6.6))
    if config.tie_embeddings:  # the head's W is the token embedding itself
        x_emb = -2.0 if config.position in ("learned", "sinusoidal") else -1.2
        ax.add_patch(FancyArrowPatch((x_emb, 1.1), (-1.6, 5.9), arrowstyle="-|>", mutation_scale=11,
                                     color="tab:blue", linestyle="--",
                                     connectionstyle="arc3,rad=-0.35", gid="tied"))  # fmt: skip
        ax.text(-2.55, 3.5, "same matrix W\n(tied)", color="tab:blue", fontsize=9, ha="center")
    total = sum(counts.values()) + (L - 1) * per_block
    ax.set(xlim=(-3.2, 2.6), ylim=(-0.4, 7.2), title=f"{title} ({total:,} parameters)")
    ax.axis("off")
    return ax


def _segments(n: int, shown: int) -> list[str]:
    """Head labels for a bar of n heads, at most `shown` of them (the last one after a gap)."""
    if n <= shown:
        return [str(h) for h in range(n)]
    return [str(h) for h in range(shown - 2)] + ["…", str(n - 1)]


def draw_attention_heads(config: GPTConfig, ax: Axes, max_heads: int = 8) -> Axes:
    """The Q/K/V projections of one attention layer and how their channels split into heads.

    x (B, T, n_embd) is projected by W_q, W_k, W_v (one fused `qkv` layer in gptlib) to
    n_head query heads and n_kv_head key and value heads of head_dim channels each; query
    head h reads key/value head h // (n_head / n_kv_head), shown by a shared colour (GQA and
    MQA). Each head attends on its own, dropout acting on its weights (p = config.dropout),
    the heads are concatenated, projected back by W_o and dropped out again before the
    residual add. Bars longer than max_heads heads show the first and last ones. Every head
    segment carries gid "q-head", "k-head" or "v-head". Returns ax. Raises TypeError for a
    config that is not a GPTConfig or an ax that is not an Axes, ValueError for max_heads < 3.
    Taught in notebooks/04_attention.ipynb.
    """
    _check(config, ax)
    if max_heads < 3:
        raise ValueError(f"max_heads={max_heads} is too few; show at least 3 heads per bar")
    C, H, G, hd = config.n_embd, config.n_head, config.n_kv_head, config.head_dim
    group, p = H // G, config.dropout
    _box(ax, 0.9, 1.5, 1.5, 0.9, f"x\n(B, T, {C})", "plain")
    width = 4.0 / min(H, max_heads)
    for name, n, y in (("q", H, 3.0), ("k", G, 1.5), ("v", G, 0.0)):
        _arrow(ax, (1.65, 1.5), (2.55, y), color="0.45")
        bar_end = 2.6 + min(n, max_heads) * width + 0.1
        _arrow(ax, (bar_end, y), (7.05, 2.3 if y else 1.6), color="0.45")
        ax.text(2.6, y + 0.35, f"W_{name}: {C} × {n * hd}  →  {n} head{'s' * (n > 1)} × {hd}",
                fontsize=8, va="bottom")  # fmt: skip
        for i, label in enumerate(_segments(n, max_heads)):
            head = n - 1 if label == "…" else int(label)
            kv = head // group if name == "q" else head
            colour = "white" if label == "…" else f"C{kv % 10}"
            ax.add_patch(Rectangle((2.6 + i * width, y - 0.3), width, 0.6, facecolor=colour,
                                   alpha=0.35 if name == "q" else 0.6, edgecolor="0.3",
                                   gid=f"{name}-head"))  # fmt: skip
            ax.text(2.6 + (i + 0.5) * width, y, label if label == "…" else f"{name}{label}",
                    ha="center", va="center", fontsize=7.5)  # fmt: skip
    shared = f"each kv head serves {group} query heads" if group > 1 else "one kv head per q head"
    _box(ax, 8.7, 2.3, 3.2, 1.7,
         f"per query head h, kv head g = h // {group}:\nsoftmax(q_h k_gᵀ / √{hd} + mask)\n"
         f"→ attention dropout p = {p:g}\n→ weights · v_g: (B, T, {hd})\n({shared})", "attention")  # fmt: skip
    _box(ax, 8.7, 0.9, 3.2, 0.45, f"concatenate heads: (B, T, {H * hd})", "plain")
    _box(ax, 8.7, 0.2, 3.2, 0.45, f"W_o: {H * hd} × {C}, then dropout p = {p:g}", "dropout")
    _box(ax, 8.7, -0.5, 3.2, 0.45, f"out: (B, T, {C}), added to the residual", "plain")
    _arrow(ax, (8.7, 1.45), (8.7, 1.13))
    _arrow(ax, (8.7, 0.67), (8.7, 0.43))
    _arrow(ax, (8.7, -0.03), (8.7, -0.27))
    kind = "multi-head" if G == H else ("multi-query" if G == 1 else "grouped-query")
    ax.set(xlim=(0, 10.4), ylim=(-0.9, 3.6),
           title=f"{kind} attention: {H} query heads, {G} key/value head{'s' * (G > 1)}, head_dim {hd}")  # fmt: skip
    ax.axis("off")
    return ax


def draw_block(config: GPTConfig, ax: Axes, title: str | None = None) -> Axes:
    """One transformer block as its residual stream: where the norms, branches and dropouts sit.

    The stream runs up the left; each branch (attention, then the MLP) leaves it, passes its
    norm (pre-LN: before the branch) and a dropout of p = config.dropout on its output, and is
    added back at a ⊕; post-LN normalises the stream itself after each ⊕ (Vaswani et al. 2017,
    §3.1; GPT-1), parallel blocks (GPT-J, GPT-NeoX) feed both branches from the same point.
    Attention also drops out its weights. Boxes carry gid "norm", "attention", "mlp",
    "dropout" or "add". Returns ax. Raises TypeError for a config that is not a GPTConfig or
    an ax that is not an Axes. Taught in notebooks/06_transformer_block.ipynb.
    """
    _check(config, ax)
    norm, p = NORM_NAMES[config.norm], config.dropout
    attention = f"attention\n(weights: dropout {p:g})"
    ax.annotate("", xy=(0, 7.3), xytext=(0, -0.2),
                arrowprops=dict(arrowstyle="-|>", color="0.3", lw=1.5))  # fmt: skip
    ax.text(0.12, -0.2, "x: the residual stream", fontsize=8.5, va="center")

    def chain(x: float, y: float, steps: list[tuple[str, str]], width: float = 2.3) -> float:
        """Boxes stacked upwards from height y at column x, joined by arrows; returns the top."""
        for i, (text, kind) in enumerate(steps):
            if i:
                _arrow(ax, (x, y - 0.6), (x, y - 0.3))
            _box(ax, x, y, width, 0.55 if kind != "attention" else 0.65, text, kind)
            y += 0.9
        return y - 0.9

    def add(y: float, sources: list[tuple[float, float]]) -> None:
        for source in sources:
            _arrow(ax, source, (0.14, y))
        _box(ax, 0, y, 0.28, 0.28, "+", "add")

    def leave(y: float, x: float) -> None:  # the branch reads the stream here
        ax.plot([0, x, x], [y, y, y + 0.3], color="0.5", lw=1)

    if config.norm_placement in ("pre", "post"):
        pre = config.norm_placement == "pre"
        y = 0.3
        for name, kind in ((attention, "attention"), ("MLP", "mlp")):
            leave(y, 1.8)
            steps = [(norm, "norm")] * pre + [(name, kind), (f"dropout {p:g}", "dropout")]
            top = chain(1.8, y + 0.6, steps)
            add(top + 0.55, [(1.8, top + 0.28)])
            y = top + 0.55
            if not pre:  # post-LN: the stream itself is normalised after the sum
                _box(ax, 0, y + 0.55, 1.3, 0.4, norm, "norm")
                y += 0.55
            y += 0.35
    else:  # parallel: both branches read one point of the stream, both are added at once
        left, right = 1.25, 3.55  # two branch columns, each 2.15 wide: side by side, apart
        leave(0.3, (left + right) / 2)
        if config.shared_norm:
            _box(ax, (left + right) / 2, 0.9, 1.6, 0.45, norm, "norm")
            sources = [((left + right) / 2, 1.13)] * 2
        else:
            ax.plot([left, right], [0.6, 0.6], color="0.5", lw=1)
            _box(ax, left, 0.9, 1.5, 0.45, f"{norm} 1", "norm")
            _box(ax, right, 0.9, 1.5, 0.45, f"{norm} 2", "norm")
            sources = [(left, 1.13), (right, 1.13)]
        tops = []
        for (x, name, kind), source in zip(((left, attention, "attention"), (right, "MLP", "mlp")),
                                           sources, strict=True):  # fmt: skip
            _arrow(ax, source, (x, 1.6))
            steps = [(name, kind), (f"dropout {p:g}", "dropout")]
            tops.append((x, chain(x, 1.95, steps, width=2.15) + 0.28))
        add(3.6, tops)
    parallel = (
        "parallel, one shared norm (GPT-J)"
        if config.shared_norm
        else "parallel, two norms (GPT-NeoX)"
    )
    default = {"pre": "pre-LN (GPT-2 onwards)", "post": "post-LN (Transformer, GPT-1)",
               "parallel": parallel}[config.norm_placement]  # fmt: skip
    ax.set(xlim=(-0.9, 4.7), ylim=(-0.5, 7.5), title=title or default)
    ax.axis("off")
    return ax


def draw_rotation(
    q: Sequence[float] | torch.Tensor,
    k: Sequence[float] | torch.Tensor,
    m: float,
    n: float,
    ax: Axes,
    theta: float = 1.0,
) -> Axes:
    """One rotary pair: q at position m turned by m·θ, k at position n by n·θ, and their angle.

    q and k are 2-vectors (one pair of a head's dimensions); the rotations are gptlib's own
    `Rotary` (Su et al. 2021, §3.2). The faint arrows are q and k before rotation, the solid
    ones after; the title gives the angle between the rotated pair, which is the angle between
    q and k plus (m − n)·θ, so it depends on the offset only. The rotated arrows carry gid
    "q_m" and "k_n"; their tips are the rotated vectors. Returns ax. Raises TypeError for an
    ax that is not an Axes, ValueError for q or k that is not two numbers.
    Taught in notebooks/05_positional_encodings.ipynb.
    """
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    vectors = [torch.as_tensor(v, dtype=torch.float64).flatten() for v in (q, k)]
    if any(v.numel() != 2 for v in vectors):
        raise ValueError(
            f"q and k must each be 2 numbers (one rotary pair), got {vectors[0].numel()} and "
            f"{vectors[1].numel()}; pass one pair of a head's dimensions"
        )
    pair = torch.stack(vectors)
    rotary = Rotary(2, pairing="interleaved").double()  # θ_0 = 1: the angle is the position
    cos, sin = rotary.cos_sin(torch.tensor([m * theta, n * theta], dtype=torch.float64))
    rotated = rotary.rotate(pair, cos, sin)  # row 0: q at m, row 1: k at n
    reach = 1.15 * float(pair.norm(dim=1).max())
    for row, (name, angle, colour) in enumerate((("q", m * theta, "C0"), ("k", n * theta, "C3"))):
        start, end = pair[row].tolist(), rotated[row].tolist()
        ax.annotate("", xy=start, xytext=(0, 0),
                    arrowprops=dict(arrowstyle="-|>", color=colour, alpha=0.3, lw=1.5))  # fmt: skip
        ax.annotate("", xy=end, xytext=(0, 0), gid=f"{name}_{'m' if row == 0 else 'n'}",
                    arrowprops=dict(arrowstyle="-|>", color=colour, lw=2.2))  # fmt: skip
        position = m if row == 0 else n
        ax.text(*(1.08 * torch.tensor(end)).tolist(), f"{name} at {position:g}", color=colour,
                fontsize=9, ha="center", va="center")  # fmt: skip
        if math.remainder(angle, 2 * math.pi):  # unrotated, the faint arrow hides under the solid
            ax.text(
                *(1.08 * torch.tensor(start)).tolist(), name, color=colour, alpha=0.6, fontsize=9
            )
        first = math.degrees(math.atan2(start[1], start[0]))
        radius = (0.35 if row == 0 else 0.5) * reach
        sweep = math.degrees(angle) % 360  # the turn, counter-clockwise, from q (or k) on
        ax.add_patch(Arc((0, 0), 2 * radius, 2 * radius, theta1=first, theta2=first + sweep,
                         color=colour, lw=1))  # fmt: skip
    between = math.degrees(
        math.atan2(rotated[0, 1], rotated[0, 0]) - math.atan2(rotated[1, 1], rotated[1, 0])
    )
    between = (between + 180) % 360 - 180
    ax.set(xlim=(-reach, reach), ylim=(-reach, reach), aspect="equal",
           xlabel="first coordinate of the pair", ylabel="second coordinate",
           title=f"m = {m:g}, n = {n:g}: angle(q_m, k_n) = {between:.1f}°")  # fmt: skip
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    return ax
