"""The Transformer decoder (BNVAEConfig.decoder_type="transformer"): GPT-2 blocks with z as a memory vector
and/or an added embedding, the same BN head and objective, generation with a key/value cache."""

import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_bnvae import BNVAEConfig, BNVAEForLanguageModeling
from hf_bnvae.modeling_bnvae import TransformerDecoder, shifted_token_nll

SIZES = dict(embedding_size=16, encoder_hidden_size=16, decoder_hidden_size=32, latent_size=4, decoder_layers=2)


@pytest.fixture
def transformer_config(tokenizer):
    def make(**overrides):
        return BNVAEConfig(vocab_size=len(tokenizer), decoder_type="transformer", **{**SIZES, **overrides})

    return make


def seeded(config):
    torch.manual_seed(0)
    return BNVAEForLanguageModeling(config)


def test_the_config_checks_the_decoder_fields():
    with pytest.raises(ValueError, match="decoder_type='gru' is invalid: must be one of \\('lstm', 'transformer'\\)"):
        BNVAEConfig(decoder_type="gru")
    with pytest.raises(ValueError, match="latent_injection='prefix' is invalid"):
        BNVAEConfig(latent_injection="prefix")
    with pytest.raises(ValueError, match="decoder_heads=3 is invalid: must divide decoder_hidden_size \\(256\\)"):
        BNVAEConfig(decoder_type="transformer", decoder_heads=3)
    assert type(BNVAEForLanguageModeling(BNVAEConfig(vocab_size=50, **SIZES)).decoder).__name__ == "LSTMDecoder"


@pytest.mark.parametrize("injection", ["memory", "embedding", "both"])
def test_z_reaches_the_decoder_the_way_the_config_says(transformer_config, batch, injection):
    model = seeded(transformer_config(latent_injection=injection)).eval()
    decoder = model.decoder
    assert isinstance(decoder, TransformerDecoder)
    assert (decoder.latent_to_memory is not None) == (injection in ("memory", "both"))
    assert (decoder.latent_to_embedding is not None) == (injection in ("embedding", "both"))
    ids = batch["input_ids"]
    with torch.no_grad():
        first = model(input_ids=ids, latent=torch.zeros(ids.shape[0], 4)).logits
        second = model(input_ids=ids, latent=torch.ones(ids.shape[0], 4)).logits
    assert not torch.allclose(first, second)  # the decoder reads z
    model.train()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    for projection in (decoder.latent_to_memory, decoder.latent_to_embedding):
        if projection is not None:
            assert projection.weight.grad.abs().sum() > 0
    assert model.bnvae.encoder.lstm.weight_ih_l0.grad.abs().sum() > 0  # through z into the encoder


def test_the_objective_is_the_reconstruction_plus_the_weighted_kl(transformer_config, batch):
    """The same loss as the LSTM model's: -log p(x|z) summed over the real tokens plus kl_weight * KL, the
    loss-only path (fused output layer) equal to the one from the logits (eval mode: no dropout, whose masks
    depend on the input's length)."""
    model = seeded(transformer_config(gamma=0.6)).eval()
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(1)
    out = model(**batch, labels=labels, kl_weight=0.3, sample_latent=True)
    token_nll, _ = shifted_token_nll(out.logits, labels, batch["attention_mask"])
    torch.testing.assert_close(out.reconstruction_loss, token_nll.sum(-1))
    torch.testing.assert_close(out.loss, (out.reconstruction_loss + 0.3 * out.kl).mean())
    torch.manual_seed(1)
    with torch.enable_grad():  # the fused output layer is used with gradients
        fused = model(**batch, labels=labels, kl_weight=0.3, return_logits=False, sample_latent=True)
    torch.testing.assert_close(fused.loss, out.loss, rtol=1e-5, atol=1e-5)
    assert out.kl.mean() >= 0 and model.kl_lower_bound == pytest.approx(4 * 0.6**2 / 2)


def test_attention_is_causal_so_right_padding_never_reaches_a_sentence(transformer_config, batch):
    model = seeded(transformer_config()).eval()
    ids = batch["input_ids"][:1].clone()
    z = torch.randn(1, 4)
    with torch.no_grad():
        before = model(input_ids=ids, latent=z).logits
        ids[0, -1] = (ids[0, -1] + 1) % model.config.vocab_size  # another last token
        after = model(input_ids=ids, latent=z).logits
    torch.testing.assert_close(after[:, :-1], before[:, :-1])


