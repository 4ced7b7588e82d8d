"""Time greedy generation with gptlib's GPT (with and without its KV cache) against
transformers' GPT2LMHeadModel.generate.

Run from the repository root:  python benchmarks/generate.py
(options: --vocab-size 512 50257 --prompt-len 16 --new-tokens 256 --repeats 5 --threads 1
--device cpu; see --help)

Batch 1, a random prompt of 16 token ids, 256 new tokens picked greedily, for both models
built from the same sizes (4 layers, 4 heads, d=128 by default) with random weights.
gptlib: `model.generate(prompt, 256, temperature=0, use_cache=True)` and `use_cache=False`.
transformers: `model.generate(prompt, do_sample=False, max_new_tokens=256,
min_new_tokens=256, use_cache=True)`. Neither model has an end-of-text token, so both always
generate all 256. The three runs alternate and the table gives medians.

Checks printed under the table: gptlib's tokens are the same with and without the cache, and,
when gptlib.hf can read a transformers checkpoint, gptlib loaded with transformers' weights
picks the same tokens as transformers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    add_common_args,
    build_models,
    median,
    print_table,
    setup,
    time_interleaved,
)
from gptlib import GPT  # noqa: E402


def same_tokens_as_transformers(theirs: torch.nn.Module, prompt: torch.Tensor, new: int) -> str:
    """Load transformers' weights into gptlib (via gptlib.hf) and compare greedy tokens."""
    try:
        import gptlib.hf  # noqa: F401
    except ImportError:
        return "skipped (gptlib.hf is not available)"
    import transformers

    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as folder:
        theirs.save_pretrained(folder)
        ours = GPT.from_pretrained(folder).to(prompt.device)
    expected = hf_generate(theirs, prompt, new)
    got = ours.generate(prompt, new, temperature=0.0)
    if torch.equal(got, expected):
        return f"yes, all {new} tokens"
    first = int((got != expected).nonzero()[0, 1]) - prompt.size(1)
    return f"NO: first difference at new token {first}"


def hf_generate(model: torch.nn.Module, prompt: torch.Tensor, new: int) -> torch.Tensor:
    """transformers' greedy generation of exactly `new` tokens with its KV cache."""
    return model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=new,
        min_new_tokens=new,
        use_cache=True,
        pad_token_id=0,
    )


def time_generation(
    args: argparse.Namespace, vocab_size: int, device: torch.device
) -> tuple[dict[str, list[float]], str]:
    """Seconds per generation of each run at one vocabulary size, and the checks' verdict."""
    ours, theirs = build_models(args, vocab_size, args.prompt_len + args.new_tokens, device)
    ours.eval()
    theirs.eval()
    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, vocab_size, (1, args.prompt_len), generator=generator).to(device)
    new = args.new_tokens
    outputs: dict[str, torch.Tensor] = {}

    def ours_cached() -> None:
        outputs["cache"] = ours.generate(prompt, new, temperature=0.0)

    def ours_uncached() -> None:
        outputs["no cache"] = ours.generate(prompt, new, temperature=0.0, use_cache=False)

    def theirs_cached() -> None:
        outputs["transformers"] = hf_generate(theirs, prompt, new)

    runs = {
        "gptlib, KV cache": ours_cached,
        "gptlib, no cache": ours_uncached,
        "transformers, KV cache": theirs_cached,
    }
    times = time_interleaved(runs, args.repeats, args.warmup, device, args.clock)
    for name, out in outputs.items():
        if out.shape != (1, args.prompt_len + new):
            raise RuntimeError(f"{name}: got shape {tuple(out.shape)}, not all {new} new tokens")
    same = "yes" if torch.equal(outputs["cache"], outputs["no cache"]) else "NO"
    verdict = (
        f"vocab {vocab_size}: gptlib's tokens with and without the cache are equal: {same}; "
        "gptlib with transformers' weights picks transformers' tokens: "
        f"{same_tokens_as_transformers(theirs, prompt, new)}"
    )
    return times, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=256)
    args = parser.parse_args()
    device = setup(args)
    print(
        f"greedy generation: batch 1, prompt {args.prompt_len} tokens, {args.new_tokens} new "
        f"tokens, {args.n_layer} layers, {args.n_head} heads, d={args.n_embd}; "
        f"median of {args.repeats} after {args.warmup} warm-up run(s)\n"
    )
    rows, verdicts = [], []
    for vocab_size in args.vocab_size:
        times, verdict = time_generation(args, vocab_size, device)
        verdicts.append(verdict)
        ref = median(times["transformers, KV cache"])
        no_cache = median(times["gptlib, no cache"])
        for name, ts in times.items():
            t = median(ts)
            row = [name, str(vocab_size), f"{t * 1000:.0f}", f"{args.new_tokens / t:,.0f}"]
            rows.append([*row, f"{ref / t:.2f}x", f"{no_cache / t:.2f}x"])
    header = ["run", "vocab", f"ms/{args.new_tokens} tokens", "tokens/s"]
    print_table([*header, "vs transformers", "vs no cache"], rows)
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
