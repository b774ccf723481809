"""Shared pieces of the benchmarks: the matrix-multiply reference rate, FLOP counts, Brown batches."""

import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "training"))  # appended: training/evaluate.py must not shadow the evaluate package

from text_data import collate, encode_corpus, length_bucketed_batches, read_text_file  # noqa: E402

from hf_bnvae import build_word_tokenizer  # noqa: E402


def matmul_gflops(size=2048, repeats=10, trials=3):
    """Achieved GFLOP/s of a large fp32 matrix multiply (the machine's practical ceiling): best of trials."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def decoder_flops_per_token(config):
    """Forward multiply-add FLOPs of the decoder per predicted token: LSTM gates plus output layer."""
    latent = config.latent_size if config.use_latent else 0
    lstm = 2 * 4 * config.decoder_hidden_size * (config.embedding_size + latent + config.decoder_hidden_size)
    return lstm + 2 * config.decoder_hidden_size * config.vocab_size


def encoder_flops_per_token(config):
    """Forward FLOPs of the encoder LSTM per input token (0 for the LSTM LM)."""
    if not config.use_latent:
        return 0
    return 2 * 4 * config.encoder_hidden_size * (config.embedding_size + config.encoder_hidden_size)


def brown_batches(split, vocab_size, batch_size, max_sentences, seed=0, tokenizer=None):
    """(tokenizer, ids, batches of collated Brown sentences); the vocabulary is built on Brown train
    unless a tokenizer is given."""
    data = ROOT / "training" / "data" / "brown"
    if tokenizer is None:
        tokenizer = build_word_tokenizer(read_text_file(data / "train.txt").texts, vocab_size=vocab_size)
    ids = encode_corpus(tokenizer, read_text_file(data / f"{split}.txt").texts[:max_sentences])
    order = length_bucketed_batches([len(s) for s in ids], batch_size, seed=seed)
    return tokenizer, ids, [collate(ids, b, tokenizer.pad_token_id) for b in order]


def peak_memory_mib():
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
