"""Publishing: push_to_hub stops only at the network boundary; loading from the hub cache offline."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard

from hf_bnvae.hub import build_model_card, push_to_hub
from tests.hub_cache import install_fake_hub, snapshot_dir
from tests.test_training import fresh_accelerate_state  # noqa: F401  (autouse fixture)
from tests.training_helpers import FIXTURE, tiny_args, train_script

SCRIPT = textwrap.dedent(
    """
    import json, sys
    repo, revision, out, loader = sys.argv[1:5]
    if loader == "auto":
        sys.modules["hf_bnvae"] = None  # the package cannot be imported in this process
    import torch
    from transformers import AutoModel, AutoTokenizer
    if loader == "package":
        from hf_bnvae import BNVAEForLanguageModeling as AutoModel
    try:
        model = AutoModel.from_pretrained(repo, revision=revision, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision, trust_remote_code=True)
    except Exception as error:
        json.dump({"error": f"{type(error).__name__}: {error}"}, open(out, "w"))
        raise SystemExit(0)
    batch = tokenizer(["the man said it was good .", "she left ."], padding=True, return_tensors="pt")
    with torch.no_grad():
        result = model(**batch, labels=batch["input_ids"])
    json.dump({"mu": result.mu.tolist(), "recon": result.reconstruction_loss.tolist(),
               "module": type(model).__module__}, open(out, "w"))
    """
)


def load_offline(cache_dir, repo_id, tmp_path, revision="main", loader="auto"):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache_dir), "HF_HOME": str(tmp_path / "home")}
    out = tmp_path / f"loaded-{revision}.json"
    result = subprocess.run([sys.executable, "-c", SCRIPT, repo_id, revision, str(out), loader], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def outputs_of(model, tokenizer):
    batch = tokenizer(["the man said it was good .", "she left ."], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        result = model(**batch, labels=batch["input_ids"])
    return {"mu": result.mu.tolist(), "recon": result.reconstruction_loss.tolist()}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub-cache"
    install_fake_hub(monkeypatch, cache)
    return cache


def trained_folder(tmp_path, name, *extra):
    model, results = train_script.main(tiny_args(tmp_path / name, "--iw_samples", "5", "--max_iw_eval_samples", "10",
                                                 "--max_train_samples", "64", *extra))
    return model, tmp_path / name


def test_train_push_then_load_offline_without_the_package(tmp_path, hub):
    model, folder = trained_folder(tmp_path, "run", "--push_to_hub", "--hub_model_id", "org/tiny-bnvae")
    from transformers import AutoTokenizer

    expected = outputs_of(model, AutoTokenizer.from_pretrained(folder))
    snapshot = snapshot_dir(hub, "org/tiny-bnvae")
    for name in ("model.safetensors", "config.json", "modeling_bnvae.py", "configuration_bnvae.py", "tokenizer.json",
                 "checksums.json", "metrics.json", "training_curves.png", "README.md"):
        assert (snapshot / name).exists(), name
    loaded = load_offline(hub, "org/tiny-bnvae", tmp_path)
    assert loaded["module"].startswith("transformers_modules")
    torch.testing.assert_close(torch.tensor(loaded["mu"]), torch.tensor(expected["mu"]), rtol=0, atol=0)
    torch.testing.assert_close(torch.tensor(loaded["recon"]), torch.tensor(expected["recon"]), rtol=0, atol=0)

    # the card is ours, parses, and its model-index holds exactly the measured metrics
    card = ModelCard.load(snapshot / "README.md")
    metrics = json.loads((folder / "metrics.json").read_text())["validation"]
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values == {"nll": metrics["nll"], "perplexity": metrics["ppl"], "kl": metrics["kl"],
                      "mutual_information": metrics["mi"], "active_units": metrics["au"]}
    assert {r.dataset_split for r in card.data.eval_results} == {metrics["split"]}
    assert card.data.library_name == "transformers" and "bnvae" in card.data.tags
    assert "trust_remote_code=True" in card.text and "BN makes the training batch size matter" in card.text
    assert "[More Information Needed]" not in card.text  # not transformers' / huggingface_hub's template
    assert "zhu-etal-2020-batch" in card.text


def test_revision_is_honoured_and_missing_things_fail_clearly(tmp_path, hub):
    first, folder_a = trained_folder(tmp_path, "a", "--seed", "1")
    second, folder_b = trained_folder(tmp_path, "b", "--seed", "2")
    push_to_hub(folder_a, "org/two")
    push_to_hub(folder_b, "org/two", revision="v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder_a)
    main, v2 = load_offline(hub, "org/two", tmp_path), load_offline(hub, "org/two", tmp_path, revision="v2")
    assert torch.allclose(torch.tensor(main["mu"]), torch.tensor(outputs_of(first, tokenizer)["mu"]))
    assert torch.allclose(torch.tensor(v2["mu"]), torch.tensor(outputs_of(second, tokenizer)["mu"]))
    assert not torch.allclose(torch.tensor(main["mu"]), torch.tensor(v2["mu"]))

    missing = load_offline(hub, "org/does-not-exist", tmp_path)  # transformers' own message through AutoModel
    assert missing["error"].startswith("OSError") and "couldn't find them in the cached files" in missing["error"]
    missing = load_offline(hub, "org/does-not-exist", tmp_path, loader="package")
    assert missing["error"].startswith("OSError: cannot load org/does-not-exist (revision main)")
    missing_revision = load_offline(hub, "org/two", tmp_path, revision="v9", loader="package")
    assert missing_revision["error"].startswith("OSError") and "v9" in missing_revision["error"]
    os.remove(snapshot_dir(hub, "org/two") / "model.safetensors")
    for loader in ("auto", "package"):
        no_weights = load_offline(hub, "org/two", tmp_path, loader=loader)
        assert no_weights["error"].startswith("OSError") and "model.safetensors" in no_weights["error"], no_weights


def test_corrupted_or_truncated_weights_never_load(tmp_path, hub):
    _, folder = trained_folder(tmp_path, "c")
    push_to_hub(folder, "org/corrupt")
    blob = (snapshot_dir(hub, "org/corrupt") / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the weights: still parses as safetensors
    blob.write_bytes(bytes(data))
    flipped = load_offline(hub, "org/corrupt", tmp_path)
    assert "corrupted or truncated" in flipped["error"] and "sha256" in flipped["error"]
    blob.write_bytes(bytes(data[: len(data) // 2]))
    truncated = load_offline(hub, "org/corrupt", tmp_path)
    assert "corrupted or truncated" in truncated["error"]
    # without a checksums file, a truncated file still fails with a clear message
    (folder / "checksums.json").unlink()
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    from hf_bnvae import BNVAEForLanguageModeling

    with pytest.raises(OSError, match="corrupted or truncated"):
        BNVAEForLanguageModeling.from_pretrained(folder)


def test_card_needs_measured_metrics(tmp_path):
    _, folder = trained_folder(tmp_path, "d", "--iw_samples", "0")
    with pytest.raises(ValueError, match="has no measured NLL"):
        build_model_card(folder, "org/x")
    with pytest.raises(FileNotFoundError, match="not a complete model folder"):
        push_to_hub(tmp_path, "org/x")
    assert FIXTURE.exists()


def test_card_shows_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    from hf_bnvae.hub import portable_path as _portable

    monkeypatch.chdir(tmp_path)
    assert _portable(str(tmp_path / "data" / "train.txt")) == os.path.join("data", "train.txt")
    assert _portable("/elsewhere/train.txt") == "/elsewhere/train.txt"
    assert _portable(32) == 32 and _portable("relative/path") == "relative/path"
