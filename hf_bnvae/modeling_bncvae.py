"""BN-CVAE: a conditional VAE for dialogue responses (Zhao et al., ACL 2017, without dialogue acts) whose
recognition mean is batch-normalised with a fixed scale gamma (Zhu et al., ACL 2020, section 6.3).

Shapes: B conversations, K context turns (oldest first, left-aligned, missing turns all padding), L tokens
per utterance, T tokens per response, n = latent_size. Every utterance and response is
`<s> w_1 ... w_m </s>`, right-padded. Losses and KLs are in nats per response.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import init
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_bncvae import BNCVAEConfig
from .modeling_bnvae import (
    BatchNormLatentHead,
    BNVAEPreTrainedModel,
    RecurrentStateGenerationMixin,
    check_count,
    check_generation_counts,
    check_input_ids,
    check_latent,
    check_token_labels,
    gaussian_kl_per_dimension,
    sequence_lengths,
    shifted_token_nll,
)

# ----------------------------------------------------------------------------------------------
# maths


def gaussian_kl_between(mu_q, logvar_q, mu_p, logvar_p):
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per dimension, nats, fp32. All (..., n) -> (..., n):
    0.5 * (logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)^2) / exp(logvar_p) - 1)."""
    mu_q, logvar_q, mu_p, logvar_p = (t.float() for t in (mu_q, logvar_q, mu_p, logvar_p))
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0)


def bag_of_words_loss(logits, targets, valid):
    """Zhao et al.'s bag-of-words loss: -sum over the response's target tokens of log softmax(logits)[token],
    one order-free prediction from [c; z]. logits: (B, V); targets, valid: (B, T). Returns (B,) nats."""
    log_probs = logits.float().log_softmax(-1).gather(1, targets.masked_fill(~valid, 0))  # (B, T)
    return -(log_probs * valid).sum(-1)


