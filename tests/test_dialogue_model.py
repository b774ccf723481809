"""BN-CVAE (BNCVAEForConditionalGeneration): the objective against the maths, the BN on the recognition
mean only, generation through GenerationMixin, saving, the Auto classes and remote code."""

import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoModelForSeq2SeqLM

from hf_bnvae import BNCVAEConfig, BNCVAEForConditionalGeneration, BNCVAEModel
from hf_bnvae.modeling_bncvae import bag_of_words_loss, gaussian_kl_between, pad_contexts

CONTEXTS = [
    ["hi how are you", "fine and you"],
    ["the dog sat on a log"],
    ["we ate bread", "and cheese", "it was a quiet night in the city"],
    ["she read the letter twice", "the old man walked to the river"],
]
RESPONSES = ["i am fine", "the cat sat on the mat", "the children played in the snow", "a dog ran in the park"]


@pytest.fixture
def dialogue_config(tokenizer):
    def make(**overrides):
        sizes = dict(embedding_size=16, utterance_hidden_size=12, context_hidden_size=20, decoder_hidden_size=18)
        return BNCVAEConfig(vocab_size=len(tokenizer), latent_size=6, **{**sizes, **overrides})

    return make


@pytest.fixture
def dialogue_batch(tokenizer):
    model_config = BNCVAEConfig(vocab_size=len(tokenizer))
    ids = [tokenizer(turns)["input_ids"] for turns in CONTEXTS]
    speakers = [[(len(turns) - 1 - k) % 2 for k in range(len(turns))] for turns in CONTEXTS]
    context_ids, context_mask, context_speakers = pad_contexts(ids, speakers, model_config.pad_token_id)
    response = tokenizer(RESPONSES, padding=True, return_tensors="pt")
    return {
        "input_ids": response["input_ids"],
        "attention_mask": response["attention_mask"],
        "context_input_ids": context_ids,
        "context_attention_mask": context_mask,
        "context_speakers": context_speakers,
        "labels": response["input_ids"],
    }


def seeded_model(config):
    torch.manual_seed(0)
    return BNCVAEForConditionalGeneration(config)


def test_kl_between_gaussians_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_q, logvar_q, mu_p, logvar_p = (torch.randn(5, 7, generator=g) for _ in range(4))
    q = torch.distributions.Normal(mu_q, (0.5 * logvar_q).exp())
    p = torch.distributions.Normal(mu_p, (0.5 * logvar_p).exp())
    torch.testing.assert_close(
        gaussian_kl_between(mu_q, logvar_q, mu_p, logvar_p), torch.distributions.kl_divergence(q, p)
    )


def test_bag_of_words_loss_equals_a_hand_computation():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    targets = torch.tensor([[3, 1, 1], [2, 0, 0]])
    valid = torch.tensor([[True, True, True], [True, False, False]])
    log_z = torch.log(torch.tensor([1 + 2.718281828 + 2.718281828**2 + 2.718281828**3]))
    expected = torch.stack([-(3 - log_z) - 2 * (1 - log_z), -(1 - torch.log(torch.tensor([4 * 2.718281828])))])
    torch.testing.assert_close(bag_of_words_loss(logits, targets, valid), expected.squeeze(-1))


def test_bn_normalises_the_recognition_mean_only(dialogue_config, dialogue_batch):
    model = seeded_model(dialogue_config(gamma=0.7)).train()
    out = model(**dialogue_batch)
    # BN in training mode: each dimension's batch mean is the shift (0 at init), its std gamma * sqrt(v / (v + eps))
    context = model.bncvae.encode_context(dialogue_batch["context_input_ids"], dialogue_batch["context_attention_mask"])
    response = model.bncvae.encode_utterances(dialogue_batch["input_ids"], dialogue_batch["attention_mask"])
    raw_mu, _ = model.bncvae.recognition(torch.cat([context, response], -1)).chunk(2, -1)
    v = raw_mu.var(0, unbiased=False)
    torch.testing.assert_close(out.mu.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.mu.std(0, unbiased=False), 0.7 * torch.sqrt(v / (v + 1e-5)), rtol=1e-4, atol=1e-6)
    # the prior's mean is the prior network's output as it stands
    prior_mu, _ = model.bncvae.prior(context).chunk(2, -1)
    torch.testing.assert_close(out.prior_mu, prior_mu)
    assert not torch.allclose(out.prior_mu.std(0, unbiased=False), 0.7 * torch.ones(6), atol=0.05)
    plain = seeded_model(dialogue_config(gamma=0.0))
    assert plain.bncvae.latent_head.bn is None


