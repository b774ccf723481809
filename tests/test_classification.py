"""BNVAEForSequenceClassification: the loss, what trains, loading a language-model checkpoint, the Auto
classes, remote code and the text-classification pipeline."""

import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForSequenceClassification, pipeline

from hf_bnvae import BNVAEForSequenceClassification


@pytest.fixture
def classifier(tiny_config):
    torch.manual_seed(0)
    config = tiny_config(num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"})
    return BNVAEForSequenceClassification(config)


def test_loss_is_the_cross_entropy_of_the_logits(classifier, batch):
    classifier.eval()  # no dropout: the logits are a function of the input
    labels = torch.tensor([0, 2, 1, 2, 0, 1, 1, 0])[: len(batch["input_ids"])]
    out = classifier(**batch, labels=labels)
    assert out.logits.shape == (len(labels), 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    mu = classifier.bnvae(**batch).mu
    torch.testing.assert_close(out.logits, classifier.classifier(mu))  # a linear layer on the BN'd mean
    assert classifier.config.problem_type == "single_label_classification"
    assert classifier(**batch, return_dict=False)[0].shape == (len(labels), 3)


def test_gradients_reach_the_encoder_unless_frozen_and_never_gamma(classifier, batch):
    labels = torch.zeros(len(batch["input_ids"]), dtype=torch.long)
    classifier.train()
    classifier(**batch, labels=labels).loss.backward()
    assert classifier.bnvae.encoder.lstm.weight_hh_l0.grad.abs().sum() > 0
    assert classifier.bnvae.latent_head.bn.weight.grad is None
    classifier.zero_grad(set_to_none=True)
    classifier.freeze_encoder()
    classifier(**batch, labels=labels).loss.backward()
    assert all(p.grad is None for p in classifier.bnvae.parameters())
    assert classifier.classifier.weight.grad.abs().sum() > 0


def test_bad_labels_and_a_training_batch_of_one_fail_clearly(classifier, batch):
    with pytest.raises(ValueError, match="label 3 is outside \\[0, num_labels=3\\)"):
        classifier(**batch, labels=torch.full((len(batch["input_ids"]),), 3))
    one = {k: v[:1] for k, v in batch.items()}
    with pytest.raises(ValueError, match="batch of one sentence"):
        classifier.train()(**one)
    assert classifier.eval()(**one).logits.shape == (1, 3)  # eval mode: BN's running statistics


def test_regression_and_multi_label_follow_problem_type(tiny_config, batch):
    n = len(batch["input_ids"])
    regression = BNVAEForSequenceClassification(tiny_config(num_labels=1)).eval()
    targets = torch.linspace(0, 1, n)
    out = regression(**batch, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), targets))
    multi = BNVAEForSequenceClassification(tiny_config(num_labels=2)).eval()
    hot = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).repeat(n, 1)[:n]
    out = multi(**batch, labels=hot)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, hot))
    assert multi.config.problem_type == "multi_label_classification"


def test_a_language_model_checkpoint_gives_the_encoder_and_bn_head(trained, saved):
    classifier, info = BNVAEForSequenceClassification.from_pretrained(saved, num_labels=2, output_loading_info=True)
    for key, value in trained.bnvae.state_dict().items():  # gamma and BN statistics included
        torch.testing.assert_close(classifier.bnvae.state_dict()[key], value, rtol=0, atol=0)
    assert float(classifier.bnvae.latent_head.bn.weight[0]) == pytest.approx(trained.config.gamma)
    assert not classifier.bnvae.latent_head.bn.weight.requires_grad
    # transformers' load report: the decoder is unused, the classifier newly initialised
    assert info["unexpected_keys"] and all(key.startswith("decoder.") for key in info["unexpected_keys"])
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    auto = AutoModelForSequenceClassification.from_pretrained(saved, num_labels=2)
    assert isinstance(auto, BNVAEForSequenceClassification)


def test_save_load_round_trip_and_the_pipeline(classifier, tokenizer, corpus, tmp_path):
    classifier.eval()
    classifier.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    batch = tokenizer(corpus[:4], padding=True, return_tensors="pt")
    loaded = BNVAEForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(**batch).logits, classifier(**batch).logits, rtol=0, atol=0)
    assert loaded.config.id2label[2] == "positive"
    classify = pipeline("text-classification", model=str(tmp_path))
    results = classify(corpus[:2])
    assert [r["label"] for r in results] == [
        classifier.config.id2label[int(i)]
        for i in classifier(**tokenizer(corpus[:2], padding=True, return_tensors="pt")).logits.argmax(-1)
    ]
    assert all(0 < r["score"] <= 1 for r in results)


def test_remote_code_classifies_without_the_package(classifier, tokenizer, corpus, tmp_path):
    classifier.eval().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    expected = classifier(**tokenizer(corpus[:3], padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_bnvae"] = None  # the package cannot be imported in this process
        from transformers import pipeline
        classify = pipeline("text-classification", model={str(tmp_path)!r}, trust_remote_code=True)
        assert type(classify.model).__module__.startswith("transformers_modules"), type(classify.model).__module__
        print([r["label"] for r in classify({corpus[:3]!r})])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str([classifier.config.id2label[i] for i in expected])
