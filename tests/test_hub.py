"""Publishing: push_to_hub stops only at the network boundary (conftest's fake_hub); loading from the hub
cache offline, with and without the package; the model card."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoTokenizer

from hf_bnvae.data import BROWN_DIR
from hf_bnvae.hub import build_model_card, push_to_hub
from hf_bnvae.saving import portable_path, recorded_arguments

SCRIPT = textwrap.dedent(
    """
    import json, sys
    repo, revision, out, loader = sys.argv[1:5]
    if loader == "remote":
        sys.modules["hf_bnvae"] = None  # the package cannot be imported in this process
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        if loader == "remote":
            model = AutoModelForCausalLM.from_pretrained(repo, revision=revision, trust_remote_code=True)
            tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision, trust_remote_code=True)
        else:  # the package's verified loader
            from hf_bnvae import load_pretrained
            model, tokenizer = load_pretrained(repo, revision=revision)
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


def load_offline(hub, repo_id, tmp_path, revision="main", loader="remote"):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub.cache), "HF_HOME": str(tmp_path / "home")}
    out = tmp_path / f"loaded-{revision}.json"
    command = [sys.executable, "-c", SCRIPT, repo_id, revision, str(out), loader]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def outputs_of(model, tokenizer):
    batch = tokenizer(["the man said it was good .", "she left ."], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        result = model(**batch, labels=batch["input_ids"])
    return {"mu": result.mu.tolist(), "recon": result.reconstruction_loss.tolist()}


@pytest.fixture
def trained_folder(tmp_path, train_run):
    """trained_folder(name, *extra): a tiny train.py run with a measured IW-NLL; (model, folder)."""

    def make(name, *extra):
        model, _ = train_run(
            "--iw_samples", "5", "--max_iw_eval_samples", "10", "--max_train_samples", "64", *extra, name=name
        )
        return model, tmp_path / name

    return make


def test_train_push_then_load_offline_without_the_package(tmp_path, fake_hub, trained_folder):
    model, folder = trained_folder(
        "run", "--push_to_hub", "--hub_model_id", "org/tiny-bnvae", "--checkpointing_steps", "epoch"
    )
    assert (folder / "checkpoints").is_dir()
    expected = outputs_of(model, AutoTokenizer.from_pretrained(folder))
    snapshot = fake_hub.snapshot("org/tiny-bnvae")
    published = ["model.safetensors", "config.json", "modeling_bnvae.py", "configuration_bnvae.py", "tokenizer.json"]
    published += ["checksums.json", "all_results.json", "training_curves.png", "README.md"]
    for name in published:
        assert (snapshot / name).exists(), name
    assert not (snapshot / "checkpoints").exists()  # the top-level files only
    for loader in ("remote", "package"):
        loaded = load_offline(fake_hub, "org/tiny-bnvae", tmp_path, loader=loader)
        assert loaded["module"].startswith("transformers_modules" if loader == "remote" else "hf_bnvae")
        torch.testing.assert_close(torch.tensor(loaded["mu"]), torch.tensor(expected["mu"]), rtol=0, atol=0)
        torch.testing.assert_close(torch.tensor(loaded["recon"]), torch.tensor(expected["recon"]), rtol=0, atol=0)

    # the card is ours and parses; trained on a local file, it names no dataset and has no model-index
    card = ModelCard.load(snapshot / "README.md")
    assert card.data.library_name == "transformers" and "bnvae" in card.data.tags and card.data.license == "mit"
    assert card.data.datasets is None and card.data.eval_results is None
    metrics = json.loads((folder / "all_results.json").read_text())["validation"]
    assert f"| {metrics['nll']:.2f} | {metrics['ppl']:.1f} | {metrics['kl']:.2f} | {metrics['mi']:.1f} |" in card.text
    assert "trust_remote_code=True" in card.text and "BN makes the training batch size matter" in card.text
    assert "[More Information Needed]" not in card.text  # not transformers' / huggingface_hub's template
    assert "zhu-etal-2020-batch" in card.text and "reference implementation" not in card.text


def test_card_of_a_model_trained_on_a_hub_dataset_has_a_rounded_model_index(tmp_path, trained_folder):
    _, folder = trained_folder("hub-data")
    trained = json.loads((folder / "all_results.json").read_text())
    trained["training_args"]["dataset_name"] = "org/my-corpus"
    (folder / "all_results.json").write_text(json.dumps(trained))
    card = build_model_card(folder, "org/x")
    metrics = trained["validation"]
    assert card.data.datasets == ["org/my-corpus"]
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        "nll": round(metrics["nll"], 2),
        "perplexity": round(metrics["ppl"], 1),
        "kl": round(metrics["kl"], 2),
        "mutual_information": round(metrics["mi"], 1),
        "active_units": metrics["au"],
    }
    assert {(r.dataset_type, r.dataset_split) for r in card.data.eval_results} == {("org/my-corpus", "validation")}


def test_card_names_the_brown_corpus_from_any_recorded_path_to_it(tmp_path, trained_folder):
    _, folder = trained_folder("brown")
    trained = json.loads((folder / "all_results.json").read_text())
    brown = BROWN_DIR / "train.txt"
    # relative paths are relative to where the run started: the repository, training/, or the data folder
    for recorded, on_brown in [
        (str(brown), True), ("training/data/brown/train.txt", True), ("data/brown/train.txt", True),
        ("brown/train.txt", True), ("train.txt", False), ("data/mine/train.txt", False),
        (str(tmp_path / "data" / "brown" / "train.txt"), False),  # another file in a folder named brown
        ("", False), (None, False),  # not recorded
    ]:  # fmt: skip
        trained["training_args"]["train_file"] = recorded
        (folder / "all_results.json").write_text(json.dumps(trained))
        card = build_model_card(folder, "org/x").text
        assert ("Francis and Kucera" in card) == on_brown, recorded
        assert ("Trained on the Brown corpus only" in card) == on_brown, recorded
        assert "None" not in card


