"""Thousands of randomised Type A/D read sessions: the PIN guard never locks a card by itself."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass

import pytest
from test_myna_type_helpers import Ap, card_tries, connect, make_ap, make_card, set_tries

from cardap_sim.vcard.card import VirtualCard
from cardapd.errors import CardRemoved, InvalidPinError, PinBlocked, PinGuardRefused
from cardapd.myna.pin_guard import PinGuard
from cardapd.myna.records import TypeARecord
from cardapd.myna.typea import TypeASession
from cardapd.myna.typed import TypeDSession

SESSIONS_PER_SEED = 2000
SEEDS = (11, 22, 33)
TIME_BUDGET_S = 30.0
WRONG_PINS = (b"0000", b"9999", b"12345", b"wrong!", b"1233", b"ZZZZZZZZZZZZZZZZ")


@dataclass
class Target:
    """One instance on one card, and whether the test itself blocked its PIN."""

    card: VirtualCard
    ap: Ap
    intended_block: bool = False


def _targets(seed: int) -> list[Target]:
    """Two cards (both profiles), each with Type A and D instances of try limits 1, 2, 3, 5."""
    out: list[Target] = []
    for i, profile in enumerate(("vendor-a", "vendor-b")):
        aps = [make_ap("A", 1, seed=seed, tries=3), make_ap("D", 1, seed=seed, tries=5),
               make_ap("A", 2, seed=seed, tries=2), make_ap("D", 2, seed=seed, tries=1)]
        card = make_card(profile, *aps, serial=seed * 10 + i)
        out += [Target(card, ap) for ap in aps]
    return out


def _read(t: Target, pin: bytes, floor: int) -> tuple[object, int]:
    """One session through the daemon's code; returns the record or the error."""
    proto, link = connect(t.card)
    session = TypeASession(proto) if t.ap.kind == "A" else TypeDSession(proto)
    try:
        result: object = session.read(t.ap.aid, t.ap.access_key, pin, PinGuard(floor))
    except (CardRemoved, InvalidPinError, PinGuardRefused, PinBlocked) as exc:
        result = exc
    return result, link.pin_verifies()


@pytest.mark.reliability
@pytest.mark.parametrize("seed", SEEDS)
def test_random_sessions_cause_no_unintended_lockout(seed: int) -> None:
    rng = random.Random(seed)
    targets = _targets(seed)
    stats: Counter[str] = Counter()
    deadline = time.monotonic() + TIME_BUDGET_S / len(SEEDS)
    for _ in range(SESSIONS_PER_SEED):
        assert time.monotonic() < deadline, "randomised sessions exceeded their time budget"
        t = rng.choice(targets)
        max_tries = t.ap.tries
        # the holder's life around the gate: resets at the municipality, deliberate blocks
        if card_tries(t.card, t.ap) <= 2 and rng.random() < 0.3:
            set_tries(t.card, t.ap, max_tries)
            t.intended_block = False
        elif rng.random() < 0.02:
            set_tries(t.card, t.ap, 0)
            t.intended_block = True
        floor = rng.randint(1, 2)
        right = rng.random() < 0.6
        pin = t.ap.pin if right else rng.choice(WRONG_PINS)
        tear = rng.random() < 0.15
        if tear:
            t.card.faults.tear_after = rng.randint(0, 10)
        before = card_tries(t.card, t.ap)
        result, verifies = _read(t, pin, floor)
        t.card.faults.tear_after = None
        if isinstance(result, CardRemoved):
            t.card.power_on()  # re-insertion
        after = card_tries(t.card, t.ap)
        stats[type(result).__name__] += 1
        stats["verifies"] += verifies

        # the properties: no lockout the test did not cause; at most one try; never the last
        assert after > 0 or t.intended_block, f"unintended lockout (seed {seed})"
        assert verifies <= 1
        if before <= floor:
            assert verifies == 0
            assert after == before
        if isinstance(result, CardRemoved):
            assert after in ((max_tries if right else before - 1), before)
            continue
        if before == 0:
            assert isinstance(result, PinBlocked)
        elif before <= floor:
            assert isinstance(result, PinGuardRefused)
            assert result.tries_left == before
        elif right:
            assert isinstance(result, TypeARecord)
            assert result.user_id == t.ap.user_id
            assert after == max_tries
        else:
            assert isinstance(result, InvalidPinError)
            assert result.tries_left == after == before - 1
    # the run exercised every path
    for name in ("TypeARecord", "InvalidPinError", "PinGuardRefused", "PinBlocked",
                 "CardRemoved"):
        assert stats[name] > 0, stats
