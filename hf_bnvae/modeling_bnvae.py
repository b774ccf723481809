"""BN-VAE: an LSTM text VAE whose posterior mean goes through BatchNorm with a fixed scale gamma.

Reads top-down: maths helpers, building blocks (encoder, BN latent head, decoder), the pre-trained
model base, the output dataclasses, the base model `BNVAEModel` (q(z|x)), then the heads built on
it. Units: log-likelihoods, losses and KLs are in nats; "per sentence" means summed over the tokens
of one sentence.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import ModelOutput

from .configuration_bnvae import BNVAEConfig
from .linear_cross_entropy import linear_cross_entropy

# ----------------------------------------------------------------------------------------------
# maths


def gaussian_kl_per_dimension(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, 1)) per dimension, in nats, computed in fp32.

    mu, logvar: (..., n). Returns (..., n): 0.5 * (mu^2 + exp(logvar) - 1 - logvar).
    """
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def delta_vae_variance_bounds(delta_rate):
    """The two roots l < 1 < u of 0.5 * (s - 1 - log s) = delta_rate: the posterior variances s whose KL
    from N(0, 1) at mean 0 is exactly delta_rate nats (Razavi et al. 2019, eq. 4). Returns (l, u)."""

    def bisect(lo, hi, decreasing):  # f(s) = s - 1 - log s - 2 delta changes sign once on [lo, hi]
        for _ in range(200):
            mid = (lo + hi) / 2
            if (mid - 1 - math.log(mid) > 2 * delta_rate) == decreasing:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    upper = 2.0
    while upper - 1 - math.log(upper) < 2 * delta_rate:
        upper *= 2
    return bisect(1e-300, 1.0, decreasing=True), bisect(1.0, upper, decreasing=False)


DELTA_VAE_SQRT_EPS = 1e-6  # adds DELTA_VAE_SQRT_EPS / 2 nats to each dimension's KL


def delta_vae_posterior(mu_raw, logvar_raw, delta_rate, bounds):
    """The official delta-VAE posterior: every dimension's KL is delta_rate + relu(mu_raw) / 2 nats.

    The std goes into [sqrt(l), sqrt(u)] (bounds = (l, u) from `delta_vae_variance_bounds`) through a
    sigmoid of logvar_raw clamped at 1/50; the mean is then sqrt(2 delta + 1 + log s - s + relu(mu_raw)),
    which is real because s - 1 - log s <= 2 delta inside the bounds (a tiny constant keeps the
    square root's gradient finite where the radicand is 0). mu_raw, logvar_raw: (B, n). Returns mu, logvar.
    """
    low, high = (math.sqrt(b) for b in bounds)
    std = low + (high - low) * torch.sigmoid(logvar_raw).clamp(min=1 / 50)
    logvar = 2 * torch.log(std)
    radicand = 2 * delta_rate + 1 + logvar - logvar.exp() + torch.relu(mu_raw)
    return torch.sqrt(radicand.clamp(min=0) + DELTA_VAE_SQRT_EPS), logvar


def free_bits_kl(kl_per_dimension, target, per_dimension=False):
    """The KL term with free bits, in the official code's semantics, nats per sentence (batch mean).

    kl_per_dimension: (B, n) nats. Per sentence: the KL of each sentence whose KL is at most `target`
    is switched off (no gradient, no loss). Per dimension: each (sentence, dimension) whose KL is at
    most target / n is switched off. Returns a scalar: the mean over sentences of the KL that remains.
    """
    if per_dimension:
        kept = kl_per_dimension * (kl_per_dimension > target / kl_per_dimension.shape[-1])
        return kept.sum(-1).mean()
    kl = kl_per_dimension.sum(-1)
    return (kl * (kl > target)).mean()


def next_token_targets(labels, attention_mask=None):
    """The targets of next-token prediction, targets = labels[:, 1:] (B, T-1), and valid (B, T-1): the
    tokens that count (label not -100 and, given attention_mask (B, T), a real token)."""
    targets = labels[:, 1:]
    valid = targets != -100
    if attention_mask is not None:
        valid &= attention_mask[:, 1:].bool()
    return targets, valid


def shifted_token_nll(logits, labels, attention_mask=None):
    """-log p(labels[:, t + 1] | logits[:, t]) per token, the reconstruction term of both heads (BN-VAE's
    and BN-CVAE's). logits: (B, T, V); labels, attention_mask: (B, T). Returns token_nll (B, T-1), fp32
    nats, 0 where a token does not count, and valid (B, T-1) (next_token_targets)."""
    targets, valid = next_token_targets(labels, attention_mask)
    token_nll = nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets.masked_fill(~valid, 0), reduction="none"
    )
    return token_nll * valid, valid


def vae_loss(reconstruction_loss, kl_per_dimension=None, kl_weight=1.0, free_bits=0.0, free_bits_per_dimension=False):
    """The objective every method of the paper minimises, in nats per sentence (batch mean):

    mean(reconstruction) + kl_weight * KL term, where the KL term is the batch-mean KL, or its free-bits
    version when free_bits > 0. reconstruction_loss: (B,); kl_per_dimension: (B, n), None for the LSTM
    LM (no latent). kl_weight carries annealing, beta-VAE (constant beta) and the autoencoder (0);
    BN-VAE and delta-VAE change the posterior, not this function. Returns a scalar.
    """
    reconstruction = reconstruction_loss.mean()
    if kl_per_dimension is None:
        return reconstruction
    if free_bits > 0:
        kl_term = free_bits_kl(kl_per_dimension, free_bits, free_bits_per_dimension)
    else:
        kl_term = kl_per_dimension.sum(-1).mean()
    return reconstruction + kl_weight * kl_term


def check_input_ids(input_ids, vocab_size):
    """Raise a ValueError naming the problem for an empty batch or ids outside [0, vocab_size)."""
    if input_ids is None or input_ids.numel() == 0:
        raise ValueError("input_ids is empty: pass at least one sentence of at least one token")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, sequence), got {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"input_ids contains token id {bad}, outside the vocabulary [0, {vocab_size})")


