"""The paper's evaluation: importance-weighted NLL, -ELBO, KL, mutual information, active units.

Plain torch, model in eval mode, batched over sentences and importance samples in memory-bounded
chunks. All quantities are in nats per sentence unless they say otherwise; PPL is per token, with
the end token counted and the start token not.
"""

import math

import torch

from .modeling_bnvae import sequence_lengths

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z, mu, logvar):
    """log N(z; mu, diag exp(logvar)) summed over the last dimension. Broadcasts; returns (...)."""
    return -0.5 * (((z - mu) ** 2) / logvar.exp() + logvar + LOG_2PI).sum(-1)


def standard_normal_log_density(z):
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z**2 + LOG_2PI).sum(-1)


def active_units(mu, threshold=0.01):
    """Active units (Burda et al., 2016): dimensions with Var_x(E_q[z|x]) >= threshold.

    mu: (N, n) posterior means over the evaluation set. Variance with the N-1 divisor.
    Returns (number of active units, per-dimension variances (n,)).
    """
    if mu.shape[0] < 2:
        raise ValueError("active units need the posterior means of at least 2 sentences")
    variances = mu.double().var(dim=0, unbiased=True)
    return int((variances >= threshold).sum()), variances.float()


def aggregate_posterior_log_density(z, mu, logvar, chunk_size=256):
    """log q(z_i) with q(z) = (1/N) sum_j q(z|x_j), for every row of z. z: (M, n); mu, logvar: (N, n).

    Returns (M,). Evaluated in chunks of z rows so memory stays at chunk_size * N * n floats.
    """
    z, mu, logvar = z.double(), mu.double(), logvar.double()
    out = []
    for start in range(0, z.shape[0], chunk_size):
        block = gaussian_log_density(z[start : start + chunk_size, None, :], mu[None], logvar[None])  # (c, N)
        out.append(torch.logsumexp(block, dim=1) - math.log(mu.shape[0]))
    return torch.cat(out)


def mutual_information(mu, logvar, generator=None, samples_per_sentence=1):
    """I_q(x; z) and KL(q(z) || p(z)) over the evaluation set (He et al., 2019's estimator).

    I_q = E_x[E_q(z|x) log q(z|x)] - E_{q(z)} log q(z): the first term analytic (minus the posterior
    entropy), the second with samples_per_sentence draws z ~ q(z|x_i) per sentence (He et al.: 1) and
    log q(z) a log-sum-exp over the posteriors of the whole set. More draws lower the estimator's
    sampling noise (measured by benchmarks/mi_noise.py), at samples_per_sentence times the cost.
    KL(q(z)||p(z)) uses the same draws. mu, logvar: (N, n). Returns (mi, aggregate_kl) in nats.
    """
    mu, logvar = mu.double(), logvar.double()
    shape = (samples_per_sentence, *mu.shape)
    noise = torch.randn(shape, generator=generator, dtype=mu.dtype, device="cpu").to(mu.device)
    z = (mu + noise * (0.5 * logvar).exp()).reshape(-1, mu.shape[1])  # (S * N, n)
    neg_entropy = (-0.5 * mu.shape[1] * LOG_2PI - 0.5 * (1 + logvar).sum(-1)).mean()
    log_qz = aggregate_posterior_log_density(z, mu, logvar)
    mi = neg_entropy - log_qz.mean()
    aggregate_kl = (log_qz - standard_normal_log_density(z)).mean()
    return float(mi), float(aggregate_kl)


@torch.no_grad()
def latent_usage(model, batches, seed=0):
    """How much the decoder uses z, per sentence in nats (eval mode, z = the posterior mean).

    The reconstruction NLL -log p(x|z) with each sentence's own z and with another sentence's z (a
    seeded random derangement over the whole set), their gap (0 for a decoder that ignores z), and the
    teacher-forced token accuracy with the own z. batches: as for `evaluate_language_model`, one
    process. Returns {"nll_own_z", "nll_other_z", "z_gap", "token_accuracy", "num_sentences"}.
    """
    was_training = model.training
    model.eval()
    batches = list(batches)
    means = {}
    for batch in batches:
        for index, mu in zip(
            batch["index"].tolist(), model.posterior_mean(batch["input_ids"], batch["attention_mask"])
        ):
            means[index] = mu
    order = sorted(means)
    if len(order) < 2:
        raise ValueError("latent_usage needs at least 2 sentences (a z from another sentence)")
    shuffled = [order[i] for i in torch.randperm(len(order), generator=torch.Generator().manual_seed(seed)).tolist()]
    other = {a: b for a, b in zip(shuffled, shuffled[1:] + shuffled[:1])}  # a cycle: never a sentence's own z
    own_nll = other_nll = correct = tokens = 0.0
    for batch in batches:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        indices = batch["index"].tolist()
        own = model(input_ids, attention_mask, labels=input_ids, latent=torch.stack([means[i] for i in indices]))
        swapped = torch.stack([means[other[i]] for i in indices])
        own_nll += float(own.reconstruction_loss.sum())
        other_nll += float(-model.sentence_log_likelihood(input_ids, attention_mask, swapped).sum())
        valid = attention_mask[:, 1:].bool()
        correct += float(((own.logits[:, :-1].argmax(-1) == input_ids[:, 1:]) & valid).sum())
        tokens += float(valid.sum())
    model.train(was_training)
    n = len(order)
    return {
        "nll_own_z": own_nll / n,
        "nll_other_z": other_nll / n,
        "z_gap": (other_nll - own_nll) / n,
        "token_accuracy": correct / tokens,
        "num_sentences": n,
    }


