"""BNVAEModel and BNVAEForLanguageModeling: the KL, the BN head's guarantees, padding independence, the
checks transformers' own ModelTesters make, bad input."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from hf_bnvae import PRESETS, BNVAEForLanguageModeling, BNVAEModel, gaussian_kl_per_dimension, vae_loss
from hf_bnvae.modeling_bnvae import (
    DELTA_VAE_SQRT_EPS,
    bn_kl_guarantee,
    delta_vae_posterior,
    delta_vae_variance_bounds,
    free_bits_kl,
)


def test_kl_matches_torch_distributions():
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0))
    torch.testing.assert_close(gaussian_kl_per_dimension(mu, logvar), expected, rtol=1e-5, atol=1e-6)


def test_loss_is_reconstruction_plus_weighted_kl(model, batch):
    model.train()
    torch.manual_seed(1)
    out = model(**batch, labels=batch["input_ids"], kl_weight=0.3)
    assert out.loss.dim() == 0
    torch.testing.assert_close(out.loss, (out.reconstruction_loss + 0.3 * out.kl).mean())
    torch.testing.assert_close(out.kl, out.kl_per_dimension.sum(-1))
    expected = kl_divergence(Normal(out.mu, (0.5 * out.logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(out.kl, expected, rtol=1e-5, atol=1e-6)
    # reconstruction = summed token NLL over real targets (words + </s>, not <s>)
    logp = out.logits[:, :-1].log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["attention_mask"][:, 1:].bool()
    torch.testing.assert_close(out.reconstruction_loss, -(logp * mask).sum(-1))
    torch.testing.assert_close(out.num_tokens, batch["attention_mask"].sum(-1) - 1)


def test_bn_head_normalises_mu_in_training(model, batch):
    model.train()
    with torch.no_grad():
        model.bnvae.latent_head.bn.bias.fill_(0.25)
    out = model(**batch)
    mu_raw, _ = model.bnvae.encoder(batch["input_ids"], batch["attention_mask"].sum(-1))
    v = mu_raw.var(0, unbiased=False)
    torch.testing.assert_close(out.mu.mean(0), torch.full((8,), 0.25), atol=1e-5, rtol=0)
    # BN's exact effect: batch std gamma * sqrt(v / (v + eps))
    torch.testing.assert_close(out.mu.std(0, unbiased=False), 0.6 * (v / (v + 1e-5)).sqrt(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("preset", ["tiny", "ptb", "yahoo"])
def test_bn_std_is_within_one_percent_of_gamma_at_initialisation(tiny_config, tokenizer, corpus, preset):
    """The official set-up (PyTorch's default encoder init, BN eps 1e-5) keeps the bound from step 1."""
    torch.manual_seed(0)
    sizes = {} if preset == "tiny" else dict(PRESETS[preset])
    config = tiny_config(**sizes)
    assert config.bn_eps == 1e-5 and config.encoder_init_range is None
    batch = tokenizer(corpus[:32], return_tensors="pt", padding=True)
    std = BNVAEModel(config).train()(**batch).mu.std(0, unbiased=False)
    assert ((std - 0.6).abs() / 0.6 < 0.01).all(), std
    # the old +-0.01 encoder leaves the raw mean's variance ~1e-8: eps 1e-5 would shrink mu's std many-fold
    small = BNVAEModel(tiny_config(**sizes, encoder_init_range=0.01)).train()
    assert small(**batch).mu.std(0, unbiased=False).max() < 0.3


def test_gamma_gets_no_gradient_and_beta_does(model, batch):
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    bn = model.bnvae.latent_head.bn
    assert not bn.weight.requires_grad
    for _ in range(3):
        optimizer.zero_grad()
        model(**batch, labels=batch["input_ids"]).loss.backward()
        assert bn.weight.grad is None
        assert bn.bias.grad is not None and bn.bias.grad.abs().sum() > 0
        optimizer.step()
    torch.testing.assert_close(bn.weight, torch.full((8,), 0.6))


def test_gamma_stays_frozen_even_if_requires_grad_is_switched_on(model, batch):
    model.train()
    model.requires_grad_(True)
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert model.bnvae.latent_head.bn.weight.grad is None


@pytest.mark.parametrize("gamma", [0.5, 0.6, 0.7])
def test_batch_kl_respects_the_lower_bound(tokenizer, tiny_config, gamma):
    torch.manual_seed(0)
    model = BNVAEForLanguageModeling(tiny_config(gamma=gamma))
    model.train()
    bound = model.kl_lower_bound
    assert bound == pytest.approx(8 * gamma**2 / 2)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for step in range(20):
        ids = torch.randint(4, len(tokenizer), (16, 9))
        ids[:, 0], ids[:, -1] = 1, 2
        out = model(input_ids=ids, labels=ids)
        # batch-mean KL >= sum_d (var_d + beta_d^2) / 2 >= sum_d gamma^2 v_d / (v_d + eps) / 2, v_d the raw
        # mean's batch variance: the bound n gamma^2 / 2 up to BN's eps
        mu_raw, _ = model.bnvae.encoder(ids, torch.full((16,), 9))
        v = mu_raw.detach().var(0, unbiased=False)
        eps_bound = float((gamma**2 * v / (v + model.config.bn_eps)).sum() / 2)
        assert eps_bound <= bound
        assert out.kl.mean().item() >= eps_bound * (1 - 1e-5), (step, out.kl.mean().item(), eps_bound)
        # what train.py logs as guaranteed is exactly this, from the BN'd means alone
        assert bn_kl_guarantee(out.mu.detach()) == pytest.approx(eps_bound, rel=1e-4)
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()


def test_the_guarantee_falls_below_the_bound_when_raw_means_barely_vary(tiny_config):
    """v / (v + eps) < 1: with raw means of batch variance eps in every dimension, BN guarantees half the bound."""
    head = BNVAEForLanguageModeling(tiny_config(gamma=0.6)).bnvae.latent_head.train()
    eps = head.bn.eps
    mu_raw = torch.randn(64, 8)
    mu_raw = (mu_raw - mu_raw.mean(0)) / mu_raw.std(0, unbiased=False) * eps**0.5  # batch variance eps exactly
    mu, logvar = head(mu_raw, torch.zeros(64, 8))
    assert bn_kl_guarantee(mu) == pytest.approx(8 * 0.6**2 / 2 / 2, rel=1e-4)
    assert gaussian_kl_per_dimension(mu, logvar).sum(-1).mean() >= bn_kl_guarantee(mu) * (1 - 1e-6)


def test_plain_vae_has_no_bn_and_no_bound(tiny_config, batch):
    model = BNVAEForLanguageModeling(tiny_config(gamma=0.0))
    assert model.bnvae.latent_head.bn is None and model.kl_lower_bound == 0.0
    model.train()
    assert model(**batch).kl.mean() < 0.1  # collapsed-sized at initialisation


def test_delta_vae_bounds_are_the_roots_of_kl_equals_delta():
    for delta in (0.05, 0.15, 1.0):
        low, high = delta_vae_variance_bounds(delta)
        assert low < 1 < high
        for s in (low, high):
            assert 0.5 * (s - 1 - math.log(s)) == pytest.approx(delta, rel=1e-9)
    # closed form: s = -W(-exp(-(1 + 2 delta))) on W's two real branches (scipy.special.lambertw, computed once)
    low, high = delta_vae_variance_bounds(0.15)
    assert (math.sqrt(low), math.sqrt(high)) == pytest.approx((0.64118, 1.40934), abs=1e-5)


def test_delta_vae_kl_per_dimension_is_delta_plus_half_the_relu_of_the_raw_mean(tiny_config, batch):
    mu_raw = torch.tensor([[-3.0, 0.0, 0.4], [2.0, -0.1, 7.0]])
    logvar_raw = torch.tensor([[-30.0, 0.0, 5.0], [30.0, 1.0, -2.0]])  # clamped sigmoid at both ends
    mu, logvar = delta_vae_posterior(mu_raw, logvar_raw, 0.15, delta_vae_variance_bounds(0.15))
    expected = 0.15 + torch.relu(mu_raw) / 2 + DELTA_VAE_SQRT_EPS / 2
    torch.testing.assert_close(gaussian_kl_per_dimension(mu, logvar), expected, atol=2e-6, rtol=0)
    low, high = (math.sqrt(b) for b in delta_vae_variance_bounds(0.15))
    std = (0.5 * logvar).exp()
    assert (std >= low - 1e-6).all() and (std <= high + 1e-6).all() and (mu > 0).all()
    # the model uses it, with the official +-0.01 encoder
    model = BNVAEForLanguageModeling(tiny_config(gamma=0.0, delta_rate=0.15, encoder_init_range=0.01))
    out = model(**batch)
    raw, _ = model.bnvae.encoder(batch["input_ids"], batch["attention_mask"].sum(-1))
    torch.testing.assert_close(
        out.kl_per_dimension, 0.15 + torch.relu(raw) / 2 + DELTA_VAE_SQRT_EPS / 2, atol=2e-6, rtol=0
    )


def test_single_sentence_in_eval_mode_uses_running_statistics(model, batch, tokenizer, corpus):
    model.train()
    for _ in range(5):
        model(**batch)  # accumulate running statistics
    model.eval()
    one = tokenizer([corpus[3]], return_tensors="pt")
    out = model(**one, labels=one["input_ids"])
    bn = model.bnvae.latent_head.bn
    mu_raw, _ = model.bnvae.encoder(one["input_ids"], one["attention_mask"].sum(-1))
    expected = (mu_raw - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * 0.6 + bn.bias
    torch.testing.assert_close(out.mu, expected)
    torch.testing.assert_close(out.latent, out.mu)  # eval mode decodes the mean by default


def test_sentence_outputs_do_not_depend_on_padding(model, batch, tokenizer, corpus):
    model.train()
    for _ in range(3):
        model(**batch)
    model.eval()
    with torch.no_grad():
        padded = model(**batch, labels=batch["input_ids"])
        for i, text in enumerate(corpus):
            alone = tokenizer([text], return_tensors="pt")
            out = model(**alone, labels=alone["input_ids"])
            n = alone["input_ids"].shape[1]
            torch.testing.assert_close(out.mu[0], padded.mu[i], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.logvar[0], padded.logvar[i], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.reconstruction_loss[0], padded.reconstruction_loss[i], atol=1e-5, rtol=0)
            torch.testing.assert_close(out.logits[0], padded.logits[i, :n], atol=1e-5, rtol=0)


def test_sentence_log_likelihood_matches_forward(model, batch):
    model.eval()
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
        ll = model.sentence_log_likelihood(batch["input_ids"], batch["attention_mask"], out.latent)
        torch.testing.assert_close(ll, -out.reconstruction_loss, atol=1e-4, rtol=1e-5)
        # K samples per sentence: the same as scoring each sample separately
        z = torch.randn(len(batch["input_ids"]), 3, 8)
        many = model.sentence_log_likelihood(batch["input_ids"], batch["attention_mask"], z)
        for k in range(3):
            one = model.sentence_log_likelihood(batch["input_ids"], batch["attention_mask"], z[:, k])
            torch.testing.assert_close(many[:, k], one, atol=1e-4, rtol=1e-5)


def test_lstm_lm_baseline_has_no_latent(tiny_config, batch):
    model = BNVAEForLanguageModeling(tiny_config(use_latent=False))
    assert model.bnvae is None and model.kl_lower_bound == 0.0
    out = model(**batch, labels=batch["input_ids"], kl_weight=1.0)
    assert out.kl is None and out.mu is None
    torch.testing.assert_close(out.loss, out.reconstruction_loss.mean())


# -- bad input ----------------------------------------------------------------------------------


def test_empty_input_is_refused(model):
    with pytest.raises(ValueError, match="input_ids is empty"):
        model(input_ids=torch.zeros(0, 5, dtype=torch.long))


def test_out_of_vocabulary_ids_are_refused(model, tokenizer):
    ids = torch.tensor([[1, 5, len(tokenizer), 2]])
    model.eval()
    with pytest.raises(ValueError, match=f"token id {len(tokenizer)}, outside the vocabulary"):
        model(input_ids=ids)


def test_training_batch_of_one_is_refused(model, tokenizer, corpus):
    model.train()
    one = tokenizer([corpus[0]], return_tensors="pt")
    with pytest.raises(ValueError, match="training batch of one sentence"):
        model(**one)


def test_left_padding_is_refused(model):
    ids = torch.tensor([[0, 1, 5, 2], [1, 5, 6, 2]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="right-padded"):
        model(input_ids=ids, attention_mask=mask)


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "one-length"])
def test_loss_without_logits_matches_the_full_path(tiny_config, tokenizer, batch, padded, monkeypatch):
    # The loss-only path (fused output layer and cross-entropy, gradients computed chunk by chunk) against
    # the full logits, for every parameter's gradient. No dropout: the loss-only path decodes one position
    # less, so its dropout masks would be drawn differently.
    if not padded:  # every sentence has 6 words: the loss-only path reads all positions without a copy
        batch = tokenizer(["the cat sat on the mat", "the dog sat on a log"], return_tensors="pt")
    import hf_bnvae.modeling_bnvae as modeling

    fused_calls = []
    fused = modeling.linear_cross_entropy
    monkeypatch.setattr(modeling, "linear_cross_entropy", lambda *a, **k: fused_calls.append(1) or fused(*a, **k))
    model = BNVAEForLanguageModeling(tiny_config(decoder_dropout_in=0.0, decoder_dropout_out=0.0)).train()
    losses, grads = [], []
    for return_logits in (True, False):
        torch.manual_seed(5)  # same z
        model.zero_grad()
        out = model(**batch, labels=batch["input_ids"], return_logits=return_logits)
        out.loss.backward()
        assert (out.logits is None) == (not return_logits) and (out.state is None) == (not return_logits)
        losses.append(out.reconstruction_loss.detach())
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert fused_calls == [1]  # the loss-only path took the fused output layer, the full path did not
    torch.testing.assert_close(losses[0], losses[1], atol=1e-4, rtol=1e-5)
    assert grads[0].keys() == grads[1].keys() and "decoder.lm_head.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


# -- the objective --------------------------------------------------------------------------------


def test_vae_loss_weights_the_kl_and_applies_free_bits(model, batch, tiny_config):
    model.train()
    torch.manual_seed(1)
    out = model(**batch, labels=batch["input_ids"], kl_weight=0.4)
    recon, kl = out.reconstruction_loss, out.kl_per_dimension
    torch.testing.assert_close(vae_loss(recon, kl, 0.4), recon.mean() + 0.4 * out.kl.mean())
    torch.testing.assert_close(vae_loss(recon, kl, 0.0), recon.mean())
    torch.testing.assert_close(vae_loss(recon, None, 0.4), recon.mean())  # the LSTM LM has no KL
    torch.testing.assert_close(vae_loss(recon, kl, 1.0, free_bits=1e6), recon.mean())  # every KL below the target
    # the model's loss is this function with the config's free bits
    fb = BNVAEForLanguageModeling(tiny_config(gamma=0.0, free_bits=3.0, free_bits_per_dimension=True)).train()
    torch.manual_seed(2)
    out = fb(**batch, labels=batch["input_ids"], kl_weight=0.7)
    expected = out.reconstruction_loss.mean() + 0.7 * free_bits_kl(out.kl_per_dimension, 3.0, per_dimension=True)
    torch.testing.assert_close(out.loss, expected)


def test_free_bits_mask_sentences_and_dimensions_below_the_target():
    # sentence KLs 3.5, 2.5, 6.0
    kl = torch.tensor([[0.5, 3.0], [1.5, 1.0], [4.0, 2.0]], requires_grad=True)
    per_sentence = free_bits_kl(kl, 3.0)  # only sentences 1 and 3 (> 3.0) keep their KL: (3.5 + 0 + 6.0) / 3
    assert per_sentence.item() == pytest.approx(9.5 / 3)
    per_sentence.backward()
    torch.testing.assert_close(kl.grad, torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]) / 3)
    assert free_bits_kl(kl, 6.0).item() == 0.0  # at the target counts as below, as the official `kl > target`
    kl.grad = None
    per_dimension = free_bits_kl(kl, 3.0, per_dimension=True)  # target 1.5 per dimension: keep 3.0, 4.0, 2.0
    assert per_dimension.item() == pytest.approx((3.0 + 4.0 + 2.0) / 3)
    per_dimension.backward()
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]) / 3)