def check_latent(latent, batch_size, latent_size):
    """Raise a ValueError naming the expected shape unless latent is (batch_size, latent_size) and finite
    (a NaN z would decode to `</s>` without a word)."""
    if latent.dim() != 2 or tuple(latent.shape) != (batch_size, latent_size):
        raise ValueError(
            f"latent must have shape (batch={batch_size}, latent_size={latent_size}), got {tuple(latent.shape)}"
        )
    if not bool(torch.isfinite(latent).all()):
        raise ValueError("latent contains NaN or infinite values")


def check_token_labels(labels, input_ids, vocab_size):
    """Raise a ValueError unless labels (B, T) has input_ids' shape and holds token ids in [0, vocab_size)
    or -100 (ignored)."""
    if tuple(labels.shape) != tuple(input_ids.shape):
        raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer token ids, got dtype {labels.dtype}")
    outside = (labels != -100) & ((labels < 0) | (labels >= vocab_size))
    if bool(outside.any()):
        raise ValueError(
            f"labels contain token id {int(labels[outside][0])}, outside the vocabulary [0, {vocab_size}) and not -100"
        )


def check_count(name, value, minimum=1):
    """Raise a ValueError naming the argument unless value is an integer >= minimum (a count of sentences,
    samples, steps or beams)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_generation_counts(kwargs):
    """check_count for the generate() arguments that count (num_beams=0 divided by zero in transformers)."""
    for name in ("num_beams", "num_return_sequences", "max_new_tokens"):
        if kwargs.get(name) is not None:
            check_count(name, kwargs[name])


def sequence_lengths(input_ids, attention_mask):
    """Lengths (batch,) from a right-padded attention_mask (batch, seq); all ones when it is None."""
    if attention_mask is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1], dtype=torch.long, device=input_ids.device)
    mask = attention_mask.long()
    if (mask[:, 1:] > mask[:, :-1]).any():
        raise ValueError("attention_mask must be right-padded (ones, then zeros); left padding is not supported")
    lengths = mask.sum(dim=1)
    if (lengths == 0).any():
        raise ValueError("a sentence in the batch is empty (its attention_mask is all zeros)")
    return lengths


def _world_size():
    return (
        torch.distributed.get_world_size()
        if torch.distributed.is_available() and torch.distributed.is_initialized()
        else 1
    )


# ----------------------------------------------------------------------------------------------
# building blocks


class LSTMEncoder(nn.Module):
    """Embedding -> 1-layer LSTM -> last hidden state of each sentence -> (mu_raw, logvar_raw).

    Sentences are right-padded and the LSTM reads left to right, so the output at position
    length - 1 has seen the real tokens only: pad tokens never reach the state that is used.
    (One fused LSTM call over the padded batch is several times faster on CPU than packing.)
    input_ids: (batch, seq), lengths: (batch,). Returns two (batch, latent_size) tensors.
    """

    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size)
        self.lstm = nn.LSTM(config.embedding_size, config.encoder_hidden_size, batch_first=True)
        self.to_posterior = nn.Linear(config.encoder_hidden_size, 2 * config.latent_size, bias=False)
        for module in self.children():
            module.is_encoder_module = True  # read by _init_weights: the encoder has its own initialisation

    def forward(self, input_ids, lengths):
        width = int(lengths.max())  # trailing all-pad columns are never read
        outputs, _ = self.lstm(self.embed_tokens(input_ids[:, :width]))  # (B, T, H)
        last = outputs[torch.arange(outputs.shape[0], device=outputs.device), lengths - 1]  # (B, H)
        return self.to_posterior(last).chunk(2, dim=-1)


def bn_kl_guarantee(mu):
    """What BN guarantees of a training batch's mean KL, exactly, in nats per sentence: 1/2 sum_i of the
    batch variance of the BN'd mean mu (B, n), i.e. n gamma^2 / 2 times the mean over dimensions of
    v_i / (v_i + eps) (v_i: the raw mean's batch variance, eps: BN's), as KL >= 1/2 sum_i E[mu_i^2].
    It equals the bound n gamma^2 / 2 up to that factor, which falls below 1 when a dimension's raw
    means barely vary."""
    return 0.5 * float(mu.detach().float().var(dim=0, unbiased=False).sum())


def inverse_softplus(y):
    """x with softplus(x) = log(1 + e^x) = y, for y > 0."""
    return y + math.log(-math.expm1(-y))


class BatchNormLatentHead(nn.Module):
    """Posterior parameters: BatchNorm1d on mu only, scale fixed at gamma, shift beta learned.

    In training mode every dimension of the returned mu has batch mean beta and batch std
    gamma * sqrt(v / (v + eps)) ~ gamma (v: the raw mean's batch variance), so the batch-mean KL is
    >= n * gamma^2 / 2 nats. In eval mode the running statistics are used, so one sentence can be
    encoded. gamma = 0 disables BN (plain VAE); delta_rate > 0 builds the delta-VAE posterior instead
    (`delta_vae_posterior`). With config.gamma_mode "learned" each dimension's scale is
    gamma_min + softplus(gamma_offset), a trained parameter started at gamma (`scale()`): the bound is then
    n * gamma_min^2 / 2. mu_raw, logvar_raw: (batch, n) -> mu, logvar (batch, n), fp32.
    """

    def __init__(self, config):
        super().__init__()
        self.gamma = config.gamma
        self.gamma_min = getattr(config, "gamma_min", 0.0)  # BN-CVAE's config has no learned gamma
        self.synchronize_statistics = False  # set by the training script for multi-process SyncBN
        self.bn = self.gamma_offset = None
        if config.gamma > 0:
            self.bn = nn.BatchNorm1d(config.latent_size, eps=config.bn_eps, momentum=config.bn_momentum)
            self.bn.weight.requires_grad_(False)  # a fixed gamma is never trained
            if getattr(config, "gamma_mode", "fixed") == "learned":  # the scale lives here, bn.weight unused
                self.gamma_offset = nn.Parameter(torch.full((config.latent_size,), self.initial_offset()))
        self.delta_rate = getattr(config, "delta_rate", 0.0)  # BN-CVAE's config has none
        self.delta_bounds = delta_vae_variance_bounds(self.delta_rate) if self.delta_rate > 0 else None

    def initial_offset(self):
        """The learned scale's parameter at initialisation: gamma_min + softplus(offset) = gamma."""
        return inverse_softplus(self.gamma - self.gamma_min)

    def scale(self):
        """BN's scale per latent dimension (n,), fp32: gamma fixed (no gradient), or gamma_min +
        softplus(gamma_offset) learned (with its gradient)."""
        if self.gamma_offset is not None:
            return self.gamma_min + nn.functional.softplus(self.gamma_offset.float())
        return self.bn.weight.detach()

    def forward(self, mu_raw, logvar_raw):
        mu, logvar = mu_raw.float(), logvar_raw.float()
        if self.delta_bounds is not None:
            mu, logvar = delta_vae_posterior(mu, logvar, self.delta_rate, self.delta_bounds)
        if self.bn is not None:
            if self.training and mu.shape[0] < 2:
                raise ValueError(
                    "a training batch of one sentence cannot be batch-normalised: BN-VAE needs >= 2 "
                    "sentences per batch in training mode (use model.eval() to encode a single sentence)"
                )
            bn = self.bn
            if self.training:
                bn.num_batches_tracked.add_(1)
            with torch.autocast(device_type=mu.device.type, enabled=False):  # BN statistics in fp32
                if self.training and self.synchronize_statistics and _world_size() > 1:
                    return self._synchronized_batch_norm(mu), logvar
                # a fixed gamma is detached: no gradient even if something flipped requires_grad back on
                mu = nn.functional.batch_norm(
                    mu, bn.running_mean, bn.running_var, self.scale(), bn.bias, self.training, bn.momentum, bn.eps
                )
        return mu, logvar

    def _synchronized_batch_norm(self, mu):
        """BN with batch statistics over all processes (SyncBatchNorm semantics, works on gloo and NCCL).

        The all-reduces are differentiable, so gradients flow through the global mean and variance.
        """
        from torch.distributed.nn.functional import all_reduce

        bn = self.bn
        count = all_reduce(torch.tensor([float(mu.shape[0])], device=mu.device))
        mean = all_reduce(mu.sum(0)) / count
        var = all_reduce((mu - mean).pow(2).sum(0)) / count  # biased, as BN normalises with
        with torch.no_grad():
            bn.running_mean.mul_(1 - bn.momentum).add_(bn.momentum * mean)
            bn.running_var.mul_(1 - bn.momentum).add_(bn.momentum * var * count / (count - 1))
        return (mu - mean) / torch.sqrt(var + bn.eps) * self.scale() + bn.bias

    def train(self, mode=True):
        # from_pretrained builds fresh Parameters (requires_grad=True) and then calls eval(): re-freeze gamma here.
        super().train(mode)
        if self.bn is not None:
            self.bn.weight.requires_grad_(False)
        return self


class LSTMDecoder(nn.Module):
    """LSTM decoder p(x|z): z is concatenated to every input embedding and sets the initial state.

    c0 = W z (no bias), h0 = tanh(c0); dropout on inputs and outputs; Linear(hidden, vocab) without a
    bias unless config.output_layer_bias.
    Without a latent (LSTM LM baseline) the state starts at zero.
    input_ids: (B, T), z: (B, n) or None, state: (h, c) each (1, B, H) or None (use_cache: the
    Transformer decoder's; the LSTM's state costs nothing). Returns hidden states (B, T, H) and the new state.
    """

    def __init__(self, config):
        super().__init__()
        self.use_latent = config.use_latent
        latent = config.latent_size if config.use_latent else 0
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size)
        self.dropout_in = nn.Dropout(config.decoder_dropout_in)
        self.lstm = nn.LSTM(config.embedding_size + latent, config.decoder_hidden_size, batch_first=True)
        self.dropout_out = nn.Dropout(config.decoder_dropout_out)
        self.latent_to_cell = nn.Linear(latent, config.decoder_hidden_size, bias=False) if latent else None
        self.lm_head = nn.Linear(config.decoder_hidden_size, config.vocab_size, bias=config.output_layer_bias)

    def initial_state(self, z):
        cell = self.latent_to_cell(z).unsqueeze(0)  # (1, B, H)
        return torch.tanh(cell), cell

    def forward(self, input_ids, z=None, state=None, use_cache=None):
        inputs = self.dropout_in(self.embed_tokens(input_ids))  # (B, T, E)
        if self.use_latent:
            z = z.to(inputs.dtype)
            inputs = torch.cat([inputs, z.unsqueeze(1).expand(-1, inputs.shape[1], -1)], dim=-1)
            if state is None:
                state = self.initial_state(z)
        hidden, state = self.lstm(inputs, state)
        return self.dropout_out(hidden), state


