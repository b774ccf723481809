"""The output layer and its cross-entropy in one pass over row chunks, for training.

`linear_cross_entropy(states, weight, bias, labels)` returns -log softmax(states W^T + b)[labels] per row,
like `cross_entropy(linear(states, weight, bias), labels, reduction="none")`, without materialising the
(M, V) logits, their log-softmax and their gradient as three full tensors. Each chunk of rows computes
its logits, the log-sum-exp, and at once the gradient of the summed NLL with respect to the states, the
weight and the bias (softmax minus one-hot, two matrix multiplies), while the chunk is still in cache.
The (M, V) tensors exist one chunk at a time; the matrix multiplies are the same three as autograd's.

Backward multiplies these gradients by the incoming gradient. When that is the same number for every
row (any loss that sums or averages the token NLLs, as every objective of this package does), that is
a scalar product, done in place, and nothing is recomputed; any other incoming gradient, or a second
backward pass through the same graph (retain_graph), recomputes the logits chunk by chunk with its row
weights (one extra matrix multiply), so the result is exact for every caller.
"""

import torch


def _chunk_gradients(states, weight, bias, labels, row_scale=None):
    """For one chunk: (nll (c,), d(sum of row_scale * nll)/d logits (c, V)). states (c, H), labels (c,)."""
    logits = states @ weight.t() if bias is None else torch.addmm(bias, states, weight.t())  # (c, V)
    log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    nll = -log_probs.gather(1, labels[:, None]).squeeze(1)
    grad = log_probs.exp_()  # softmax, in place
    grad.scatter_add_(1, labels[:, None], grad.new_full((labels.shape[0], 1), -1.0))  # minus one-hot
    if row_scale is not None:
        grad.mul_(row_scale[:, None])
    return nll, grad


def _accumulate(grad, states, weight, grads, start, stop):
    """Add one chunk's logit gradient (c, V) into the (states, weight, bias) gradients that are wanted; the
    first chunk (start 0) writes them, so they need no zero-filling."""
    grad_states, grad_weight, grad_bias = grads
    grad = grad.to(weight.dtype)
    if grad_states is not None:
        torch.mm(grad, weight, out=grad_states[start:stop])
    if grad_weight is not None:
        torch.addmm(grad_weight, grad.t(), states, beta=0 if start == 0 else 1, out=grad_weight)
    if grad_bias is not None:
        torch.sum(grad, 0, out=grad_bias) if start == 0 else grad_bias.add_(grad.sum(0))


def _empty_gradients(states, weight, bias, needs):
    return (
        torch.empty_like(states) if needs[0] else None,
        torch.empty_like(weight) if needs[1] else None,
        torch.empty_like(bias) if bias is not None and needs[2] else None,
    )


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, weight, bias, labels, chunk_rows):
        needs = ctx.needs_input_grad
        grads = _empty_gradients(states, weight, bias, needs)
        nll = states.new_empty(states.shape[0], dtype=torch.promote_types(states.dtype, torch.float32))
        for start in range(0, states.shape[0], chunk_rows):
            stop = min(start + chunk_rows, states.shape[0])
            nll[start:stop], grad = _chunk_gradients(states[start:stop], weight, bias, labels[start:stop])
            _accumulate(grad, states[start:stop], weight, grads, start, stop)
        ctx.save_for_backward(states, weight, bias, labels)
        # Intermediates, held on ctx (not saved tensors) so that backward can hand them over, scaled in
        # place, and drop its own reference: no copy of the (V, H) weight gradient.
        ctx.unit_grads = grads
        ctx.chunk_rows = chunk_rows
        return nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_nll):
        states, weight, bias, labels = ctx.saved_tensors
        unit_grads, ctx.unit_grads = ctx.unit_grads, None  # a second backward (retain_graph) recomputes
        scale = grad_nll[:1]
        if unit_grads is not None and bool((grad_nll == scale).all()):  # every row weighted alike
            return (*(None if g is None else g.mul_(scale.to(g.dtype)) for g in unit_grads), None, None)
        present = [g is not None for g in unit_grads] if unit_grads is not None else ctx.needs_input_grad[:3]
        grads = _empty_gradients(states, weight, bias, present)
        for start in range(0, states.shape[0], ctx.chunk_rows):
            stop = min(start + ctx.chunk_rows, states.shape[0])
            _, grad = _chunk_gradients(states[start:stop], weight, bias, labels[start:stop], grad_nll[start:stop])
            _accumulate(grad, states[start:stop], weight, grads, start, stop)
        return (*grads, None, None)


def linear_cross_entropy(states, weight, bias, labels, chunk_rows=1024):
    """-log softmax(states @ weight.T + bias)[labels] per row, nats, fp32 (fp64 for fp64 states), with the gradient computed chunk
    by chunk in the forward pass (see the module docstring).

    states: (M, H); weight: (V, H); bias: (V,) or None; labels: (M,) ids in [0, V). chunk_rows: rows whose
    (chunk_rows, V) logits exist at a time. Returns (M,). Meant for training: when its inputs require
    gradients it computes them in the forward pass, two matrix multiplies that are wasted if no backward
    pass follows.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if states.shape[0] == 0:
        return states.new_zeros(0, dtype=torch.float32)
    return _LinearCrossEntropy.apply(states, weight, bias, labels, chunk_rows)


__all__ = ["linear_cross_entropy"]
