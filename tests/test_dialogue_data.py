"""Dialogue data (JSON lines, pairs, batches), the chitchat preparation script and the response metrics,
each against hand-computed examples."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from hf_bnvae.dialogue_data import DialogueDataset, dialogue_collate, dialogue_pairs, read_conversations
from hf_bnvae.dialogue_metrics import bow_embeddings, distinct, response_metrics, train_word_vectors
from hf_bnvae.hub import build_model_card, push_to_hub


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def conversation(cid, *turns):
    return json.dumps({"id": cid, "turns": [{"speaker": s, "text": t} for s, t in turns]})


def test_conversations_merge_turns_and_count_what_they_drop(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl",
        [
            conversation("a", ("A", "hi"), ("A", "there"), ("B", "  "), ("B", "hello"), ("A", "how are you")),
            "",
            conversation("b", ("A", "alone")),
            conversation("c", ("x", "one"), ("y", "two")),
        ],
    )
    conversations, counts = read_conversations(path)
    assert [c["id"] for c in conversations] == ["a", "c"]
    assert conversations[0]["turns"] == [("A", "hi there"), ("B", "hello"), ("A", "how are you")]
    assert counts == {
        "consecutive turns of one speaker merged": 1,
        "empty turns dropped": 1,
        "blank lines": 1,
        "conversations with fewer than 2 turns dropped": 1,
    }


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"turns": [}\n', "line 1: not valid JSON"),
        (b"\n[1, 2]\n", "line 2: expected an object"),
        (b'{"turns": [{"speaker": "A"}]}\n', 'turn 0 is not an object with "speaker" and a "text"'),
        (b'{"turns": [{"speaker": "A", "text": "caf\xe9"}]}\n', "line 1: not UTF-8"),
        (b"\n\n", "no conversation with at least two turns"),
        (b'{"turns": [{"speaker": ["A"], "text": "hi"}]}\n', r'turn 0\'s speaker is \["A"\]; a speaker is a string'),
        (b'{"turns": [{"speaker": {"n": 1}, "text": "hi"}]}\n', r"turn 0's speaker is \{\"n\": 1\}"),
        (b'{"turns": [{"speaker": null, "text": "hi"}]}\n', "turn 0's speaker is null"),
        (b'{"turns": [{"speaker": true, "text": "hi"}]}\n', "turn 0's speaker is true"),
    ],
)
def test_bad_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_conversations(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_conversations(tmp_path / "missing.jsonl")


def test_pairs_mark_the_responder_and_truncate_the_context():
    turns = [("A", "a1"), ("B", "b1"), ("A", "a2"), ("B", "b2")]
    pairs, counts = dialogue_pairs([{"id": "x", "turns": turns}], max_context_turns=2)
    assert pairs == [(["a1"], [0], "b1"), (["a1", "b1"], [1, 0], "a2"), (["b1", "a2"], [1, 0], "b2")]
    assert counts == {"contexts truncated": 1}


def test_dataset_drops_responses_of_unknown_words_and_collates(tokenizer):
    pairs = [
        (["the cat sat"], [0], "a dog ran"),
        (["the dog"], [0], "zebra quokka"),
        (["hi", "the mat"], [1, 0], "on the log"),
    ]
    pairs.append((["zebra quokka"], [0], "the cat"))  # a context utterance of unknown words only is kept
    data = DialogueDataset(pairs, tokenizer, max_utterance_length=2)
    assert len(data) == 3 and data.counts == {"responses of unknown words only dropped": 1}
    assert data.kept == [0, 2, 3] and data[2][0] == [
        [tokenizer.bos_token_id, tokenizer.unk_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id]
    ]
    batch = dialogue_collate([data[0], data[1]], tokenizer.pad_token_id)
    assert batch["context_input_ids"].shape == (2, 2, 4)  # 2 words + <s> </s>; the second context has 2 turns
    assert batch["input_ids"].shape == (2, 4) and torch.equal(batch["labels"], batch["input_ids"])
    assert batch["context_speakers"].tolist() == [[0, 0], [1, 0]]
    assert batch["attention_mask"].sum().item() == 8
    with pytest.raises(ValueError, match="no \\(context, response\\) pair"):
        DialogueDataset(pairs[1:2], tokenizer, max_utterance_length=40)


def test_prepare_chitchat_splits_by_conversation(tmp_path):
    import prepare_chitchat

    source = {
        f"c{i}": {
            "messages": [
                [{"text": f"Hello {i}!", "sender": "u"}, {"text": "How are you?", "sender": "u"}],
                [{"text": "Fine, THANKS", "sender": "v"}],
                [{"text": "", "sender": "u"}],
            ]
        }
        for i in range(10)
    }
    source["short"] = {"messages": [[{"text": "anyone?", "sender": "u"}]]}
    (tmp_path / "dataset.json").write_text(json.dumps(source))
    argv = ["--source_file", str(tmp_path / "dataset.json"), "--output_dir", str(tmp_path / "out")]
    prepare_chitchat.main([*argv, "--test_size", "2", "--valid_size", "3"])
    splits = {name: read_conversations(tmp_path / "out" / f"{name}.jsonl")[0] for name in ("train", "valid", "test")}
    assert [len(rows) for rows in splits.values()] == [5, 3, 2]
    ids = [c["id"] for rows in splits.values() for c in rows]
    assert sorted(ids) == sorted(f"c{i}" for i in range(10))  # each conversation in exactly one split
    assert splits["train"][0]["turns"][1] == ("v", "fine , thanks")
    assert splits["train"][0]["turns"][0][1].endswith("! how are you ?")
    first = (tmp_path / "out" / "train.jsonl").read_text()
    prepare_chitchat.main([*argv, "--test_size", "2", "--valid_size", "3"])
    assert (tmp_path / "out" / "train.jsonl").read_text() == first  # fixed, seeded splits


# -- metrics ---------------------------------------------------------------------------------------


def test_bleu_precision_is_the_mean_and_recall_the_max_over_samples():
    reference = "the cat sat on the mat"
    samples = [[reference, "the cat sat on a mat"]]
    metrics = response_metrics(samples, [reference], vectors={})
    # BLEU-1 of the second: 5 of 6 words match, brevity 1; BLEU-2: sqrt(5/6 * 3/5)
    second = [100 * 5 / 6, 100 * math.sqrt(5 / 6 * 3 / 5)]
    assert metrics["bleu_recall"][:2] == pytest.approx([100, 100])
    assert metrics["bleu_precision"][:2] == pytest.approx([(100 + second[0]) / 2, (100 + second[1]) / 2], rel=1e-4)
    assert metrics["a_bow_precision"] == 0 and metrics["num_samples"] == 2


def test_bag_of_words_embeddings_by_hand():
    vectors = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 2.0]), "c": np.array([-3.0, 1.0])}
    average, extrema = bow_embeddings(["a", "c", "unknown"], vectors)
    np.testing.assert_allclose(average, [-1.0, 0.5])
    np.testing.assert_allclose(extrema, [-3.0, 1.0])  # per dimension the value of largest magnitude
    assert bow_embeddings(["unknown"], vectors) is None
    metrics = response_metrics([["a", "b"]], ["a b"], vectors)
    # reference average (0.5, 1) against (1, 0): cos = 0.5 / sqrt(1.25); against (0, 2): 2 / (2 sqrt(1.25))
    cosines = [0.5 / math.sqrt(1.25), 1 / math.sqrt(1.25)]
    assert metrics["a_bow_precision"] == pytest.approx(sum(cosines) / 2)
    assert metrics["a_bow_recall"] == pytest.approx(max(cosines))
    # reference extrema (1, 2): against (1, 0) and (0, 2)
    extrema_cosines = [1 / math.sqrt(5), 2 / math.sqrt(5)]
    assert metrics["e_bow_precision"] == pytest.approx(sum(extrema_cosines) / 2)
    assert metrics["e_bow_recall"] == pytest.approx(max(extrema_cosines))


def test_distinct_counts_ngrams_over_all_samples():
    hypotheses = [["i", "am", "fine"], ["i", "am", "ok"]]
    assert distinct(hypotheses, 1) == pytest.approx(4 / 6)
    assert distinct(hypotheses, 2) == pytest.approx(3 / 4)
    assert distinct([["one"]], 2) == 0.0
    with pytest.raises(ValueError, match="sample lists"):
        response_metrics([["x"]], ["x", "y"], {})


def test_word2vec_vectors_are_deterministic():
    sentences = [["the", "cat", "sat"], ["the", "dog", "ran"]] * 20
    first, second = train_word_vectors(sentences, vector_size=8), train_word_vectors(sentences, vector_size=8)
    np.testing.assert_array_equal(first["cat"], second["cat"])
    assert first.vector_size == 8 and "dog" in first


# -- training/train_dialogue.py ----------------------------------------------------------------------

TINY = "embedding_size=8,utterance_hidden_size=8,context_hidden_size=12,decoder_hidden_size=12,latent_size=4"


@pytest.fixture
def dialogue_files(tmp_path, corpus):
    """train / valid / test JSON-lines files of conversations made of the fixture sentences."""
    files = {}
    for split, count in (("train", 12), ("valid", 3), ("test", 3)):
        lines = [
            conversation(f"{split}{i}", *[("AB"[k % 2], corpus[(i + k) % len(corpus)]) for k in range(4)])
            for i in range(count)
        ]
        files[split] = write_lines(tmp_path / f"{split}.jsonl", lines)
    return files


def dialogue_args(files, output, *extra):
    return [
        "--train_file", str(files["train"]), "--validation_file", str(files["valid"]), "--test_file", str(files["test"]),
        "--config_overrides", TINY, "--per_device_train_batch_size", "4", "--num_train_epochs", "2",
        "--kl_warmup_steps", "4", "--num_samples", "3", "--max_test_contexts", "4", "--max_new_tokens", "5",
        "--output_dir", str(output), *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("method, extra", [("bncvae", ["--gamma", "0.7"]), ("cvae_bow", [])])
def test_train_dialogue_end_to_end(tmp_path, dialogue_files, method, extra):
    import train_dialogue
    from transformers import AutoModelForSeq2SeqLM

    model, results = train_dialogue.main(dialogue_args(dialogue_files, tmp_path / "out", "--method", method, *extra))
    saved = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert saved["method"] == method and saved["gamma"] == (0.7 if method == "bncvae" else 0.0)
    assert saved["use_bow"] == (method == "cvae_bow") and saved["test_num_pairs"] == 9
    for key in (
        "test_ppl_posterior",
        "test_ppl_elbo",
        "test_kl",
        "test_a_bow_precision",
        "test_e_bow_recall",
        "test_distinct_1",
        "test_distinct_2",
    ):
        assert math.isfinite(saved[key]), key
    assert len(saved["test_bleu_precision"]) == 4 and len(saved["test_bleu_recall"]) == 4
    assert saved["test_num_contexts"] == 4 and saved["test_num_samples"] == 12 and len(saved["history"]) == 2
    assert len(saved["examples"]) == 4 and all(len(e["samples"]) == 3 for e in saved["examples"])
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out")
    assert loaded.config.latent_size == 4 and loaded.config.use_bow == (method == "cvae_bow")
    card = build_model_card(tmp_path / "out", "org/dialogue")
    index = {(r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert index[("perplexity", "perplexity, z from q(z|c,x) (sees the reference)")] == round(
        saved["test_ppl_posterior"], 2
    )
    # the ELBO's bound pays for the KL: log ppl_elbo / log ppl_posterior = (reconstruction + KL) / reconstruction
    ratio = math.log(saved["test_ppl_elbo"]) / math.log(saved["test_ppl_posterior"])
    assert ratio == pytest.approx((saved["test_reconstruction"] + saved["test_kl"]) / saved["test_reconstruction"])
    assert index[("bleu", "BLEU-4 recall (3 samples)")] == round(saved["test_bleu_recall"][3], 2)
    assert saved["decoding"] in card.text
    assert ("BN-CVAE" in card.text) == (method == "bncvae") and f"{saved['test_kl']:.2f}" in card.text
    assert "{{" not in card.text and "--config_overrides" in card.text


def test_a_dialogue_model_is_pushed_and_loads_from_the_hub_cache(tmp_path, dialogue_files, fake_hub):
    import train_dialogue

    train_dialogue.main(dialogue_args(dialogue_files, tmp_path / "out", "--max_test_contexts", "0"))
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text((tmp_path / "out" / "config.json").read_text())
    with pytest.raises(ValueError, match="no all_results.json"):
        build_model_card(tmp_path / "bare", "org/x")
    push_to_hub(tmp_path / "out", "org/bncvae")
    script = (
        "import sys; sys.modules['hf_bnvae'] = None\n"
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n"
        "m = AutoModelForSeq2SeqLM.from_pretrained('org/bncvae', trust_remote_code=True).eval()\n"
        "t = AutoTokenizer.from_pretrained('org/bncvae', trust_remote_code=True)\n"
        "print(type(m).__name__, len(m.sample_responses(['the cat sat'], t, num_samples=2, max_new_tokens=3)))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(fake_hub.cache), "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["BNCVAEForConditionalGeneration", "2"]
    assert "Dialogue response generation" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "cvae", "--gamma", "0.5"], "--gamma only applies to --method bncvae, not cvae"),
        (["--gamma", "0"], "--gamma 0.0: must be > 0"),
        (["--per_device_train_batch_size", "1"], "must be >= 2"),
        (["--config_overrides", "latent=3"], "unknown BNCVAEConfig field"),
        (["--config_overrides", "latent_size=big"], "is not field=number"),
        (["--word_vectors", "nowhere.txt"], "--word_vectors nowhere.txt: file not found"),
    ],
)
def test_train_dialogue_bad_flags(tmp_path, dialogue_files, extra, message, capsys):
    import train_dialogue

    with pytest.raises(SystemExit):
        train_dialogue.parse_args(dialogue_args(dialogue_files, tmp_path / "out", *extra))
    assert message in capsys.readouterr().err


def test_reproduce_dialogue_writes_the_table_and_resumes(tmp_path, dialogue_files, capsys, refused):
    import reproduce_dialogue

    train_args = f"--config_overrides {TINY} --per_device_train_batch_size 4 --num_samples 3 --max_new_tokens 5"
    argv = [
        "--output_dir", str(tmp_path / "repro"), "--data_dir", str(tmp_path), "--gammas", "0.5",
        "--num_train_epochs", "1", "--max_test_contexts", "5", "--kl_warmup_steps", "2", "--train_args", train_args,
    ]  # fmt: skip
    report = reproduce_dialogue.main(argv)
    assert list(report["methods"]) == ["cvae", "cvae_bow", "bncvae_0.5"]
    for figures in report["methods"].values():
        assert set(figures) == set(reproduce_dialogue.KEYS) and len(figures["bleu_recall"]) == 4
    saved = json.loads((tmp_path / "repro" / "dialogue.json").read_text())
    assert saved["methods"] == report["methods"] and saved["command"].startswith(
        "python training/reproduce_dialogue.py --output_dir"
    )
    markdown = (tmp_path / "repro" / "dialogue.md").read_text()
    assert "| BN-CVAE (0.5) |" in markdown and "| CVAE + bag-of-words loss |" in markdown  # labels: the method table
    assert "30.67 / 5.18 / 8.64" in markdown and "**Context 5**" in markdown
    capsys.readouterr()
    assert reproduce_dialogue.main(argv)["seconds"] == report["seconds"]  # nothing trained again
    assert capsys.readouterr().out.count("[skip]") == 3
    refused(lambda: reproduce_dialogue.parse_args(["--gammas", "0"]), "every gamma must be > 0")


def test_evaluation_loss_per_pair_is_the_models_loss(tmp_path, dialogue_files):
    """evaluate_pairs sums each pair's loss (reconstruction + KL + BOW + prior KL at KL weight 1): over one
    batch holding every pair, its mean is the model's own loss."""
    import train_dialogue
    from accelerate import Accelerator

    for method in ("bncvae", "cvae_bow"):
        model, _ = train_dialogue.main(dialogue_args(dialogue_files, tmp_path / method, "--method", method))
        args = train_dialogue.parse_args(dialogue_args(dialogue_files, tmp_path / "x", "--method", method))
        pairs = train_dialogue.load_pairs(args.test_file, args, None)
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / method)
        dataset = DialogueDataset(pairs, tokenizer, args.max_utterance_length)
        batch = next(iter(train_dialogue.loader(dataset, len(dataset), tokenizer.pad_token_id)))
        figures = train_dialogue.evaluate_pairs(model, [batch], Accelerator(cpu=True), sample_latent=False)
        with torch.no_grad():
            expected = model.eval()(**batch, sample_latent=False).loss.item()
        assert figures["loss"] == pytest.approx(expected, rel=1e-5) and figures["num_pairs"] == len(dataset)


