"""The simulated clock: when each event of a stream happens, in simulated time. Pure.

An event's simulated time is a function of its sequence number alone (and of the
stream's start, its profile, and its simulated seconds per event), so a restart,
a snapshot and ``verify`` all get the same times without keeping any state.

Without a profile (``steady``), event ``seq`` happens at ``start + seq x gap``: the
stream's clock before profiles existed. With a profile, the clock is busier or
quieter: at a moment ``t`` whose multiplier is ``m(t)``, events come ``m(t) / gap``
per simulated second. The profile repeats weekly and is piecewise constant, so the
count of events from Monday 00:00 to any moment of the week is piecewise linear
(a table of a few hundred points), and so is its inverse: event ``seq`` happens
when that count, from the stream's start, reaches ``seq`` (``numpy.interp``).

Each stretch of the table also has its mix (inserts, updates, deletes), so a burst
can be mostly inserts and its wave mostly updates. The mix acts on what each event
is, never on how an order's life goes: that stays the generator's.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from .traffic import Profile

WEEK = 7 * 86_400
#: 1970-01-05T00:00:00Z, a Monday: simulated weeks are counted from it.
MONDAY = 4 * 86_400


class Clock:
    """Simulated times of a stream's events, the multiplier and the mix at any moment."""

    def __init__(
        self,
        start: int,
        gap: float,
        profile: Profile | None,
        ratios: tuple[float, float, float],
    ) -> None:
        self.start, self.gap, self.profile = start, gap, profile
        total = sum(ratios)
        self.ratios = (ratios[0] / total, ratios[1] / total, ratios[2] / total)
        if profile is None:
            return
        self._bp, mult, ins, upd = _week(profile, self.ratios)
        self._mult = mult
        # Thresholds on a uniform draw: below p_insert an insert, below p_update an update.
        self._p_insert, self._p_update = ins, ins + upd
        self._slope = mult / gap  # events per simulated second, per stretch
        cum = np.concatenate(([0.0], np.cumsum(self._slope * np.diff(self._bp))))
        self._cum, self._per_week = cum, float(cum[-1])
        x0 = (start - MONDAY) % WEEK
        self._week0 = start - x0  # Monday 00:00 of the start's week
        self._count0 = float(np.interp(x0, self._bp, cum))

    @property
    def shaped(self) -> bool:
        return self.profile is not None

    def times(self, seq: np.ndarray) -> np.ndarray:
        """Simulated times (epoch seconds, float) of events ``seq`` (1 = the first)."""
        if self.profile is None:
            return self.start + seq * self.gap
        c = seq.astype(np.float64) + self._count0
        weeks = np.floor(c / self._per_week)
        rest = np.clip(c - weeks * self._per_week, 0.0, self._per_week)
        # The stretch each count falls in; where no events come (a multiplier of 0) the
        # next event happens when the quiet stretch ends.
        k = np.clip(np.searchsorted(self._cum, rest, side="right") - 1, 0, len(self._slope) - 1)
        slope = self._slope[k]
        into = np.divide(rest - self._cum[k], slope, out=np.zeros_like(rest), where=slope > 0)
        out: np.ndarray = self._week0 + weeks * WEEK + self._bp[k] + into
        return out

    def time_of(self, seq: int) -> float:
        return float(self.times(np.array([seq], np.int64))[0])

    def _stretch(self, t: np.ndarray) -> np.ndarray:
        x = (t - MONDAY) % WEEK
        i = np.searchsorted(self._bp, x, side="right") - 1
        return np.clip(i, 0, len(self._mult) - 1)

    def thresholds(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per event at simulated times ``t``: the insert and insert+update thresholds."""
        i = self._stretch(t)
        return self._p_insert[i], self._p_update[i]

    def multiplier(self, t: float) -> float:
        """How many times ``--rate`` the profile asks for at simulated time ``t``."""
        if self.profile is None:
            return 1.0
        return float(self._mult[self._stretch(np.array([t]))[0]])

    def mix(self, t: float) -> tuple[float, float, float]:
        """Shares of inserts, updates and deletes at simulated time ``t``."""
        if self.profile is None:
            return self.ratios
        ins, upd = (float(a[0]) for a in self.thresholds(np.array([t])))
        return ins, upd - ins, 1.0 - upd


def _week(
    profile: Profile, ratios: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The week as stretches: their boundaries (seconds from Monday 00:00, from 0 to WEEK),
    and per stretch the multiplier and the shares of inserts and updates."""
    hours = np.array(profile.hours) / (sum(profile.hours) / 24)
    days = np.array(profile.weekdays) / (sum(profile.weekdays) / 7)
    curve = (days[:, None] * hours[None, :]).ravel()  # 168 hours, Monday 00:00 first
    spans: list[tuple[float, float, float | None, float | None, float | None, int]] = []
    for order, b in enumerate(profile.bursts):
        for s in b.starts:
            a = s * 60.0
            e = a + b.minutes * 60
            if b.wave_minutes > 0:
                spans.append((e, e + b.wave_minutes * 60, b.wave_rate, None, b.wave_updates, 0))
            spans.append((a, e, b.rate, b.inserts, None, 1 + order))
    # Cut at every hour and at both ends of every burst and wave, folded into the week.
    cuts = [np.arange(0, WEEK + 1, 3600, dtype=np.float64)]
    for a, e, *_ in spans:
        for x in (a, e):
            cuts.append(np.array([x % WEEK]))
    bp = np.unique(np.concatenate(cuts))
    mid = (bp[:-1] + bp[1:]) / 2
    mult = curve[(mid // 3600).astype(np.int64)]
    ins = np.full(len(mid), ratios[0])
    upd = np.full(len(mid), ratios[1])
    # Waves first, then bursts: a burst wins where they overlap; later entries win too.
    for a, e, rate, inserts, updates, _ in sorted(spans, key=lambda s: s[5]):
        for lo, hi in _folded(a, e):
            sel = slice(np.searchsorted(bp, lo), np.searchsorted(bp, hi))
            if rate is not None:
                mult[sel] = rate
            if inserts is not None:
                rest = ratios[1] + ratios[2]
                ins[sel] = inserts
                upd[sel] = (1 - inserts) * (ratios[1] / rest if rest else 0.0)
            if updates is not None:
                rest = ratios[0] + ratios[2]
                upd[sel] = updates
                ins[sel] = (1 - updates) * (ratios[0] / rest if rest else 0.0)
    return bp, mult, ins, upd


def _folded(a: float, e: float) -> list[tuple[float, float]]:
    """``[a, e)`` as spans within one week (a burst late on Sunday ends on Monday), cut
    at the very points the week's table was cut at."""
    if e - a >= WEEK:
        return [(0.0, float(WEEK))]
    lo, hi = a % WEEK, e % WEEK
    return [(lo, hi)] if hi > lo else [(lo, float(WEEK)), (0.0, hi)]


def iso(t: float) -> str:
    """Simulated time as ``YYYY-MM-DDTHH:MM:SS`` (UTC)."""
    return dt.datetime.fromtimestamp(int(t), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
