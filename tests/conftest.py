import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from hf_bnvae import BNVAEConfig, BNVAEForLanguageModeling, build_word_tokenizer

CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the dog sat on a log",
    "it was a quiet night in the city",
    "she read the letter twice",
    "the old man walked to the river",
    "we ate bread and cheese",
    "the children played in the snow",
]


@pytest.fixture
def tokenizer():
    return build_word_tokenizer(CORPUS)


def tiny_config(vocab_size, **overrides):
    sizes = dict(embedding_size=16, encoder_hidden_size=24, decoder_hidden_size=24, latent_size=8)
    return BNVAEConfig(vocab_size=vocab_size, **{**sizes, **overrides})


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    return BNVAEForLanguageModeling(tiny_config(len(tokenizer)))


@pytest.fixture
def batch(tokenizer):
    return tokenizer(CORPUS, padding=True, return_tensors="pt")
