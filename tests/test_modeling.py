"""BNVAEForLanguageModeling: the KL, the BN head's guarantees, padding independence, bad input."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from hf_bnvae import BNVAEForLanguageModeling, gaussian_kl_per_dimension
from tests.conftest import CORPUS, tiny_config


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
        model.latent_head.bn.bias.fill_(0.25)
    out = model(**batch)
    torch.testing.assert_close(out.mu.mean(0), torch.full((8,), 0.25), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.mu.std(0, unbiased=False), torch.full((8,), 0.6), atol=1e-3, rtol=0)


def test_gamma_gets_no_gradient_and_beta_does(model, batch):
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    bn = model.latent_head.bn
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
    assert model.latent_head.bn.weight.grad is None


@pytest.mark.parametrize("gamma", [0.5, 0.6, 0.7])
def test_batch_kl_respects_the_lower_bound(tokenizer, gamma):
    torch.manual_seed(0)
    model = BNVAEForLanguageModeling(tiny_config(len(tokenizer), gamma=gamma))
    model.train()
    bound = model.kl_lower_bound
    assert bound == pytest.approx(8 * gamma**2 / 2)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for step in range(20):
        ids = torch.randint(4, len(tokenizer), (16, 9))
        ids[:, 0], ids[:, -1] = 1, 2
        out = model(input_ids=ids, labels=ids)
        # exact up to BN's eps: batch var of mu = gamma^2 * v / (v + eps)
        assert out.kl.mean().item() >= bound * (1 - 1e-4), (step, out.kl.mean().item(), bound)
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()


def test_plain_vae_has_no_bn_and_no_bound(tokenizer, batch):
    model = BNVAEForLanguageModeling(tiny_config(len(tokenizer), gamma=0.0))
    assert model.latent_head.bn is None and model.kl_lower_bound == 0.0
    model.train()
    assert model(**batch).kl.mean() < 0.1  # collapsed-sized at initialisation


def test_delta_vae_commits_a_rate_per_dimension(tokenizer, batch):
    model = BNVAEForLanguageModeling(tiny_config(len(tokenizer), gamma=0.0, delta_rate=0.15))
    with torch.no_grad():
        model.encoder.to_posterior.weight.normal_(0, 3.0)  # posteriors far from anything at init
    out = model(**batch)
    assert (out.kl_per_dimension >= 0.15 - 1e-5).all()


def test_single_sentence_in_eval_mode_uses_running_statistics(model, batch, tokenizer):
    model.train()
    for _ in range(5):
        model(**batch)  # accumulate running statistics
    model.eval()
    one = tokenizer([CORPUS[3]], return_tensors="pt")
    out = model(**one, labels=one["input_ids"])
    bn = model.latent_head.bn
    mu_raw, _ = model.encoder(one["input_ids"], one["attention_mask"].sum(-1))
    expected = (mu_raw - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * 0.6 + bn.bias
    torch.testing.assert_close(out.mu, expected)
    torch.testing.assert_close(out.latent, out.mu)  # eval mode decodes the mean by default


def test_sentence_outputs_do_not_depend_on_padding(model, batch, tokenizer):
    model.train()
    for _ in range(3):
        model(**batch)
    model.eval()
    with torch.no_grad():
        padded = model(**batch, labels=batch["input_ids"])
        for i, text in enumerate(CORPUS):
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
        z = torch.randn(len(CORPUS), 3, 8)
        many = model.sentence_log_likelihood(batch["input_ids"], batch["attention_mask"], z)
        for k in range(3):
            one = model.sentence_log_likelihood(batch["input_ids"], batch["attention_mask"], z[:, k])
            torch.testing.assert_close(many[:, k], one, atol=1e-4, rtol=1e-5)


def test_lstm_lm_baseline_has_no_latent(tokenizer, batch):
    model = BNVAEForLanguageModeling(tiny_config(len(tokenizer), use_latent=False))
    assert model.encoder is None and model.latent_head is None and model.kl_lower_bound == 0.0
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


def test_training_batch_of_one_is_refused(model, tokenizer):
    model.train()
    one = tokenizer([CORPUS[0]], return_tensors="pt")
    with pytest.raises(ValueError, match="training batch of one sentence"):
        model(**one)


def test_left_padding_is_refused(model):
    ids = torch.tensor([[0, 1, 5, 2], [1, 5, 6, 2]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="right-padded"):
        model(input_ids=ids, attention_mask=mask)


def test_loss_without_logits_matches_the_full_path(model, batch):
    model.train()
    losses, grads = [], []
    for return_logits in (True, False):
        torch.manual_seed(5)  # same dropout masks and z
        model.zero_grad()
        out = model(**batch, labels=batch["input_ids"], return_logits=return_logits)
        out.loss.backward()
        assert (out.logits is None) == (not return_logits)
        losses.append(out.reconstruction_loss.detach())
        grads.append(model.decoder.lm_head.weight.grad.clone())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
