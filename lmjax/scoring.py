"""Corpus-level scores that are not sums of per-token values, computed on the host.

    bleu(hypotheses, references)      sacrebleu corpus BLEU, tokenize='none'
    bleu_signature()                  the sacrebleu signature of that setting
    chunk_f1(gold, predicted)         phrase-level precision, recall and F1 of IOB chunk tags, as conlleval

Translation rows in lmjax share one BLEU convention: sacrebleu on lowercased, already tokenised text (Multi30k's
`lc.norm.tok` references) as it is, with tokenize='none', the same as multi-bleu.perl on those files. sacrebleu's
default 13a tokenizer would split the tokens again (hyphens, for one) and give other, non-comparable numbers.
"""

from __future__ import annotations


def _metric():
    import sacrebleu

    return sacrebleu.metrics.BLEU(tokenize="none")


def bleu(hypotheses: list[str], references: list[str]):
    """sacrebleu's BLEUScore of `hypotheses` against one reference each (`.score` is the 0-100 figure)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references: give one per reference")
    return _metric().corpus_score(list(hypotheses), [list(references)])


def bleu_signature() -> str:
    """E.g. "nrefs:1|case:mixed|eff:no|tok:none|smooth:exp|version:2.6.0"."""
    metric = _metric()
    metric.corpus_score(["a"], [["a"]])
    return str(metric.get_signature())


def _split_tag(tag: str) -> tuple[str, str]:
    """conlleval's split of a tag at its first "-": ("B", "NP") for "B-NP", ("O", "") for "O"."""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


_END_PAIRS = {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O"), ("E", "E"), ("E", "I"), ("E", "O")}
_START_PAIRS = {("B", "B"), ("I", "B"), ("O", "B"), ("O", "I"), ("E", "E"), ("E", "I"), ("O", "E")}


def _ends(prev: tuple[str, str], tag: tuple[str, str]) -> bool:
    """conlleval's endOfChunk: the chunk of `prev` ends before `tag`."""
    (p, pk), (t, tk) = prev, tag
    return (p, t) in _END_PAIRS or (p not in ("O", ".") and pk != tk) or p in ("[", "]")


def _starts(prev: tuple[str, str], tag: tuple[str, str]) -> bool:
    """conlleval's startOfChunk: a chunk starts at `tag` (an I- after O, or a change of type, starts one too)."""
    (p, pk), (t, tk) = prev, tag
    return (p, t) in _START_PAIRS or (t not in ("O", ".") and pk != tk) or t in ("[", "]")


def chunks(tags: list[str]) -> set[tuple[int, int, str]]:
    """The (start, end exclusive, type) phrases of one sentence's IOB1/IOB2 tags, as conlleval reads them."""
    out, start, prev = set(), None, ("O", "")
    for i, raw in enumerate([*tags, "O"]):
        tag = _split_tag(raw)
        if start is not None and _ends(prev, tag):
            out.add((start, i, prev[1]))
            start = None
        if i < len(tags) and _starts(prev, tag):
            start = i
        prev = tag
    return out


def chunk_f1(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """conlleval's phrase-level scores over sentences of IOB tags: a predicted phrase is correct when its start, end
    and type all match a gold phrase. Returns precision, recall and f1 (fractions, 0..1) and the token accuracy."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predicted sentences for {len(gold)} gold ones: give one per sentence")
    correct = found = guessed = tokens = right = 0
    for g, p in zip(gold, predicted):
        if len(g) != len(p):
            raise ValueError(f"a sentence has {len(g)} gold tags and {len(p)} predicted ones: give one per word")
        gc, pc = chunks(list(g)), chunks(list(p))
        correct, found, guessed = correct + len(gc & pc), found + len(gc), guessed + len(pc)
        tokens, right = tokens + len(g), right + sum(a == b for a, b in zip(g, p))
    precision = correct / guessed if guessed else 0.0
    recall = correct / found if found else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": right / tokens if tokens else 0.0}