class TransformerDecoder(nn.Module):
    """A causal Transformer decoder p(x|z) built from transformers' GPT-2 (`GPT2Model` from a `GPT2Config`,
    no pretrained weights): decoder_layers blocks of decoder_heads heads, decoder_hidden_size wide (its
    token embedding, GPT-2's `wte`, as wide), learned positions, GPT-2's initialisation and dropout
    (transformer_dropout). z enters as config.latent_injection says (Optimus's two ways): "memory", a
    vector W_m z at a position before `<s>` that every layer's attention sees; "embedding", W_e z added to
    every token's input embedding; "both". Without a latent (use_latent=False) it is a plain Transformer LM.
    input_ids: (B, T) right-padded (causal attention: padding after a sentence never reaches it), z: (B, n)
    or None, state: the key/value cache (a transformers `Cache`) of the tokens so far, or None; use_cache:
    build one (default: only to continue one). Returns hidden states (B, T, H) and the cache or None.
    ValueError when the positions (the memory, the cached tokens and input_ids) exceed
    max_position_embeddings.
    """

    def __init__(self, config):
        super().__init__()
        from transformers import GPT2Config, GPT2Model  # imported here: the LSTM path does without it

        width = config.decoder_hidden_size
        gpt2 = GPT2Config(
            vocab_size=config.vocab_size,
            n_embd=width,
            n_layer=config.decoder_layers,
            n_head=config.decoder_heads,
            n_positions=config.max_position_embeddings,
            resid_pdrop=config.transformer_dropout,
            embd_pdrop=config.transformer_dropout,
            attn_pdrop=config.transformer_dropout,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        )
        self.transformer = GPT2Model(gpt2)
        self.use_latent = config.use_latent
        injection = config.latent_injection if config.use_latent else None
        self.latent_to_memory = (
            nn.Linear(config.latent_size, width, bias=False) if injection in ("memory", "both") else None
        )
        self.latent_to_embedding = (
            nn.Linear(config.latent_size, width, bias=False) if injection in ("embedding", "both") else None
        )
        self.lm_head = nn.Linear(width, config.vocab_size, bias=config.output_layer_bias)

    @property
    def embed_tokens(self):
        return self.transformer.wte

    @embed_tokens.setter
    def embed_tokens(self, value):
        self.transformer.wte = value

    def forward(self, input_ids, z=None, state=None, use_cache=None):
        with_memory = self.latent_to_memory is not None and state is None  # a cache already holds it
        positions = (state.get_seq_length() if state is not None else 0) + input_ids.shape[1] + with_memory
        if positions > self.transformer.config.n_positions:
            raise ValueError(
                f"{positions} positions (the latent memory and cached tokens included) exceed the Transformer"
                f" decoder's max_position_embeddings ({self.transformer.config.n_positions}): truncate the"
                " input (train.py --max_seq_length) or use a config with more positions"
            )
        embeddings = self.transformer.wte(input_ids)  # (B, T, H)
        if self.latent_to_embedding is not None:
            embeddings = embeddings + self.latent_to_embedding(z.to(embeddings.dtype)).unsqueeze(1)
        if with_memory:
            memory = self.latent_to_memory(z.to(embeddings.dtype)).unsqueeze(1)  # (B, 1, H)
            embeddings = torch.cat([memory, embeddings], dim=1)
        use_cache = state is not None if use_cache is None else use_cache
        outputs = self.transformer(inputs_embeds=embeddings, cache=state, use_cache=use_cache)
        hidden = outputs.last_hidden_state
        return (hidden[:, 1:] if with_memory else hidden), outputs.cache