# -- what transformers' ModelTesters check -------------------------------------------------------


def test_base_model_is_the_posterior_of_every_head(model, batch):
    assert isinstance(model.bnvae, BNVAEModel) and model.base_model is model.bnvae
    model.eval()
    with torch.no_grad():
        posterior = model.bnvae(**batch)
        out = model(**batch)
    for key in ("mu", "logvar", "kl", "kl_per_dimension"):
        torch.testing.assert_close(getattr(posterior, key), getattr(out, key), rtol=0, atol=0)
    torch.testing.assert_close(posterior.latent, posterior.mu)  # eval mode: z = mu
    assert posterior.mu.shape == posterior.logvar.shape == (8, 8) and posterior.kl.shape == (8,)


def test_return_dict_false_gives_the_tuple_of_outputs(model, batch):
    model.eval()
    with torch.no_grad():
        as_dict = model(**batch, labels=batch["input_ids"])
        as_tuple = model(**batch, labels=batch["input_ids"], return_dict=False)
        base = model.bnvae(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple) and isinstance(base, tuple)
    expected = [value for value in as_dict.values()]
    assert len(as_tuple) == len(expected)
    torch.testing.assert_close(as_tuple[0], as_dict.loss)  # loss first, as in transformers
    torch.testing.assert_close(as_tuple[1], as_dict.reconstruction_loss)
    torch.testing.assert_close(base[0], as_dict.mu)