@pytest.mark.slow
def test_two_processes_count_every_evaluation_pair_once(tmp_path, root, dialogue_files):
    """9 test pairs over 2 processes x 2 per batch: accelerate repeats pairs to even out the last batches;
    the gathered figures drop them."""
    env = {**os.environ, "PYTHONPATH": f"{root / 'training'}:{root / 'tests'}"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(root / "tests" / "dialogue_ddp_probe.py"), str(tmp_path),
        *dialogue_args(dialogue_files, tmp_path / "out", "--per_device_eval_batch_size", "2", "--max_test_contexts", "0",
                       "--num_train_epochs", "1"),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    import train_dialogue

    args = train_dialogue.parse_args(dialogue_args(dialogue_files, tmp_path / "x"))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    test_pairs, valid_pairs = (
        len(
            DialogueDataset(
                train_dialogue.load_pairs(dialogue_files[s], args, None), tokenizer, args.max_utterance_length
            )
        )
        for s in ("test", "valid")
    )
    assert test_pairs % 4 != 0  # so that the last batches are evened out with repeated pairs
    assert [r["test"] for r in ranks] == [test_pairs, test_pairs]
    assert [r["valid"] for r in ranks] == [[valid_pairs], [valid_pairs]]
    assert ranks[0]["test_loss"] == ranks[1]["test_loss"]


def test_a_diverged_dialogue_run_fails_and_saves_nothing(tmp_path, dialogue_files):
    import train_dialogue

    with pytest.raises(RuntimeError, match="training diverged"):
        train_dialogue.main(dialogue_args(dialogue_files, tmp_path / "out", "--learning_rate", "1e30"))
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_resumed_dialogue_run_ends_as_an_uninterrupted_one(tmp_path, dialogue_files):
    """Epoch checkpoints keep the shuffle: 1 epoch, then resumed to 3, gives the validation figures and
    weights of 3 straight epochs."""
    import train_dialogue

    flags = ("--max_test_contexts", "0")
    straight, results = train_dialogue.main(
        dialogue_args(dialogue_files, tmp_path / "straight", *flags, "--num_train_epochs", "3")
    )
    parts = dialogue_args(dialogue_files, tmp_path / "parts", *flags, "--checkpointing_steps", "epoch")
    train_dialogue.main([*parts, "--num_train_epochs", "1"])
    resumed, resumed_results = train_dialogue.main(
        [*parts, "--num_train_epochs", "3", "--resume_from_checkpoint", "latest"]
    )
    for key in ("valid_loss", "valid_kl", "step"):
        assert [h[key] for h in resumed_results["history"]] == pytest.approx(
            [h[key] for h in results["history"]], abs=1e-6
        ), key
    assert resumed_results["test_loss"] == pytest.approx(results["test_loss"], abs=1e-6)
    for name, weight in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], weight, atol=1e-6, rtol=0, msg=name)
