"""The training-curves figure: reconstruction, KL against its guaranteed bound, active units, lr."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(history, kl_lower_bound, path, title=""):
    """history: list of per-epoch dicts (epoch, train_reconstruction, train_kl, valid_reconstruction,
    valid_kl, valid_au, valid_mi, lr). Writes a 2x2 PNG to path."""
    epochs = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    ax = axes[0, 0]
    ax.plot(epochs, [h["train_reconstruction"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["valid_reconstruction"] for h in history], "s-", label="valid")
    ax.set(title="reconstruction (nats / sentence)", xlabel="epoch")
    ax.legend()
    ax = axes[0, 1]
    ax.plot(epochs, [h["train_kl"] for h in history], "o-", label="train KL")
    ax.plot(epochs, [h["valid_kl"] for h in history], "s-", label="valid KL")
    ax.plot(epochs, [h["valid_mi"] for h in history], "^-", label="valid MI")
    if kl_lower_bound > 0:
        ax.axhline(kl_lower_bound, color="k", linestyle="--", label=f"bound n*gamma^2/2 = {kl_lower_bound:.2f}")
    ax.set(title="KL and MI (nats / sentence)", xlabel="epoch")
    ax.legend()
    ax = axes[1, 0]
    ax.plot(epochs, [h["valid_au"] for h in history], "o-")
    ax.set(title="active units (valid)", xlabel="epoch")
    ax = axes[1, 1]
    ax.plot(epochs, [h["lr"] for h in history], "o-")
    ax.set(title="learning rate", xlabel="epoch", yscale="log")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
