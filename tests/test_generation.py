"""generate() through GenerationMixin with the LSTM state as cache, the text-generation pipeline, and the
convenience methods."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import pipeline

from hf_bnvae import (
    BNCVAEConfig,
    BNCVAEForConditionalGeneration,
    BNVAEForLanguageModeling,
    BNVAEForSequenceClassification,
)


@pytest.fixture
def ready(model, batch, train_steps):
    return train_steps(model, batch, steps=20)


def bos(model, n):
    return torch.full((n, 1), model.config.bos_token_id)


def test_cached_and_uncached_greedy_agree(ready):
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    kwargs = dict(input_ids=bos(ready, 4), latent=z, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    steps = []  # (state given, tokens fed) of every decoder call
    hook = ready.register_forward_pre_hook(
        lambda module, args, kw: steps.append((kw["state"] is not None, kw["input_ids"].shape[1])), with_kwargs=True
    )
    cached = ready.generate(**kwargs, use_cache=True)
    cached_steps, steps[:] = list(steps), []
    uncached = ready.generate(**kwargs, use_cache=False)
    hook.remove()
    assert cached.shape == (4, 13)
    assert torch.equal(cached, uncached)
    # the cache is used: after the first step one new token is fed with the state; without it, the prefix
    assert cached_steps == [(False, 1)] + [(True, 1)] * 11
    assert steps == [(False, n) for n in range(1, 13)]


def test_greedy_equals_argmax_of_forward(ready):
    z = torch.randn(4, 8)
    plain = dict(suppress_tokens=None, no_repeat_ngram_size=0)  # the model's defaults off: argmax itself
    out = ready.generate(input_ids=bos(ready, 4), latent=z, max_new_tokens=8, do_sample=False, **plain)
    with torch.no_grad():
        predicted = ready(input_ids=out[:, :-1], latent=z).logits.argmax(-1)
    eos = ready.config.eos_token_id
    for row, generated in zip(predicted, out[:, 1:]):
        ends = (generated == eos).nonzero()
        length = int(ends[0]) + 1 if len(ends) else len(generated)  # up to and including </s>; padding after
        assert torch.equal(generated[:length], row[:length])


def test_beam_search_runs_and_scores_at_least_greedy(ready):
    z = torch.randn(3, 8)
    kwargs = dict(input_ids=bos(ready, 3), latent=z, max_new_tokens=8, min_new_tokens=8, length_penalty=0.0)
    greedy = ready.generate(**kwargs, do_sample=False, output_scores=True, return_dict_in_generate=True)
    beams = ready.generate(**kwargs, num_beams=4, output_scores=True, return_dict_in_generate=True)
    assert beams.sequences.shape == (3, 9)

    def log_prob(seqs):
        with torch.no_grad():
            logp = ready(input_ids=seqs[:, :-1], latent=z).logits.log_softmax(-1)
        return logp.gather(-1, seqs[:, 1:, None])[..., 0].sum(-1)

    # beam search (no length penalty) never finds a worse sequence than greedy under the same model
    assert (log_prob(beams.sequences) >= log_prob(greedy.sequences) - 1e-4).all()
    torch.testing.assert_close(beams.sequences_scores, log_prob(beams.sequences), atol=1e-4, rtol=1e-4)
    uncached = ready.generate(**kwargs, num_beams=4, use_cache=False)  # no state to reorder between steps
    assert torch.equal(uncached, beams.sequences)


def test_sampling_is_reproducible_with_a_seed(ready):
    z = torch.randn(4, 8)
    kwargs = dict(
        input_ids=bos(ready, 4), latent=z, max_new_tokens=10, do_sample=True, temperature=1.5, top_k=20, top_p=0.95
    )
    torch.manual_seed(3)
    first = ready.generate(**kwargs)
    torch.manual_seed(3)
    second = ready.generate(**kwargs)
    assert torch.equal(first, second)
    torch.manual_seed(4)
    assert not torch.equal(first, ready.generate(**kwargs))  # another seed, other samples: sampling is on
    greedy = ready.generate(input_ids=bos(ready, 4), latent=z, max_new_tokens=10, do_sample=False)
    assert not torch.equal(first, greedy)
    torch.manual_seed(3)  # top_k=1 sampling is greedy decoding: the sampling arguments are honoured
    one = ready.generate(input_ids=bos(ready, 4), latent=z, max_new_tokens=10, do_sample=True, top_k=1)
    assert torch.equal(one, greedy)


def test_latent_defaults_to_a_prior_draw_or_the_prompt_posterior(ready, tokenizer):
    kwargs = dict(input_ids=bos(ready, 2), max_new_tokens=6, min_new_tokens=6)
    torch.manual_seed(7)
    drawn = ready.generate(**kwargs)
    torch.manual_seed(7)
    z = torch.randn(2, 8)
    assert torch.equal(drawn, ready.generate(**kwargs, latent=z))  # z ~ N(0, I) from torch's global RNG
    prompt = tokenizer(["the cat sat"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    from_prompt = ready.generate(input_ids=prompt, latent_from_prompt=True, max_new_tokens=5, min_new_tokens=5)
    prefix = ready.posterior_mean(torch.cat([bos(ready, 1), prompt], dim=1))  # <s> the cat sat, no </s>
    with_mean = ready.generate(input_ids=prompt, latent=prefix, max_new_tokens=5, min_new_tokens=5)
    sentence = ready.encode(["the cat sat"], tokenizer)  # <s> the cat sat </s>: a finished sentence
    assert not torch.allclose(prefix, sentence)
    assert torch.equal(from_prompt, with_mean)
    assert torch.equal(from_prompt[:, :3], prompt)  # <s> is added for the decoder and removed again


def test_a_latent_of_the_wrong_size_is_refused(ready):
    with pytest.raises(ValueError, match=r"latent must have shape \(batch=2, latent_size=8\), got \(2, 5\)"):
        ready.generate(input_ids=bos(ready, 2), latent=torch.zeros(2, 5), max_new_tokens=3)


def test_padded_prompts_are_refused(ready, tokenizer):
    prompts = tokenizer(["the cat sat", "a dog"], add_special_tokens=False, padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="unpadded prompts only"):
        ready.generate(**prompts, max_new_tokens=3)


def test_text_generation_pipeline(ready, tokenizer, saved):
    generator = pipeline("text-generation", model=str(saved))
    # the pipeline tokenises "<s> the cat </s>"; the model continues "<s> the cat" and returns the prompt as given
    out = generator("the cat ", max_new_tokens=6, do_sample=False, latent_from_prompt=True)
    prompt = tokenizer(["the cat"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    continuation = ready.generate(input_ids=prompt, latent_from_prompt=True, max_new_tokens=6, do_sample=False)
    new_text = tokenizer.decode(continuation[0, 2:], skip_special_tokens=True)
    assert len(new_text) > 0 and out[0]["generated_text"] == "the cat " + new_text
    torch.manual_seed(1)
    sampled = generator("", max_new_tokens=6, do_sample=True, num_return_sequences=3)  # no prompt: z ~ prior
    assert len(sampled) == 3 and all(isinstance(s["generated_text"], str) for s in sampled)


def test_text_generation_pipeline_without_the_package(saved, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_bnvae"] = None  # the package cannot be imported in this process
        from transformers import pipeline
        generator = pipeline("text-generation", model={str(saved)!r}, trust_remote_code=True)
        out = generator("the dog ", max_new_tokens=5, min_new_tokens=2, do_sample=False, latent_from_prompt=True)
        assert type(generator.model).__module__.startswith("transformers_modules")
        print(out[0]["generated_text"])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # the same words as the package's own model in this process, and new words after the prompt
    expected = pipeline("text-generation", model=str(saved))(
        "the dog ", max_new_tokens=5, min_new_tokens=2, do_sample=False, latent_from_prompt=True
    )[0]["generated_text"]
    assert result.stdout.strip().splitlines()[-1] == expected and len(expected.split()) > 2


def test_convenience_methods(ready, tokenizer, corpus):
    z = ready.encode(corpus[:3], tokenizer)
    assert z.shape == (3, 8) and not ready.training
    with pytest.raises(ValueError, match="at least one sentence"):
        ready.encode([], tokenizer)

    lengths = {"max_new_tokens": 10, "min_new_tokens": 3}  # the tiny model would end at once: empty texts

    def greedy(latent):  # the plain transformers path: generate from <s> with z, then batch_decode
        ids = ready.generate(input_ids=bos(ready, len(latent)), latent=latent, do_sample=False, **lengths)
        return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    texts = ready.reconstruct(corpus[:3], tokenizer, **lengths)
    assert texts == greedy(z) and all(texts)
    samples = ready.sample_prior(5, tokenizer, generator=torch.Generator().manual_seed(0), **lengths)
    assert samples == greedy(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)))
    path = ready.interpolate(corpus[0], corpus[1], tokenizer, steps=4, **lengths)
    assert path[0] == texts[0] and path[-1] == texts[1]  # the ends decode the two posterior means
    assert path[1:3] == greedy(torch.stack([(2 / 3) * z[0] + (1 / 3) * z[1], (1 / 3) * z[0] + (2 / 3) * z[1]]))


def test_generation_defaults_never_emit_special_tokens_and_never_repeat_a_trigram(tiny_config, tokenizer):
    torch.manual_seed(0)
    model = BNVAEForLanguageModeling(tiny_config(output_layer_bias=True)).eval()
    config = model.config
    with torch.no_grad():  # a decoder that would say <unk>, then <pad>, over and over
        model.decoder.lm_head.bias[config.unk_token_id] = 50.0
        model.decoder.lm_head.bias[config.pad_token_id] = 40.0
        model.decoder.lm_head.bias[5] = 30.0
    z = torch.randn(3, 8)
    looping = model.generate(latent=z, max_new_tokens=10, suppress_tokens=None, no_repeat_ngram_size=0)
    assert (looping[:, 1:] == config.unk_token_id).all()  # what a user got before
    out = model.generate(latent=z, max_new_tokens=30, min_new_tokens=30)
    generated = out[:, 1:]
    assert not torch.isin(
        generated, torch.tensor([config.unk_token_id, config.pad_token_id, config.bos_token_id])
    ).any()
    for row in generated.tolist():
        trigrams = [tuple(row[i : i + 3]) for i in range(len(row) - 2)]
        assert len(trigrams) == len(set(trigrams))
    texts = model.decode(z, tokenizer)  # the convenience methods use the same defaults
    assert all(text and "<unk>" not in text for text in texts)


def test_checkpoints_of_0_2_keep_their_output_bias_and_get_the_generation_defaults(trained, tmp_path):
    """0.2.0 wrote no output_layer_bias (its output layer had a bias) and an automatic generation config."""
    old = BNVAEForLanguageModeling(trained.config.__class__(**{**trained.config.to_dict(), "output_layer_bias": True}))
    old.load_state_dict(trained.state_dict(), strict=False)
    old.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["output_layer_bias"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    generation = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    loaded = BNVAEForLanguageModeling.from_pretrained(tmp_path)
    assert loaded.config.output_layer_bias and loaded.decoder.lm_head.bias is not None
    torch.testing.assert_close(loaded.decoder.lm_head.bias, old.decoder.lm_head.bias)
    assert loaded.generation_config.no_repeat_ngram_size == 3
    assert BNVAEForLanguageModeling(trained.config).decoder.lm_head.bias is None  # a new model: no bias


def test_api_errors_name_the_argument(model, batch, tokenizer, tiny_config):
    """Each failed with an error that did not name the argument (or not at all): ZeroDivisionError for
    num_beams=0, "input_ids is empty" for zero counts, `</s>` from a NaN z, a vector for an empty text."""
    model.eval()
    ids = batch["input_ids"]
    cases = [
        (lambda: model(input_ids=ids.float()), "input_ids must hold integer token ids, got dtype torch.float32"),
        (lambda: model(input_ids=ids, labels=ids[:, :-1]), "labels must have the shape of input_ids"),
        (lambda: model(input_ids=ids, labels=ids.clone().fill_(10**6)), "labels contain token id 1000000"),
        (lambda: model.generate(max_new_tokens=3, num_beams=0), "num_beams must be an integer >= 1, got 0"),
        (lambda: model.interpolate("the man .", "a day .", tokenizer, steps=0), "steps must be an integer >= 2"),
        (lambda: model.sample_prior(0, tokenizer), "num_sentences must be an integer >= 1, got 0"),
        (lambda: model.decode(torch.full((1, 8), float("nan")), tokenizer), "latent contains NaN or infinite"),
        (lambda: model.encode(["the man .", " "], tokenizer), "encode\\(\\): text 1 is ' '; every text needs"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    model.train()  # the fused training loss checks its labels too
    with pytest.raises(ValueError, match="labels contain token id -5"):
        model(input_ids=ids, labels=ids.clone().fill_(-5), return_logits=False)
    classifier = BNVAEForSequenceClassification(tiny_config(num_labels=2)).eval()
    with pytest.raises(ValueError, match=r"labels must have one entry per sentence \(\d+\), got shape \(1,\)"):
        classifier(input_ids=ids, labels=torch.tensor([1]))


def test_dialogue_api_errors_name_the_argument(tokenizer):
    sizes = dict(embedding_size=8, utterance_hidden_size=8, context_hidden_size=8, decoder_hidden_size=8, latent_size=4)
    model = BNCVAEForConditionalGeneration(BNCVAEConfig(vocab_size=len(tokenizer), gamma=0.5, **sizes)).eval()
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1, got 0"):
        model.sample_responses(["hello there ."], tokenizer, num_samples=0)
    with pytest.raises(ValueError, match="num_beams must be an integer >= 1, got 0"):
        model.sample_responses(["hello there ."], tokenizer, num_samples=1, num_beams=0)
