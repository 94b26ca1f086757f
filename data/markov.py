"""A seeded random sparse order-k Markov source and its exact entropy rate (pure numpy/scipy).

The source emits tokens in ``0..V-1``. Its state is the last ``k`` tokens (a k-gram),
encoded as the base-V integer ``s = x_1·V^(k-1) + ... + x_k``, so there are ``S = V^k``
states. Each state has ``branching`` distinct successor tokens with Dirichlet(alpha)
probabilities; all other tokens have probability 0.

Irreducibility and aperiodicity are guaranteed by construction: every state's successors
include ``(last + 1) mod V`` (so from anywhere the chain reaches the cycle of "consecutive"
k-grams ``(j, j+1, ..., j+k-1)``), and every state whose last token is 0 also has successor
0 (so the all-zero k-gram, reachable from that cycle, has a self-loop). Hence exactly one
closed communicating class exists, it is aperiodic, and the stationary distribution ``pi``
is unique (states outside the class are transient and get ``pi = 0``).

Entropy rate (nats/token): ``E = sum_s pi(s) · H(P(. | s))``, the irreducible loss of a
predictor that sees at least ``k`` previous tokens. ``conditional_entropies(src)[j]`` is
``H(X_t | X_{t-j}, ..., X_{t-1})`` under stationarity for ``j = 0..k`` (the last entry
equals ``E``): the Bayes loss of a predictor that sees only ``j`` previous tokens.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse

MAX_STATES = 1 << 20


@dataclasses.dataclass(frozen=True)
class MarkovSource:
    """Transition table of an order-k source over ``vocab`` tokens.

    ``successors_SB``: int32[S, B] next tokens of each state; ``probs_SB``: float64[S, B]
    their probabilities (rows sum to 1).
    """

    vocab: int
    order: int
    successors_SB: np.ndarray
    probs_SB: np.ndarray

    @property
    def n_states(self) -> int:
        return self.vocab**self.order

    def next_states_SB(self) -> np.ndarray:
        """int64[S, B]: the state reached from ``s`` by emitting ``successors_SB[s, b]``."""
        s = np.arange(self.n_states, dtype=np.int64)[:, None]
        return (s * self.vocab) % self.n_states + self.successors_SB

    def state_tokens(self, states_N: np.ndarray) -> np.ndarray:
        """int32[N, k]: the k tokens (oldest first) of each encoded state."""
        states_N = np.asarray(states_N, dtype=np.int64)
        powers = self.vocab ** np.arange(self.order - 1, -1, -1, dtype=np.int64)
        return ((states_N[:, None] // powers) % self.vocab).astype(np.int32)


def make_source(vocab: int, order: int, branching: int, alpha: float, seed: int) -> MarkovSource:
    """A random sparse order-``order`` source over ``vocab`` tokens (see module docstring)."""
    if vocab < 2 or order < 1 or not 2 <= branching <= vocab or alpha <= 0:
        raise ValueError("need vocab >= 2, order >= 1, 2 <= branching <= vocab, alpha > 0")
    n_states = vocab**order
    if n_states > MAX_STATES:
        raise ValueError(f"vocab**order = {n_states} states exceeds {MAX_STATES}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6D61726B]))
    last_S = np.arange(n_states) % vocab
    succ_SB = np.empty((n_states, branching), dtype=np.int32)
    succ_SB[:, 0] = (last_S + 1) % vocab
    # Random extra successors: a random permutation per state, skipping the forced ones.
    keys_SV = rng.random((n_states, vocab))
    keys_SV[np.arange(n_states), succ_SB[:, 0]] = -1.0  # forced, sorts first
    zero_last = last_S == 0
    keys_SV[zero_last, 0] = -0.5  # state ending in 0 also keeps token 0
    succ_SB[:] = np.argsort(keys_SV, axis=1, kind="stable")[:, :branching]
    probs_SB = rng.dirichlet(np.full(branching, float(alpha)), size=n_states)
    return MarkovSource(vocab, order, succ_SB, probs_SB)


def transition_matrix(src: MarkovSource) -> scipy.sparse.csr_matrix:
    """Sparse float64[S, S] row-stochastic state transition matrix."""
    n = src.n_states
    rows = np.repeat(np.arange(n), src.successors_SB.shape[1])
    return scipy.sparse.csr_matrix((src.probs_SB.ravel(), (rows, src.next_states_SB().ravel())), shape=(n, n))


def stationary_distribution(src: MarkovSource, *, tol: float = 1e-14, max_iter: int = 1_000_000) -> np.ndarray:
    """float64[S]: the unique stationary distribution ``pi = pi P`` (sums to 1).

    Power iteration from the uniform distribution; it converges because the chain has a
    single closed class and is aperiodic (see module docstring). Stops when the L1 change
    of one step is below ``tol``.
    """
    p_t = transition_matrix(src).T.tocsr()
    pi = np.full(src.n_states, 1.0 / src.n_states)
    for _ in range(max_iter):
        new = p_t @ pi
        new /= new.sum()
        if np.abs(new - pi).sum() < tol:
            return new
        pi = new
    raise RuntimeError("stationary distribution did not converge")


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def state_entropies(src: MarkovSource) -> np.ndarray:
    """float64[S]: entropy in nats of each state's next-token distribution."""
    p = src.probs_SB
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)