@pytest.mark.parametrize("gamma, use_bow", [(0.0, False), (0.0, True), (0.6, False)])
def test_loss_is_the_sum_of_its_terms(dialogue_config, dialogue_batch, gamma, use_bow):
    model = seeded_model(dialogue_config(gamma=gamma, use_bow=use_bow)).train()
    torch.manual_seed(1)
    out = model(**dialogue_batch, kl_weight=0.3)
    expected = out.reconstruction_loss + 0.3 * out.kl
    if use_bow:
        expected = expected + out.bow_loss
    else:
        assert out.bow_loss is None
    if gamma > 0:  # BN-CVAE adds KL(p(z|c) || N(0, I)); the others only report it
        expected = expected + out.prior_kl
    torch.testing.assert_close(out.loss, expected.mean())
    prior = torch.distributions.Normal(out.prior_mu, (0.5 * out.prior_logvar).exp())
    standard = torch.distributions.Normal(torch.zeros_like(out.prior_mu), torch.ones_like(out.prior_mu))
    torch.testing.assert_close(out.prior_kl, torch.distributions.kl_divergence(prior, standard).sum(-1))
    # the reconstruction counts the response's real tokens only: words + </s>
    assert out.num_tokens.tolist() == [len(r.split()) + 1 for r in RESPONSES]


def test_gamma_gets_no_gradient(dialogue_config, dialogue_batch):
    model = seeded_model(dialogue_config(gamma=0.6)).train()
    model(**dialogue_batch).loss.backward()
    bn = model.bncvae.latent_head.bn
    assert bn.weight.grad is None and not bn.weight.requires_grad
    assert bn.bias.grad is not None and bn.bias.grad.abs().sum() > 0
    torch.testing.assert_close(bn.weight, torch.full_like(bn.weight, 0.6))


