"""The transfer table's downstream model: word lookups and batches, the word2vec table, the ELMo encoder's features
(the scalar mix of `elmo.embed`'s layers) kept frozen, padding invariance, and the engine runs on real tasks."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.config import ConfigError, get_preset
from lmjax.data.elmo_data import BOUNDARY
from lmjax.data.word_tasks import collate_words, fit_task_vocabulary, vectors_vocabulary, word_ids
from lmjax.models import elmo, transfer
from lmjax.train.loop import train


def quiet(cfg, workdir, data_dir, **kw):
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=str(data_dir)))
    return dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, workdir=str(workdir), progress=False, tensorboard=False, plot=False, **kw))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, shared_data):
    """elmo_smoke and bert_pretrain_smoke runs, trained once for this module."""
    root = tmp_path_factory.mktemp("pretrained")
    return {name: train(quiet(get_preset(name), root / name, shared_data, eval_every=0))
            for name in ("elmo_smoke", "bert_pretrain_smoke")}, root


def test_word_lookup_falls_back_to_lower_case_then_text8_cleaning_and_batches_align_tags():
    tok = fit_task_vocabulary([["the", "film", "five", "Paris"]])
    ids = word_ids(tok, ["The", "film", "5", "Paris", "zzz", BOUNDARY])
    get = tok.token_to_id
    assert ids.tolist() == [get("the"), get("film"), get("five"), get("Paris"), tok.unk_id, get(BOUNDARY)]
    examples = [(["a", "b", "c"], ["B-NP", "I-NP", "O"]), (["d"], ["O"])]
    index = {"B-NP": 0, "I-NP": 1, "O": 2}
    batch = collate_words(examples, 3, tok, 5, cap=64, tagging=True, index=index)
    assert batch["words"].shape == (3, 16) and batch["chars"].shape == (3, 16, 5)
    assert batch["lengths"].tolist() == [5, 3, 2]  # boundaries included; a padding row has none but them
    assert batch["labels"][0, :4].tolist() == [0, 1, 2, -1] and batch["labels"][1, :2].tolist() == [2, -1]
    assert (batch["labels"][2] == -1).all()


def test_word2vec_rows_start_from_the_file_and_freezing_is_the_rows_difference(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("3 4\nthe 1 0 0 0\nfilm 0 2 0 0\ngood 0 0 3 0\n", encoding="utf-8")
    tok, table = vectors_vocabulary(str(path))
    assert tok.vocab[:3] == ["<pad>", "<unk>", BOUNDARY] and table.shape == (6, 4)
    cfg = transfer.TransferConfig(encoder="word2vec", vocab_size=tok.vocab_size, hidden=3, dropout=0.0)
    model = transfer.TransferModel(cfg, 2, False, table)
    batch = {"words": jnp.asarray([[2, 3, 4, 2]]), "lengths": jnp.asarray([4]), "labels": jnp.asarray([1])}
    params = nn.meta.unbox(model.init(jax.random.key(0), batch))["params"]
    np.testing.assert_array_equal(params["encoder"]["embedding"][:6], table)
    assert params["encoder"]["embedding"].shape[0] == 128  # padded
    frozen, tuned = get_preset("transfer_rte_word2vec"), get_preset("transfer_rte_word2vec_ft")
    assert frozen.optim.freeze == (r"^encoder/",) and tuned.optim.freeze == ()
    assert dataclasses.replace(frozen.optim, freeze=()) == tuned.optim and frozen.model == tuned.model


def test_a_sentences_prediction_does_not_depend_on_the_rest_of_its_batch():
    tok = fit_task_vocabulary([["w%d" % i for i in range(30)]])
    for tagging in (False, True):
        cfg = transfer.TransferConfig(encoder="random", vocab_size=tok.vocab_size, embed_dim=6, hidden=5)
        model = transfer.TransferModel(cfg, 3, tagging)
        index = {"x": 0}
        short = (["w1", "w2", "w3"], ["x"] * 3 if tagging else 1)
        long_ = (["w%d" % i for i in range(20)], ["x"] * 20 if tagging else 0)
        alone = collate_words([short], 1, tok, 0, 64, tagging, index)
        both = collate_words([long_, short], 2, tok, 0, 64, tagging, index)
        params = model.init(jax.random.key(0), alone)["params"]
        a = np.asarray(model.apply({"params": params}, alone))
        b = np.asarray(model.apply({"params": params}, both))
        if tagging:
            np.testing.assert_allclose(b[1, :3], a[0, :3], atol=1e-6)
        else:
            np.testing.assert_allclose(b[1], a[0], atol=1e-6)


def test_the_elmo_rows_features_are_the_scalar_mix_of_elmos_layers_and_stay_frozen(tmp_path, shared_data,
                                                                                     pretrained):
    """transfer_tag_smoke from an elmo_smoke run: the encoder is that run's BiLM, its features at initialisation
    (w = 0, gamma = 1) are the mean of elmo.embed's three layers, and training leaves it unchanged."""
    runs, root = pretrained
    pre = runs["elmo_smoke"]
    cfg = quiet(get_preset("transfer_tag_smoke"), tmp_path / "tag", shared_data, init_from=str(root / "elmo_smoke"))
    from lmjax.train.engine import Engine

    engine = Engine(cfg)
    start = engine.init_state()
    bilm_params = jax.device_get(pre.state.params)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(start.params)["encoder"], bilm_params)
    words = ["Confidence", "in", "the", "pound", "is", "widely", "expected", "."]
    batch = collate_words([(words, ["O"] * len(words))], 1, engine.data.tokenizer, pre.engine.task.model.config
                          .max_chars, 64, True, {"O": 0})
    model = engine.task.model
    got = np.asarray(model.apply({"params": jax.device_get(start.params)}, batch, method=transfer.TransferModel
                                 .features))[0, 1:len(words) + 1]
    want = elmo.embed(pre.engine.task.model, bilm_params, pre.engine.data.tokenizer, [words])[0].mean(0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    result = train(cfg)
    after = jax.device_get(result.state.params)
    jax.tree.map(np.testing.assert_array_equal, after["encoder"], bilm_params)
    assert not np.array_equal(after["head"]["kernel"], jax.device_get(start.params)["head"]["kernel"])
    final = result.eval_metrics
    assert 0 <= final["eval_f1"] <= 1 and final["eval_accuracy"] > 0.2  # 23 chunk tags: chance is far lower
    with pytest.raises(ConfigError, match="is a tagging task"):
        Engine(dataclasses.replace(cfg, task="classify")).init_state()


def test_the_random_row_trains_on_rte_pairs(tmp_path, shared_data):
    result = train(quiet(get_preset("transfer_classify_smoke"), tmp_path / "rte", shared_data))
    assert result.step == 10 and 0 <= result.eval_metrics["eval_accuracy"] <= 1
    assert result.engine.data.info["pairs"] and result.engine.data.info["num_classes"] == 2


@pytest.mark.parametrize("encoder", ["bert", "gpt"])
def test_subword_rows_read_each_word_at_its_piece_and_keep_a_frozen_trunk(tmp_path, shared_data, pretrained,
                                                                           encoder):
    """BERT's features are its last layer at each word's first WordPiece, GPT's at its last; frozen rows leave the
    trunk as loaded; `finetune` rows change it."""
    from lmjax.data.word_tasks import collate_pieces
    from lmjax.train.engine import Engine

    runs, root = pretrained
    pre, bert_dir = runs["bert_pretrain_smoke"], root / "bert_pretrain_smoke"
    tok = pre.engine.data.tokenizer
    trunk = "bert_pretrain_smoke" if encoder == "bert" else "gpt_classify_smoke"
    results = {}
    for finetune in (False, True):
        cfg = quiet(get_preset("transfer_tag_smoke"), tmp_path / f"{encoder}{finetune}", shared_data,
                    init_from=str(bert_dir) if encoder == "bert" else "",
                    init_source="bert" if encoder == "bert" else "", steps=4, eval_every=0, checkpoint_every=4)
        cfg = dataclasses.replace(
            cfg, model=transfer.TransferConfig(encoder=encoder, trunk_preset=trunk, finetune=finetune, hidden=8,
                                               max_pieces=64),
            data=dataclasses.replace(cfg.data, tokenizer_dir=str(bert_dir / "tokenizer"), seq_len=24),
            optim=dataclasses.replace(cfg.optim, freeze=() if finetune else (r"^encoder/",), lr=1e-2))
        engine = Engine(cfg)
        start = jax.device_get(engine.init_state().params)
        words = ["Rockwell", "International", "said", "it", "signed", "a", "pact", "."]
        batch = collate_pieces([(words, ["O"] * 8)], 1, tok, 24, True, {"O": 0}, last=encoder == "gpt",
                               max_pieces=cfg.model.max_pieces)
        model = engine.task.model
        got = np.asarray(model.apply({"params": start}, batch, method=transfer.TransferModel.features))[0]
        if encoder == "bert":
            from lmjax.models.bert import Bert

            hidden, _ = Bert(model.elmo, add_pooler=False).apply({"params": start["encoder"]}, batch["pieces"], None,
                                                                 batch["piece_mask"] > 0)
            jax.tree.map(np.testing.assert_array_equal, start["encoder"],
                         {k: v for k, v in jax.device_get(pre.state.params)["bert"].items() if k != "pooler"})
        else:
            from lmjax.models.gpt import GPT

            hidden = GPT(model.elmo).apply({"params": start["encoder"]}, batch["pieces"], outputs="hidden")
        pieces = [tok.encode(w) for w in words]
        offset, want = 1, [0]
        for p in pieces:
            want.append(offset + (len(p) - 1 if encoder == "gpt" else 0))
            offset += len(p)
        want.append(offset)
        assert batch["first"][0, :10].tolist() == want and batch["lengths"][0] == 10
        np.testing.assert_allclose(got[:10], np.asarray(hidden)[0, want], atol=1e-6)
        result = train(cfg)
        after = jax.device_get(result.state.params)["encoder"]
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(start["encoder"])))
        results[finetune] = same
    assert results == {False: True, True: False}
