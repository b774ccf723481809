"""The paper's metrics against closed forms and known limits."""

import math
import shutil

import pytest
import torch
from torch.distributions import Normal

from hf_bnvae import BNVAEForLanguageModeling, build_word_tokenizer, load_pretrained
from hf_bnvae.data import read_text_file, sentence_loader, tokenize_texts
from hf_bnvae.evaluation import (
    active_units,
    evaluate_language_model,
    importance_weighted_log_likelihood,
    latent_usage,
    mutual_information,
    perplexity,
)


def batches_of(tokenizer, texts, size):
    for start in range(0, len(texts), size):
        batch = tokenizer(texts[start : start + size], padding=True, return_tensors="pt")
        batch["index"] = torch.arange(start, start + len(batch["input_ids"]))
        yield batch


def test_iw_nll_is_the_exact_lm_nll_when_the_decoder_ignores_z(tiny_config, batch, train_steps):
    model = train_steps(BNVAEForLanguageModeling(tiny_config(gamma=0.0)), batch, steps=10)
    with torch.no_grad():
        model.bnvae.encoder.to_posterior.weight.zero_()  # q(z|x) = N(0, I) = p(z)
        model.decoder.latent_to_cell.weight.zero_()
        model.decoder.lstm.weight_ih_l0[:, -8:].zero_()  # the decoder no longer reads z
        exact = model.sentence_log_likelihood(
            batch["input_ids"], batch["attention_mask"], torch.randn(len(batch["input_ids"]), 8)
        )
        for k in (1, 7, 50):
            iw = importance_weighted_log_likelihood(model, batch["input_ids"], batch["attention_mask"], num_samples=k)
            torch.testing.assert_close(iw.float(), exact, atol=1e-4, rtol=0)


def test_iw_bound_tightens_with_k_and_k1_is_the_elbo(model, batch, train_steps):
    train_steps(model, batch, steps=30)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    repeats = 300
    with torch.no_grad():
        estimates = {
            k: torch.stack(
                [importance_weighted_log_likelihood(model, ids, mask, num_samples=k) for _ in range(repeats)]
            )
            for k in (1, 10, 100)
        }  # (repeats, B)
        mu, logvar = model.encode_posterior(ids, mask)
        z = mu[None] + torch.randn(repeats, *mu.shape) * (0.5 * logvar).exp()
        recon = torch.stack([model.sentence_log_likelihood(ids, mask, zr) for zr in z])
        kl = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1) - Normal(0, 1).log_prob(z).sum(-1)
    elbo = (recon - kl).double()
    means = {k: v.mean(0) for k, v in estimates.items()}
    stderr = {k: v.std(0) / math.sqrt(repeats) for k, v in estimates.items()}
    # K = 1 is the ELBO in expectation (same-sized Monte Carlo error on both sides)
    assert ((means[1] - elbo.mean(0)).abs() <= 4 * (stderr[1] + elbo.std(0) / math.sqrt(repeats))).all()
    # log p(x) estimates grow with K: the NLL does not increase
    assert (means[10] >= means[1] - 3 * (stderr[1] + stderr[10])).all()
    assert (means[100] >= means[10] - 3 * (stderr[10] + stderr[100])).all()
    assert means[100].sum() > means[1].sum()  # and the gap is real in total


def test_active_units_on_known_variances():
    n = 400
    base = torch.randn(n, 4, dtype=torch.float64)
    base = (base - base.mean(0)) / base.std(0, unbiased=True)  # unit sample variance (N-1 divisor)
    targets = torch.tensor([0.005, 0.0099, 0.0101, 1.0], dtype=torch.float64)
    count, variances = active_units(base * targets.sqrt())
    assert count == 2
    torch.testing.assert_close(variances.double(), targets, rtol=1e-5, atol=0)
    # the N-1 divisor matters: values +-a have unbiased variance 2a^2 but biased a^2
    a = math.sqrt(0.007)
    assert active_units(torch.tensor([[-a], [a]]))[0] == 1
    with pytest.raises(ValueError, match="at least 2"):
        active_units(torch.zeros(1, 3))


