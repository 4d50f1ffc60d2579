"""Decoding: temperature / top-k / nucleus sampling and beam search, all with static shapes (jit-able); and
`cut_at_eos`, the host-side end of a decoded row."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_NEG_INF = float("-inf")


def greedy(logits: jax.Array) -> jax.Array:
    """argmax over the last axis, int32: [..., V] -> [...]."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Logits (fp32) with everything below the k-th largest of each row set to -inf; ties with the k-th are kept."""
    logits = logits.astype(jnp.float32)
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits >= kth, logits, _NEG_INF)


def top_p_filter(logits: jax.Array, p: float | jax.Array) -> jax.Array:
    """Nucleus filter (fp32): keep the smallest set of top tokens whose probability mass is >= p, others -inf.

    Sorted descending, token j is kept iff the mass strictly before it is < p, so the top token always stays.
    """
    logits = logits.astype(jnp.float32)
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = (mass_before < p).at[..., 0].set(True)
    num_kept = jnp.sum(keep, axis=-1, keepdims=True)
    cutoff = jnp.take_along_axis(sorted_logits, num_kept - 1, axis=-1)
    return jnp.where(logits >= cutoff, logits, _NEG_INF)


def check_sampling(temperature: Any = 1.0, top_k: Any = 0, top_p: Any = 1.0, *,
                   names: Mapping[str, str] | None = None) -> None:
    """A one-line ValueError unless temperature >= 0 (0 = greedy), top_k >= 0 (0 = off) and top_p in (0, 1]
    (1 = off). Traced values are not checked. `names` renames the settings in the message (e.g. to CLI flags)."""
    names = names or {}
    for key, value, ok, allowed in (
        ("temperature", temperature, lambda v: math.isfinite(v) and v >= 0, ">= 0 (0 = greedy)"),
        ("top_k", top_k, lambda v: v >= 0 and float(v).is_integer(), "an integer >= 0 (0 = no top-k filter)"),
        ("top_p", top_p, lambda v: 0 < v <= 1, "in (0, 1] (1 = no nucleus filter)"),
    ):
        if isinstance(value, (int, float)) and not ok(value):
            raise ValueError(f"{names.get(key, key)}={value!r} is invalid: it must be {allowed}")


def sample_logits(
    key: jax.Array,
    logits: jax.Array,
    *,
    temperature: float | jax.Array = 1.0,
    top_k: int = 0,
    top_p: float | jax.Array = 1.0,
) -> jax.Array:
    """int32 ids [B] drawn from softmax(filter(logits [B, V] / temperature)).

    temperature 0 is greedy argmax (a traced temperature selects per call); top_k (static) 0 or >= V and top_p 1.0
    disable their filters. Temperature comes before the filters: the nucleus is measured on the tempered softmax.
    Python values out of those ranges are a ValueError (`check_sampling`).
    """
    check_sampling(temperature, top_k, top_p)
    logits = logits.astype(jnp.float32)
    if isinstance(temperature, (int, float)) and temperature == 0:
        return greedy(logits)
    temperature = jnp.asarray(temperature, jnp.float32)
    scaled = logits / jnp.where(temperature > 0, temperature, 1.0)
    if 0 < top_k < logits.shape[-1]:
        scaled = top_k_filter(scaled, top_k)
    if not (isinstance(top_p, (int, float)) and top_p >= 1.0):
        scaled = top_p_filter(scaled, top_p)
    sampled = jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)
    return jnp.where(temperature > 0, sampled, greedy(logits))