def test_unknown_keyword_arguments_raise(model, batch):
    with pytest.raises(TypeError, match="lables"):
        model(**batch, lables=batch["input_ids"])
    with pytest.raises(TypeError, match="kl_wieght"):
        model(**batch, labels=batch["input_ids"], kl_wieght=0.0)
    with pytest.raises(TypeError, match="labels"):
        model.bnvae(**batch, labels=batch["input_ids"])


def test_every_trainable_parameter_gets_a_gradient(model, batch):
    model.train()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["bnvae.latent_head.bn.weight"]  # gamma, and only gamma


def test_labels_of_minus_100_are_ignored(model, batch):
    model.eval()
    labels = batch["input_ids"].clone()
    labels[:, 3:] = -100  # score the first two predicted tokens only
    with torch.no_grad():
        out = model(**batch, labels=labels)
    logp = out.logits[:, :2].log_softmax(-1).gather(-1, batch["input_ids"][:, 1:3, None])[..., 0]
    torch.testing.assert_close(out.reconstruction_loss, -logp.sum(-1))
    assert out.num_tokens.tolist() == [2] * 8


def test_continuing_from_the_returned_state_equals_one_pass(model, batch):
    model.eval()
    ids = batch["input_ids"]
    with torch.no_grad():
        whole = model(input_ids=ids, latent=torch.ones(8, 8))
        first = model(input_ids=ids[:, :3], latent=torch.ones(8, 8))
        rest = model(input_ids=ids[:, 3:], latent=torch.ones(8, 8), state=first.state)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), whole.logits, atol=1e-5, rtol=1e-5)