def quadrature_mi_and_aggregate_kl(mu, s):
    """1-D posteriors N(mu_i, s^2): E_x KL(q(z|x)||p), KL(q(z)||p) and MI by numerical integration."""
    grid = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    dz = grid[1] - grid[0]
    q = Normal(mu[:, None], s).log_prob(grid[None]).exp().mean(0)
    p = Normal(0.0, 1.0).log_prob(grid).exp()
    aggregate_kl = float((q * (q.clamp_min(1e-300).log() - p.log())).sum() * dz)
    expected_kl = float((0.5 * (mu**2 + s**2 - 1 - math.log(s**2))).mean())
    return expected_kl - aggregate_kl, aggregate_kl


def test_mutual_information_and_aggregate_kl_on_gaussian_posteriors():
    torch.manual_seed(0)
    n = 4000
    mu = 1.5 * torch.randn(n, 1, dtype=torch.float64)
    s = 0.5
    logvar = torch.full_like(mu, math.log(s**2))
    mi, aggregate_kl = mutual_information(mu, logvar, torch.Generator().manual_seed(1))
    expected_mi, expected_aggregate_kl = quadrature_mi_and_aggregate_kl(mu[:, 0], s)
    assert mi == pytest.approx(expected_mi, abs=0.05)
    assert aggregate_kl == pytest.approx(expected_aggregate_kl, abs=0.05)
    # a posterior that ignores x carries no information
    mi_none, _ = mutual_information(torch.zeros(n, 2), torch.zeros(n, 2), torch.Generator().manual_seed(1))
    assert abs(mi_none) < 0.05


def test_more_samples_per_sentence_lower_the_mi_estimators_noise():
    torch.manual_seed(0)
    mu, logvar = 1.5 * torch.randn(500, 4, dtype=torch.float64), torch.full((500, 4), math.log(0.25))
    expected, _ = quadrature_mi_and_aggregate_kl(mu[:, 0], 0.5)  # 4 independent dimensions: 4x the 1-D MI

    def spread(samples):
        values = torch.tensor(
            [mutual_information(mu, logvar, torch.Generator().manual_seed(s), samples)[0] for s in range(12)]
        )
        return values.mean().item(), values.std().item()

    (mean_1, std_1), (mean_10, std_10) = spread(1), spread(10)
    assert std_10 < std_1 / 2  # ~ 1 / sqrt(10)
    assert mean_10 == pytest.approx(mean_1, abs=3 * std_1)
    assert mean_10 < 4 * expected  # a log-sum-exp over 500 posteriors underestimates log q(z): biased low


def test_latent_usage_gap_is_zero_for_a_decoder_that_ignores_z(
    tiny_config, batch, train_steps, tokenizer, sentences_file
):
    model = train_steps(BNVAEForLanguageModeling(tiny_config()), batch, steps=20)
    texts = read_text_file(sentences_file).texts[:24]
    used = latent_usage(model, batches_of(tokenizer, texts, 8), seed=3)
    # by hand: NLL with the own posterior mean; the other z comes from a different sentence
    all_ids = tokenizer(texts, padding=True, return_tensors="pt")
    own = -model.sentence_log_likelihood(
        all_ids["input_ids"], all_ids["attention_mask"], model.posterior_mean(**all_ids)
    ).mean()
    assert used["nll_own_z"] == pytest.approx(own.item(), rel=1e-5) and used["num_sentences"] == 24
    assert used["z_gap"] == pytest.approx(used["nll_other_z"] - used["nll_own_z"])
    assert 0 < used["token_accuracy"] < 1
    with torch.no_grad():
        model.decoder.latent_to_cell.weight.zero_()
        model.decoder.lstm.weight_ih_l0[:, -8:].zero_()  # the decoder no longer reads z
    ignored = latent_usage(model, batches_of(tokenizer, texts, 8), seed=3)
    assert ignored["z_gap"] == pytest.approx(0.0, abs=1e-4)


def test_perplexity_counts_words_and_end_token(model, tokenizer):
    assert perplexity(6.0, 3) == pytest.approx(math.e**2)
    texts = ["the cat", "the dog sat on it"]  # 2 + 1 and 5 + 1 predicted tokens
    metrics = evaluate_language_model(model, batches_of(tokenizer, texts, 2))
    assert metrics["num_tokens"] == 3 + 6 and metrics["num_sentences"] == 2
    assert metrics["ppl_elbo"] == pytest.approx(math.exp(metrics["nelbo"] * 2 / 9))


