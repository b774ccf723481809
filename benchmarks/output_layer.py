"""The training output layer: linear + cross-entropy through autograd against the fused, chunked version.

    python benchmarks/output_layer.py [--tokens 700] [--repeats 20] [--steps 30]

First the layer alone: forward + backward of the summed token NLL (what a training step does with the
decoder's states) at the ptb size (H 256) and the yahoo size (H 1024), vocabulary 10,000, for
`cross_entropy(lm_head(...))` and for `hf_bnvae.linear_cross_entropy` at several chunk sizes; FLOPs =
3 x 2 x tokens x H x V, % GEMM against a 2048^3 fp32 matrix multiply. Then whole BN-VAE training
steps (forward, backward, clip, SGD) on Brown batches of 32 with the model's fused loss and with the
autograd one (two copies of the same model). Variants alternate so that machine noise hits them alike.
"""

import argparse
import time

import torch
from common import brown_batches, build_lm, matmul_gflops, training_step
from torch import nn

from hf_bnvae.linear_cross_entropy import linear_cross_entropy


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=700, help="rows: about one batch of 32 Brown sentences")
    p.add_argument("--vocab_size", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--chunks", type=int, nargs="+", default=[256, 512, 1024, 4096])
    p.add_argument(
        "--steps", type=int, default=30, help="timed training steps per variant at the ptb size (a third at yahoo)"
    )
    return p.parse_args(argv)


def time_variants(hidden, args):
    """Seconds of forward + backward per variant, summed over args.repeats (two untimed rounds first)."""
    torch.manual_seed(0)
    head = nn.Linear(hidden, args.vocab_size, bias=False)
    states = torch.randn(args.tokens, hidden, requires_grad=True)
    labels = torch.randint(args.vocab_size, (args.tokens,))
    variants = {"autograd": lambda: nn.functional.cross_entropy(head(states), labels, reduction="none")}
    for chunk in args.chunks:
        variants[f"fused, chunk {chunk}"] = lambda c=chunk: linear_cross_entropy(states, head.weight, None, labels, c)
    seconds = dict.fromkeys(variants, 0.0)
    for repeat in range(args.repeats + 2):
        for name, run in variants.items():
            head.zero_grad(set_to_none=True)
            states.grad = None
            start = time.perf_counter()
            run().sum().backward()
            if repeat >= 2:
                seconds[name] += time.perf_counter() - start
    return seconds


def time_training_steps(preset, batches, vocab_size, warmup=3):
    """Seconds of whole training steps per loss variant over `batches` (the first `warmup` not timed)."""
    fused, fused_optimizer = build_lm(preset, vocab_size, gamma=0.6)
    unfused, unfused_optimizer = build_lm(preset, vocab_size, gamma=0.6)  # the same weights (seed 0)
    unfused.training_output_layer_nll = unfused.output_layer_nll  # the loss through autograd
    variants = {"autograd loss": (unfused, unfused_optimizer), "fused loss": (fused, fused_optimizer)}
    seconds = dict.fromkeys(variants, 0.0)
    for i, batch in enumerate(batches):
        for name, (model, optimizer) in variants.items():
            start = time.perf_counter()
            training_step(model, optimizer, batch)
            if i >= warmup:
                seconds[name] += time.perf_counter() - start
    return seconds


def main(argv=None):
    args = parse_args(argv)
    ceiling = matmul_gflops()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.tokens} tokens, vocab {args.vocab_size}"
    )
    print(f"fp32 matmul 2048^3: {ceiling:.1f} GFLOP/s\n")
    print("| H | variant | ms (fwd+bwd) | % GEMM | vs autograd |")
    print("|---|---|---|---|---|")
    for hidden in (256, 1024):
        seconds = time_variants(hidden, args)
        flops = 3 * 2 * args.tokens * hidden * args.vocab_size
        for name, total in seconds.items():
            seconds_per_run = total / args.repeats
            print(
                f"| {hidden} | {name} | {1000 * seconds_per_run:.1f} | {100 * flops / seconds_per_run / 1e9 / ceiling:.0f}% | "
                f"{seconds['autograd'] / total:.2f}x |"
            )
    _, _, batches = brown_batches("train", args.vocab_size, 32, 32 * (args.steps + 3) * 2)
    batches = [b for b in batches if b["input_ids"].shape[0] == 32]
    print("\n| size | training step | ms/step | vs autograd loss |")
    print("|---|---|---|---|")
    for preset, steps in (("ptb", args.steps), ("yahoo", max(1, args.steps // 3))):
        seconds = time_training_steps(preset, batches[: steps + 3], args.vocab_size)
        for name, total in seconds.items():
            print(f"| {preset} | {name} | {1000 * total / steps:.1f} | {seconds['autograd loss'] / total:.3f}x |")


if __name__ == "__main__":
    main()