def test_a_training_batch_of_one_is_refused(dialogue_config, dialogue_batch):
    model = seeded_model(dialogue_config(gamma=0.6)).train()
    one = {name: tensor[:1] for name, tensor in dialogue_batch.items()}
    with pytest.raises(ValueError, match="batch of one"):
        model(**one)
    out = model.eval()(**one)  # eval mode: BN with the running statistics, so one pair is fine
    context = model.bncvae.encode_context(
        one["context_input_ids"], one.get("context_attention_mask"), one.get("context_speakers")
    )
    response = model.bncvae.encode_utterances(one["input_ids"], one.get("attention_mask"))
    raw, _ = model.bncvae.recognition(torch.cat([context, response], dim=-1)).chunk(2, dim=-1)
    bn = model.bncvae.latent_head.bn
    expected = (raw - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(out.mu, expected)


def test_bad_contexts_are_named(dialogue_config, dialogue_batch):
    model = seeded_model(dialogue_config()).eval()
    empty = dict(dialogue_batch, context_input_ids=torch.zeros_like(dialogue_batch["context_input_ids"]))
    empty.pop("context_attention_mask")
    with pytest.raises(ValueError, match="no utterance"):
        model(**empty)
    gap = dict(dialogue_batch)
    gap["context_attention_mask"] = dialogue_batch["context_attention_mask"].clone()
    gap["context_attention_mask"][2, 0] = 0  # first turn missing, later ones present
    with pytest.raises(ValueError, match="left-aligned"):
        model(**gap)
    with pytest.raises(ValueError, match="no turns"):
        pad_contexts([[]], [[]], 0)
    with pytest.raises(ValueError, match="empty utterance"):
        pad_contexts([[[5, 6], []]], [[0, 1]], 0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(**dict(dialogue_batch, context_input_ids=dialogue_batch["context_input_ids"] + 1000))
    with pytest.raises(ValueError, match="context_speakers must be 0/1"):
        model(**dict(dialogue_batch, context_speakers=dialogue_batch["context_speakers"] + 5))
    empty_response = dict(dialogue_batch, attention_mask=dialogue_batch["attention_mask"].clone())
    empty_response["attention_mask"][1] = 0
    with pytest.raises(ValueError, match="empty"):
        model(**empty_response)


def test_blank_or_unknown_utterances(dialogue_config, tokenizer):
    model = seeded_model(dialogue_config()).eval()
    with pytest.raises(ValueError, match="blank utterance"):
        model.sample_responses(["hi", "   "], tokenizer, num_samples=1)
    # an utterance of unknown words only is a turn of <unk>: kept, the context still answers
    assert len(model.sample_responses(["zebra quokka"], tokenizer, num_samples=2, max_new_tokens=3)) == 2


def test_context_window_keeps_the_last_turns():
    ids, mask, speakers = pad_contexts([[[4], [5, 6], [7, 8, 9]]], [[1, 0, 1]], 0, max_turns=2)
    assert ids.tolist() == [[[5, 6, 0], [7, 8, 9]]] and speakers.tolist() == [[0, 1]]
    assert mask.sum().item() == 5


def test_cached_and_uncached_greedy_agree_and_the_cache_is_used(dialogue_config, dialogue_batch):
    model = seeded_model(dialogue_config(gamma=0.6)).eval()
    context = {k: v for k, v in dialogue_batch.items() if k.startswith("context")}
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    steps = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kw: steps.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    kwargs = dict(latent=z, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    cached = model.generate(**context, **kwargs, use_cache=True)
    cached_steps, steps[:] = list(steps), []
    uncached = model.generate(**context, **kwargs, use_cache=False)
    hook.remove()
    assert cached.shape == (4, 9) and torch.equal(cached, uncached)
    assert cached_steps == [1] * 8 and steps == list(range(1, 9))
    # greedy is the argmax of forward with the same z (the model's own suppressions switched off)
    plain = model.generate(**context, **kwargs, suppress_tokens=None, no_repeat_ngram_size=0)
    with torch.no_grad():
        logits = model(input_ids=plain[:, :-1], **context, latent=z).logits
    assert torch.equal(logits.argmax(-1)[:, -1], plain[:, -1])
    beams = {
        cache: model.generate(**context, latent=z, max_new_tokens=8, num_beams=3, use_cache=cache)
        for cache in (True, False)
    }
    assert beams[True].shape[0] == 4 and torch.equal(beams[True], beams[False])


def test_every_sample_of_a_context_has_its_own_z(dialogue_config, tokenizer):
    model = seeded_model(dialogue_config(gamma=0.6)).eval()
    seen = []
    hook = model.decoder_init.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    model.sample_responses(CONTEXTS[:2], tokenizer, num_samples=3, max_new_tokens=2)
    hook.remove()
    inputs = seen[0]  # [c; z] of the 2 x 3 rows
    c, z = inputs[:, :20], inputs[:, 20:]
    # rows 0-2: context 0, rows 3-5: context 1 (equal up to the last bits a batched GEMM may change)
    torch.testing.assert_close(c[0], c[2], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(c[0], c[3], rtol=1e-5, atol=1e-6)
    assert len({tuple(row.tolist()) for row in z}) == 6  # six different draws from the prior


def test_bow_loss_of_the_model_predicts_the_response_words(dialogue_config, dialogue_batch):
    model = seeded_model(dialogue_config(use_bow=True)).eval()
    out = model(**dialogue_batch)
    context = model.bncvae.encode_context(dialogue_batch["context_input_ids"], dialogue_batch["context_attention_mask"])
    log_probs = model.bow_head(torch.cat([context, out.latent], -1)).log_softmax(-1)
    for i, response in enumerate(dialogue_batch["input_ids"]):
        words = response[1 : int(dialogue_batch["attention_mask"][i].sum())]  # without <s>, with </s>
        torch.testing.assert_close(out.bow_loss[i], -log_probs[i, words].sum())


def test_seeded_sampling_is_reproducible(dialogue_config, tokenizer):
    model = seeded_model(dialogue_config(gamma=0.6)).eval()
    torch.manual_seed(5)
    first = model.sample_responses(CONTEXTS[:2], tokenizer, num_samples=3, max_new_tokens=6)
    torch.manual_seed(5)
    second = model.sample_responses(CONTEXTS[:2], tokenizer, num_samples=3, max_new_tokens=6)
    assert first == second and len(first) == 2 and all(len(r) == 3 for r in first)
    single = model.sample_responses(CONTEXTS[0], tokenizer, num_samples=2, max_new_tokens=6)
    assert len(single) == 2 and all(isinstance(r, str) for r in single)


def test_save_load_round_trip_and_auto_classes(dialogue_config, dialogue_batch, tmp_path):
    model = seeded_model(dialogue_config(gamma=0.6, use_bow=True)).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is BNCVAEForConditionalGeneration
    with torch.no_grad():
        torch.testing.assert_close(loaded(**dialogue_batch).loss, model(**dialogue_batch).loss, rtol=0, atol=0)
    assert not loaded.bncvae.latent_head.bn.weight.requires_grad
    # AutoModel: the base model, the head's own context encoder, recognition and prior networks
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is BNCVAEModel
    context = {k: v for k, v in dialogue_batch.items() if k.startswith("context_")}
    response = {"input_ids": dialogue_batch["input_ids"], "attention_mask": dialogue_batch["attention_mask"]}
    with torch.no_grad():
        out, full = base(**context, **response), model(**dialogue_batch)
        torch.testing.assert_close(out.mu, full.mu, rtol=0, atol=0)
        torch.testing.assert_close(out.kl, full.kl, rtol=0, atol=0)
        torch.testing.assert_close(out.latent, out.mu)  # eval mode: the posterior mean
        prior = base(**context)  # no response: z from p(z | c), its mean in eval mode
    assert prior.mu is None and prior.kl is None
    torch.testing.assert_close(prior.latent, full.prior_mu)


def test_checkpoints_saved_before_the_base_model_existed_still_load(dialogue_config, dialogue_batch, tmp_path):
    """hf_bnvae <= 0.3 saved the context encoder, recognition and prior networks without the `bncvae.` prefix."""
    from safetensors.torch import load_file, save_file

    model = seeded_model(dialogue_config(gamma=0.6, use_bow=True)).eval()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert any(k.startswith("bncvae.prior.") for k in weights)
    save_file({k.removeprefix("bncvae."): v for k, v in weights.items()}, tmp_path / "model.safetensors")
    (tmp_path / "checksums.json").unlink(missing_ok=True)
    loaded, info = BNCVAEForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**dialogue_batch).loss, model(**dialogue_batch).loss, rtol=0, atol=0)


def test_remote_code_loads_without_the_package(dialogue_config, dialogue_batch, tokenizer, tmp_path):
    model = seeded_model(dialogue_config(gamma=0.6)).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    torch.save(dialogue_batch, tmp_path / "batch.pt")
    with torch.no_grad():
        expected = model(**dialogue_batch).loss
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_bnvae"] = None  # the package cannot be imported in this process
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        model = AutoModelForSeq2SeqLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            print(model(**torch.load({str(tmp_path / "batch.pt")!r})).loss.item())
        print(len(model.sample_responses(["hi how are you"], tokenizer, num_samples=2, max_new_tokens=4)))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loss, samples = result.stdout.strip().splitlines()[-2:]
    assert float(loss) == pytest.approx(expected.item(), rel=1e-6) and samples == "2"


def test_config_checks_its_values():
    with pytest.raises(ValueError, match="gamma"):
        BNCVAEConfig(gamma=-1)
    with pytest.raises(ValueError, match="latent_size"):
        BNCVAEConfig(latent_size=0)
    with pytest.raises(ValueError, match="unknown preset"):
        BNCVAEConfig.from_preset("nope")
    paper = BNCVAEConfig.from_preset("switchboard")
    assert (paper.utterance_hidden_size, paper.context_hidden_size, paper.decoder_hidden_size) == (300, 600, 400)
    assert (paper.latent_size, paper.embedding_size, paper.max_context_turns) == (200, 200, 10)
