import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.ops import beam_search, greedy, sample_logits, top_k_filter, top_p_filter

RNG = np.random.default_rng(0)
LOGITS = jnp.asarray(RNG.standard_normal((3, 12)) * 2, jnp.float32)
# One shape everywhere, so the sampler compiles once per top_k and logits shape; rbg keys because threefry takes
# ~1.4 s of CPU to compile per program here (sampling does not depend on the key's implementation).
KEYS = jax.random.split(jax.random.key(0, impl="rbg"), 20000)


@functools.partial(jax.jit, static_argnames=("top_k",))
def draw(keys, logits, temperature=1.0, top_k=0, top_p=1.0):
    """[N, B] samples, one row per key."""
    return jax.vmap(lambda k: sample_logits(k, logits, temperature=temperature, top_k=top_k, top_p=top_p))(keys)


nucleus = jax.jit(top_p_filter)  # p traced: one compile per logits shape


def test_greedy_is_argmax_and_temperature_zero_is_greedy():
    np.testing.assert_array_equal(greedy(LOGITS), np.argmax(LOGITS, -1))
    assert greedy(LOGITS).dtype == jnp.int32
    np.testing.assert_array_equal(sample_logits(KEYS[0], LOGITS, temperature=0), np.argmax(LOGITS, -1))
    # A traced temperature of 0 also means greedy.
    samples = draw(KEYS, LOGITS, 0.0)
    np.testing.assert_array_equal(samples, np.broadcast_to(np.argmax(LOGITS, -1), samples.shape))


@pytest.mark.parametrize("temperature", [0.5, 3.0])
def test_top_k_1_is_greedy(temperature):
    samples = draw(KEYS, LOGITS, temperature, top_k=1)
    np.testing.assert_array_equal(samples, np.broadcast_to(np.argmax(LOGITS, -1), samples.shape))


def test_samples_stay_in_top_k_and_cover_it():
    k = 4
    samples = np.asarray(draw(KEYS, LOGITS, 2.0, top_k=k))
    top = np.argsort(-np.asarray(LOGITS), axis=-1)[:, :k]
    for b in range(LOGITS.shape[0]):
        assert set(samples[:, b]) == set(top[b])


def test_top_k_filter_keeps_exactly_k():
    filtered = np.asarray(top_k_filter(LOGITS, 5))
    assert np.all(np.isfinite(filtered).sum(-1) == 5)
    kept = np.isfinite(filtered)
    np.testing.assert_array_equal(filtered[kept], np.asarray(LOGITS)[kept])


# A hand-made distribution over 6 tokens, deliberately not sorted.
PROBS = np.array([0.10, 0.50, 0.05, 0.15, 0.20, 0.0001])
PROBS = PROBS / PROBS.sum()
NUCLEI = {0.4: {1}, 0.6: {1, 4}, 0.75: {1, 4, 3}, 0.9: {1, 4, 3, 0}, 0.99: {1, 4, 3, 0, 2}, 1.0: set(range(6))}


@pytest.mark.parametrize("p", list(NUCLEI))
def test_top_p_filter_keeps_smallest_set_reaching_p(p):
    filtered = np.asarray(nucleus(jnp.log(jnp.asarray(PROBS[None], jnp.float32)), p))
    assert set(np.flatnonzero(np.isfinite(filtered[0]))) == NUCLEI[p]


def test_top_p_always_keeps_top_token():
    filtered = np.asarray(nucleus(LOGITS, 0.0))
    np.testing.assert_array_equal(np.isfinite(filtered), np.asarray(LOGITS) == np.max(LOGITS, -1, keepdims=True))


def test_samples_stay_in_nucleus_with_top_k_and_temperature():
    logits = jnp.log(jnp.asarray(np.stack([PROBS, PROBS[::-1]]), jnp.float32))
    samples = np.asarray(draw(KEYS, logits, 1.0, top_k=5, top_p=0.75))
    assert set(samples[:, 0]) == NUCLEI[0.75]
    assert set(samples[:, 1]) == {5 - i for i in NUCLEI[0.75]}
    # At temperature 0.2 the top token holds > 75% of the mass, so the nucleus is the top token alone.
    samples = np.asarray(draw(KEYS, logits, 0.2, top_p=0.75))
    assert set(samples[:, 0]) == {1}


@pytest.mark.parametrize("temperature", [0.7, 1.6])
def test_empirical_frequencies_follow_tempered_softmax(temperature):
    logits = jnp.asarray([[1.0, 0.0, -0.5, 0.8, -1.5]])
    counts = np.bincount(np.asarray(draw(KEYS, logits, temperature))[:, 0], minlength=5)
    z = np.asarray(logits[0], np.float64) / temperature
    expected = len(KEYS) * np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 25.0  # 4 degrees of freedom: P(chi2 > 25) < 1e-4 under the right distribution


# Beam search on a second-order Markov "model": logits depend on the last token and on the previous one, which
# lives in the decoder state, so a wrong state reordering changes the result.
V, EOS, MAX_LEN = 4, 3, 4
TABLE = RNG.standard_normal((V, V, V)) * 1.5  # [prev, last, next]


