"""BERT's engine tasks: pre-training (MLM + NSP), sentence (pair) classification and tagging; their data (sentence
splitting, the first-piece tag alignment, resumable batches), conlleval's chunk F1, the presets and freezing
regimes, pretrained initialisation, and one run of pre-training then fine-tuning through the engine on real data."""

import dataclasses
import json
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.config import ConfigError, get_preset, list_presets
from lmjax.data import WordPieceTokenizer
from lmjax.data.bert_pretraining import PretrainingConfig, Specials
from lmjax.data.bert_tasks import (PretrainingBatches, align_tags, collate, split_sentences, word_pieces)
from lmjax.models import bert
from lmjax.scoring import chunk_f1, chunks
from lmjax.train.optim import freeze_labels
from lmjax.train.pretrained import graft
from lmjax.train.task import Data

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "play", "##ing", "un", "##aff", "##able", "cat", ".",
         "a", "dog", "##s"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return WordPieceTokenizer.from_vocab_file(path)


def test_split_sentences_at_ends_before_capitals_and_at_breaks():
    text = 'I liked it. "Really!" She said so.<br /><br />No way... 3 stars? ok. fine'
    assert split_sentences(text) == ["I liked it.", '"Really!"', "She said so.", "No way...", "3 stars? ok. fine"]
    assert split_sentences("  <br />  ") == []


def test_tags_go_on_each_words_first_piece(tokenizer):
    words = ["Playing", "the", "unaffable", "dogs", "\x00"]  # the last word normalises to nothing: [UNK]
    ids, labels, kept = align_tags(tokenizer, words, [7, 8, 9, 10, 11], max_len=32)
    pieces = [tokenizer.id_to_token(int(i)) for i in ids]
    assert pieces == ["[CLS]", "play", "##ing", "the", "un", "##aff", "##able", "dog", "##s", "[UNK]", "[SEP]"]
    assert labels.tolist() == [-1, 7, -1, 8, 9, -1, -1, 10, -1, 11, -1]
    assert kept == 5
    # one label per word, found again from the pieces: the words' first pieces are where labels are
    firsts = [p for p, y in zip(pieces, labels) if y >= 0]
    assert firsts == [tokenizer.id_to_token(int(w[0])) for w in word_pieces(tokenizer, words)]
    # a word that does not fit whole is cut with everything after it
    ids, labels, kept = align_tags(tokenizer, words, [7, 8, 9, 10, 11], max_len=6)
    assert [tokenizer.id_to_token(int(i)) for i in ids] == ["[CLS]", "play", "##ing", "the", "[SEP]"]
    assert kept == 2 and labels.tolist() == [-1, 7, -1, 8, -1]


def test_collate_pads_rows_and_widths_to_few_shapes(tokenizer):
    ex = [(np.arange(5, dtype=np.int32), np.zeros(5, np.int32), 1), (np.arange(20, dtype=np.int32),
                                                                     np.ones(20, np.int32), 0)]
    batch = collate(ex, 4, tokenizer.pad_id, cap=128, tagging=False)
    assert batch["tokens"].shape == (4, 32)  # 20 -> 32 (16, 32, 64, ...)
    assert batch["labels"].tolist() == [1, 0, -1, -1] and batch["mask"].sum(1).tolist() == [5, 20, 0, 0]
    assert collate(ex, 2, 0, cap=24, tagging=False)["tokens"].shape == (2, 24)  # capped
    assert collate([(np.arange(40), np.zeros(40), 0)], 1, 0, cap=24, tagging=False)["tokens"].shape == (1, 40)


def test_chunks_and_f1_follow_conlleval():
    assert chunks(["B-NP", "I-NP", "O", "B-VP", "I-VP"]) == {(0, 2, "NP"), (3, 5, "VP")}
    assert chunks(["I-NP", "I-NP", "O", "I-VP"]) == {(0, 2, "NP"), (3, 4, "VP")}  # IOB1: I- after O starts one
    assert chunks(["B-NP", "I-VP", "B-PP"]) == {(0, 1, "NP"), (1, 2, "VP"), (2, 3, "PP")}  # a type change
    gold = [["B-NP", "I-NP", "O", "B-VP"], ["B-PP", "B-NP"]]
    pred = [["B-NP", "B-NP", "O", "B-VP"], ["B-PP", "I-PP"]]
    # gold phrases: NP(0,2) VP(3,4) PP(0,1) NP(1,2); predicted: NP(0,1) NP(1,2) VP(3,4) PP(0,2): 1 correct of 4
    s = chunk_f1(gold, pred)
    assert s["precision"] == pytest.approx(1 / 4) and s["recall"] == pytest.approx(1 / 4)
    assert s["f1"] == pytest.approx(1 / 4) and s["accuracy"] == pytest.approx(4 / 6)
    assert chunk_f1(gold, gold)["f1"] == 1.0
    with pytest.raises(ValueError, match="one per word"):
        chunk_f1([["O"]], [["O", "O"]])