def sentence_noise(indices, shape, seed):
    """Standard normal noise of `shape` for each sentence, drawn from a generator seeded by
    (seed, sentence index): results then do not depend on batching or on the number of processes.
    indices: (B,) sentence indices. Returns (B, *shape)."""
    noise = torch.empty((len(indices), *shape))
    generator = torch.Generator()
    for row, index in enumerate(indices.tolist()):
        generator.manual_seed(seed * 1_000_003 + index)
        noise[row] = torch.randn(shape, generator=generator)
    return noise


@torch.no_grad()
def importance_weighted_log_likelihood(
    model, input_ids, attention_mask=None, num_samples=500, noise=None, max_tokens=None
):
    """log p(x) ~ log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), per sentence (nats).

    input_ids, attention_mask: (B, T), right-padded. noise: (B, K, n) standard normal draws (default: fresh
    ones), z_k = mu + sigma * noise_k. The sentences are decoded in groups of equal length, each cut to its
    length: no decoder step is spent on padding, and the output layer takes the unpadded path. A group and
    a chunk of its samples go through the decoder at once; the chunk holds about max_tokens (sentence,
    sample, token) triples (default 2**14: at the ptb size measured 1.3x faster and 3x leaner in peak
    memory than 2**16; see docs/speed.md). Returns (B,), float64. The LSTM LM (no latent) gets its exact
    log p(x).
    """
    if not model.config.use_latent:
        return model.sentence_log_likelihood(input_ids, attention_mask)
    mu, logvar = model.encode_posterior(input_ids, attention_mask)
    if noise is None:
        noise = torch.randn((mu.shape[0], num_samples, mu.shape[1]))
    noise = noise.to(mu.device)
    lengths = sequence_lengths(input_ids, attention_mask)
    log_likelihood = torch.empty(input_ids.shape[0], dtype=torch.float64, device=mu.device)
    for length in lengths.unique().tolist():
        rows = (lengths == length).nonzero()[:, 0]
        log_likelihood[rows] = equal_length_log_likelihood(
            model, input_ids[rows, :length], mu[rows], logvar[rows], noise[rows], max_tokens
        )
    return log_likelihood


