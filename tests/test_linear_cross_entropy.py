"""The fused output layer + cross-entropy against `cross_entropy(linear(...))`: values and gradients."""

import pytest
import torch
from torch import nn

from hf_bnvae.linear_cross_entropy import linear_cross_entropy


def reference(states, weight, bias, labels):
    return nn.functional.cross_entropy(nn.functional.linear(states, weight, bias), labels, reduction="none")


def leaves(rows=11, hidden=6, vocab=13, bias=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(rows, hidden, dtype=torch.float64, generator=generator) * 2
    weight = torch.randn(vocab, hidden, dtype=torch.float64, generator=generator)
    bias = torch.randn(vocab, dtype=torch.float64, generator=generator) if bias else None
    labels = torch.randint(vocab, (rows,), generator=generator)
    return states, weight, bias, labels


def gradients(function, tensors, labels, row_weights):
    copies = [t.clone().requires_grad_() if t is not None else None for t in tensors]
    (function(*copies[:2], copies[2], labels) * row_weights).sum().backward()
    return [c.grad if c is not None else None for c in copies]


@pytest.mark.parametrize("chunk_rows", [1, 4, 11, 1024])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("uniform", [True, False], ids=["same-weight-rows", "weighted-rows"])
def test_values_and_gradients_match_the_unfused_layer(chunk_rows, bias, uniform):
    states, weight, b, labels = leaves(bias=bias)
    # a mean-like loss (every row weighted alike: the forward's gradients are scaled) and a weighted one
    # (rows weighted differently: backward recomputes the logits)
    row_weights = torch.full((11,), 0.25, dtype=torch.float64) if uniform else torch.linspace(-1, 2, 11).double()
    fused = lambda s, w, bb, y: linear_cross_entropy(s, w, bb, y, chunk_rows=chunk_rows)  # noqa: E731
    torch.testing.assert_close(fused(states, weight, b, labels), reference(states, weight, b, labels))
    for got, want in zip(
        gradients(fused, (states, weight, b), labels, row_weights),
        gradients(reference, (states, weight, b), labels, row_weights),
    ):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want)


def test_a_frozen_weight_gets_no_gradient_and_the_states_get_theirs():
    states, weight, bias, labels = leaves()
    states.requires_grad_()
    linear_cross_entropy(states, weight, bias, labels, chunk_rows=3).sum().backward()
    expected = states.detach().clone().requires_grad_()
    reference(expected, weight, bias, labels).sum().backward()
    assert weight.grad is None and bias.grad is None
    torch.testing.assert_close(states.grad, expected.grad)


def test_the_loss_is_a_log_normaliser_minus_the_label_logit_for_extreme_logits():
    # logits of 1e4 would overflow a naive softmax; the log-sum-exp keeps the NLL finite and exact
    weight = torch.eye(3) * 1e4
    states = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    nll = linear_cross_entropy(states, weight, None, torch.tensor([0, 2]))
    torch.testing.assert_close(nll, torch.tensor([0.0, 1e4]))


def test_invalid_chunk_is_refused():
    states, weight, bias, labels = leaves()
    with pytest.raises(ValueError, match="chunk_rows"):
        linear_cross_entropy(states, weight, bias, labels, chunk_rows=0)


def test_a_second_backward_through_the_same_graph_is_exact():
    # the first backward hands over the forward's gradients (scaled in place); a second one recomputes
    states, weight, bias, labels = leaves()
    weight.requires_grad_()
    loss = linear_cross_entropy(states, weight, bias, labels, chunk_rows=4).mean()
    loss.backward(retain_graph=True)
    first = weight.grad.clone()
    loss.backward()
    expected = weight.detach().clone().requires_grad_()
    reference(states, expected, bias, labels).mean().backward()
    torch.testing.assert_close(first, expected.grad)
    torch.testing.assert_close(weight.grad, 2 * expected.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_states_and_weights_get_gradients_as_close_as_autograds(dtype):
    # the gradients are accumulated over chunks in fp32 and cast once: no worse than autograd's in dtype
    states, weight, bias, labels = leaves(rows=64, hidden=16, vocab=50)
    exact = gradients(reference, (states, weight, bias), labels, torch.full((64,), 0.5, dtype=torch.float64))
    low = [t.to(dtype) for t in (states, weight, bias)]
    fused = lambda s, w, b, y: linear_cross_entropy(s, w, b, y, chunk_rows=8)  # noqa: E731
    row_weights = torch.full((64,), 0.5, dtype=dtype)
    for got, plain, want in zip(
        gradients(fused, low, labels, row_weights), gradients(reference, low, labels, row_weights), exact
    ):
        assert got.dtype == dtype
        assert (got.double() - want).norm() <= 1.01 * (plain.double() - want).norm() + 1e-12


def test_without_gradients_it_only_computes_the_nll(monkeypatch):
    import hf_bnvae.linear_cross_entropy as module

    states, weight, bias, labels = leaves()
    weight.requires_grad_()
    monkeypatch.setattr(module, "_accumulate", lambda *a: pytest.fail("a gradient was computed"))
    with torch.no_grad():
        torch.testing.assert_close(
            linear_cross_entropy(states, weight, bias, labels, 4), reference(states, weight, bias, labels)
        )


def test_only_the_bias_trains():
    states, weight, bias, labels = leaves()
    bias.requires_grad_()
    (linear_cross_entropy(states, weight, bias, labels, chunk_rows=3) * torch.arange(11.0)).sum().backward()
    expected = bias.detach().clone().requires_grad_()
    (reference(states, weight, expected, labels) * torch.arange(11.0)).sum().backward()
    torch.testing.assert_close(bias.grad, expected.grad)


def test_no_rows_give_an_empty_loss_that_backpropagates_zeros():
    states, weight, bias, labels = leaves()
    weight.requires_grad_()
    nll = linear_cross_entropy(states[:0], weight, bias, labels[:0])
    assert nll.shape == (0,) and nll.dtype == torch.float64
    nll.sum().backward()
    assert weight.grad is not None and not weight.grad.any()
