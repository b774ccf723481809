import pytest

from hf_bnvae import PRESETS, BNVAEConfig


@pytest.mark.parametrize(
    "name, sizes",
    [
        ("yahoo", (512, 1024)),
        ("yelp", (512, 1024)),
        ("ptb", (256, 256)),
        ("snli", (128, 512)),
        ("short_yelp", (128, 512)),
    ],
)
def test_paper_presets(name, sizes):
    config = BNVAEConfig.from_preset(name, vocab_size=500, gamma=0.7)
    assert (config.embedding_size, config.encoder_hidden_size, config.decoder_hidden_size) == (
        sizes[0],
        sizes[1],
        sizes[1],
    )
    assert config.latent_size == 32 and config.gamma == 0.7 and config.vocab_size == 500


def test_defaults_and_bound():
    config = BNVAEConfig()
    assert config.model_type == "bnvae" and config.gamma == 0.6 and config.latent_size == 32
    assert config.decoder_dropout_in == config.decoder_dropout_out == 0.5
    assert config.kl_lower_bound == pytest.approx(5.76)
    assert BNVAEConfig(gamma=0.7).kl_lower_bound == pytest.approx(7.84)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'wiki'"):
        BNVAEConfig.from_preset("wiki")
    assert "brown" in PRESETS


@pytest.mark.parametrize(
    "field, value",
    [
        ("gamma", -0.1),
        ("latent_size", 0),
        ("decoder_dropout_in", 1.0),
        ("decoder_dropout_out", -0.2),
        ("embedding_size", 0),
        ("encoder_hidden_size", 0),
        ("decoder_hidden_size", -4),
        ("vocab_size", 0),
        ("bn_eps", 0.0),
        ("bn_momentum", 1.5),
        ("delta_rate", -1.0),
        ("pad_token_id", 10),
        ("bos_token_id", -1),
        ("eos_token_id", 99),
        ("unk_token_id", 10),
    ],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"BNVAEConfig\.{field}={value!r} is invalid"):
        BNVAEConfig(
            vocab_size=10 if field != "vocab_size" else value, **({field: value} if field != "vocab_size" else {})
        )


def test_round_trip_through_dict():
    config = BNVAEConfig(vocab_size=77, gamma=0.5, delta_rate=0.0, use_latent=False)
    again = BNVAEConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()


def test_vocabulary_is_the_words_by_frequency_then_alphabetical():
    """WordLevelTrainer gives the rule the project documents, checked against a direct count."""
    from collections import Counter

    from hf_bnvae import build_word_tokenizer

    texts = ["b a c a", "d c b a", "E e f", "the <unk> word </s>", "The <UNK> Word"]
    counts = Counter(w for t in texts for w in t.lower().split() if w not in {"<pad>", "<s>", "</s>", "<unk>"})
    expected = sorted(counts, key=lambda w: (-counts[w], w))
    tokenizer = build_word_tokenizer(texts)
    vocab = tokenizer.get_vocab()
    assert [w for w, _ in sorted(vocab.items(), key=lambda x: x[1])] == ["<pad>", "<s>", "</s>", "<unk>", *expected]
    assert sorted(vocab.values()) == list(range(len(tokenizer)))  # contiguous ids: no hole where <unk> was counted
    assert tokenizer("the <unk> zebra")["input_ids"] == [1, vocab["the"], 3, 3, 2]
    capped = build_word_tokenizer(texts, vocab_size=6, min_frequency=2)
    assert list(capped.get_vocab()) and len(capped) == 6 and set(capped.get_vocab()) >= {"a", "b"}
