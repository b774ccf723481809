"""generate() through GenerationMixin with the LSTM state as cache, and the convenience methods."""

import pytest
import torch

from tests.conftest import CORPUS
from tests.test_checkpoints import trained


@pytest.fixture
def ready(model, batch):
    return trained(model, batch, steps=20)


def bos(model, n):
    return torch.full((n, 1), model.config.bos_token_id)


def test_cached_and_uncached_greedy_agree(ready):
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    kwargs = dict(input_ids=bos(ready, 4), latent=z, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    cached = ready.generate(**kwargs, use_cache=True)
    uncached = ready.generate(**kwargs, use_cache=False)
    assert cached.shape == (4, 13)
    assert torch.equal(cached, uncached)


def test_greedy_equals_argmax_of_forward(ready):
    z = torch.randn(2, 8)
    out = ready.generate(input_ids=bos(ready, 2), latent=z, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    with torch.no_grad():
        logits = ready(input_ids=out[:, :-1], latent=z).logits
    assert torch.equal(out[:, 1:], logits.argmax(-1))


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


def test_sampling_is_reproducible_with_a_seed(ready):
    z = torch.randn(4, 8)
    kwargs = dict(input_ids=bos(ready, 4), latent=z, max_new_tokens=10, do_sample=True, temperature=1.5, top_k=20, top_p=0.95)
    torch.manual_seed(3)
    first = ready.generate(**kwargs)
    torch.manual_seed(3)
    second = ready.generate(**kwargs)
    assert torch.equal(first, second)


def test_generate_without_latent_is_refused(ready):
    with pytest.raises(ValueError, match="needs latent=z"):
        ready.generate(input_ids=bos(ready, 2), max_new_tokens=3)


def test_convenience_methods(ready, tokenizer):
    z = ready.encode(CORPUS[:3], tokenizer)
    assert z.shape == (3, 8) and not ready.training
    texts = ready.reconstruct(CORPUS[:3], tokenizer, max_new_tokens=10)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert ready.decode(z, tokenizer, max_new_tokens=10) == texts
    samples = ready.sample_prior(5, tokenizer, generator=torch.Generator().manual_seed(0), max_new_tokens=10)
    assert len(samples) == 5
    path = ready.interpolate(CORPUS[0], CORPUS[1], tokenizer, steps=4, max_new_tokens=10)
    assert len(path) == 4
    assert path[0] == texts[0] and path[-1] == texts[1]  # the ends decode the two posterior means
