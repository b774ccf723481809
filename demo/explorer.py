"""What each tab of the latent-space explorer (demo/app.py) computes, without the browser.

`Explorer(path)` loads any checkpoint of hf_bnvae (a folder or a hub id) through the Auto classes with
`trust_remote_code=True`, so it runs with or without the hf_bnvae package (a Space needs only the
requirements in demo/requirements.txt). Which tabs apply depends on the checkpoint: a language model
(encode / reconstruct, prior samples, interpolation, latent map, diagnostics), a classifier (classify,
latent map, diagnostics) or a BN-CVAE (responses to a conversation). Bad input raises `InputError`
with a message meant for the page.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

HERE = Path(__file__).resolve().parent
DEMO_MODEL = "outputs/bnvae-demo"  # `train.py --preset demo`: reconstructions keep their inputs' form
MAIN_JOB_MODEL = "outputs/bnvae-brown"  # the README's main job
DEMO_COMMAND = "accelerate launch training/train.py --preset demo"
DEMO_TIME = "36 minutes on 2 CPU cores"
DEMO_KL_BOUND = 36.0  # its n gamma^2 / 2 (32 * 1.5^2 / 2); the explorer runs without hf_bnvae, so stated here
# Brown's test sentences with their genres: beside the app in a Space, else in the repository's data
DEFAULT_MAP_FILE = next(
    (
        p
        for p in (HERE / "test_genres.txt", HERE.parent / "training" / "data" / "brown" / "test_genres.txt")
        if p.is_file()
    ),
    HERE / "test_genres.txt",
)
MAX_WORDS = 100  # longer input is refused (a Brown sentence has ~20 words; 99.9% have fewer than 100)
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al.: Var_x(E_q[z|x]) >= 0.01


class InputError(ValueError):
    """Input the page should explain to its user (empty text, unknown words, too long, no model)."""


def default_model():
    """The demo model when it has been trained, else the main job's when that exists, else the demo model's
    folder (whose page then says how to make it)."""
    for path in (DEMO_MODEL, MAIN_JOB_MODEL):
        if (Path(path) / "config.json").is_file():
            return path
    return DEMO_MODEL


def missing_model_message(path):
    return (
        f"No model found at `{path}`. Train the explorer's model with `{DEMO_COMMAND}` ({DEMO_TIME}; it writes "
        f"{DEMO_MODEL}), or pass another checkpoint: `python demo/app.py --model_name_or_path PATH_OR_HUB_ID` "
        "(or set BNVAE_MODEL)."
    )


def demo_model_hint(explorer):
    """A line for the page when it shows a language model with a smaller KL bound than the demo model's
    (None otherwise)."""
    if explorer.kind != "language_model":
        return None
    bound = explorer.model.config.kl_lower_bound
    if bound >= DEMO_KL_BOUND or Path(explorer.name).resolve() == Path(DEMO_MODEL).resolve():
        return None
    return (
        f"This model guarantees {bound:.1f} nats of KL per sentence (n gamma^2 / 2); with a code that small, "
        f"reconstructions are generic sentences of the input's register. For a model whose reconstructions and "
        f"interpolations keep their inputs' length and form ({DEMO_KL_BOUND:.0f} nats), train `{DEMO_COMMAND}` "
        f"({DEMO_TIME}); the explorer opens it by default once it exists."
    )


def model_kind(model_type, architectures):
    """ "language_model", "classifier" or "dialogue" from a config's model_type and architectures."""
    if model_type == "bncvae":
        return "dialogue"
    if model_type != "bnvae":
        raise InputError(f"this explorer shows hf_bnvae checkpoints (bnvae, bncvae), not {model_type!r}")
    return "classifier" if "BNVAEForSequenceClassification" in (architectures or []) else "language_model"