def test_metrics_do_not_depend_on_the_evaluation_batch_size(model, batch, tokenizer, corpus, train_steps):
    train_steps(model, batch, steps=10)
    texts = corpus * 3
    runs = [evaluate_language_model(model, batches_of(tokenizer, texts, size), iw_samples=20) for size in (1, 4, 24)]
    for other in runs[1:]:
        for key, value in runs[0].items():
            assert other[key] == pytest.approx(value, abs=1e-4), key


def test_lm_baseline_metrics(tokenizer, tiny_config, corpus):
    model = BNVAEForLanguageModeling(tiny_config(use_latent=False))
    metrics = evaluate_language_model(model, batches_of(tokenizer, corpus, 3), iw_samples=5)
    assert metrics["kl"] == 0.0 and metrics["au"] == 0
    assert metrics["nll"] == pytest.approx(metrics["nelbo"], abs=1e-4)  # exact likelihood both ways


def test_local_evaluate_modules_match_the_library_functions():
    import evaluate

    from hf_bnvae.evaluate_modules import path_of

    torch.manual_seed(0)
    mu = torch.randn(60, 5, dtype=torch.float64) * torch.tensor([1.0, 0.05, 0.3, 0.2, 0.0], dtype=torch.float64)
    logvar = torch.randn(60, 5, dtype=torch.float64) * 0.1 - 1
    au = evaluate.load(path_of("active_units"))
    for chunk in mu.split(25):  # batches added as they come, like an evaluation loop
        au.add_batch(posterior_means=chunk.tolist())
    result = au.compute()
    assert result["active_units"] == active_units(mu)[0] == 3
    mi = evaluate.load(path_of("mutual_information")).compute(mu=mu.tolist(), logvar=logvar.tolist(), seed=3)
    expected = mutual_information(mu, logvar, torch.Generator().manual_seed(3))
    assert (mi["mutual_information"], mi["aggregate_kl"]) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="no evaluate module 'bleu'"):
        path_of("bleu")


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias (default)", "bias"])
def test_compiled_output_layer_gives_the_same_nll(tiny_config, tokenizer, corpus, batch, train_steps, bias):
    torch.manual_seed(0)
    model = train_steps(BNVAEForLanguageModeling(tiny_config(output_layer_bias=bias)), batch)
    texts = corpus * 2
    # it really compiles (it once fell back to eager on every bias-free model, warning only); without a
    # C++ compiler the fallback is the documented behaviour, and eager against eager would prove nothing
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler: compile=True falls back to the eager output layer")
    eager = evaluate_language_model(model, batches_of(tokenizer, texts, 5), iw_samples=8)
    assert model._compiled_output_layer_nll is None
    compiled = evaluate_language_model(model, batches_of(tokenizer, texts, 5), iw_samples=8, compile=True)
    assert model._compiled_output_layer_nll is not None  # compiled, and used without gradients from now on
    assert compiled["nll"] == pytest.approx(eager["nll"], abs=1e-4)
    states, labels = torch.randn(7, model.config.decoder_hidden_size), torch.arange(7)
    with torch.no_grad():
        compiled_nll = model.output_layer_nll(states, labels)
    eager_nll = model.output_layer_nll(states, labels)  # with gradients: the eager layer
    assert eager_nll.requires_grad and not compiled_nll.requires_grad
    torch.testing.assert_close(compiled_nll, eager_nll.detach(), atol=1e-5, rtol=1e-5)


def test_metrics_from_the_data_loader_match_hand_made_batches(trained, tokenizer, corpus):
    """The loader every script uses (datasets.map, length-grouped batches, collate)."""
    texts = corpus * 2
    loader = sentence_loader(tokenize_texts(tokenizer, texts), tokenizer, batch_size=5)
    assert sorted(i for batch in loader for i in batch["index"].tolist()) == list(range(len(texts)))
    by_loader = evaluate_language_model(trained, loader, iw_samples=6)
    by_hand = evaluate_language_model(trained, batches_of(tokenizer, texts, 4), iw_samples=6)
    for key, value in by_hand.items():
        assert by_loader[key] == pytest.approx(value, abs=1e-4), key