@pytest.mark.parametrize("decoding", [{"do_sample": False}, {"num_beams": 3}], ids=["greedy", "beam"])
def test_generation_with_the_cache_equals_generation_without_it_and_uses_it(transformer_config, decoding):
    model = seeded(transformer_config()).eval()
    z = torch.randn(2, 4)
    lengths = []
    forward = model.decoder.forward

    def counting(input_ids, z=None, state=None, use_cache=None):
        lengths.append(input_ids.shape[1])
        return forward(input_ids, z, state, use_cache)

    model.decoder.forward = counting
    cached = model.generate(latent=z, max_new_tokens=6, no_repeat_ngram_size=0, **decoding)
    assert lengths[0] == 1 and set(lengths[1:]) == {1}  # after <s> (and the memory), one new token per step
    lengths.clear()
    uncached = model.generate(latent=z, max_new_tokens=6, no_repeat_ngram_size=0, use_cache=False, **decoding)
    assert max(lengths) > 1  # the whole prefix again at every step
    assert cached.tolist() == uncached.tolist()


def test_the_transformer_language_model_baseline_has_no_latent(transformer_config, batch):
    model = seeded(transformer_config(use_latent=False, gamma=0.0))
    assert model.bnvae is None and model.decoder.latent_to_memory is None and model.decoder.latent_to_embedding is None
    out = model(**batch, labels=batch["input_ids"])
    assert out.kl is None and out.loss > 0


def test_save_load_and_remote_code_without_the_package(transformer_config, batch, tokenizer, tmp_path):
    model = seeded(transformer_config()).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.decoder, TransformerDecoder)
    with torch.no_grad():
        expected = model(**batch, labels=batch["input_ids"]).loss
        torch.testing.assert_close(loaded(**batch, labels=batch["input_ids"]).loss, expected)
    torch.save({key: value for key, value in batch.items()}, tmp_path / "batch.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_bnvae"] = None  # the package cannot be imported in this process
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        with torch.no_grad():
            print(type(model.decoder).__name__, model(**batch, labels=batch["input_ids"]).loss.item())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    name, loss = result.stdout.split()[-2:]
    assert name == "TransformerDecoder" and float(loss) == pytest.approx(expected.item(), rel=1e-5)


def test_the_lstm_path_does_not_import_gpt2(tmp_path):
    script = (
        "import sys\nfrom hf_bnvae import BNVAEConfig, BNVAEForLanguageModeling\n"
        "BNVAEForLanguageModeling(BNVAEConfig(vocab_size=50, latent_size=4))\n"
        "print('transformers.models.gpt2.modeling_gpt2' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "False"


def test_train_py_trains_a_transformer_bn_vae(train_run):
    model, results = train_run(
        "--decoder_type", "transformer", "--decoder_layers", "1", "--decoder_heads", "2", "--optimizer", "adam",
        "--latent_injection", "memory",
    )  # fmt: skip
    assert isinstance(model.decoder, TransformerDecoder) and model.config.latent_injection == "memory"
    entry = results["history"][-1]
    assert entry["valid_kl"] > 0 and entry["train_kl_guarantee"] > 0


def test_inputs_longer_than_the_positions_are_refused_with_a_message(transformer_config, batch):
    model = seeded(transformer_config(max_position_embeddings=8)).eval()
    ids = batch["input_ids"][:, :8]  # 8 tokens and the memory: 9 positions
    with pytest.raises(
        ValueError, match="9 positions .* exceed the Transformer decoder's max_position_embeddings \\(8\\)"
    ):
        model(input_ids=ids, latent=torch.zeros(ids.shape[0], 4))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate(latent=torch.zeros(1, 4), max_new_tokens=12, min_new_tokens=12)


def test_no_cache_is_built_where_nothing_continues(transformer_config, batch):
    """Training steps and the sentence log-likelihood (the IW-NLL's K decodings) keep no key/value cache."""
    model = seeded(transformer_config())
    assert model.train()(**batch, labels=batch["input_ids"]).state is None
    with torch.no_grad():
        assert model.eval()(**batch, use_cache=False).state is None
        assert model(**batch).state is not None  # eval mode: a cache to continue from, as the LSTM's state