def equal_length_log_likelihood(model, input_ids, mu, logvar, noise, max_tokens=None):
    """importance_weighted_log_likelihood of sentences without padding: input_ids (b, T), their posterior
    mu, logvar (b, n) and noise (b, K, n). Returns (b,), float64."""
    num_samples = noise.shape[1]
    chunk = max(1, min(num_samples, (max_tokens or 2**14) // input_ids.numel()))
    std = (0.5 * logvar).exp()
    log_weights = []
    for start in range(0, num_samples, chunk):
        z = mu[:, None] + noise[:, start : start + chunk] * std[:, None]  # (b, k, n)
        log_px_z = model.sentence_log_likelihood(input_ids, None, z)  # (b, k)
        log_weights.append(
            log_px_z + standard_normal_log_density(z) - gaussian_log_density(z, mu[:, None], logvar[:, None])
        )
    log_weights = torch.cat(log_weights, dim=1).double()
    return torch.logsumexp(log_weights, dim=1) - math.log(num_samples)


def perplexity(total_nll, total_tokens):
    """exp(total NLL / total tokens); tokens count the words and the end token, not the start token.
    inf when that overflows (a diverged model), nan for a nan NLL."""
    try:
        return math.exp(total_nll / total_tokens)
    except OverflowError:
        return math.inf


def gather_sentences(per_sentence, accelerator):
    """Concatenate per-sentence results across processes, ordered by sentence index. A sentence seen twice
    (Accelerate repeats a few batches so that every process gets as many) is kept once.
    per_sentence: {name: (B, ...) tensor}, with the sentence indices under "index"."""
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object([per_sentence])
    else:
        parts = [per_sentence]
    merged = {}
    for part in parts:
        for key, values in part.items():
            merged.setdefault(key, []).append(values)
    merged = {key: torch.cat(values) for key, values in merged.items()}
    order = merged["index"].argsort()
    index = merged["index"][order]
    first = torch.ones_like(index, dtype=torch.bool)
    first[1:] = index[1:] != index[:-1]
    return {key: values[order][first] for key, values in merged.items()}


@torch.no_grad()
def evaluate_language_model(
    model,
    batches,
    accelerator=None,
    iw_samples=0,
    seed=0,
    iw_max_tokens=None,
    compile=False,
    mi_samples=1,
    per_sentence=False,
):
    """Dataset-level metrics of a BN-VAE (or the LSTM LM baseline) on `batches`.

    batches: iterable of dicts with input_ids, attention_mask (B, T) and index (B,), the sentence
    indices (each sentence once over all processes). Returns a dict of floats: nelbo, reconstruction,
    kl (nats per sentence, one z sample per sentence, KL weight 1), ppl_elbo (the ELBO's perplexity
    bound), au, mi, aggregate_kl, num_sentences, num_tokens; with iw_samples > 0 also nll and ppl.
    compile=True compiles the model's output layer first (`model.compile_output_layer`; it stays
    compiled), which the importance-weighted NLL spends most of its time in (same numbers).
    mi_samples: posterior draws per sentence in the MI estimate (1: He et al.'s estimator).
    per_sentence=True adds "per_sentence": {"index": sentence indices, "nelbo", and with iw_samples > 0 "nll"}
    (lists in index order, nats per sentence), for paired comparisons of models on the same sentences.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if compile and iw_samples > 0:
        model.compile_output_layer()
    collected = {}
    for batch in batches:
        input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        indices = batch["index"].cpu()
        if model.config.use_latent:
            posterior = model.bnvae(input_ids, attention_mask, sample_latent=False)  # mu, logvar and the KL
            mu, logvar, kl = posterior.mu, posterior.logvar, posterior.kl
            z = mu + sentence_noise(indices, mu.shape[1:], seed).to(device) * (0.5 * logvar).exp()
            reconstruction = -model.sentence_log_likelihood(input_ids, attention_mask, z)
        else:
            reconstruction = -model.sentence_log_likelihood(input_ids, attention_mask)
            kl = mu = logvar = None
        values = {
            "index": indices,
            "reconstruction": reconstruction.double().cpu(),
            "num_tokens": (attention_mask.sum(-1) - 1).cpu(),
        }
        if kl is not None:
            values.update(kl=kl.double().cpu(), mu=mu.float().cpu(), logvar=logvar.float().cpu())
        if iw_samples > 0:
            noise = (
                sentence_noise(indices, (iw_samples, model.config.latent_size), seed + 1)
                if model.config.use_latent
                else None
            )
            values["log_likelihood"] = (
                importance_weighted_log_likelihood(model, input_ids, attention_mask, iw_samples, noise, iw_max_tokens)
                .double()
                .cpu()
            )
        for key, value in values.items():
            collected.setdefault(key, []).append(value)
    model.train(was_training)
    gathered = gather_sentences({key: torch.cat(value) for key, value in collected.items()}, accelerator)

    sentences, tokens = len(gathered["index"]), int(gathered["num_tokens"].sum())
    kl = gathered.get("kl", torch.zeros(sentences, dtype=torch.double))
    nelbo = gathered["reconstruction"] + kl
    metrics = {
        "num_sentences": sentences,
        "num_tokens": tokens,
        "nelbo": float(nelbo.mean()),
        "reconstruction": float(gathered["reconstruction"].mean()),
        "kl": float(kl.mean()),
        "ppl_elbo": perplexity(float(nelbo.sum()), tokens),
        "au": 0,
        "mi": 0.0,
        "aggregate_kl": 0.0,
    }
    if "mu" in gathered:
        metrics["au"] = active_units(gathered["mu"])[0]
        metrics["mi"], metrics["aggregate_kl"] = mutual_information(
            gathered["mu"], gathered["logvar"], torch.Generator().manual_seed(seed + 2), mi_samples
        )
    if "log_likelihood" in gathered:
        nll = -gathered["log_likelihood"]
        metrics["nll"] = float(nll.mean())
        metrics["ppl"] = perplexity(float(nll.sum()), tokens)
        metrics["iw_samples"] = iw_samples
    if per_sentence:
        metrics["per_sentence"] = {"index": gathered["index"].tolist(), "nelbo": nelbo.tolist()}
        if "log_likelihood" in gathered:
            metrics["per_sentence"]["nll"] = (-gathered["log_likelihood"]).tolist()
    return metrics


__all__ = [
    "active_units",
    "aggregate_posterior_log_density",
    "evaluate_language_model",
    "gaussian_log_density",
    "importance_weighted_log_likelihood",
    "gather_sentences",
    "latent_usage",
    "mutual_information",
    "perplexity",
    "sentence_noise",
    "standard_normal_log_density",
]