def build_decoder(config):
    """The decoder config.decoder_type names: `LSTMDecoder` (the paper's) or `TransformerDecoder`."""
    return TransformerDecoder(config) if config.decoder_type == "transformer" else LSTMDecoder(config)


# ----------------------------------------------------------------------------------------------
# pre-trained model base


class BNVAEPreTrainedModel(PreTrainedModel):
    config_class = BNVAEConfig
    base_model_prefix = "bnvae"
    main_input_name = "input_ids"
    _no_split_modules = []
    # A bf16/fp16 load keeps BN's statistics and shift in fp32 (the KL is computed in fp32 from them).
    _keep_in_fp32_modules_strict = ["latent_head"]

    @torch.no_grad()
    def _init_weights(self, module):
        """The official code's initialisation. Decoder: weights U(-init_range, init_range), embedding
        U(-embedding_init_range, embedding_init_range). Encoder (`is_encoder_module`): PyTorch's defaults,
        or with encoder_init_range = r the decoder's rule with r. BN weight = gamma, shift 0.
        The `init` functions leave weights loaded from a checkpoint alone.
        """
        config = self.config
        if getattr(module, "is_encoder_module", False) and config.encoder_init_range is None:
            self._init_pytorch_default(module)
        elif isinstance(module, nn.Embedding):
            init.uniform_(module.weight, -config.embedding_init_range, config.embedding_init_range)
        elif isinstance(module, (nn.Linear, nn.LSTM)):
            bound = config.encoder_init_range if getattr(module, "is_encoder_module", False) else config.init_range
            for param in module.parameters(recurse=False):
                init.uniform_(param, -bound, bound)
        elif isinstance(module, BatchNormLatentHead) and module.gamma_offset is not None:
            init.constant_(module.gamma_offset, module.initial_offset())
        elif isinstance(module, nn.BatchNorm1d):
            # transformers' default would set the weight to 1: gamma is the whole point, so set it here.
            init.constant_(module.weight, config.gamma)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)

    @staticmethod
    def _init_pytorch_default(module):
        """What nn.Embedding / nn.LSTM / nn.Linear's reset_parameters draw, through `init`."""
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, 0.0, 1.0)
            return
        fan = module.hidden_size if isinstance(module, nn.LSTM) else module.weight.shape[1]
        for param in module.parameters(recurse=False):
            init.uniform_(param, -1 / math.sqrt(fan), 1 / math.sqrt(fan))

    def _output(self, output, return_dict):
        """The ModelOutput, or its tuple of non-None fields when return_dict (default config.return_dict) is False."""
        return output if (self.config.return_dict if return_dict is None else return_dict) else output.to_tuple()


# ----------------------------------------------------------------------------------------------
# outputs


@dataclass
class BNVAEModelOutput(ModelOutput):
    """Output of [`BNVAEModel`]: the posterior q(z|x) of each sentence.

    mu (`(B, n)`): posterior mean after BN, fp32. logvar (`(B, n)`): posterior log-variance, fp32.
    latent (`(B, n)`): z, a draw mu + sigma * eps (sample_latent=True) or mu.
    kl (`(B,)`): KL(q(z|x) || N(0, I)), analytic, nats per sentence.
    kl_per_dimension (`(B, n)`): the KL split over latent dimensions, nats.
    """

    mu: torch.FloatTensor | None = None
    logvar: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None
    kl: torch.FloatTensor | None = None
    kl_per_dimension: torch.FloatTensor | None = None


