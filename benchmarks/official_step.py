"""Training throughput against a re-implementation of the official BN-VAE training step, same sentences.

    python benchmarks/official_step.py [--max_train_samples 16000] [--max_steps 150] [--sizes ptb yahoo]

The official code (valdersoul/bn-vae, as ../shared/official_bench describes and measures it) batches
sentences of exactly equal length (at most 32; a length with fewer sentences gives a smaller batch; a
batch of one sentence is skipped), so nothing is padded; its step is a plain nn.LSTM encoder whose
last state gives mu and logvar, BN on mu, a decoder LSTM over `<s> w_1 .. w_m` with z concatenated to
each input, the output layer over every position and a summed cross-entropy, KL, backward, clip 5 and
SGD. The re-implementation below is written from that description (not copied). The project's step is
BNVAEForLanguageModeling's loss path (return_logits=False) on the batches train.py makes
(`length_grouped_batches`, padded), with the same clip and SGD.

Both pass over the same first N Brown training sentences (16,000 by default, as the harness; each side
its own shuffled batches, the first --max_steps of them after the warm-up, interleaved step by step so
machine noise hits both alike). Tokens = words + `</s>` per sentence (padding not counted), FLOPs per
token = 3 x 2 x multiply-adds of encoder LSTM, decoder LSTM and output layer, as the harness counts;
% GEMM against a 2048^3 fp32 matrix multiply timed in the same run. Prints the project's padding
fraction (padded positions / all positions of its batches).
"""

import argparse
import random
import time

import torch
from common import decoder_flops_per_token, encoder_flops_per_token, matmul_gflops, training_step
from torch import nn

from hf_bnvae import BNVAEConfig, BNVAEForLanguageModeling, build_word_tokenizer
from hf_bnvae.data import BROWN_DIR, collate, column, length_grouped_batches, read_text_file, tokenize_texts


class OfficialStepModel(nn.Module):
    """The official BN-VAE's computation for batches of one length. forward(x (B, T)) -> loss ()."""

    def __init__(self, config):
        super().__init__()
        e, h, d, n, v = (
            config.embedding_size,
            config.encoder_hidden_size,
            config.decoder_hidden_size,
            config.latent_size,
            config.vocab_size,
        )
        self.encoder_embedding = nn.Embedding(v, e)
        self.encoder = nn.LSTM(e, h, batch_first=True)
        self.to_posterior = nn.Linear(h, 2 * n, bias=False)
        self.bn = nn.BatchNorm1d(n)
        self.bn.weight.data.fill_(config.gamma)
        self.bn.weight.requires_grad_(False)
        self.decoder_embedding = nn.Embedding(v, e)
        self.decoder = nn.LSTM(e + n, d, batch_first=True)
        self.latent_to_cell = nn.Linear(n, d, bias=False)
        self.output = nn.Linear(d, v, bias=False)
        self.dropout_in, self.dropout_out = (
            nn.Dropout(config.decoder_dropout_in),
            nn.Dropout(config.decoder_dropout_out),
        )

    def forward(self, x, kl_weight=1.0):
        _, (last, _) = self.encoder(self.encoder_embedding(x))
        mu, logvar = self.to_posterior(last[0]).chunk(2, -1)
        mu = self.bn(mu)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(-1)
        source, target = x[:, :-1], x[:, 1:]
        inputs = self.dropout_in(self.decoder_embedding(source))
        inputs = torch.cat([inputs, z[:, None].expand(-1, inputs.shape[1], -1)], -1)
        cell = self.latent_to_cell(z)[None]
        hidden, _ = self.decoder(inputs, (cell.tanh(), cell))
        logits = self.output(self.dropout_out(hidden))
        token_nll = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
        )
        return (token_nll.view(target.shape).sum(-1) + kl_weight * kl).mean()


def exact_length_batches(lengths, batch_size, seed):
    """The official batching: sentences of one length together, at most batch_size; batches of one skipped."""
    by_length = {}
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        by_length.setdefault(lengths[i], []).append(i)
    batches = [
        group[start : start + batch_size] for group in by_length.values() for start in range(0, len(group), batch_size)
    ]
    random.Random(seed).shuffle(batches)
    return [b for b in batches if len(b) > 1]


def step(side, model, optimizer, batch):
    """One training step of either side on a collated batch."""
    if side == "project":
        return training_step(model, optimizer, batch)
    model(batch["input_ids"]).backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max_train_samples", type=int, default=16000)
    p.add_argument("--sizes", nargs="+", default=["ptb", "yahoo"], choices=["ptb", "yahoo"])
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--vocab_size", type=int, default=10000)
    p.add_argument("--warmup", type=int, default=5, help="steps of each side not timed")
    p.add_argument("--max_steps", type=int, default=150, help="timed steps per side (0: the whole epoch)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    texts = read_text_file(BROWN_DIR / "train.txt").texts[: args.max_train_samples]
    tokenizer = build_word_tokenizer(texts, vocab_size=args.vocab_size)
    sequences = column(tokenize_texts(tokenizer, texts))
    lengths = [len(s) for s in sequences]
    pad = tokenizer.pad_token_id
    plans = {
        "official": exact_length_batches(lengths, args.batch_size, seed=0),
        "project": length_grouped_batches(lengths, args.batch_size, seed=0),
    }
    padded = sum(max(lengths[i] for i in b) * len(b) for b in plans["project"])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(texts):,} Brown sentences, "
        f"vocab {len(tokenizer):,}; batches: official {len(plans['official'])}, project {len(plans['project'])} "
        f"(padding {100 * (1 - sum(lengths) / padded):.2f}% of its positions)"
    )
    ceiling = matmul_gflops()
    print(f"fp32 matmul 2048^3: {ceiling:.1f} GFLOP/s\n")
    print("| size | side | steps | tokens/s | ms/step | GFLOP/s | % GEMM |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        config = BNVAEConfig.from_preset(size, vocab_size=len(tokenizer), gamma=0.6)
        torch.manual_seed(0)
        models = {"official": OfficialStepModel(config).train(), "project": BNVAEForLanguageModeling(config).train()}
        optimizers = {
            side: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0) for side, m in models.items()
        }

        seconds, tokens, steps = dict.fromkeys(plans, 0.0), dict.fromkeys(plans, 0), dict.fromkeys(plans, 0)
        longest = max(len(b) for b in plans.values())
        limit = min(longest, args.max_steps + args.warmup) if args.max_steps else longest
        for i in range(limit):
            for side, batches in plans.items():
                if i >= len(batches):
                    continue
                start = time.perf_counter()
                step(side, models[side], optimizers[side], collate(sequences, batches[i], pad))
                if i >= args.warmup:
                    seconds[side] += time.perf_counter() - start
                    tokens[side] += sum(lengths[j] - 1 for j in batches[i])
                    steps[side] += 1
        flops = 3 * (decoder_flops_per_token(config) + encoder_flops_per_token(config))
        rates = {}
        for side in plans:
            rates[side] = tokens[side] / seconds[side]
            gflops = rates[side] * flops / 1e9
            print(
                f"| {size} | {side} | {steps[side]} | {rates[side]:,.0f} | {1000 * seconds[side] / steps[side]:.1f} | "
                f"{gflops:.1f} | {100 * gflops / ceiling:.1f}% |"
            )
        print(f"| {size} | project / official tokens/s | | {rates['project'] / rates['official']:.3f} | | | |")


if __name__ == "__main__":
    main()
