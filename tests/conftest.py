"""Fixtures shared by every test file: a tiny tokenizer, config, model and batch, a few training steps,
the training script with tiny sizes, and a stand-in for the hub at the network boundary."""

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from hf_bnvae import BNVAEConfig, BNVAEForLanguageModeling, build_word_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "tests" / "fixtures" / "sentences.txt"  # 400 Brown sentences
CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the dog sat on a log",
    "it was a quiet night in the city",
    "she read the letter twice",
    "the old man walked to the river",
    "we ate bread and cheese",
    "the children played in the snow",
]
TINY_SIZES = dict(embedding_size=16, encoder_hidden_size=24, decoder_hidden_size=24, latent_size=8)


@pytest.fixture
def corpus():
    return list(CORPUS)


@pytest.fixture
def root():
    return ROOT


@pytest.fixture
def sentences_file():
    return SENTENCES


@pytest.fixture
def tokenizer():
    return build_word_tokenizer(CORPUS)


@pytest.fixture
def tiny_config(tokenizer):
    """tiny_config(**overrides): a BNVAEConfig with tiny sizes over the fixture tokenizer's vocabulary."""

    def make(**overrides):
        return BNVAEConfig(vocab_size=len(tokenizer), **{**TINY_SIZES, **overrides})

    return make


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    return BNVAEForLanguageModeling(tiny_config())


@pytest.fixture
def batch(tokenizer):
    return tokenizer(CORPUS, padding=True, return_tensors="pt")


@pytest.fixture
def train_steps():
    """train_steps(model, batch, steps=5): a few SGD steps on the model's own loss; returns it in eval mode."""

    def run(model, batch, steps=5):
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        for _ in range(steps):
            optimizer.zero_grad()
            model(**batch, labels=batch["input_ids"]).loss.backward()
            optimizer.step()
        return model.eval()

    return run


@pytest.fixture
def trained(model, batch, train_steps):
    """The fixture model after 5 training steps, in eval mode."""
    return train_steps(model, batch, steps=5)


@pytest.fixture
def saved(trained, tokenizer, tmp_path):
    """A folder holding the trained tiny model and its tokenizer (save_pretrained)."""
    folder = tmp_path / "ckpt"
    trained.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def labelled_files(tmp_path, sentences_file):
    """train / valid / test `label<TAB>text` files (60 / 15 / 15 fixture sentences, labels good and bad)."""
    texts = sentences_file.read_text().splitlines()[:90]
    files = {}
    for name, rows in (("train", texts[:60]), ("valid", texts[60:75]), ("test", texts[75:])):
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("".join(f"{'good' if i % 3 else 'bad'}\t{t}\n" for i, t in enumerate(rows)))
    return files


# -- the training script ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run builds its own Accelerator (precision, accumulation): reset the singletons."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def tiny_train_args(output_dir, *extra):
    """train.py arguments for a tiny model on the 400 fixture sentences (1 epoch, no IW-NLL); a vocabulary of
    300 words unless `extra` loads a tokenizer."""
    loads_tokenizer = "--init_encoder_from" in extra or "--tokenizer_name" in extra
    return [
        *("--train_file", str(SENTENCES), "--validation_file", str(SENTENCES), "--max_eval_samples", "40"),
        *("--embedding_size", "16", "--encoder_hidden_size", "24", "--decoder_hidden_size", "24", "--latent_size", "8"),
        *(() if loads_tokenizer else ("--vocab_size", "300")),
        *("--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16"),
        *("--num_train_epochs", "1", "--iw_samples", "0", "--output_dir", str(output_dir)),
        *extra,
    ]


@pytest.fixture
def tiny_args():
    return tiny_train_args


@pytest.fixture
def train_run(tmp_path):
    """train_run(*extra, name="run"): train.main on tiny arguments into tmp_path/name; (model, results)."""
    import train

    def run(*extra, name="run"):
        return train.main(tiny_train_args(tmp_path / name, *extra))

    return run


# -- the hub at the network boundary --------------------------------------------------------------


class FakeHub:
    """HfApi.create_repo / create_commit write into a hub-cache layout ($HF_HUB_CACHE/models--org--name/
    {blobs,snapshots/<commit>,refs/<revision>}), which huggingface_hub then reads offline exactly as it
    reads a real download. upload_folder takes its single-commit path (the one without hf_xet), and the
    hub's YAML check of README.md is replaced by a local parse of the card's metadata."""

    def __init__(self, cache_dir):
        self.cache = Path(cache_dir)
        self.created = []

    def create_repo(self, api, repo_id, *args, exist_ok=False, **kwargs):
        self.created.append(repo_id)
        return SimpleNamespace(repo_id=repo_id)

    def create_commit(self, api, repo_id, operations, *args, commit_message="", revision=None, **kwargs):
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        ref = repo / "refs" / (revision or "main")
        files = {}
        if ref.exists():  # a commit adds to what the branch already holds
            previous = repo / "snapshots" / ref.read_text()
            files = {p.name: p.resolve().read_bytes() for p in previous.iterdir()}
        for op in operations:
            with op.as_file() as handle:
                files[op.path_in_repo] = handle.read()
        commit = hashlib.sha1(b"".join(name.encode() + data for name, data in sorted(files.items()))).hexdigest()
        snapshot = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = snapshot / name
            if not link.exists():
                os.symlink(os.path.relpath(blob, snapshot), link)
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
        return SimpleNamespace(oid=commit, commit_url=f"https://huggingface.co/{repo_id}/commit/{commit}")

    def snapshot(self, repo_id, revision="main"):
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        return repo / "snapshots" / (repo / "refs" / revision).read_text()


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    from huggingface_hub import HfApi, ModelCard, hf_api

    hub = FakeHub(tmp_path / "hub-cache")
    monkeypatch.setattr(HfApi, "create_repo", lambda api, *a, **k: hub.create_repo(api, *a, **k))
    monkeypatch.setattr(HfApi, "create_commit", lambda api, *a, **k: hub.create_commit(api, *a, **k))
    monkeypatch.setattr(hf_api, "is_xet_available", lambda: False)
    monkeypatch.setattr(HfApi, "_validate_yaml", lambda api, content, **kwargs: ModelCard(content).data)
    return hub


@pytest.fixture
def refused(capsys):
    """refused(call, message): call() must stop with argparse's error (exit code 2) naming `message`."""

    def check(call, message):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            call()
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err

    return check


# Tests that train a model end to end or start processes are marked `slow` here, in one place, instead of
# one decorator each: any test using a fixture that runs a real training, whose code starts a process, or
# that runs a script's main().
TRAINING_FIXTURES = {"train_run", "checkpointed"}


def pytest_collection_modifyitems(config, items):
    import inspect

    for item in items:
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function is not None else ""
        runs_a_script = "subprocess." in source or ".main(" in source
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())) or runs_a_script:
            item.add_marker(pytest.mark.slow)
