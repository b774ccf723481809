"""A learned BN scale per latent dimension with a floor (BNVAEConfig.gamma_mode="learned", gamma_min)."""

import math

import pytest
import torch

from hf_bnvae import BNVAEConfig, BNVAEForLanguageModeling
from hf_bnvae.methods import resolve_method
from hf_bnvae.modeling_bnvae import bn_kl_guarantee, inverse_softplus


def learned(tiny_config, **overrides):
    torch.manual_seed(0)
    return BNVAEForLanguageModeling(tiny_config(gamma_mode="learned", gamma=0.6, gamma_min=0.3, **overrides))


def test_the_config_checks_the_mode_and_the_floor_and_gives_the_floors_bound():
    with pytest.raises(ValueError, match="gamma_mode='adaptive' is invalid: must be one of"):
        BNVAEConfig(gamma_mode="adaptive")
    with pytest.raises(ValueError, match="gamma_min=0.6 is invalid: must be below gamma"):
        BNVAEConfig(gamma_mode="learned", gamma=0.6, gamma_min=0.6)
    with pytest.raises(ValueError, match="gamma_min"):
        BNVAEConfig(gamma_mode="learned", gamma_min=-0.1)
    config = BNVAEConfig(latent_size=32, gamma_mode="learned", gamma=0.6, gamma_min=0.3)
    assert config.kl_lower_bound == pytest.approx(32 * 0.3**2 / 2)
    assert BNVAEConfig(latent_size=32, gamma=0.6).kl_lower_bound == pytest.approx(32 * 0.6**2 / 2)


def test_inverse_softplus_inverts_softplus():
    for y in (1e-4, 0.3, 0.6, 5.0):
        assert torch.nn.functional.softplus(
            torch.tensor(inverse_softplus(y), dtype=torch.float64)
        ).item() == pytest.approx(y)


def test_the_scales_start_at_gamma_are_trained_and_never_fall_below_the_floor(tiny_config, batch):
    model = learned(tiny_config).train()
    head = model.bnvae.latent_head
    torch.testing.assert_close(head.scale(), torch.full((model.config.latent_size,), 0.6))
    assert not head.bn.weight.requires_grad  # the fixed gamma's weight is not used
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert head.gamma_offset.grad is not None and head.gamma_offset.grad.abs().sum() > 0
    with torch.no_grad():
        head.gamma_offset.fill_(-50.0)  # however far training pushes it down
    assert bool((head.scale() >= 0.3).all()) and head.scale().min().item() == pytest.approx(0.3, abs=1e-6)


def test_each_dimension_of_a_training_batch_has_its_learned_scale(tiny_config, batch):
    """BN sets dimension i's batch std to gamma_i sqrt(v_i / (v_i + eps)): the batch KL guarantee is
    sum_i gamma_i^2 v_i / (v_i + eps) / 2 >= n gamma_min^2 / 2 times the smallest factor."""
    model = learned(tiny_config).train()
    head = model.bnvae.latent_head
    with torch.no_grad():
        head.gamma_offset.copy_(torch.linspace(-3.0, 2.0, model.config.latent_size))
        raw_mu, raw_logvar = model.bnvae.encoder(batch["input_ids"], batch["attention_mask"].sum(-1))
        mu, _ = head(raw_mu, raw_logvar)
    v = raw_mu.float().var(0, unbiased=False)
    factor = v / (v + head.bn.eps)
    torch.testing.assert_close(mu.var(0, unbiased=False), head.scale() ** 2 * factor, rtol=1e-4, atol=1e-6)
    guarantee = bn_kl_guarantee(mu)
    assert guarantee == pytest.approx(float((head.scale() ** 2 * factor).sum() / 2), rel=1e-4)
    assert guarantee >= model.config.kl_lower_bound * float(factor.min()) - 1e-6


def test_learned_scales_survive_save_and_load(tiny_config, batch, tmp_path):
    model = learned(tiny_config)
    with torch.no_grad():
        model.bnvae.latent_head.gamma_offset.add_(torch.linspace(-1.0, 1.0, model.config.latent_size))
    model.save_pretrained(tmp_path)
    loaded = BNVAEForLanguageModeling.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.bnvae.latent_head.scale(), model.bnvae.latent_head.scale())
    assert loaded.config.gamma_mode == "learned" and loaded.config.gamma_min == 0.3
    assert loaded.bnvae.latent_head.gamma_offset.requires_grad  # trainable after loading, unlike a fixed gamma


def test_the_method_table_has_it_one_flag_away():
    recipe = resolve_method("bnvae_learned", gamma_min=0.4)
    assert recipe.config == {"gamma_mode": "learned", "gamma": 0.6, "gamma_min": 0.4}
    assert recipe.label == "BN-VAE (learned gamma >= 0.4)"
    with pytest.raises(
        ValueError, match="--gamma_min 0.7: the learned scales' floor must be >= 0 and below --gamma 0.6"
    ):
        resolve_method("bnvae_learned", gamma_min=0.7)
    with pytest.raises(ValueError, match="--gamma_min only applies to --method bnvae_learned"):
        resolve_method("bnvae", gamma_min=0.3)


def test_train_py_logs_the_learned_scales_every_epoch(train_run):
    model, results = train_run("--method", "bnvae_learned", "--gamma_min", "0.2", "--max_train_samples", "64")
    gammas = results["history"][-1]["gammas"]
    assert len(gammas) == model.config.latent_size and min(gammas) >= 0.2
    best = results["history"][results["best_epoch"]]["gammas"]  # the saved model is the best epoch's
    torch.testing.assert_close(torch.tensor(best), model.bnvae.latent_head.scale().detach())
    assert results["kl_lower_bound"] == pytest.approx(model.config.latent_size * 0.2**2 / 2)
    assert not math.isclose(min(gammas), max(gammas))  # trained: the dimensions moved apart