def entropy_rate(src: MarkovSource, pi: np.ndarray | None = None) -> float:
    """Exact entropy rate in nats/token: ``sum_s pi(s) H(P(.|s))``."""
    pi = stationary_distribution(src) if pi is None else pi
    return float(pi @ state_entropies(src))


def conditional_entropies(src: MarkovSource, pi: np.ndarray | None = None) -> list[float]:
    """``[H(X_t | previous j tokens) for j = 0..k]`` in nats under stationarity.

    Computed from the stationary (k+1)-gram distribution ``pi(s)·P(x|s)``:
    ``H_j = H(last j+1 tokens) - H(last j tokens)``. ``H_k`` is the entropy rate.
    """
    pi = stationary_distribution(src) if pi is None else pi
    v, k = src.vocab, src.order
    s = np.arange(src.n_states, dtype=np.int64)[:, None]
    grams = (s * v + src.successors_SB).ravel()  # (k+1)-gram codes
    joint = (pi[:, None] * src.probs_SB).ravel()
    marg_h = []  # H of the last m tokens, m = 0..k+1
    for m in range(k + 2):
        if m == 0:
            marg_h.append(0.0)
            continue
        marg = np.bincount(grams % v**m, weights=joint, minlength=v**m)
        marg_h.append(_entropy(marg))
    return [marg_h[j + 1] - marg_h[j] for j in range(k + 1)]


def window_entropy(conditional: list[float], seq_len: int) -> float:
    """Bayes loss (nats/target) averaged over the ``seq_len`` targets of one packed window.

    Target ``i`` (0-based) of a window sees ``i + 1`` tokens of context, so the first
    ``k - 1`` targets pay ``H_1..H_{k-1}`` instead of ``E = H_k``. Document boundaries are
    ignored (see docs/readme/data.md for their size).
    """
    k = len(conditional) - 1
    e = conditional[k]
    total = 0.0
    for i in range(seq_len):
        total += conditional[min(i + 1, k)]
    return total / seq_len if seq_len else e


def sample(
    src: MarkovSource,
    n_docs: int,
    length: int,
    rng: np.random.Generator,
    pi: np.ndarray | None = None,
) -> np.ndarray:
    """int32[n_docs, length] stationary samples: start k-gram ~ pi, then the chain.

    The first ``k`` tokens of each document are the start state's tokens, so every token
    of a document has the stationary marginal distribution.
    """
    if length < src.order:
        raise ValueError(f"document length {length} < order {src.order}")
    pi = stationary_distribution(src) if pi is None else pi
    states_N = rng.choice(src.n_states, size=n_docs, p=pi).astype(np.int64)
    out_NL = np.empty((n_docs, length), dtype=np.int32)
    out_NL[:, : src.order] = src.state_tokens(states_N)
    cum_SB = np.cumsum(src.probs_SB, axis=1)
    cum_SB[:, -1] = 1.0 + 1e-12
    n_states = src.n_states
    for t in range(src.order, length):
        u = rng.random(n_docs)
        choice = (cum_SB[states_N] <= u[:, None]).sum(axis=1)
        tok = src.successors_SB[states_N, choice]
        out_NL[:, t] = tok
        states_N = (states_N * src.vocab) % n_states + tok
    return out_NL


def log_probs(src: MarkovSource, tokens_L: np.ndarray) -> np.ndarray:
    """float64[L - k]: ``log P(x_t | x_{t-k..t-1})`` along one sequence, for ``t >= k``.

    Independent of the sampler: looks each transition up in the dense table.
    """
    v, k = src.vocab, src.order
    tokens_L = np.asarray(tokens_L, dtype=np.int64)
    dense_SV = np.zeros((src.n_states, v))
    np.put_along_axis(dense_SV, src.successors_SB.astype(np.int64), src.probs_SB, axis=1)
    states = np.zeros(len(tokens_L) - k, dtype=np.int64)
    for j in range(k):
        states = states * v + tokens_L[j : len(tokens_L) - k + j]
    return np.log(dense_SV[states, tokens_L[k:]])
