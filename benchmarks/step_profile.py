"""Where a BN-VAE training step and a script's start-up spend their time.

    python benchmarks/step_profile.py [--preset ptb] [--steps 40]

Start-up: wall time and resident memory of a fresh interpreter that imports torch only, and of one that
imports training/train.py (everything a training command loads before its first step). The step: the
training step train.py takes (`common.training_step`, Brown batches of 32) under torch.profiler, split
into the LSTMs' kernels, the matrix multiplies (the output layer, and the small linear layers), and the
rest; each with its achieved rate against a 2048^3 fp32 matrix multiply timed in the same process
(FLOPs counted as forward + backward = 3 x forward, on the predicted tokens for the decoder and the
input tokens for the encoder).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import (
    brown_batches,
    build_lm,
    decoder_flops_per_token,
    encoder_flops_per_token,
    matmul_gflops,
    training_step,
)
from torch.profiler import ProfilerActivity, profile

LSTM_KERNELS = (
    "aten::mkldnn_rnn_layer",
    "aten::mkldnn_rnn_layer_backward",
    "aten::_cudnn_rnn",
    "aten::_cudnn_rnn_backward",
)
MATMULS = ("aten::mm", "aten::addmm", "aten::addmm_")
TRAINING = Path(__file__).resolve().parents[1] / "training"
PROBE = (  # VmHWM: this process's peak (ru_maxrss would carry the parent's peak across fork and exec)
    "import re, sys, time; start = time.perf_counter(); sys.path.insert(0, {path!r}); import {module}; "
    "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
    "print(time.perf_counter() - start, int(hwm) / 1024)"
)


def import_cost(module):
    """(seconds, peak resident MiB) of importing module in a fresh interpreter (training/ on its path; Linux)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(path=str(TRAINING), module=module)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    seconds, mib = out.stdout.split()[-2:]
    return float(seconds), float(mib)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ptb", choices=["ptb", "yahoo"])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--vocab_size", type=int, default=10000)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for module in ("torch", "train"):
        seconds, mib = import_cost(module)
        print(f"import {module}: {seconds:.2f} s, {mib:,.0f} MiB resident")
    _, _, batches = brown_batches("train", args.vocab_size, 32, 32 * (args.steps + 5) * 2)
    batches = [b for b in batches if b["input_ids"].shape[0] == 32][: args.steps + 5]
    model, optimizer = build_lm(args.preset, args.vocab_size, gamma=0.6)
    for batch in batches[:5]:
        training_step(model, optimizer, batch)
    timed = batches[5:]
    start = time.perf_counter()
    for batch in timed:
        training_step(model, optimizer, batch)
    wall = (time.perf_counter() - start) / len(timed)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in timed:
            training_step(model, optimizer, batch)
    per_step = {e.key: e.self_cpu_time_total / 1e6 / len(timed) for e in prof.key_averages()}
    ceiling = matmul_gflops()
    config = model.config
    predicted = sum(int(b["attention_mask"].sum()) - 32 for b in timed) / len(timed)
    inputs = sum(int(b["attention_mask"].sum()) for b in timed) / len(timed)
    output_flops = 3 * 2 * config.decoder_hidden_size * config.vocab_size * predicted
    lstm_flops = 3 * (
        (decoder_flops_per_token(config) * predicted - output_flops / 3) + encoder_flops_per_token(config) * inputs
    )
    lstm = sum(per_step.get(k, 0) for k in LSTM_KERNELS)
    matmul = sum(per_step.get(k, 0) for k in MATMULS)
    total = sum(per_step.values())
    print(f"\n{args.preset} step, batch 32, {predicted:.0f} predicted tokens: {1000 * wall:.1f} ms unprofiled, "
          f"{1000 * total:.1f} ms profiled; fp32 matmul 2048^3: {ceiling:.1f} GFLOP/s\n")  # fmt: skip
    print("| part | ms/step | GFLOP/s | % of matmul |")
    print("|---|---|---|---|")
    for name, seconds, flops in (("LSTM kernels", lstm, lstm_flops), ("matrix multiplies", matmul, output_flops)):
        rate = flops / seconds / 1e9
        print(f"| {name} | {1000 * seconds:.1f} | {rate:.0f} | {100 * rate / ceiling:.0f}% |")
    print(f"| everything else | {1000 * (total - lstm - matmul):.1f} | | |")
    rest = sorted(((v, k) for k, v in per_step.items() if k not in LSTM_KERNELS + MATMULS), reverse=True)
    print("\nlargest other parts: " + ", ".join(f"{k} {1000 * v:.1f} ms" for v, k in rest[:8]))


if __name__ == "__main__":
    main()