def pad_contexts(contexts, speakers, pad_token_id, max_turns=None):
    """Tensors for a batch of contexts of token-id lists.

    contexts: B lists of turns, each turn a list of token ids (oldest first); speakers: B lists of 0/1
    (1: the turn is by the speaker of the response). The last `max_turns` turns are kept. Returns
    context_input_ids (B, K, L), context_attention_mask (B, K, L), context_speakers (B, K).
    """
    if len(contexts) != len(speakers):
        raise ValueError(f"{len(contexts)} contexts but {len(speakers)} speaker lists")
    if max_turns is not None:
        contexts = [turns[-max_turns:] for turns in contexts]
        speakers = [who[-max_turns:] for who in speakers]
    for i, (turns, who) in enumerate(zip(contexts, speakers)):
        if not turns:
            raise ValueError(f"context {i} has no turns: a response needs at least one utterance before it")
        if len(turns) != len(who):
            raise ValueError(f"context {i} has {len(turns)} turns but {len(who)} speaker indicators")
        if any(len(turn) == 0 for turn in turns):
            raise ValueError(f"context {i} has an empty utterance")
    width = max(len(turns) for turns in contexts)
    length = max(len(turn) for turns in contexts for turn in turns)
    ids = torch.full((len(contexts), width, length), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    who_tensor = torch.zeros(len(contexts), width, dtype=torch.long)
    for i, (turns, who) in enumerate(zip(contexts, speakers)):
        who_tensor[i, : len(who)] = torch.tensor(who, dtype=torch.long)
        for k, turn in enumerate(turns):
            ids[i, k, : len(turn)] = torch.tensor(turn, dtype=torch.long)
            mask[i, k, : len(turn)] = 1
    return ids, mask, who_tensor


# ----------------------------------------------------------------------------------------------
# building blocks


class UtteranceEncoder(nn.Module):
    """Bidirectional GRU over the words of each utterance; the two final states concatenated.
    embeddings: (N, L, E) right-padded, lengths: (N,) >= 1. Returns (N, 2 * utterance_hidden_size)."""

    def __init__(self, config):
        super().__init__()
        self.gru = nn.GRU(config.embedding_size, config.utterance_hidden_size, batch_first=True, bidirectional=True)

    def forward(self, embeddings, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(embeddings, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, final = self.gru(packed)  # (2, N, H): forward and backward final states, padding never read
        return torch.cat([final[0], final[1]], dim=-1)


class ContextEncoder(nn.Module):
    """GRU over the context's utterance vectors, each with its speaker as a one-hot pair; c is its state after
    the last turn. utterances: (B, K, 2U), speakers: (B, K), num_turns: (B,) >= 1. Returns (B, C)."""

    def __init__(self, config):
        super().__init__()
        self.gru = nn.GRU(2 * config.utterance_hidden_size + 2, config.context_hidden_size, batch_first=True)

    def forward(self, utterances, speakers, num_turns):
        speaker = nn.functional.one_hot(speakers, 2).to(utterances.dtype)
        outputs, _ = self.gru(torch.cat([utterances, speaker], dim=-1))  # (B, K, C)
        return outputs[torch.arange(outputs.shape[0], device=outputs.device), num_turns - 1]


# ----------------------------------------------------------------------------------------------
# model


@dataclass
class BNCVAEOutput(ModelOutput):
    """Output of [`BNCVAEForConditionalGeneration`], every term in nats per response.

    loss (`()`): batch mean of reconstruction + kl_weight * kl + bow_loss (use_bow) + prior_kl (gamma > 0).
    reconstruction_loss (`(B,)`): -log p(x | c, z), summed over the response's predicted tokens.
    kl (`(B,)`): KL(q(z | c, x) || p(z | c)), analytic.
    prior_kl (`(B,)`): KL(p(z | c) || N(0, I)), the BN-CVAE term (reported for every model).
    bow_loss (`(B,)`): the bag-of-words loss (None without the BOW head).
    mu, logvar (`(B, n)`): the recognition network's q(z | c, x), mu after BN. prior_mu, prior_logvar: p(z | c).
    latent (`(B, n)`): the z decoded from. logits (`(B, T, V)`): next-token logits for every position.
    num_tokens (`(B,)`): predicted tokens per response (words + `</s>`).
    state (`(1, B, H)`): decoder GRU state after the last input token (the generation cache).
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    kl: torch.FloatTensor | None = None
    prior_kl: torch.FloatTensor | None = None
    bow_loss: torch.FloatTensor | None = None
    mu: torch.FloatTensor | None = None
    logvar: torch.FloatTensor | None = None
    prior_mu: torch.FloatTensor | None = None
    prior_logvar: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    num_tokens: torch.LongTensor | None = None
    state: torch.FloatTensor | None = None


# The base model's weights in checkpoints of hf_bnvae <= 0.3 (written before BNCVAEModel existed) -> their names now
LEGACY_KEY_MAPPING = {
    r"^(embed_tokens|utterance_encoder|context_encoder|recognition|latent_head|prior)\.": r"bncvae.\1."
}


class BNCVAEPreTrainedModel(PreTrainedModel):
    config_class = BNCVAEConfig
    base_model_prefix = "bncvae"
    main_input_name = "input_ids"
    _no_split_modules = []
    _keep_in_fp32_modules_strict = ["latent_head"]
    _output = BNVAEPreTrainedModel._output

    @torch.no_grad()
    def _init_weights(self, module):
        """Zhao et al.'s initialisation: every weight uniform(-init_range, init_range); BN weight gamma, shift 0."""
        if isinstance(module, (nn.Embedding, nn.Linear, nn.GRU)):
            for param in module.parameters(recurse=False):
                init.uniform_(param, -self.config.init_range, self.config.init_range)
        elif isinstance(module, nn.BatchNorm1d):
            init.constant_(module.weight, self.config.gamma)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)


@dataclass
class BNCVAEModelOutput(ModelOutput):
    """BNCVAEModel's output: the context vector `context` (B, C); the prior p(z | c) (`prior_mu`,
    `prior_logvar`, (B, n)); with a response, the recognition network's q(z | c, x) (`mu` after BN when
    gamma > 0, `logvar`, (B, n)) and `kl` = KL(q || p) (B,) in nats per pair; the latent `latent` (B, n)."""

    context: torch.FloatTensor | None = None
    prior_mu: torch.FloatTensor | None = None
    prior_logvar: torch.FloatTensor | None = None
    mu: torch.FloatTensor | None = None
    logvar: torch.FloatTensor | None = None
    kl: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None


class BNCVAEModel(BNCVAEPreTrainedModel):
    """The latent part of BN-CVAE, which the generation head holds as `self.bncvae`: the word embedding,
    the utterance BiGRU and the context GRU (with speakers) giving c, the recognition network
    q(z | c, x) = Linear([c; x]) with BN on its mean when gamma > 0 (`BatchNormLatentHead`, shared with
    BN-VAE), and the prior network p(z | c), a tanh MLP.

    defer_init: leave the weights to the head that builds it, which initialises the whole model in one pass,
    so that a seed gives the weights it gave before the base model was split out (hf_bnvae <= 0.3).
    """

    def __init__(self, config, defer_init=False):
        super().__init__(config)
        n = config.latent_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size)
        self.utterance_encoder = UtteranceEncoder(config)
        self.context_encoder = ContextEncoder(config)
        context, utterance = config.context_hidden_size, 2 * config.utterance_hidden_size
        self.recognition = nn.Linear(context + utterance, 2 * n)
        self.latent_head = BatchNormLatentHead(config)
        prior_hidden = max(2 * n, 100)
        self.prior = nn.Sequential(nn.Linear(context, prior_hidden), nn.Tanh(), nn.Linear(prior_hidden, 2 * n))
        self._defer_init = defer_init
        self.post_init()
        self._defer_init = False

    def init_weights(self):
        if not self._defer_init:
            super().init_weights()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def encode_context(self, context_input_ids, context_attention_mask=None, context_speakers=None):
        """The context vector c (B, C). context_input_ids, context_attention_mask: (B, K, L); context_speakers:
        (B, K) of 0/1 (1: same speaker as the response), default alternating with the last turn by the
        other speaker. Turns are left-aligned; a missing turn is all padding."""
        if context_input_ids is None or context_input_ids.dim() != 3:
            shape = None if context_input_ids is None else tuple(context_input_ids.shape)
            raise ValueError(f"context_input_ids must have shape (batch, turns, tokens), got {shape}")
        check_input_ids(context_input_ids.flatten(0, 1), self.config.vocab_size)
        if context_attention_mask is None:
            context_attention_mask = context_input_ids != self.config.pad_token_id
        lengths = context_attention_mask.long().sum(-1)  # (B, K)
        present = lengths > 0
        num_turns = present.sum(-1)
        if bool((num_turns == 0).any()):
            raise ValueError("a context in the batch has no utterance: a response needs at least one turn before it")
        positions = torch.arange(present.shape[1], device=present.device)
        if not torch.equal(present, positions < num_turns[:, None]):
            raise ValueError("context turns must be left-aligned: an empty turn may only follow the last real one")
        if context_speakers is None:  # ... speaker 1, speaker 0 | response (speaker 1)
            context_speakers = ((num_turns[:, None] - 1 - positions) % 2).long()
        elif tuple(context_speakers.shape) != tuple(present.shape) or not bool(
            ((context_speakers == 0) | (context_speakers == 1)).all()
        ):
            raise ValueError(
                f"context_speakers must be 0/1 (1: the responder) of shape {tuple(present.shape)}, "
                f"got shape {tuple(context_speakers.shape)}"
            )
        vectors = self.encode_utterances(context_input_ids[present], context_attention_mask[present])
        utterances = vectors.new_zeros(*present.shape, vectors.shape[-1]).index_put((present,), vectors)
        return self.context_encoder(utterances, context_speakers.long(), num_turns)

    def encode_utterances(self, input_ids, attention_mask=None):
        """Utterance vectors (N, 2U) of right-padded utterances input_ids (N, L) (the embedding is the decoder's)."""
        return self.utterance_encoder(self.embed_tokens(input_ids), sequence_lengths(input_ids, attention_mask))

    def prior_parameters(self, context):
        """p(z | c): mu, logvar (B, n), fp32."""
        mu, logvar = self.prior(context).float().chunk(2, dim=-1)
        return mu, logvar

    def posterior_parameters(self, context, input_ids, attention_mask=None):
        """q(z | c, x): mu (after BN when gamma > 0), logvar (B, n), fp32. input_ids: the response (B, T)."""
        response = self.encode_utterances(input_ids, attention_mask)
        return self.latent_head(*self.recognition(torch.cat([context, response], dim=-1)).chunk(2, dim=-1))

    def forward(
        self,
        context_input_ids: torch.LongTensor | None = None,
        context_attention_mask: torch.LongTensor | None = None,
        context_speakers: torch.LongTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        sample_latent: bool | None = None,
        return_dict: bool | None = None,
    ):
        r"""
        context_input_ids, context_attention_mask (`(B, K, L)`), context_speakers (`(B, K)`): the context
            (see `encode_context`).
        input_ids, attention_mask (`(B, T)`): the response, right-padded; z then comes from q(z | c, x),
            otherwise from the prior p(z | c).
        sample_latent (`bool`): z drawn (default in training) or the mean (default in eval mode).
        """
        context = self.encode_context(context_input_ids, context_attention_mask, context_speakers)
        prior_mu, prior_logvar = self.prior_parameters(context)
        mu = logvar = kl = None
        if input_ids is not None:
            check_input_ids(input_ids, self.config.vocab_size)
            mu, logvar = self.posterior_parameters(context, input_ids, attention_mask)
            kl = gaussian_kl_between(mu, logvar, prior_mu, prior_logvar).sum(-1)
        mean, log_variance = (mu, logvar) if mu is not None else (prior_mu, prior_logvar)
        sample_latent = self.training if sample_latent is None else sample_latent
        latent = mean + torch.randn_like(mean) * (0.5 * log_variance).exp() if sample_latent else mean
        output = BNCVAEModelOutput(
            context=context, prior_mu=prior_mu, prior_logvar=prior_logvar, mu=mu, logvar=logvar, kl=kl, latent=latent
        )
        return self._output(output, return_dict)


class BNCVAEForConditionalGeneration(BNCVAEPreTrainedModel, RecurrentStateGenerationMixin):
    """CVAE / CVAE + BOW / BN-CVAE for response generation.

    `self.bncvae` (`BNCVAEModel`) gives the context vector c, the prior p(z | c) and the recognition
    network q(z | c, x). The GRU decoder starts from Linear([c; z]) and reads the response's word
    embeddings (the base model's); the optional bag-of-words head predicts the response's words from [c; z].
    """

    def __init__(self, config):
        super().__init__(config)
        n, context = config.latent_size, config.context_hidden_size
        self.bncvae = BNCVAEModel(config, defer_init=True)  # initialised below with the head, in one pass
        self.decoder_init = nn.Linear(context + n, config.decoder_hidden_size)
        self.decoder = nn.GRU(config.embedding_size, config.decoder_hidden_size, batch_first=True)
        self.lm_head = nn.Linear(config.decoder_hidden_size, config.vocab_size)
        self.bow_head = None
        if config.use_bow:
            self.bow_head = nn.Sequential(
                nn.Linear(context + n, config.bow_hidden_size),
                nn.Tanh(),
                nn.Linear(config.bow_hidden_size, config.vocab_size),
            )
        self.post_init()
        self.generation_config.update(**self.generation_defaults())
        self.generation_config._from_model_config = False

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' from_pretrained; checkpoints of hf_bnvae <= 0.3, written before the base model
        existed, load through LEGACY_KEY_MAPPING (their base model's weights had no `bncvae.` prefix), with a
        `key_mapping` of the caller's on top. (transformers saves a model loaded that way with the names it
        was loaded from, which load again the same way.)"""
        kwargs["key_mapping"] = {**LEGACY_KEY_MAPPING, **(kwargs.get("key_mapping") or {})}
        return super().from_pretrained(*args, **kwargs)

    def get_input_embeddings(self):
        return self.bncvae.embed_tokens

    def set_input_embeddings(self, value):
        self.bncvae.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    @property
    def kl_lower_bound(self):
        """latent_size * gamma^2 / 2: the training batch's mean KL(q(z|c,x) || N(0, I)) is at least this."""
        return self.config.kl_lower_bound

    # -- the parts --------------------------------------------------------------------------------

    def decoder_initial_state(self, context, latent):
        """The decoder GRU's first state (B, H) from [c; z]."""
        return self.decoder_init(torch.cat([context, latent.to(context.dtype)], dim=-1))

    def decode(self, input_ids, state):
        """Decoder GRU over input_ids (B, T) from state (1, B, H). Returns logits (B, T, V), new state."""
        hidden, state = self.decoder(self.bncvae.embed_tokens(input_ids), state)
        return self.lm_head(hidden), state

    # -- forward ----------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        context_input_ids: torch.LongTensor | None = None,
        context_attention_mask: torch.LongTensor | None = None,
        context_speakers: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        latent: torch.FloatTensor | None = None,
        kl_weight: float = 1.0,
        sample_latent: bool | None = None,
        state: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
    ):
        r"""
        input_ids (`(B, T)`): the response, `<s> w_1 ... w_m </s>`, right-padded (the decoder's input).
        attention_mask (`(B, T)`): 1 for the response's real tokens; defaults to all ones.
        context_input_ids, context_attention_mask (`(B, K, L)`), context_speakers (`(B, K)`): the context
            (see `encode_context`); not needed when continuing from a decoder `state`.
        labels (`(B, T)`): usually input_ids (shifted inside; -100 and padding ignored): gives the losses.
        latent (`(B, n)`): decode from this z. Otherwise z comes from q(z | c, x) when the response is given
            (a draw in training, the mean in eval mode, or as sample_latent says).
        kl_weight (`float`): weight of KL(q || p) in `loss` (annealing).
        state (`(1, B, H)`): decoder state to continue from (generation): only input_ids is decoded.
        """
        check_input_ids(input_ids, self.config.vocab_size)
        if state is not None:
            logits, state = self.decode(input_ids, state)
            return self._output(
                BNCVAEOutput(logits=logits, state=state if use_cache is not False else None), return_dict
            )
        if latent is None:
            base = self.bncvae(
                context_input_ids, context_attention_mask, context_speakers, input_ids, attention_mask, sample_latent
            )
        else:
            check_latent(latent, input_ids.shape[0], self.config.latent_size)
            context = self.bncvae.encode_context(context_input_ids, context_attention_mask, context_speakers)
            prior_mu, prior_logvar = self.bncvae.prior_parameters(context)
            base = BNCVAEModelOutput(context=context, prior_mu=prior_mu, prior_logvar=prior_logvar, latent=latent)
        context, latent, prior_mu, prior_logvar = base.context, base.latent, base.prior_mu, base.prior_logvar
        initial = self.decoder_initial_state(context, latent)
        logits, new_state = self.decode(input_ids, initial.unsqueeze(0).contiguous())

        loss = reconstruction_loss = kl = prior_kl = bow_loss = num_tokens = None
        if labels is not None:
            check_token_labels(labels, input_ids, self.config.vocab_size)
            token_nll, valid = shifted_token_nll(logits, labels, attention_mask)
            targets = labels[:, 1:]
            reconstruction_loss = token_nll.sum(-1)
            num_tokens = valid.sum(-1)
            prior_kl = gaussian_kl_per_dimension(prior_mu, prior_logvar).sum(-1)
            loss = reconstruction_loss
            if base.kl is not None:
                kl = base.kl
                loss = loss + kl_weight * kl
            if self.bow_head is not None:
                bow_logits = self.bow_head(torch.cat([context, latent.to(context.dtype)], dim=-1))
                bow_loss = bag_of_words_loss(bow_logits, targets, valid)
                loss = loss + bow_loss
            if self.config.gamma > 0:
                loss = loss + prior_kl
            loss = loss.mean()

        output = BNCVAEOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            kl=kl,
            prior_kl=prior_kl,
            bow_loss=bow_loss,
            mu=base.mu,
            logvar=base.logvar,
            prior_mu=prior_mu,
            prior_logvar=prior_logvar,
            latent=latent,
            logits=logits,
            num_tokens=num_tokens,
            state=new_state if use_cache is not False else None,
        )
        return self._output(output, return_dict)

    # -- generation (GenerationMixin with the GRU state as cache) -------------------------------------

    @torch.no_grad()
    def generate(
        self, context_input_ids=None, context_attention_mask=None, context_speakers=None, latent=None, **kwargs
    ):
        """Responses to the contexts (B, K, L): z is drawn from the prior network p(z | c) (torch's global RNG:
        seed it to repeat) unless `latent` (B, n) is given, then transformers' `generate` decodes from `<s>`
        (greedy by default; sampling and beams through the usual arguments). Returns (B', T) ids starting
        with `<s>`. Every returned sequence of a context shares its z: for several z per context, repeat the
        context (`sample_responses` does)."""
        check_generation_counts(kwargs)
        context = self.bncvae.encode_context(context_input_ids, context_attention_mask, context_speakers)
        if latent is None:
            mu, logvar = self.bncvae.prior_parameters(context)
            latent = mu + torch.randn(mu.shape).to(mu.device) * (0.5 * logvar).exp()
        else:
            check_latent(latent, context.shape[0], self.config.latent_size)
        start = torch.full((context.shape[0], 1), self.config.bos_token_id, dtype=torch.long, device=self.device)
        kwargs = {"pad_token_id": self.config.pad_token_id, "eos_token_id": self.config.eos_token_id, **kwargs}
        return super().generate(input_ids=start, initial_state=self.decoder_initial_state(context, latent), **kwargs)

    def prepare_inputs_for_generation(self, input_ids, state=None, initial_state=None, use_cache=None, **kwargs):
        if state is None:  # the first step, or every step without the cache: the whole response so far
            state = initial_state.unsqueeze(0).contiguous()
        else:
            input_ids = input_ids[:, -1:]
        return {"input_ids": input_ids, "state": state, "use_cache": use_cache}

    # -- convenience ------------------------------------------------------------------------------

    def context_tensors(self, contexts, tokenizer, speakers=None):
        """Tensors for `generate` from B contexts, each a list of utterance strings (oldest first). speakers:
        B lists of 0/1 (1: the responder), default alternating with the last turn by the other speaker.
        Keeps the last max_context_turns turns and max_utterance_length words of each."""
        contexts = [[context] if isinstance(context, str) else list(context) for context in contexts]
        for i, turns in enumerate(contexts):
            if any(not str(turn).strip() for turn in turns):
                raise ValueError(f"context {i} has a blank utterance: every turn needs at least one word")
        if speakers is None:
            speakers = [[(len(turns) - 1 - k) % 2 for k in range(len(turns))] for turns in contexts]
        max_length = self.config.max_utterance_length + 2
        ids = [
            tokenizer(turns, truncation=True, max_length=max_length)["input_ids"] if turns else [] for turns in contexts
        ]
        tensors = pad_contexts(ids, speakers, self.config.pad_token_id, self.config.max_context_turns)
        return dict(
            zip(
                ("context_input_ids", "context_attention_mask", "context_speakers"),
                (t.to(self.device) for t in tensors),
            )
        )

    @torch.no_grad()
    def sample_responses(
        self, contexts, tokenizer, num_samples=10, speakers=None, max_new_tokens=40, **generate_kwargs
    ):
        """num_samples responses to each context (a list of utterance strings, or a list of such lists), each
        from its own z ~ p(z | c), decoded greedily unless generate kwargs say otherwise. Returns a list of
        num_samples strings per context (a single list for a single context)."""
        single = bool(contexts) and isinstance(contexts[0], str)
        contexts = [contexts] if single else list(contexts)
        if not contexts:
            raise ValueError("sample_responses() needs at least one context")
        check_count("num_samples", num_samples)
        tensors = self.context_tensors(contexts, tokenizer, speakers)
        repeated = {name: t.repeat_interleave(num_samples, 0) for name, t in tensors.items()}
        sequences = self.generate(**repeated, max_new_tokens=max_new_tokens, **generate_kwargs)
        texts = [text.strip() for text in tokenizer.batch_decode(sequences, skip_special_tokens=True)]
        responses = [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(contexts))]
        return responses[0] if single else responses


__all__ = [
    "BNCVAEForConditionalGeneration",
    "BNCVAEModel",
    "BNCVAEModelOutput",
    "BNCVAEOutput",
    "BNCVAEPreTrainedModel",
    "pad_contexts",
]