def test_decoding_checks_the_latent(model, batch):
    model.eval()
    with pytest.raises(ValueError, match=r"latent must have shape \(batch=8, latent_size=8\), got \(8, 3\)"):
        model(**batch, latent=torch.zeros(8, 3))
    first = model(input_ids=batch["input_ids"][:, :2], latent=torch.zeros(8, 8))
    with pytest.raises(ValueError, match="needs the latent z it started from"):
        model(input_ids=batch["input_ids"][:, 2:3], state=first.state)


def test_resize_token_embeddings_resizes_encoder_and_decoder(model, batch):
    old = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(model.config.vocab_size + 5)
    assert model.config.vocab_size == old.shape[0] + 5
    assert (
        model.get_input_embeddings().weight.shape[0]
        == model.get_output_embeddings().weight.shape[0]
        == old.shape[0] + 5
    )
    assert model.bnvae.encoder.embed_tokens.weight.shape[0] == old.shape[0] + 5
    torch.testing.assert_close(model.get_input_embeddings().weight[: old.shape[0]], old)
    ids = batch["input_ids"].clone()
    ids[0, 1] = old.shape[0] + 4  # a new token id is now valid
    model.eval()
    with torch.no_grad():
        assert model(input_ids=ids, attention_mask=batch["attention_mask"]).logits.shape[-1] == old.shape[0] + 5


def test_bf16_load_keeps_the_bn_head_and_kl_in_fp32(trained, batch, tmp_path):
    trained.save_pretrained(tmp_path)
    low = BNVAEForLanguageModeling.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert low.decoder.lm_head.weight.dtype == torch.bfloat16
    bn = low.bnvae.latent_head.bn
    assert bn.weight.dtype == bn.bias.dtype == bn.running_mean.dtype == bn.running_var.dtype == torch.float32
    torch.testing.assert_close(bn.weight, torch.full((8,), 0.6))  # gamma survives the load exactly
    with torch.no_grad():
        out = low(**batch, labels=batch["input_ids"])
    assert out.mu.dtype == out.kl.dtype == out.reconstruction_loss.dtype == out.loss.dtype == torch.float32