def test_sentences_repeated_across_processes_are_counted_once(trained, tokenizer, corpus):
    """Accelerate evens out the batches of the last processes by repeating the first ones; the gathered
    metrics keep each sentence once."""
    once = evaluate_language_model(trained, batches_of(tokenizer, corpus, 3))
    repeated = [*batches_of(tokenizer, corpus, 3), next(batches_of(tokenizer, corpus, 3))]
    assert evaluate_language_model(trained, repeated) == once


def test_per_sentence_figures_average_to_the_dataset_figures_in_index_order(trained, tokenizer, corpus):
    texts = corpus * 2
    shuffled = [*batches_of(tokenizer, texts, 4)][::-1]  # batches in reverse: the result is still in index order
    metrics = evaluate_language_model(trained, shuffled, iw_samples=6, per_sentence=True)
    per_sentence = metrics["per_sentence"]
    assert per_sentence["index"] == list(range(len(texts)))
    assert sum(per_sentence["nll"]) / len(texts) == pytest.approx(metrics["nll"])
    assert sum(per_sentence["nelbo"]) / len(texts) == pytest.approx(metrics["nelbo"])
    assert "per_sentence" not in evaluate_language_model(trained, batches_of(tokenizer, texts, 4))


def test_iw_convergence_left_over_bias_and_an_lm_without_k(saved, tiny_config, tokenizer, corpus, tmp_path, capsys):
    import iw_convergence

    # a bias of c / K above the NLL: the fall between the two largest K gives back c / K at the largest
    c, nll = 30.0, 100.0
    assert iw_convergence.left_at_largest({k: nll + c / k for k in (5, 50, 500)}) == pytest.approx(c / 500)
    assert iw_convergence.left_at_largest({500: nll}) is None
    torch.manual_seed(0)
    lm = BNVAEForLanguageModeling(tiny_config(use_latent=False)).eval()  # no z: the same figure at every K
    by_k = iw_convergence.iw_nll_by_k(lm, tokenizer, corpus, [1, 7])
    assert by_k[1] == pytest.approx(by_k[7])
    test_file = tmp_path / "test.txt"
    test_file.write_text("\n".join(corpus) + "\n")
    args = [str(saved), "--test_file", str(test_file), "--num_texts", "6", "--iw_samples", "20", "2", "20"]
    results = iw_convergence.main(args)[str(saved)]
    assert list(results) == [2, 20] and all(math.isfinite(v) for v in results.values())
    assert "left at K = 20" in capsys.readouterr().out
    with pytest.raises(ValueError, match="has only 8 texts"):
        iw_convergence.main([*args[:3], "--num_texts", "9"])


def test_saving_by_position_adds_up_to_the_per_sentence_saving(saved, tiny_config, tokenizer, corpus, tmp_path):
    import saving_by_position

    torch.manual_seed(1)
    lm = BNVAEForLanguageModeling(tiny_config(use_latent=False)).eval()
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    test_file = tmp_path / "test.txt"
    test_file.write_text("\n".join(corpus) + "\n")
    result = saving_by_position.main(
        [str(tmp_path / "lm"), str(saved), "--test_file", str(test_file), "--num_texts", "8"]
    )
    # the total is the LM's NLL minus the latent model's with each sentence's own posterior mean, per sentence
    model, _ = load_pretrained(saved)
    batch = tokenizer(corpus, padding=True, return_tensors="pt")
    with torch.no_grad():
        mu, _ = model.encode_posterior(batch["input_ids"], batch["attention_mask"])
        own = model.sentence_log_likelihood(batch["input_ids"], batch["attention_mask"], mu)
        plain = lm.sentence_log_likelihood(batch["input_ids"], batch["attention_mask"])
    assert result["per_text"] == pytest.approx((own - plain).mean().item(), abs=1e-4)
    assert sum(b["per_text"] for b in result["buckets"]) == pytest.approx(result["per_text"])
    lengths = [len(t.split()) + 1 for t in corpus]  # target tokens: words + the end token
    assert [b["tokens"] for b in result["buckets"]][:2] == [
        sum(min(n, 5) for n in lengths),
        sum(max(n - 5, 0) for n in lengths),
    ]
    assert result["buckets"][2]["per_token"] is None  # no sentence reaches position 11
    other = build_word_tokenizer(["entirely different words here"])
    other.save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="different vocabularies"):
        saving_by_position.main([str(tmp_path / "lm"), str(saved), "--test_file", str(test_file), "--num_texts", "8"])
