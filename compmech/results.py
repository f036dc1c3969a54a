"""Named results of the calls whose number of outputs depends on their flags.

They are tuples, so ``tokens, states = cm.sample(..., return_states=True)`` keeps working, and
their fields name what each array is: ``cm.sample(..., return_beliefs=True).beliefs``."""
from __future__ import annotations

from typing import Any, NamedTuple


class BeliefsWithLogProb(NamedTuple):
    """``cm.beliefs(..., return_log_prob=True)``: beliefs ``(B, L, S)`` and the natural-log
    probability of each whole sequence ``(B,)``."""
    beliefs: Any
    log_prob: Any


class SampleWithStates(NamedTuple):
    """``cm.sample(..., return_states=True)``: tokens ``(B, L)`` and hidden states ``(B, L + 1)``."""
    tokens: Any
    states: Any


class SampleWithBeliefs(NamedTuple):
    """``cm.sample(..., return_beliefs=True)``: tokens ``(B, L)`` and beliefs ``(B, L, S)``."""
    tokens: Any
    beliefs: Any


class SampleWithStatesAndBeliefs(NamedTuple):
    """``cm.sample(..., return_states=True, return_beliefs=True)``."""
    tokens: Any
    states: Any
    beliefs: Any


def sample_result(tokens, states=None, beliefs=None, *, want_states: bool, want_beliefs: bool):
    """The tokens alone, or the named tuple holding what was asked for."""
    if want_states and want_beliefs:
        return SampleWithStatesAndBeliefs(tokens, states, beliefs)
    if want_states:
        return SampleWithStates(tokens, states)
    if want_beliefs:
        return SampleWithBeliefs(tokens, beliefs)
    return tokens


def beliefs_result(beliefs, log_prob, *, want_log_prob: bool):
    return BeliefsWithLogProb(beliefs, log_prob) if want_log_prob else beliefs
