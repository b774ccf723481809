"""The output layer and its cross-entropy in one pass over row chunks, for training.

`linear_cross_entropy(states, weight, bias, labels)` returns -log softmax(states W^T + b)[labels] per row,
like `cross_entropy(linear(states, weight, bias), labels, reduction="none")`, without materialising the
(M, V) logits, their log-softmax and their gradient as three full tensors. Each chunk of rows computes
its logits, the log-softmax, and at once the gradient of the summed NLL with respect to the states, the
weight and the bias (softmax minus one-hot, two matrix multiplies), while the chunk is still in cache.
The (M, V) tensors exist one chunk at a time; the matrix multiplies are the same three as autograd's.

Backward multiplies these gradients by the incoming gradient. When that is the same number for every
row (any loss that sums or averages the token NLLs over a batch, as every objective of this package
does), that is a scalar product, done in place, and nothing is recomputed. Any other incoming gradient
(e.g. a loss that divides each sentence by its own length), or a second backward pass through the same
graph (retain_graph), recomputes the logits chunk by chunk with its row weights: exact, at five matrix
multiplies instead of three. Gradients are accumulated in fp32 (fp64 for fp64 inputs) and cast to the
parameters' dtype once.
"""

import torch


def _log_probs(states, weight, bias):
    """log softmax(states W^T + b), (c, V), in fp32 (or fp64). states (c, H), weight (V, H), bias (V,)."""
    logits = torch.nn.functional.linear(states, weight, bias)
    return torch.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))


def _chunk_gradients(states, weight, bias, labels, row_scale=None):
    """For one chunk: (nll (c,), d(sum of row_scale * nll)/d logits (c, V)). states (c, H), labels (c,)."""
    log_probs = _log_probs(states, weight, bias)
    nll = -log_probs.gather(1, labels[:, None]).squeeze(1)
    grad = log_probs.exp_()  # softmax, in place
    grad.scatter_add_(1, labels[:, None], grad.new_full((labels.shape[0], 1), -1.0))  # minus one-hot
    if row_scale is not None:
        grad.mul_(row_scale[:, None].to(grad.dtype))
    return nll, grad


def _new_gradients(states, weight, bias, wanted):
    """Uninitialised (states (M, H), weight (V, H), bias (V,)) gradients in the accumulation dtype, None
    where not wanted; `_accumulate`'s first chunk writes them."""
    dtype = torch.promote_types(weight.dtype, torch.float32)
    return (
        states.new_empty(states.shape, dtype=dtype) if wanted[0] else None,
        weight.new_empty(weight.shape, dtype=dtype) if wanted[1] else None,
        bias.new_empty(bias.shape, dtype=dtype) if bias is not None and wanted[2] else None,
    )


def _accumulate(grad, states, weight, grads, start, stop):
    """Add one chunk's logit gradient grad (c, V), for the chunk's states (c, H) = rows start:stop, into the
    wanted (states, weight, bias) gradients; the first chunk (start 0) writes them, so nothing is zero-filled."""
    grad_states, grad_weight, grad_bias = grads
    weight, states = weight.to(grad.dtype), states.to(grad.dtype)  # no copy in fp32
    if grad_states is not None:
        torch.mm(grad, weight, out=grad_states[start:stop])
    if grad_weight is not None:
        torch.addmm(grad_weight, grad.t(), states, beta=0 if start == 0 else 1, out=grad_weight)
    if grad_bias is not None:
        torch.sum(grad, 0, out=grad_bias) if start == 0 else grad_bias.add_(grad.sum(0))


def _chunked(states, weight, bias, labels, chunk_rows, grads, row_scale=None):
    """Run every chunk of rows: returns the NLL (M,) and fills grads (see `_accumulate`)."""
    nll = states.new_empty(states.shape[0], dtype=torch.promote_types(states.dtype, torch.float32))
    for start in range(0, states.shape[0], chunk_rows):
        stop = min(start + chunk_rows, states.shape[0])
        scale = None if row_scale is None else row_scale[start:stop]
        nll[start:stop], grad = _chunk_gradients(states[start:stop], weight, bias, labels[start:stop], scale)
        _accumulate(grad, states[start:stop], weight, grads, start, stop)
    return nll


class _LinearCrossEntropy(torch.autograd.Function):
    """forward(states (M, H), weight (V, H), bias (V,) or None, labels (M,), chunk_rows) -> NLL (M,)."""

    @staticmethod
    def forward(ctx, states, weight, bias, labels, chunk_rows):
        grads = _new_gradients(states, weight, bias, ctx.needs_input_grad)
        nll = _chunked(states, weight, bias, labels, chunk_rows, grads)
        ctx.save_for_backward(states, weight, bias, labels)
        # Intermediates, held on ctx (not saved tensors) so that backward can hand them over, scaled in
        # place, and drop its own reference: no copy of the (V, H) weight gradient.
        ctx.unit_grads, ctx.chunk_rows = grads, chunk_rows
        return nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_nll):
        states, weight, bias, labels = ctx.saved_tensors
        grads, ctx.unit_grads = ctx.unit_grads, None  # a second backward (retain_graph) recomputes
        scale = grad_nll[:1]
        if grads is not None and bool((grad_nll == scale).all()):  # every row weighted alike
            grads = [None if g is None else g.mul_(scale.to(g.dtype)) for g in grads]
        else:
            grads = _new_gradients(states, weight, bias, ctx.needs_input_grad[:3])
            _chunked(states, weight, bias, labels, ctx.chunk_rows, grads, row_scale=grad_nll)
        inputs = (states, weight, bias)
        return (*(None if g is None else g.to(x.dtype) for g, x in zip(grads, inputs)), None, None)


def linear_cross_entropy(states, weight, bias, labels, chunk_rows=1024):
    """-log softmax(states @ weight.T + bias)[labels] per row, nats, fp32 (fp64 for fp64 states), with the
    gradient computed chunk by chunk in the forward pass (see the module docstring).

    states: (M, H); weight: (V, H); bias: (V,) or None; labels: (M,) ids in [0, V). chunk_rows: rows whose
    (chunk_rows, V) logits exist at a time. Returns (M,). Without gradients to compute (torch.no_grad, no
    input that requires one) or without rows it is plain `cross_entropy(linear(...))`; with them, the
    gradients are computed in the forward pass, two matrix multiplies wasted if no backward pass follows.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    wants_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (states, weight, bias))
    if not wants_grad or states.shape[0] == 0:
        logits = torch.nn.functional.linear(states, weight, bias)
        dtype = torch.promote_types(logits.dtype, torch.float32)
        return torch.nn.functional.cross_entropy(logits.to(dtype), labels, reduction="none")
    return _LinearCrossEntropy.apply(states, weight, bias, labels, chunk_rows)


__all__ = ["linear_cross_entropy"]