class Explorer:
    """A loaded checkpoint and the held-out sentences of its latent map.

    map_file: `label<TAB>sentence` or plain sentence lines (default: Brown's test split with genres);
    the first map_size lines are encoded once, at start-up.
    """

    def __init__(self, model_name_or_path, map_file=DEFAULT_MAP_FILE, map_size=300):
        path = str(model_name_or_path)
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        except OSError as error:
            raise InputError(missing_model_message(path)) from error
        self.kind = model_kind(config.model_type, config.architectures)
        auto = {
            "language_model": AutoModelForCausalLM,
            "classifier": AutoModelForSequenceClassification,
            "dialogue": AutoModelForSeq2SeqLM,
        }[self.kind]
        self.model = auto.from_pretrained(path, trust_remote_code=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
        self.name = path
        self.map_labels, self.map_texts, self.map_means, self.map_logvars = [], [], None, None
        if self.kind != "dialogue" and map_file is not None and Path(map_file).is_file():
            self._encode_map(Path(map_file), map_size)

    # -- input -------------------------------------------------------------------------------------

    def check_text(self, text, what="sentence"):
        """The text's words (lower-cased) or InputError: empty, longer than MAX_WORDS, only unknown words."""
        words = str(text or "").lower().split()
        if not words:
            raise InputError(f"Type a {what} first: the text box is empty.")
        if len(words) > MAX_WORDS:
            raise InputError(f"That {what} has {len(words)} words; the explorer takes at most {MAX_WORDS}.")
        vocab = self.tokenizer.get_vocab()
        if all(w not in vocab for w in words):
            raise InputError(
                f"None of the words of that {what} is in the model's vocabulary of {len(vocab)} words "
                "(lower-cased, tokenised text: punctuation as separate words)."
            )
        return words

    def _posterior(self, texts):
        """Posterior means and log-variances (N, n) of sentences, BN with its running statistics."""
        batch = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        with torch.no_grad():
            encoder = self.model.bnvae
            out = encoder(batch["input_ids"], batch["attention_mask"], sample_latent=False)
        return out.mu, out.logvar

    def _encode_map(self, path, size):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            label, _, text = line.rpartition("\t")
            self.map_labels.append(label or "sentence")
            self.map_texts.append(text.strip())
            if len(self.map_texts) == size:
                break
        means, logvars = zip(*(self._posterior(self.map_texts[i : i + 64]) for i in range(0, len(self.map_texts), 64)))
        self.map_means, self.map_logvars = torch.cat(means), torch.cat(logvars)

    def _need(self, *kinds):
        if self.kind not in kinds:
            raise InputError(
                f"This checkpoint is a {self.kind.replace('_', ' ')}: this tab needs a {' or '.join(kinds)}."
            )

    # -- language model ----------------------------------------------------------------------------

    def reconstruct(self, text, seed=0):
        """(posterior mean as a list, {"greedy", "sampled", "beam"} reconstructions) of one sentence."""
        self._need("language_model")
        words = self.check_text(text)
        latent = self.model.encode([" ".join(words)], self.tokenizer)
        torch.manual_seed(seed)
        decoded = {
            "greedy": self.model.decode(latent, self.tokenizer)[0],
            "sampled": self.model.decode(latent, self.tokenizer, do_sample=True, top_p=0.9)[0],
            "beam": self.model.decode(latent, self.tokenizer, num_beams=5)[0],
        }
        return [round(v, 3) for v in latent[0].tolist()], decoded

    def sample(self, num_sentences=5, temperature=1.0, top_p=0.9, seed=0):
        """num_sentences sentences decoded (sampling) from z ~ N(0, I)."""
        self._need("language_model")
        num_sentences = int(num_sentences)
        if not 1 <= num_sentences <= 50:
            raise InputError("Choose between 1 and 50 sentences.")
        if not temperature > 0 or not 0 < top_p <= 1:
            raise InputError("Temperature must be > 0 and top-p in (0, 1].")
        generator = torch.Generator().manual_seed(int(seed))
        torch.manual_seed(int(seed))
        return self.model.sample_prior(
            num_sentences, self.tokenizer, generator=generator, do_sample=True, temperature=temperature, top_p=top_p
        )

    def interpolate(self, text_a, text_b, steps=5):
        """Greedy decodings of `steps` points on the line between the posterior means of two sentences."""
        self._need("language_model")
        a, b = self.check_text(text_a, "first sentence"), self.check_text(text_b, "second sentence")
        steps = int(steps)
        if not 2 <= steps <= 20:
            raise InputError("Choose between 2 and 20 steps.")
        return self.model.interpolate(" ".join(a), " ".join(b), self.tokenizer, steps=steps)

    # -- latent space ------------------------------------------------------------------------------

    def latent_map(self, text=None):
        """The map sentences' posterior means projected on their first two principal components, as a
        DataFrame (x, y, label, sentence), with the user's sentence (label "your sentence") when given."""
        self._need("language_model", "classifier")
        if self.map_means is None:
            raise InputError("No held-out sentences to map (the map file is missing).")
        center = self.map_means.mean(0)
        _, _, v = torch.linalg.svd(self.map_means - center, full_matrices=False)
        axes = v[:2].T  # (n, 2)
        points = ((self.map_means - center) @ axes).numpy()
        frame = pd.DataFrame(
            {"x": points[:, 0], "y": points[:, 1], "label": self.map_labels, "sentence": self.map_texts}
        )
        if text and str(text).strip():
            words = self.check_text(text)
            mu, _ = self._posterior([" ".join(words)])
            x, y = ((mu[0] - center) @ axes).tolist()
            frame.loc[len(frame)] = {"x": x, "y": y, "label": "your sentence", "sentence": " ".join(words)}
        return frame

    def latent_map_figure(self, text=None):
        """latent_map as a matplotlib `Figure` (outside pyplot): one colour per label (tab20, so up to 20
        labels never share one), the user's sentence as a large black star with its words beside it, and
        the legend below the axes, where it hides no point and fits the figure's width."""
        from matplotlib import colormaps
        from matplotlib.figure import Figure

        frame = self.latent_map(text)
        figure = Figure(figsize=(12, 6))  # fits a 1280x900 page below the controls
        ax = figure.subplots()
        labels = [label for label in dict.fromkeys(frame["label"]) if label != "your sentence"]
        palette = colormaps["tab20"] if len(labels) > 10 else colormaps["tab10"]
        for i, label in enumerate(labels):
            points = frame[frame["label"] == label]
            ax.scatter(points["x"], points["y"], s=18, alpha=0.75, color=palette(i % palette.N), label=label)
        yours = frame[frame["label"] == "your sentence"]
        if len(yours):
            x, y, words = yours["x"].iloc[0], yours["y"].iloc[0], yours["sentence"].iloc[0]
            ax.scatter([x], [y], s=320, marker="*", color="black", edgecolors="white", zorder=5, label="your sentence")
            ax.annotate(words if len(words) <= 40 else words[:37] + "...", (x, y), xytext=(8, 8),
                        textcoords="offset points", fontsize=10, weight="bold")  # fmt: skip
        ax.set(xlabel="first principal component", ylabel="second principal component")
        ax.set_title(f"Posterior means of {len(frame) - len(yours)} held-out sentences")
        columns = min(5, max(1, len(labels) + len(yours)))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=columns, fontsize="small", frameon=False)
        figure.tight_layout()
        return figure

    def diagnostics(self):
        """Per latent dimension: the KL from N(0, 1) averaged over the map sentences (nats), the variance of
        the posterior mean over them, BN's scale gamma_i (learned per dimension, or the fixed gamma) and
        its bound gamma_i^2 / 2; plus the bound per dimension of the config (the fixed gamma's, or the
        learned scales' floor gamma_min's) and the active units."""
        self._need("language_model", "classifier")
        if self.map_means is None:
            raise InputError("No held-out sentences to measure on (the map file is missing).")
        mu, logvar = self.map_means, self.map_logvars
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).mean(0)
        variance = mu.var(0, unbiased=True)
        head = getattr(getattr(self.model, "bnvae", None), "latent_head", None)
        has_bn = head is not None and head.bn is not None
        gammas = head.scale().detach().float() if has_bn else torch.zeros(mu.shape[1])
        frame = pd.DataFrame(
            {
                "dimension": np.arange(mu.shape[1]),
                "kl": kl.numpy(),
                "mean_variance": variance.numpy(),
                "gamma": gammas.numpy(),
                "bound": (gammas.pow(2) / 2).numpy(),
            }
        )
        config = self.model.config
        return {
            "frame": frame,
            "learned_gamma": has_bn and head.gamma_offset is not None,
            "bound_per_dimension": config.kl_lower_bound / config.latent_size if config.use_latent else 0.0,
            "active_units": int((variance >= ACTIVE_UNIT_THRESHOLD).sum()),
            "kl_total": float(kl.sum()),
            "num_sentences": mu.shape[0],
        }

    def diagnostics_figure(self):
        """The diagnostics as a matplotlib figure: per-dimension KL bars with the BN bound as a line, and
        the posterior-mean variance bars with the active-unit threshold. A plain `Figure`, outside pyplot:
        the caller's backend is untouched and nothing is left open when the figure is dropped."""
        from matplotlib.figure import Figure

        d = self.diagnostics()
        frame = d["frame"]
        figure = Figure(figsize=(10, 5))
        top, bottom = figure.subplots(2, 1, sharex=True)
        top.bar(frame["dimension"], frame["kl"], color="tab:blue")
        if d["learned_gamma"]:  # each dimension's own bound, and the floor every one keeps
            top.plot(frame["dimension"], frame["bound"], "_", color="tab:red", markersize=14, mew=2,
                     label="bound gamma_i^2 / 2 (learned gamma_i)")  # fmt: skip
            top.axhline(d["bound_per_dimension"], color="tab:red", linestyle=":", label="floor gamma_min^2 / 2")
        elif d["bound_per_dimension"] > 0:
            top.axhline(d["bound_per_dimension"], color="tab:red", linestyle="--", label="BN bound gamma^2 / 2")
        if top.get_legend_handles_labels()[0]:
            top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the bars
        top.set_ylabel("KL (nats)")
        top.set_title(f"KL {d['kl_total']:.2f} nats per sentence over {d['num_sentences']} sentences")
        bottom.bar(frame["dimension"], frame["mean_variance"], color="tab:green")
        bottom.axhline(ACTIVE_UNIT_THRESHOLD, color="black", linestyle=":", label="active-unit threshold 0.01")
        bottom.set_yscale("log")
        bottom.set_ylabel("Var of E[z|x]")
        bottom.set_xlabel(f"latent dimension ({d['active_units']} of {len(frame)} active)")
        bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        figure.tight_layout()
        return figure

    # -- other heads -------------------------------------------------------------------------------

    def classify(self, text):
        """{label: probability} of one sentence."""
        self._need("classifier")
        words = self.check_text(text)
        batch = self.tokenizer([" ".join(words)], return_tensors="pt")
        with torch.no_grad():
            probabilities = self.model(**batch).logits.softmax(-1)[0]
        return {self.model.config.id2label[i]: float(p) for i, p in enumerate(probabilities)}

    def respond(self, conversation, num_samples=5, seed=0):
        """num_samples responses to a conversation typed one turn per line (the last line is the other speaker's)."""
        self._need("dialogue")
        turns = [line.strip() for line in str(conversation or "").splitlines() if line.strip()]
        if not turns:
            raise InputError("Type a conversation first: one turn per line, the last one is what to answer.")
        turns = [" ".join(self.check_text(turn, "turn")) for turn in turns]
        num_samples = int(num_samples)
        if not 1 <= num_samples <= 20:
            raise InputError("Choose between 1 and 20 responses.")
        torch.manual_seed(int(seed))
        return self.model.sample_responses(turns, self.tokenizer, num_samples=num_samples)
