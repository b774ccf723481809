"""save_pretrained / from_pretrained, the Auto classes, moving the encoder between heads, remote code
without the package, and the verified loader (checksums, atomic saves)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from hf_bnvae import (
    BNCVAEConfig,
    BNCVAEForConditionalGeneration,
    BNVAEConfig,
    BNVAEForLanguageModeling,
    BNVAEForSequenceClassification,
    BNVAEModel,
    load_pretrained,
    save_pretrained_atomically,
)


def assert_default_modes(folder):
    """Every file readable as open() would make it under the umask (safetensors alone writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in Path(folder).rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {oct(0o666 & ~umask)}, modes


def eval_outputs(model, batch):
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    return {"mu": out.mu, "logvar": out.logvar, "recon": out.reconstruction_loss, "logits": out.logits}


def test_save_and_load_give_identical_outputs(trained, batch, tokenizer, corpus, saved):
    before = eval_outputs(trained, batch)
    assert (saved / "model.safetensors").exists() and (saved / "modeling_bnvae.py").exists()
    auto_map = json.loads((saved / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_bnvae.BNVAEConfig",
        "AutoModel": "modeling_bnvae.BNVAEModel",
        "AutoModelForCausalLM": "modeling_bnvae.BNVAEForLanguageModeling",
        "AutoModelForSequenceClassification": "modeling_bnvae.BNVAEForSequenceClassification",
    }
    for loader in (BNVAEForLanguageModeling, AutoModelForCausalLM):
        loaded = loader.from_pretrained(saved)
        assert isinstance(loaded, BNVAEForLanguageModeling) and not loaded.training
        bn = loaded.bnvae.latent_head.bn
        torch.testing.assert_close(bn.weight, torch.full((8,), 0.6))
        assert not bn.weight.requires_grad
        torch.testing.assert_close(bn.running_var, trained.bnvae.latent_head.bn.running_var)
        after = eval_outputs(loaded, batch)
        for key in before:
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    assert isinstance(AutoConfig.from_pretrained(saved), BNVAEConfig)

    again = AutoTokenizer.from_pretrained(saved)
    assert again(corpus)["input_ids"] == tokenizer(corpus)["input_ids"]
    assert again.decode(again("the cat sat")["input_ids"], skip_special_tokens=True) == "the cat sat"


def test_the_base_model_loads_from_a_language_model_checkpoint(trained, batch, saved):
    """transformers' prefix logic moves the encoder and BN head of a head's checkpoint into BNVAEModel."""
    for loader in (BNVAEModel, AutoModel):
        base = loader.from_pretrained(saved)
        assert type(base) is BNVAEModel
        with torch.no_grad():
            posterior = base(**batch)
            expected = trained(**batch)
        torch.testing.assert_close(posterior.mu, expected.mu, rtol=0, atol=0)
        torch.testing.assert_close(posterior.logvar, expected.logvar, rtol=0, atol=0)
    # and back: a language model built on a saved base model gets its encoder, and a fresh decoder
    base.save_pretrained(saved / "base")
    head = BNVAEForLanguageModeling.from_pretrained(saved / "base")
    torch.testing.assert_close(head.bnvae.encoder.lstm.weight_hh_l0, trained.bnvae.encoder.lstm.weight_hh_l0)
    assert not torch.equal(head.decoder.lm_head.weight, trained.decoder.lm_head.weight)


def test_base_model_needs_a_latent(tiny_config):
    with pytest.raises(ValueError, match="use_latent=False has none"):
        BNVAEModel(tiny_config(use_latent=False))


def test_remote_code_loads_without_the_package(trained, batch, corpus, saved, tmp_path):
    before = eval_outputs(trained, batch)
    torch.save(dict(batch), tmp_path / "batch.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_bnvae"] = None  # the package cannot be imported in this process
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(saved)!r}, trust_remote_code=True)
        base = AutoModel.from_pretrained({str(saved)!r}, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained({str(saved)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(base).__name__ == "BNVAEModel", type(base)
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        assert tokenizer({corpus!r}, padding=True, return_tensors="pt")["input_ids"].equal(batch["input_ids"])
        with torch.no_grad():
            out = model(**batch, labels=batch["input_ids"])
            assert torch.equal(base(**batch).mu, out.mu)
        torch.save({{"mu": out.mu, "logvar": out.logvar, "recon": out.reconstruction_loss, "logits": out.logits,
                    "gamma_frozen": not model.bnvae.latent_head.bn.weight.requires_grad}}, {str(tmp_path / "out.pt")!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    after = torch.load(tmp_path / "out.pt")
    assert after.pop("gamma_frozen")
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)


# -- the verified loader and atomic saves ---------------------------------------------------------


def test_atomic_save_writes_checksums_and_the_loader_verifies_them(trained, tokenizer, batch, tmp_path):
    folder = tmp_path / "model"
    save_pretrained_atomically(trained, tokenizer, folder)
    sums = json.loads((folder / "checksums.json").read_text())
    assert list(sums) == ["model.safetensors"] and not (folder / ".saving").exists()
    assert_default_modes(folder)
    loaded, loaded_tokenizer = load_pretrained(folder)
    assert not loaded.training and len(loaded_tokenizer) == len(tokenizer)
    torch.testing.assert_close(eval_outputs(loaded, batch)["mu"], eval_outputs(trained, batch)["mu"], rtol=0, atol=0)

    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the weights: still parses as safetensors
    weights.write_bytes(bytes(data))
    with pytest.raises(OSError, match="corrupted or truncated: its sha256"):
        load_pretrained(folder)
    # without a checksums file, a truncated file still fails with a clear message naming the model
    (folder / "checksums.json").unlink()
    weights.write_bytes(bytes(data[:1000]))
    with pytest.raises(OSError, match="corrupted or truncated"):
        load_pretrained(folder)


def test_loader_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_pretrained(str(tmp_path / "missing"))


def test_scripts_refuse_a_checkpoint_of_another_head(tiny_config, tokenizer, tmp_path):
    """A classifier given to generate.py / evaluate_model.py would get a random decoder (word salad, a
    wrong NLL written to its results); a BN-CVAE a bare KeyError. Both are refused, naming what they are."""
    import evaluate_model
    import generate

    classifier = BNVAEForSequenceClassification(tiny_config(num_labels=2))
    save_pretrained_atomically(classifier, tokenizer, tmp_path / "classifier")
    base = BNVAEModel(tiny_config())
    save_pretrained_atomically(base, tokenizer, tmp_path / "base")
    sizes = dict(embedding_size=8, utterance_hidden_size=8, context_hidden_size=8, decoder_hidden_size=8, latent_size=4)
    dialogue = BNCVAEForConditionalGeneration(BNCVAEConfig(vocab_size=len(tokenizer), **sizes))
    save_pretrained_atomically(dialogue, tokenizer, tmp_path / "dialogue")
    cases = {
        "classifier": "is a BNVAEForSequenceClassification checkpoint .* needs BNVAEForLanguageModeling; .* classifier",
        "base": "is a BNVAEModel checkpoint .* needs BNVAEForLanguageModeling",
        "dialogue": "is a BNCVAEForConditionalGeneration checkpoint \\(model_type bncvae\\), .* dialogue model",
    }
    for name, message in cases.items():
        folder = str(tmp_path / name)
        with pytest.raises(ValueError, match=message):
            generate.main(["--model_name_or_path", folder, "sample", "--num_samples", "1"])
        with pytest.raises(ValueError, match=message):
            evaluate_model.main(["--model_name_or_path", folder, "--iw_samples", "0"])
    assert not any((tmp_path / name / "all_results.json").exists() for name in cases)
    # the head each was saved from loads as before
    assert isinstance(
        load_pretrained(tmp_path / "classifier", auto_class=AutoModelForSequenceClassification)[0],
        BNVAEForSequenceClassification,
    )