def test_revision_is_honoured_and_missing_things_fail_clearly(tmp_path, fake_hub, trained_folder):
    first, folder_a = trained_folder("a", "--seed", "1")
    second, folder_b = trained_folder("b", "--seed", "2")
    push_to_hub(folder_a, "org/two")
    push_to_hub(folder_b, "org/two", revision="v2")
    tokenizer = AutoTokenizer.from_pretrained(folder_a)
    main, v2 = load_offline(fake_hub, "org/two", tmp_path), load_offline(fake_hub, "org/two", tmp_path, revision="v2")
    assert torch.allclose(torch.tensor(main["mu"]), torch.tensor(outputs_of(first, tokenizer)["mu"]))
    assert torch.allclose(torch.tensor(v2["mu"]), torch.tensor(outputs_of(second, tokenizer)["mu"]))
    assert not torch.allclose(torch.tensor(main["mu"]), torch.tensor(v2["mu"]))

    missing = load_offline(fake_hub, "org/does-not-exist", tmp_path)  # transformers' own message
    assert missing["error"].startswith("OSError") and "couldn't find them in the cached files" in missing["error"]
    missing = load_offline(fake_hub, "org/does-not-exist", tmp_path, loader="package")
    assert missing["error"].startswith("OSError: cannot load org/does-not-exist (revision main)")
    missing_revision = load_offline(fake_hub, "org/two", tmp_path, revision="v9", loader="package")
    assert missing_revision["error"].startswith("OSError") and "v9" in missing_revision["error"]
    os.remove(fake_hub.snapshot("org/two") / "model.safetensors")
    for loader in ("remote", "package"):
        no_weights = load_offline(fake_hub, "org/two", tmp_path, loader=loader)
        assert no_weights["error"].startswith("OSError") and "model.safetensors" in no_weights["error"], no_weights


def test_the_package_loader_refuses_corrupted_weights_from_the_hub(tmp_path, fake_hub, trained_folder):
    _, folder = trained_folder("c")
    push_to_hub(folder, "org/corrupt")
    blob = (fake_hub.snapshot("org/corrupt") / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the weights: still parses as safetensors
    blob.write_bytes(bytes(data))
    flipped = load_offline(fake_hub, "org/corrupt", tmp_path, loader="package")
    assert "corrupted or truncated" in flipped["error"] and "sha256" in flipped["error"]
    # plain from_pretrained does not check sums (docs/hub.md: what is and is not verified)
    assert "error" not in load_offline(fake_hub, "org/corrupt", tmp_path, loader="remote")
    blob.write_bytes(bytes(data[: len(data) // 2]))
    truncated = load_offline(fake_hub, "org/corrupt", tmp_path, loader="package")
    assert "corrupted or truncated" in truncated["error"]


def test_card_needs_measured_metrics(tmp_path, trained_folder):
    _, folder = trained_folder("d", "--iw_samples", "0")
    with pytest.raises(ValueError, match="has no measured NLL"):
        build_model_card(folder, "org/x")
    with pytest.raises(FileNotFoundError, match="not a complete model folder"):
        push_to_hub(tmp_path, "org/x")


def test_cards_and_records_show_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path(str(tmp_path / "data" / "train.txt")) == os.path.join("data", "train.txt")
    assert portable_path("/elsewhere/train.txt") == "/elsewhere/train.txt"
    assert portable_path(32) == 32 and portable_path("relative/path") == "relative/path"
    args = argparse.Namespace(
        train_file=str(tmp_path / "data" / "train.txt"), output_dir="/elsewhere/out", seed=42, gamma=None,
        files=[str(tmp_path / "a.txt"), "b.txt"], recipe=object(), suffix="_x", checked=True,
    )  # fmt: skip
    # the recipe object is not JSON: left out
    assert recorded_arguments(args, exclude=("suffix",)) == {
        "train_file": os.path.join("data", "train.txt"),
        "output_dir": "/elsewhere/out",
        "seed": 42,
        "gamma": None,
        "files": ["a.txt", "b.txt"],
        "checked": True,
    }


def test_every_script_writes_one_results_file_and_the_card_follows_its_task(tmp_path, trained_folder):
    """all_results.json names its task; a folder of an earlier version (train.py's metrics.json and
    evaluate_model.py's eval_results.json) reads as one, so its card still builds."""
    from hf_bnvae.saving import read_results, write_results

    _, folder = trained_folder("lm")
    results = read_results(folder)
    assert results["task"] == "language-modeling" and not (folder / "metrics.json").exists()
    legacy = tmp_path / "legacy"
    shutil.copytree(folder, legacy)
    trained = json.loads((legacy / "all_results.json").read_text())
    (legacy / "all_results.json").unlink()
    (legacy / "metrics.json").write_text(json.dumps({k: v for k, v in trained.items() if k != "task"}))
    measured = {**trained["validation"], "nll": 12.34, "split": "held-out"}
    (legacy / "eval_results.json").write_text(json.dumps(measured))
    assert read_results(legacy) == {**trained, "evaluation": measured}
    card = build_model_card(legacy, "org/legacy")
    assert "| 12.34 |" in card.text  # evaluate_model.py's figures come first
    (legacy / "all_results.json").write_text("{not json")
    with pytest.raises(ValueError, match="all_results.json: not a readable JSON results file"):
        read_results(legacy)
    with pytest.raises(ValueError, match="must name their task"):
        write_results(tmp_path, {"nll": 1.0})
    assert read_results(tmp_path / "nothing") is None
