"""Training speed of the LSTM LM, VAE and BN-VAE at the ptb and yahoo sizes, on the same Brown batches.

    python benchmarks/train_speed.py [--steps 20]
    python benchmarks/train_speed.py --decoder_type transformer  # issue 31's GPT-2 decoder beside the LSTM's

Prints training tokens per second (words + end token), step time, achieved GFLOP/s (forward + backward
counted as 3x the forward FLOPs of the useful tokens) against a large fp32 matrix multiply timed in the
same run, the BN-VAE / VAE and VAE / LM step-time ratios, and peak memory. The three models are stepped
in turn (round robin) so that machine noise hits them alike. With --decoder_type transformer: the
Transformer LM and BN-VAE (4 GPT-2 blocks, 256 wide, 4 heads: the ptb sizes' decoder) beside the LSTM
BN-VAE of the same sizes, all stepped with SGD as above, and the Transformer / LSTM step-time ratio.
"""

import argparse
import time

import torch
from common import (
    brown_batches,
    build_lm,
    decoder_flops_per_token,
    encoder_flops_per_token,
    matmul_gflops,
    peak_memory_mib,
    training_step,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--vocab_size", type=int, default=10000)
    parser.add_argument("--decoder_type", choices=("lstm", "transformer"), default="lstm")
    return parser.parse_args(argv)


def models_to_time(decoder_type, vocab_size):
    """{size: {name: (model, optimizer)}} of the comparison --decoder_type selects, and its ratio rows
    (label, numerator, denominator)."""
    if decoder_type == "transformer":
        models = {
            "ptb": {
                "LSTM BN-VAE": build_lm("ptb", vocab_size, gamma=0.6),
                "Transformer LM": build_lm("ptb", vocab_size, use_latent=False, gamma=0.0, decoder_type="transformer"),
                "Transformer BN-VAE": build_lm("ptb", vocab_size, gamma=0.6, decoder_type="transformer"),
            }
        }
        return models, [("Transformer BN-VAE / LSTM BN-VAE step time", "Transformer BN-VAE", "LSTM BN-VAE")]
    models = {
        preset: {
            "LSTM-LM": build_lm(preset, vocab_size, use_latent=False, gamma=0.0),
            "VAE": build_lm(preset, vocab_size, gamma=0.0),
            "BN-VAE": build_lm(preset, vocab_size, gamma=0.6),
        }
        for preset in ("ptb", "yahoo")
    }
    return models, [("BN-VAE / VAE step time", "BN-VAE", "VAE"), ("VAE / LM step time", "VAE", "LSTM-LM")]


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(0)
    _, _, batches = brown_batches("train", args.vocab_size, 32, 32 * (args.steps + args.warmup) * 2)
    batches = [b for b in batches if b["input_ids"].shape[0] == 32][: args.steps + args.warmup]
    tokens = sum(int(b["attention_mask"].sum() - b["input_ids"].shape[0]) for b in batches[args.warmup :])
    inputs = sum(int(b["attention_mask"].sum()) for b in batches[args.warmup :])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} timed steps of batch 32, "
        f"{tokens} predicted tokens, vocab {args.vocab_size}"
    )
    ceiling = matmul_gflops()
    print(f"fp32 matmul 2048^3: {ceiling:.1f} GFLOP/s\n")
    print("| size | model | ms/step | tokens/s | GFLOP/s | % of matmul |")
    print("|---|---|---|---|---|---|")
    sizes, ratios = models_to_time(args.decoder_type, args.vocab_size)
    for preset, models in sizes.items():
        seconds = dict.fromkeys(models, 0.0)
        for i, batch in enumerate(batches):
            for name, (model, optimizer) in models.items():
                start = time.perf_counter()
                training_step(model, optimizer, batch)
                if i >= args.warmup:
                    seconds[name] += time.perf_counter() - start
        for name, (model, _) in models.items():
            flops = 3 * (
                tokens * decoder_flops_per_token(model.config) + inputs * encoder_flops_per_token(model.config)
            )
            rate = flops / seconds[name] / 1e9
            print(
                f"| {preset} | {name} | {1000 * seconds[name] / args.steps:.1f} | {tokens / seconds[name]:,.0f} | "
                f"{rate:.1f} | {100 * rate / ceiling:.0f}% |"
            )
        for label, numerator, denominator in ratios:
            print(f"| {preset} | {label} | {seconds[numerator] / seconds[denominator]:.3f} | | | |")
    print(f"\npeak memory (whole process): {peak_memory_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
