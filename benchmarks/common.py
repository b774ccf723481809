"""Shared pieces of the benchmarks: the matrix-multiply reference rate, FLOP counts, Brown batches, a seeded
sample of test texts."""

import random
import resource
import time

import torch

from hf_bnvae import BNVAEConfig, BNVAEForLanguageModeling, build_word_tokenizer
from hf_bnvae.data import BROWN_DIR, read_text_file, sentence_loader, tokenize_texts


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
    """Forward multiply-add FLOPs of the decoder per predicted token: the LSTM's gates, or the Transformer's
    blocks (attention projections 4 d^2 and MLP 8 d^2 per layer; attention scores over ~20 positions
    left out), plus the output layer."""
    d = config.decoder_hidden_size
    if config.decoder_type == "transformer":
        return 2 * 12 * d * d * config.decoder_layers + 2 * d * config.vocab_size
    latent = config.latent_size if config.use_latent else 0
    lstm = 2 * 4 * d * (config.embedding_size + latent + d)
    return lstm + 2 * d * config.vocab_size


def encoder_flops_per_token(config):
    """Forward FLOPs of the encoder LSTM per input token (0 for the LSTM LM)."""
    if not config.use_latent:
        return 0
    return 2 * 4 * config.encoder_hidden_size * (config.embedding_size + config.encoder_hidden_size)


def brown_batches(split, vocab_size, batch_size, max_sentences, seed=0, tokenizer=None):
    """(tokenizer, token ids of each sentence, batches of Brown sentences as train.py makes them, in the
    order of epoch 0 for `seed`); the vocabulary is built on Brown train unless a tokenizer is given."""
    data = BROWN_DIR
    if tokenizer is None:
        tokenizer = build_word_tokenizer(read_text_file(data / "train.txt").texts, vocab_size=vocab_size)
    dataset = tokenize_texts(tokenizer, read_text_file(data / f"{split}.txt").texts[:max_sentences])
    return tokenizer, dataset["input_ids"], list(sentence_loader(dataset, tokenizer, batch_size, seed=seed))


def sample_texts(path, num_texts, seed=0):
    """`num_texts` texts of a one-per-line file, a seeded random sample (random.Random(seed)); ValueError
    naming the file when it holds fewer."""
    texts = read_text_file(path).texts
    if num_texts > len(texts):
        raise ValueError(f"--num_texts {num_texts}: {path} has only {len(texts)} texts")
    return random.Random(seed).sample(texts, num_texts)


def build_lm(preset, vocab_size, **overrides):
    """A BNVAEForLanguageModeling of a preset (seed 0) in training mode and its SGD optimiser (lr 1)."""
    torch.manual_seed(0)
    model = BNVAEForLanguageModeling(BNVAEConfig.from_preset(preset, vocab_size=vocab_size, **overrides))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    return model.train(), optimizer


def training_step(model, optimizer, batch):
    """One training step as train.py takes it: the loss path (no logits), backward, clip at 5, SGD."""
    ids = batch["input_ids"]
    model(input_ids=ids, attention_mask=batch["attention_mask"], labels=ids, return_logits=False).loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def peak_memory_mib():
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
