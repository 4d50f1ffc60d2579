"""Corpus-level scores that are not sums of per-token values, computed on the host.

    bleu(hypotheses, references)      sacrebleu corpus BLEU, tokenize='none'
    bleu_signature()                  the sacrebleu signature of that setting

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