@dataclass
class BNVAELanguageModelingOutput(ModelOutput):
    """Output of [`BNVAEForLanguageModeling`].

    loss (`()`): the training objective `vae_loss` (with labels): batch-mean reconstruction + kl_weight *
        KL term (free bits if the config sets them), nats per sentence.
    reconstruction_loss (`(B,)`): -log p(x|z), nats per sentence, summed over predicted tokens.
    kl, kl_per_dimension, mu, logvar, latent: as in [`BNVAEModelOutput`] (None when decoding a given z).
    logits (`(B, T, V)`): next-token logits for every position of input_ids (None with return_logits=False).
    num_tokens (`(B,)`): number of predicted tokens per sentence (words + end token).
    state (`tuple` of two `(1, B, H)`): decoder LSTM state after the last input token (generation cache;
        None on the loss-only path, labels with return_logits=False, which stops one token short).
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    kl: torch.FloatTensor | None = None
    kl_per_dimension: torch.FloatTensor | None = None
    mu: torch.FloatTensor | None = None
    logvar: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    num_tokens: torch.LongTensor | None = None
    state: tuple | None = None


# ----------------------------------------------------------------------------------------------
# base model: q(z|x)


class BNVAEModel(BNVAEPreTrainedModel):
    """The inference network every head shares: embedding -> LSTM encoder -> BN latent head.

    Heads hold it as `self.bnvae`, so `from_pretrained` moves a trained encoder from one head to another.
    """

    def __init__(self, config):
        super().__init__(config)
        if not config.use_latent:
            raise ValueError("BNVAEModel is the latent part of BN-VAE; a config with use_latent=False has none")
        self.encoder = LSTMEncoder(config)
        self.latent_head = BatchNormLatentHead(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.encoder.embed_tokens

    def set_input_embeddings(self, value):
        self.encoder.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        sample_latent: bool | None = None,
        return_dict: bool | None = None,
    ):
        r"""
        input_ids (`(B, T)`): `<s> w_1 ... w_m </s>`, right-padded.
        attention_mask (`(B, T)`): 1 for real tokens; defaults to all ones.
        sample_latent (`bool`): latent = mu + sigma * eps (default in training) or mu (default in eval mode).
        """
        check_input_ids(input_ids, self.config.vocab_size)
        lengths = sequence_lengths(input_ids, attention_mask)
        mu, logvar = self.latent_head(*self.encoder(input_ids, lengths))
        kl_per_dimension = gaussian_kl_per_dimension(mu, logvar)
        sample_latent = self.training if sample_latent is None else sample_latent
        latent = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample_latent else mu
        output = BNVAEModelOutput(
            mu=mu, logvar=logvar, latent=latent, kl=kl_per_dimension.sum(-1), kl_per_dimension=kl_per_dimension
        )
        return self._output(output, return_dict)


# ----------------------------------------------------------------------------------------------
# language-modelling head


class RecurrentStateGenerationMixin(GenerationMixin):
    """transformers' GenerationMixin for a recurrent decoder whose cache is its state, passed as `state`
    (a tensor or a tuple of `(1, B, H)` tensors) and returned as `output.state`; shared by BN-VAE and BN-CVAE."""

    _is_stateful = True

    def generation_defaults(self):
        """The generation config's defaults (saved in generation_config.json, overridable per call): never
        emit <pad>, <s> or <unk> (skip_special_tokens would delete them silently), and no repeated trigram
        (greedy decoding of an LSTM loops: "the , , , ,", "he was a , but he was a , but")."""
        config = self.config
        return {
            "suppress_tokens": [config.pad_token_id, config.bos_token_id, config.unk_token_id],
            "no_repeat_ngram_size": 3,
        }

    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        """transformers' update, plus the state: transformers 5 carries only an output named `cache` from
        step to step, so without this every step would decode the whole prefix again."""
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder, num_new_tokens
        )
        model_kwargs["state"] = outputs.state
        return model_kwargs

    def _reorder_cache(self, state, beam_idx):
        if state is None:  # use_cache=False: nothing to reorder
            return None
        if hasattr(state, "reorder_cache"):  # a Transformer decoder's key/value cache
            state.reorder_cache(beam_idx)
            return state
        if isinstance(state, tuple):
            return tuple(self._reorder_cache(s, beam_idx) for s in state)
        return state.index_select(1, beam_idx.to(state.device))


class BNVAEForLanguageModeling(BNVAEPreTrainedModel, RecurrentStateGenerationMixin):
    """BN-VAE sentence model: the base model's q(z|x), then an LSTM decoder p(x|z).

    Sentences are `<s> w_1 ... w_m </s>`, right-padded. The decoder predicts tokens 2..T from 1..T-1.
    With use_latent=False this is the LSTM language-model baseline (no base model, no z).
    """

    def __init__(self, config):
        super().__init__(config)
        self.bnvae = BNVAEModel(config) if config.use_latent else None
        self.decoder = build_decoder(config)
        # the KL weight `forward` uses when none is passed: set per step by a training loop that cannot pass
        # it (hf_bnvae.KLAnnealingCallback under transformers' Trainer); not part of the config
        self.kl_weight = 1.0
        self._compiled_output_layer_nll = None  # see compile_output_layer
        self.post_init()
        self.generation_config.update(**self.generation_defaults())
        self.generation_config._from_model_config = False  # saved as ours, so from_pretrained keeps it

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' from_pretrained; a generation config that transformers derived from the model
        config (checkpoints of hf_bnvae <= 0.2.0) gets `generation_defaults`."""
        model = super().from_pretrained(*args, **kwargs)
        if getattr(model.generation_config, "_from_model_config", False):
            model.generation_config.update(**model.generation_defaults())
            model.generation_config._from_model_config = False
        return model

    def get_input_embeddings(self):
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value):
        self.decoder.embed_tokens = value

    def get_output_embeddings(self):
        return self.decoder.lm_head

    def set_output_embeddings(self, value):
        self.decoder.lm_head = value

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=False):
        """Resize the decoder's input and output embeddings (transformers' method) and the encoder's embedding."""
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        if self.bnvae is not None:
            self.bnvae.encoder.embed_tokens = self._get_resized_embeddings(
                self.bnvae.encoder.embed_tokens, embeddings.num_embeddings, mean_resizing=mean_resizing
            )
        return embeddings

    @property
    def kl_lower_bound(self):
        """Guaranteed lower bound of the batch-mean KL in training, n * gamma^2 / 2 nats per sentence."""
        return self.config.kl_lower_bound

    # -- the two halves -----------------------------------------------------------------------

    def encode_posterior(self, input_ids, attention_mask=None):
        """q(z|x) parameters. input_ids, attention_mask: (B, T). Returns mu (after BN), logvar: (B, n), fp32."""
        if self.bnvae is None:
            raise ValueError("this model has no latent variable (use_latent=False, the LSTM LM baseline)")
        posterior = self.bnvae(input_ids, attention_mask, sample_latent=False)
        return posterior.mu, posterior.logvar

    def sentence_log_likelihood(self, input_ids, attention_mask=None, latent=None):
        """log p(x|z) per sentence in nats, only scoring real (non-pad) target tokens.

        input_ids, attention_mask: (B, T); latent: (B, n) or (B, K, n) for K samples per sentence
        (the sentences are repeated K times). Returns (B,) or (B, K).
        """
        check_input_ids(input_ids, self.config.vocab_size)
        lengths = sequence_lengths(input_ids, attention_mask)
        samples = None
        if latent is not None and latent.dim() == 3:
            samples = latent.shape[1]
            input_ids = input_ids.repeat_interleave(samples, dim=0)
            lengths = lengths.repeat_interleave(samples, dim=0)
            latent = latent.reshape(-1, latent.shape[-1])
        hidden, _ = self.decoder(input_ids[:, :-1], latent, use_cache=False)  # (B*K, T-1, H)
        targets = input_ids[:, 1:]
        valid = torch.arange(targets.shape[1], device=targets.device)[None, :] < (lengths[:, None] - 1)
        per_sentence = -self._sentence_nll(hidden, targets, valid)
        return per_sentence if samples is None else per_sentence.view(-1, samples)

    def output_layer_nll(self, states, labels):
        """-log p(label | state) per token, nats, fp32. states: (M, H), labels: (M,). Returns (M,). Without
        gradients, after `compile_output_layer`, the compiled version."""
        if self._compiled_output_layer_nll is not None and not torch.is_grad_enabled():
            return self._compiled_output_layer_nll(states, labels)
        return nn.functional.cross_entropy(self.decoder.lm_head(states).float(), labels, reduction="none")

    def compile_output_layer(self, chunk_tokens=256):
        """Make `output_layer_nll` without gradients (evaluation: the IW-NLL's K decodings per sentence
        spend most of their time there) a torch.compile'd function that fuses the bias (when the layer has
        one), the log-sum-exp and the target gather into one pass over each (chunk, V) block of logits
        (eager PyTorch makes three). Inputs are padded to chunk_tokens rows (`_sentence_nll`'s chunks) so
        one compilation serves every call. Where torch.compile does not work (no C++ compiler, ...) the
        eager layer stays, with a warning. Returns whether the layer is compiled."""
        if self._compiled_output_layer_nll is not None:
            return True

        def nll(states, weight, bias, labels):
            logits = nn.functional.linear(states, weight, bias).float()
            return torch.logsumexp(logits, -1) - logits.gather(1, labels[:, None])[:, 0]

        head = self.decoder.lm_head
        try:
            compiled = torch.compile(nll, dynamic=False)
            probe = torch.zeros(chunk_tokens, head.in_features, device=head.weight.device, dtype=head.weight.dtype)
            with torch.no_grad():
                compiled(
                    probe, head.weight, head.bias, torch.zeros(chunk_tokens, dtype=torch.long, device=probe.device)
                )
        except Exception as error:  # no C++ compiler, unsupported platform, ...
            import warnings

            warnings.warn(
                f"torch.compile is not available here ({type(error).__name__}); using the eager output layer",
                stacklevel=2,
            )
            return False

        def token_nll(states, labels):
            rows, head = states.shape[0], self.decoder.lm_head
            if rows < chunk_tokens:
                states = torch.cat([states, states.new_zeros(chunk_tokens - rows, states.shape[1])])
                labels = torch.cat([labels, labels.new_zeros(chunk_tokens - rows)])
            return compiled(states, head.weight, head.bias, labels)[:rows]

        self._compiled_output_layer_nll = token_nll
        return True

    def training_output_layer_nll(self, states, labels):
        """`output_layer_nll` for the training loss: when gradients are on, the output layer and
        cross-entropy fused chunk by chunk (`linear_cross_entropy`, which decides), so the (M, V) logits,
        log-softmax and gradient are never whole tensors. Under autocast (whose casts a fused function
        would bypass) it is the plain `output_layer_nll`. states: (M, H), labels: (M,). Returns (M,), nats, fp32."""
        if torch.is_autocast_enabled(states.device.type):
            return self.output_layer_nll(states, labels)
        head = self.decoder.lm_head
        return linear_cross_entropy(states, head.weight, head.bias, labels)

    def _sentence_nll(self, hidden, targets, valid, token_nll=None, chunk_tokens=256):
        """Summed token NLL per sentence (nats, fp32) over the positions where `valid` is True.

        hidden: (N, T, H) decoder outputs, targets: (N, T) next tokens, valid: (N, T) bool. The output
        layer, where the time goes, runs only on valid positions (all of them, without a copy, when the
        batch has no padding) and in chunks of chunk_tokens rows (None: all at once). Without gradients,
        chunks of 256 rows keep the (chunk, V) logits in cache for the log-softmax (measured 1.6x faster
        than 1024 at V = 10k on these CPUs). `training_output_layer_nll` chunks by itself: pass it with
        chunk_tokens None (each call holds a weight-sized gradient until backward). Returns (N,).
        """
        token_nll = token_nll or self.output_layer_nll
        unpadded = bool(valid.all())
        if unpadded:
            states, labels = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)  # (N*T, H), (N*T,)
        else:
            states, labels = hidden[valid], targets[valid]  # (M, H), (M,)
        if states.shape[0] == 0:
            return hidden.new_zeros(hidden.shape[0], dtype=torch.float32)
        chunk_tokens = chunk_tokens or states.shape[0]
        per_token = torch.cat(
            [
                token_nll(states[i : i + chunk_tokens], labels[i : i + chunk_tokens])
                for i in range(0, states.shape[0], chunk_tokens)
            ]
        )
        if unpadded:
            return per_token.view(valid.shape).sum(-1)
        rows = valid.nonzero()[:, 0]
        return torch.zeros(hidden.shape[0], device=hidden.device, dtype=torch.float32).index_add_(0, rows, per_token)

    # -- forward --------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        latent: torch.FloatTensor | None = None,
        kl_weight: float | None = None,
        sample_latent: bool | None = None,
        return_logits: bool = True,
        state: tuple | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
    ):
        r"""
        input_ids (`(B, T)`): `<s> w_1 ... w_m </s>`, right-padded.
        attention_mask (`(B, T)`): 1 for real tokens; defaults to all ones.
        labels (`(B, T)`): usually input_ids (shifted inside); -100 or pad positions (attention_mask 0)
            are ignored. When given, `loss` and `reconstruction_loss` are computed.
        latent (`(B, n)`): decode from this z instead of encoding input_ids (generation, prior samples).
        kl_weight (`float`): weight of the KL term in `loss` (annealing, beta-VAE, 0 for the autoencoder);
            default: the model's `kl_weight` attribute (1.0 unless a callback sets it).
        sample_latent (`bool`): draw z = mu + sigma * eps (default in training) or use z = mu
            (default in eval mode, so eval outputs are deterministic).
        return_logits (`bool`): False skips the (B, T, V) logits and computes the loss on the real
            tokens only, without decoding past the last token (what training needs; markedly faster).
        state (`tuple` of two `(1, B, H)`): decoder LSTM state to continue from (generation cache).
        """
        check_input_ids(input_ids, self.config.vocab_size)
        kl_weight = self.kl_weight if kl_weight is None else kl_weight
        posterior = BNVAEModelOutput()
        if latent is None and self.bnvae is not None:
            if state is not None:
                raise ValueError("continuing from a decoder state needs the latent z it started from: pass latent=z")
            posterior = self.bnvae(input_ids, attention_mask, sample_latent=sample_latent)
            latent = posterior.latent
        elif latent is not None:
            check_latent(latent, input_ids.shape[0], self.config.latent_size)

        if labels is not None:
            check_token_labels(labels, input_ids, self.config.vocab_size)
        loss_only = labels is not None and not return_logits
        # the loss never reads the prediction after the last token: the loss-only path does not compute it
        wants_state = (not self.training if use_cache is None else use_cache) and not loss_only
        hidden, new_state = self.decoder(input_ids[:, :-1] if loss_only else input_ids, latent, state, wants_state)
        logits = self.decoder.lm_head(hidden) if return_logits else None  # (B, T, V)

        loss = reconstruction_loss = num_tokens = None
        if labels is not None:
            targets, valid = next_token_targets(labels, attention_mask)
            if logits is not None:
                reconstruction_loss = shifted_token_nll(logits, labels, attention_mask)[0].sum(-1)
            else:  # training: the output layer only on the tokens that count, fused when gradients are on
                token_nll = self.training_output_layer_nll
                reconstruction_loss = self._sentence_nll(hidden, targets, valid, token_nll, chunk_tokens=None)
            num_tokens = valid.sum(-1)
            loss = vae_loss(
                reconstruction_loss,
                posterior.kl_per_dimension,
                kl_weight,
                self.config.free_bits,
                self.config.free_bits_per_dimension,
            )

        output = BNVAELanguageModelingOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            kl=posterior.kl,
            kl_per_dimension=posterior.kl_per_dimension,
            mu=posterior.mu,
            logvar=posterior.logvar,
            latent=latent,
            logits=logits,
            num_tokens=num_tokens,
            state=new_state if use_cache is not False and not loss_only else None,
        )
        return self._output(output, return_dict)

    # -- generation (GenerationMixin with the LSTM state as cache) ----------------------------------

    @torch.no_grad()
    def generate(self, inputs=None, latent=None, latent_from_prompt=False, **kwargs):
        """transformers' `generate`, with the latent z as an extra input. Returns the prompt as given, then
        the new tokens (like every transformers model), so the text-generation pipeline works unchanged.

        latent (`(B, n)`): the z to decode. When None: the posterior mean of the prompt as a prefix
            (`<s> w_1 ... w_k` without `</s>`, so that z does not say the sentence ends there) if
            latent_from_prompt=True, else a draw from the prior N(0, I) (torch's global RNG: seed it to repeat).
        The decoder always starts from `<s>`: a prompt without it (tokenised with add_special_tokens=False)
        gets it, a prompt ending in `</s>` (the tokenizer's default) is continued before it, and no prompt
        at all starts from `<s>` alone. Prompts in one call must have the same length (no padding).
        """
        check_generation_counts(kwargs)
        prompt = kwargs.pop("input_ids", inputs)
        attention_mask = kwargs.pop("attention_mask", None)
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError(
                "generate() continues unpadded prompts only: pass prompts of equal length, or one at a time"
            )
        batch_size = prompt.shape[0] if prompt is not None else (latent.shape[0] if latent is not None else 1)
        if prompt is None:
            prompt = torch.zeros(batch_size, 0, dtype=torch.long, device=self.device)
        start = self._decoder_prompt(prompt)
        if self.bnvae is not None:
            latent = self._latent_for_generation(start, latent, latent_from_prompt)
        elif latent is not None or latent_from_prompt:
            raise ValueError("this model has no latent variable (use_latent=False, the LSTM LM baseline)")
        generate_kwargs = {"pad_token_id": self.config.pad_token_id, "eos_token_id": self.config.eos_token_id, **kwargs}
        output = super().generate(input_ids=start, latent=latent, **generate_kwargs)
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        copies = sequences.shape[0] // batch_size  # num_return_sequences
        sequences = torch.cat([prompt.repeat_interleave(copies, 0), sequences[:, start.shape[1] :]], dim=1)
        if isinstance(output, torch.Tensor):
            return sequences
        output.sequences = sequences
        return output

    def _decoder_prompt(self, prompt):
        """`<s> w_1 ... w_k` (B, k + 1) for the decoder from a prompt (B, T) with or without `<s>` and `</s>`."""
        if prompt.numel():
            check_input_ids(prompt, self.config.vocab_size)
        bos, eos = self.config.bos_token_id, self.config.eos_token_id
        if prompt.shape[1] > 0 and bool((prompt[:, -1] == eos).all()):
            prompt = prompt[:, :-1]
        if prompt.shape[1] == 0 or not bool((prompt[:, 0] == bos).all()):
            prompt = torch.cat([self._bos_ids(prompt.shape[0]).to(prompt.device), prompt], dim=1)
        return prompt

    def _latent_for_generation(self, start, latent, latent_from_prompt):
        """z (B, n) for generate(): the given one (checked), the prompt's posterior mean, or a prior draw.
        start: the decoder prompt (B, k + 1), `<s>` first."""
        batch_size, size = start.shape[0], self.config.latent_size
        if latent is not None:
            check_latent(latent, batch_size, size)
            return latent.to(self.device)
        if not latent_from_prompt:
            return torch.randn(batch_size, size).to(self.device)
        # the prompt as a prefix, <s> prompt without </s>, encoded with BN's running statistics: encoded as a
        # finished sentence, z would tell the decoder to end it at once
        return self.posterior_mean(start)

    def prepare_inputs_for_generation(self, input_ids, state=None, latent=None, use_cache=None, **kwargs):
        if state is not None:
            input_ids = input_ids[:, -1:]  # the state already holds everything before the last token
        return {"input_ids": input_ids, "state": state, "latent": latent, "use_cache": use_cache}

    # -- convenience ------------------------------------------------------------------------------

    def _bos_ids(self, batch_size):
        return torch.full((batch_size, 1), self.config.bos_token_id, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def encode(self, texts, tokenizer):
        """Posterior means E_q[z|x] (after BN, eval statistics) of a list of strings: (len(texts), n)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("encode() needs at least one sentence, got an empty list")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"encode(): text {i} is {text!r}; every text needs at least one word")
        batch = tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
        return self.posterior_mean(batch["input_ids"], batch["attention_mask"])

    @torch.no_grad()
    def posterior_mean(self, input_ids, attention_mask=None):
        """E_q[z|x] (B, n) with BN's running statistics whatever the current mode (which is kept)."""
        was_training = self.training
        self.eval()
        mu, _ = self.encode_posterior(input_ids, attention_mask)
        self.train(was_training)
        return mu

    @torch.no_grad()
    def decode(self, latent, tokenizer, max_new_tokens=40, **generate_kwargs):
        """Sentences generated from z (n_sentences, n); greedy unless generate kwargs say otherwise."""
        sequences = self.generate(latent=latent.to(self.device), max_new_tokens=max_new_tokens, **generate_kwargs)
        return [text.strip() for text in tokenizer.batch_decode(sequences, skip_special_tokens=True)]

    def sample_prior(self, num_sentences, tokenizer, generator=None, **generate_kwargs):
        """Sentences decoded from z ~ N(0, I)."""
        check_count("num_sentences", num_sentences)
        latent = torch.randn(num_sentences, self.config.latent_size, generator=generator)
        return self.decode(latent, tokenizer, **generate_kwargs)

    def reconstruct(self, texts, tokenizer, **generate_kwargs):
        """Sentences decoded from the posterior means of `texts`."""
        return self.decode(self.encode(texts, tokenizer), tokenizer, **generate_kwargs)

    def interpolate(self, text_a, text_b, tokenizer, steps=5, **generate_kwargs):
        """Sentences decoded along the straight line between the posterior means of two sentences: `steps`
        points, both ends included."""
        check_count("steps", steps, minimum=2)
        ends = self.encode([text_a, text_b], tokenizer)
        weights = torch.linspace(0, 1, steps, device=ends.device)[:, None]
        return self.decode((1 - weights) * ends[0] + weights * ends[1], tokenizer, **generate_kwargs)


# ----------------------------------------------------------------------------------------------
# sequence-classification head


class BNVAEForSequenceClassification(BNVAEPreTrainedModel):
    """The paper's semi-supervised classifier: the base model's posterior mean, dropout
    (config.classifier_dropout), then a linear layer to config.num_labels. The mean is the BN head's
    output (config.classifier_input "bn") or the encoder's raw mean before BN ("raw", the official
    fine-tuning script's default); with "raw" BN is not run, so a training batch of one sentence is fine.

    `from_pretrained(<language-model checkpoint>, num_labels=k)` takes the pretrained encoder and BN
    head (gamma included) and initialises the classifier. In eval mode BN uses its running statistics,
    so one sentence classifies; in training a batch needs 2 sentences (BN). `freeze_encoder()` trains
    the classifier alone (a linear probe); by default everything but gamma is fine-tuned, as the paper.
    Follows transformers' `problem_type` conventions (regression, single- and multi-label).
    """

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bnvae = BNVAEModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.latent_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self):
        return self.bnvae.encoder.embed_tokens

    def set_input_embeddings(self, value):
        self.bnvae.encoder.embed_tokens = value

    def freeze_encoder(self):
        """Train the classifier only (a linear probe on the posterior mean); BN's statistics still update
        in training mode unless the model is put in eval mode."""
        self.bnvae.requires_grad_(False)
        return self

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ):
        r"""
        input_ids, attention_mask (`(B, T)`): `<s> w_1 ... w_m </s>`, right-padded.
        labels (`(B,)`): class ids in [0, num_labels) (float targets for regression, `(B, num_labels)`
            multi-hot for multi-label). Returns `SequenceClassifierOutput` with logits `(B, num_labels)`
            and, with labels, the loss (mean over the batch, nats for the classification losses).
        """
        if self.config.classifier_input == "raw":
            check_input_ids(input_ids, self.config.vocab_size)
            mu = self.bnvae.encoder(input_ids, sequence_lengths(input_ids, attention_mask))[0].float()  # (B, n)
        else:
            mu = self.bnvae(input_ids, attention_mask, sample_latent=False).mu  # (B, n), BN'd posterior mean
        logits = self.classifier(self.dropout(mu))
        if labels is not None and (labels.dim() == 0 or labels.shape[0] != input_ids.shape[0]):
            raise ValueError(
                f"labels must have one entry per sentence ({input_ids.shape[0]}), got shape {tuple(labels.shape)}"
            )
        loss = self._classification_loss(logits, labels) if labels is not None else None
        return self._output(SequenceClassifierOutput(loss=loss, logits=logits), return_dict)

    def _classification_loss(self, logits, labels):
        """transformers' problem_type rules: regression for one label, single-label for integer labels,
        multi-label otherwise; the problem type is stored in the config the first time."""
        config = self.config
        if config.problem_type is None:
            if self.num_labels == 1:
                config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                config.problem_type = "single_label_classification"
            else:
                config.problem_type = "multi_label_classification"
        if config.problem_type == "regression":
            return nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
        if config.problem_type == "single_label_classification":
            labels = labels.view(-1)
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_labels):
                bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
                raise ValueError(f"label {bad} is outside [0, num_labels={self.num_labels})")
            return nn.functional.cross_entropy(logits.float(), labels)
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.to(torch.float32))


__all__ = [
    "BNVAEForLanguageModeling",
    "BNVAEForSequenceClassification",
    "BNVAELanguageModelingOutput",
    "BNVAEModel",
    "BNVAEModelOutput",
    "BNVAEPreTrainedModel",
    "BatchNormLatentHead",
    "LSTMDecoder",
    "LSTMEncoder",
    "delta_vae_posterior",
    "delta_vae_variance_bounds",
    "free_bits_kl",
    "gaussian_kl_per_dimension",
    "vae_loss",
]