def _smoke_cfg(task: str, **data):
    cfg = get_preset("bert_pretrain_smoke")
    return dataclasses.replace(cfg, task=task, data=dataclasses.replace(cfg.data, **data))


def _pretrain_batch(rng, B=4, T=16, P=3, V=40):
    tokens = rng.integers(5, V, (B, T)).astype(np.int32)
    mask = np.ones((B, T), np.int32)
    mask[1, 10:] = 0
    return {"tokens": tokens, "segments": (np.arange(T) > 7).astype(np.int32)[None].repeat(B, 0), "mask": mask,
            "masked_positions": rng.integers(1, 9, (B, P)).astype(np.int32),
            "masked_ids": rng.integers(5, V, (B, P)).astype(np.int32),
            "masked_weights": np.array([[1, 1, 0]] * B, np.float32),
            "nsp_labels": rng.integers(0, 2, B).astype(np.int32), "real": np.ones(B, np.int32)}


def test_pretraining_loss_is_mean_mlm_plus_mean_nsp_and_padding_rows_count_nothing():
    cfg = dataclasses.replace(_smoke_cfg("pretrain", seq_len=16, batch_size=4),
                              model=dataclasses.replace(get_preset("bert_pretrain_smoke").model, max_predictions=3))
    task = bert.make_pretraining_task(cfg, Data(tokenizer=None, vocab_size=40, train=None))
    batch = _pretrain_batch(np.random.default_rng(0))
    params = task.init(jax.random.key(0), batch)["params"]
    loss, count, aux = task.loss_fn(params, batch, None, False)
    mlm, nsp = task.model.apply({"params": params}, batch["tokens"], batch["segments"], batch["mask"] > 0,
                                masked_positions=batch["masked_positions"])
    logp = jax.nn.log_softmax(mlm[..., :40])
    picked = np.take_along_axis(np.asarray(logp), batch["masked_ids"][..., None], -1)[..., 0]
    mlm_mean = -(picked * batch["masked_weights"]).sum() / batch["masked_weights"].sum()
    nsp_mean = -np.take_along_axis(np.asarray(jax.nn.log_softmax(nsp)), batch["nsp_labels"][:, None], 1).mean()
    assert float(count) == 4
    np.testing.assert_allclose(float(loss) / 4, mlm_mean + nsp_mean, rtol=1e-5)
    np.testing.assert_allclose(float(aux["mlm_loss"]) / 4, mlm_mean, rtol=1e-5)
    # two more rows that are padding (real 0, no predictions): the same sums
    pad = {k: np.concatenate([v, np.zeros((2, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
    loss2, count2, aux2 = task.loss_fn(params, pad, None, False)
    assert float(count2) == 4
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-5)
    np.testing.assert_allclose(float(aux2["nsp_accuracy"]), float(aux["nsp_accuracy"]))


def test_classify_and_tag_count_real_rows_and_words():
    rng = np.random.default_rng(1)
    tokens = rng.integers(5, 40, (3, 16)).astype(np.int32)
    mask = np.ones((3, 16), np.int32)
    common = {"tokens": tokens, "segments": np.zeros((3, 16), np.int32), "mask": mask}
    data = Data(tokenizer=None, vocab_size=40, train=None, info={"num_classes": 3, "scheme": "tags", "gold": {}})  # no gold: no corpus metrics
    cls = bert.make_classifier_task(_smoke_cfg("classify", seq_len=16, batch_size=3), data)
    batch = {**common, "labels": np.array([2, 0, -1], np.int32)}
    params = cls.init(jax.random.key(0), batch)["params"]
    loss, count, aux = cls.loss_fn(params, batch, None, False)
    assert float(count) == 2 and 0 <= float(aux["accuracy"]) <= 2
    two = {k: v[:2] for k, v in batch.items()}
    np.testing.assert_allclose(float(cls.loss_fn(params, two, None, False)[0]), float(loss), rtol=1e-6)
    tag = bert.make_tagging_task(_smoke_cfg("tag", seq_len=16, batch_size=3), data)
    labels = np.full((3, 16), -1, np.int32)
    labels[0, 1:4], labels[2, 2] = [0, 1, 2], 1
    tparams = tag.init(jax.random.key(0), {**common, "labels": labels})["params"]
    _, words, _ = tag.loss_fn(tparams, {**common, "labels": labels}, None, False)
    assert float(words) == 4
    assert "pooler" not in tparams["bert"] and "pooler" in params["bert"]


def test_pretraining_batches_resume_exactly_and_mask_dynamically():
    rng = np.random.default_rng(0)
    n, T, P = 40, 16, 3
    arrays = {"input_ids": np.concatenate([np.full((n, 1), 2), rng.integers(5, 30, (n, T - 2)), np.full((n, 1), 3)],
                                          1).astype(np.int32),
              "input_mask": np.ones((n, T), np.int32), "segment_ids": np.zeros((n, T), np.int32),
              "masked_lm_positions": np.zeros((n, P), np.int32), "masked_lm_ids": np.zeros((n, P), np.int32),
              "masked_lm_weights": np.zeros((n, P), np.float32), "next_sentence_labels": np.zeros(n, np.int32)}
    pcfg = PretrainingConfig(max_seq_length=T, max_predictions_per_seq=P)
    specials = Specials(cls=2, sep=3, mask=4, vocab_size=30)
    a = PretrainingBatches(arrays, 8, pcfg, specials, dynamic=True, seed=3)
    for _ in range(6):  # into the second epoch
        next(a)
    state = a.state()
    want = [next(a) for _ in range(3)]
    b = PretrainingBatches(arrays, 8, pcfg, specials, dynamic=True, seed=3)
    b.restore(state)
    for x, y in zip(want, [next(b) for _ in range(3)]):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    batch = want[0]
    assert (batch["masked_weights"].sum(1) == 2).all()  # round(0.15 * 16) = 2 predictions per row
    assert not np.isin(batch["masked_ids"][batch["masked_weights"] > 0], [2, 3]).any()
    changed = batch["tokens"] != arrays["input_ids"][0:1].repeat(8, 0)  # tokens move only at predicted positions
    rows = np.arange(8)[:, None]
    assert (batch["tokens"][rows, batch["masked_positions"]] == 4).any()
    assert changed.shape == batch["tokens"].shape


def test_presets_regimes_and_freezing_patterns():
    names = list_presets()
    for task in bert.FINETUNE_TASKS:
        for regime in bert.REGIMES:
            assert f"bert_{task}_{regime}" in names
    assert get_preset("bert_sst2_scratch").train.init_from == ""
    assert get_preset("bert_chunk_finetune").data.dataset == "conll2000"
    cfg = get_preset("bert_sst2_frozen")
    task = bert.make_classifier_task(cfg, Data(tokenizer=None, vocab_size=8192, train=None,
                                               info={"num_classes": 2}))
    shapes = nn.meta.unbox(jax.eval_shape(task.init, jax.random.key(0), task.example_batch))["params"]
    frozen = freeze_labels(shapes, cfg.optim.freeze)
    flat = {"/".join(str(getattr(k, "key", k)) for k in p): v for p, v in jax.tree_util.tree_leaves_with_path(frozen)}
    assert all(v == "frozen" for k, v in flat.items() if k.startswith("bert/") and "pooler" not in k)
    assert all(v == "trainable" for k, v in flat.items() if "pooler" in k or k.startswith("classifier"))
    partial = freeze_labels(shapes, bert.freeze_bottom(2))
    flat = {"/".join(str(getattr(k, "key", k)) for k in p): v for p, v in jax.tree_util.tree_leaves_with_path(partial)}
    assert flat["bert/layers_1/ln_2/scale"] == "frozen" and flat["bert/tok_embed"] == "frozen"
    assert flat["bert/layers_2/ln_2/scale"] == "trainable" and flat["bert/layers_3/mlp/c_fc/kernel"] == "trainable"


def test_graft_drops_leaves_the_model_lacks_but_not_missing_ones(caplog):
    params = {"bert": {"a": np.zeros(2), "b": {"c": np.zeros(3)}}, "head": np.zeros(1)}
    source = {"a": np.ones(2), "b": {"c": np.ones(3)}, "pooler": {"kernel": np.ones(4)}}
    with caplog.at_level(logging.WARNING):
        out = graft(params, source, "bert")
    assert "pooler/kernel" in caplog.text
    np.testing.assert_array_equal(out["bert"]["b"]["c"], np.ones(3))
    assert "pooler" not in out["bert"]
    with pytest.raises(ConfigError, match="b/c missing"):
        graft(params, {"a": np.ones(2)}, "bert")


def test_pretrain_then_finetune_through_the_engine(shared_data, tmp_path, monkeypatch):
    """bert_pretrain_smoke on 300 IMDB reviews, then its encoder fine-tuned on CoNLL-2000 chunks and on RTE; fill-mask
    reads the pre-trained model back."""
    from lmjax.cli import main
    from lmjax.train.loop import train

    monkeypatch.setenv("LMJAX_DATA_DIR", str(shared_data))
    monkeypatch.chdir(tmp_path)
    result = train(get_preset("bert_pretrain_smoke"))
    assert result.step == 20 and np.isfinite(result.train_loss)
    lines = [json.loads(x) for x in (tmp_path / "runs/bert_pretrain_smoke/metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval_mlm_accuracy" in x]
    assert evals and 0 <= evals[-1]["eval_nsp_accuracy"] <= 1
    tagged = train(get_preset("bert_tag_smoke"))
    assert tagged.step == 10
    summary = json.loads((tmp_path / "runs/bert_tag_smoke/summary.json").read_text())
    text = json.dumps(summary)
    assert "eval_f1" in text and "eval_accuracy" in text
    assert train(get_preset("bert_classify_smoke")).step == 10
    assert main(["fill-mask", "bert_pretrain_smoke", "the movie was [MASK] .", "--top-k", "3"]) == 0