def step_fn(state, tokens):
    return jnp.asarray(TABLE, jnp.float32)[state["prev"], tokens], {"prev": tokens}


def brute_force(bos, prev, alpha, max_len=MAX_LEN):
    """All complete hypotheses (ending with eos, or max_len long) with float64 GNMT scores, best first."""
    log_probs = TABLE - np.log(np.exp(TABLE).sum(-1, keepdims=True))
    hyps = []
    for n in range(1, max_len + 1):
        for body in itertools.product([t for t in range(V) if t != EOS], repeat=n - 1):
            for last in [EOS] if n < max_len else range(V):
                seq, context, logp = body + (last,), (prev, bos), 0.0
                for tok in seq:
                    logp += log_probs[context[0], context[1], tok]
                    context = (context[1], tok)
                hyps.append((logp / ((5 + n) / 6) ** alpha, list(seq) + [-1] * (max_len - n)))
    return sorted(hyps, key=lambda h: -h[0])


@functools.partial(jax.jit, static_argnames="beam_size")
def run_beam(bos, prev, alpha, beam_size):
    """The length penalty may be traced, so the three alphas below share one compile."""
    return beam_search(
        step_fn, {"prev": prev}, bos, beam_size=beam_size, max_len=MAX_LEN, eos_id=EOS, length_penalty=alpha, pad_id=-1
    )


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_wide_beam_finds_exact_top_hypotheses(alpha):
    bos, prev = np.array([1, 2]), np.array([0, 2])
    beam = (V - 1) ** (MAX_LEN - 1)  # wide enough to never drop an alive prefix
    seqs, scores = run_beam(bos, prev, alpha, beam_size=beam)
    assert seqs.shape == (2, beam, MAX_LEN) and scores.shape == (2, beam)
    for b in range(2):
        best = brute_force(bos[b], prev[b], alpha)[:beam]
        np.testing.assert_allclose(scores[b], [h[0] for h in best], rtol=1e-5)
        np.testing.assert_array_equal(seqs[b], [h[1] for h in best])


def test_narrow_beam_returns_valid_sorted_hypotheses():
    bos, prev = np.array([1, 2]), np.array([0, 2])
    seqs, scores = run_beam(bos, prev, 0.6, beam_size=3)
    for b in range(2):
        exact = {tuple(h[1]): h[0] for h in brute_force(bos[b], prev[b], 0.6)}
        assert np.all(np.diff(np.asarray(scores[b])) <= 0)
        for seq, score in zip(np.asarray(seqs[b]), np.asarray(scores[b]), strict=True):
            np.testing.assert_allclose(score, exact[tuple(seq)], rtol=1e-5)


def test_beam_size_1_is_greedy_decoding():
    # First-order model where eos is very unlikely except right after token 2, where it dominates; beam 1 also
    # keeps the best "greedy prefix + eos" seen earlier, which this table makes far worse than the greedy path.
    vocab, eos, max_len = 6, 5, 8
    table = RNG.standard_normal((vocab, vocab))
    table[:, eos] = -20.0
    table[2, eos] = 20.0

    def first_order(state, tokens):
        return jnp.asarray(table, jnp.float32)[tokens], state

    expected = []
    for bos in range(vocab - 1):
        seq, tok = [], bos
        while len(seq) < max_len and tok != eos:
            tok = int(np.argmax(table[tok]))
            seq.append(tok)
        expected.append(seq + [0] * (max_len - len(seq)))
    assert any(eos in seq for seq in expected) and any(eos not in seq for seq in expected)
    search = functools.partial(beam_search, first_order, beam_size=1, max_len=max_len, eos_id=eos)
    seqs, _ = jax.jit(search)({"unused": jnp.zeros((vocab - 1,))}, jnp.arange(vocab - 1))
    np.testing.assert_array_equal(seqs[:, 0], expected)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"temperature": -1.0}, "temperature=-1.0 is invalid: it must be >= 0"),
    ({"temperature": float("nan")}, "temperature=nan is invalid"),
    ({"top_k": -3}, "top_k=-3 is invalid: it must be an integer >= 0"),
    ({"top_p": 0.0}, "top_p=0.0 is invalid: it must be in (0, 1]"),
    ({"top_p": 1.5}, "top_p=1.5 is invalid: it must be in (0, 1]"),
])
def test_sampling_settings_out_of_range_are_one_line_errors(kwargs, fragment):
    from lmjax.ops.sampling import check_sampling

    with pytest.raises(ValueError) as info:
        sample_logits(KEYS[0], LOGITS, **kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"^--{name.replace('_', '-')}="):
        check_sampling(**kwargs, names={name: f"--{name.replace('_', '-')}"})
    check_sampling(temperature=0.0, top_k=0, top_p=1.0)  # the edges that turn things off are fine
    check_sampling(temperature=jnp.float32(-1.0))  # traced or array values are left to the caller