def gnmt_length_penalty(length: jax.Array, alpha: float) -> jax.Array:
    """((5 + length) / 6)^alpha (Wu et al., 2016): beam scores are log p(y) divided by this."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def beam_search(
    step_fn: Callable[[Any, jax.Array], tuple[jax.Array, Any]],
    init_state: Any,
    bos_ids: jax.Array,
    *,
    beam_size: int,
    max_len: int,
    eos_id: int,
    length_penalty: float = 0.6,
    pad_id: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """Beam search for the sequences maximising log p(y) / ((5 + |y|) / 6)^length_penalty.

    step_fn(state, token_ids [B*beam]) -> (logits [B*beam, V], new_state); `state` is a pytree whose leaves lead with
    B*beam (row b*beam + k) and is reordered along dim 0 as beams are chosen; `init_state` leads with B and is
    tiled here. A hypothesis is complete when it emits eos_id (|y| counts the eos) or reaches max_len tokens.
    Returns (sequences int32 [B, beam, max_len] of generated tokens, bos excluded, padded with pad_id after eos;
    scores fp32 [B, beam]), best first. Slots with no complete hypothesis score -inf. Needs alpha >= 0 for the early
    stop (no alive beam can beat the beam-th finished one) to be exact.
    """
    batch = bos_ids.shape[0]
    k = beam_size
    state = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), init_state)
    # Only beam 0 starts alive, so the first step does not pick k copies of the same token.
    alive_logp = jnp.full((batch, k), _NEG_INF, jnp.float32).at[:, 0].set(0.0)
    alive_seqs = jnp.full((batch, k, max_len), pad_id, jnp.int32)
    last = jnp.broadcast_to(jnp.asarray(bos_ids, jnp.int32)[:, None], (batch, k))
    fin_scores = jnp.full((batch, k), _NEG_INF, jnp.float32)
    fin_seqs = jnp.full((batch, k, max_len), pad_id, jnp.int32)
    rows = jnp.arange(batch)[:, None]
    max_penalty = gnmt_length_penalty(max_len, length_penalty)

    def cond(carry):
        i, alive_logp, _, _, _, fin_scores, _ = carry
        # Log-probs only fall and the penalty only grows, so alive_logp / lp(max_len) bounds any completion.
        best_alive = alive_logp[:, 0] / max_penalty
        return (i < max_len) & ~jnp.all(fin_scores[:, -1] > best_alive)

    def body(carry):
        i, alive_logp, alive_seqs, last, state, fin_scores, fin_seqs = carry
        logits, state = step_fn(state, last.reshape(batch * k))
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, k, -1)
        vocab = logp.shape[-1]
        cand = alive_logp[:, :, None] + logp  # [B, k, V]

        # Hypotheses that end here with eos join the finished pool, which keeps its k best.
        eos_scores = cand[:, :, eos_id] / gnmt_length_penalty(i + 1, length_penalty)
        eos_seqs = alive_seqs.at[:, :, i].set(eos_id)
        fin_scores, best = jax.lax.top_k(jnp.concatenate([fin_scores, eos_scores], axis=1), k)
        fin_seqs = jnp.concatenate([fin_seqs, eos_seqs], axis=1)[rows, best]

        # The k best non-eos extensions stay alive.
        alive_logp, flat = jax.lax.top_k(cand.at[:, :, eos_id].set(_NEG_INF).reshape(batch, k * vocab), k)
        parent, token = flat // vocab, (flat % vocab).astype(jnp.int32)
        alive_seqs = alive_seqs[rows, parent].at[:, :, i].set(token)
        state = jax.tree.map(lambda x: x[(rows * k + parent).reshape(-1)], state)
        return i + 1, alive_logp, alive_seqs, token, state, fin_scores, fin_seqs

    carry = (jnp.int32(0), alive_logp, alive_seqs, last, state, fin_scores, fin_seqs)
    i, alive_logp, alive_seqs, _, _, fin_scores, fin_seqs = jax.lax.while_loop(cond, body, carry)

    # Beams still alive after max_len steps are complete hypotheses of length max_len.
    alive_scores = jnp.where(i == max_len, alive_logp / max_penalty, _NEG_INF)
    scores, best = jax.lax.top_k(jnp.concatenate([fin_scores, alive_scores], axis=1), k)
    return jnp.concatenate([fin_seqs, alive_seqs], axis=1)[rows, best], scores


def cut_at_eos(tokens, eos_id: int) -> list[int]:
    """A decoded row (host array or list) up to, not including, its first eos_id."""
    out = []
    for t in np.asarray(tokens).tolist():
        if t == eos_id:
            break
        out.append(t)
    return out
