"""Traffic profiles: the shape of a day and a week, and bursts (``--traffic NAME|FILE``).

A profile says how busy the shop is at each moment of the *simulated* clock,
as a multiplier of ``--rate``: a day's curve (``hours``, 24 values, UTC) times a
week's (``weekdays``, Monday first), scaled so that their mean over the week is 1,
and bursts that replace it for a while (``rate`` times ``--rate``), with their own
mix of inserts, then a wave of updates as their orders move on. The whole profile
repeats every week, so it is a small table and the simulated time of any event
is a closed-form function of its sequence number (:mod:`service.pipeline.simclock`).

A profile is a value: it is stored in the stream's identity (expanded, so a stored
stream never depends on the file it came from, nor on this parser), and a restart
or ``verify`` rebuilds it from there. ``steady`` is no profile at all: the stream
of before profiles existed, byte for byte.

Files are TOML (``tomllib``)::

    name = "my-shop"                 # default: the file's name without .toml
    hours = [0.3, 0.2, ...]          # 24 multipliers, UTC hours 0..23 (default all 1)
    weekdays = [1, 1, 1, 1, 1.2, 1.5, 1.3]   # Monday..Sunday (default all 1)
    backdate_days = 0                # order dates spread this far back (default 0)

    [[burst]]
    cron = "0 12,20 * * *"           # or: at = ["12:00", "Fri 20:00"]
    minutes = 15                     # how long the burst lasts
    rate = 10                        # times --rate during the burst (at most 50)
    inserts = 0.85                   # share of inserts during it (default: the usual 0.60)
    wave_minutes = 45                # then a wave of updates (default 0: none)
    wave_rate = 1.5                  # times --rate during the wave (default: the day's curve)
    wave_updates = 0.6               # share of updates during the wave (default 0.35)

Anything else, a negative or out-of-bound number, a wrong type or a file that is
not TOML is a :class:`ProfileError` naming the key (the command line adds the file).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The bound of a burst's or a wave's rate, and of the day-and-week curve's peak, in
#: multiples of ``--rate``: beyond it a profile is refused (a typo, not a shop).
MAX_MULTIPLIER = 50.0
#: How far back order dates may be spread (the generator's ``backdate_days``).
MAX_BACKDATE_DAYS = 3650
MINUTES_PER_WEEK = 7 * 24 * 60
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

STEADY = "steady"

DIURNAL = """\
# A day with a night trough (04:00 UTC, a fifth of the mean) and an evening peak
# (20:00, about twice the mean); weekends a little busier than weekdays.
name = "diurnal"
hours = [0.55, 0.38, 0.27, 0.21, 0.19, 0.22, 0.34, 0.55, 0.78, 0.95, 1.05, 1.12,
         1.20, 1.15, 1.08, 1.05, 1.10, 1.25, 1.48, 1.75, 1.92, 1.85, 1.45, 0.95]
weekdays = [0.92, 0.90, 0.92, 0.96, 1.04, 1.14, 1.12]
"""

FLASH_SALE = """\
# A steady base; every day at noon and at 20:00 UTC a 15-minute sale at 10 times the
# base rate, mostly new orders, then 45 minutes of a wave of updates as they move on.
name = "flash-sale"

[[burst]]
cron = "0 12,20 * * *"
minutes = 15
rate = 10
inserts = 0.85
wave_minutes = 45
wave_rate = 1.5
wave_updates = 0.6
"""

#: The built-in profiles, as the files a user would write (``steady`` is none).
BUILT_IN = {"diurnal": DIURNAL, "flash-sale": FLASH_SALE}

_TOP = ("name", "hours", "weekdays", "backdate_days", "burst")
_BURST = ("at", "cron", "minutes", "rate", "inserts", "wave_minutes", "wave_rate", "wave_updates")


class ProfileError(ValueError):
    """A profile that cannot be used; ``key`` names the culprit (``burst[0].rate``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


@dataclass(frozen=True, slots=True)
class Burst:
    """One kind of burst, at each of its ``starts`` (minutes from Monday 00:00 UTC)."""

    starts: tuple[int, ...]
    minutes: float
    rate: float
    inserts: float | None = None
    wave_minutes: float = 0.0
    wave_rate: float | None = None
    wave_updates: float | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """A week of traffic. Part of the stream's identity (:meth:`as_dict`)."""

    name: str
    hours: tuple[float, ...] = (1.0,) * 24
    weekdays: tuple[float, ...] = (1.0,) * 7
    bursts: tuple[Burst, ...] = ()
    backdate_days: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Expanded and JSON-ready: what the stream's identity stores."""
        return {
            "name": self.name,
            "hours": list(self.hours),
            "weekdays": list(self.weekdays),
            "backdate_days": self.backdate_days,
            "bursts": [
                {
                    "starts": list(b.starts),
                    "minutes": b.minutes,
                    "rate": b.rate,
                    "inserts": b.inserts,
                    "wave_minutes": b.wave_minutes,
                    "wave_rate": b.wave_rate,
                    "wave_updates": b.wave_updates,
                }
                for b in self.bursts
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        """The profile a stored identity holds (as :meth:`as_dict` wrote it)."""
        return cls(
            name=str(d["name"]),
            hours=tuple(float(x) for x in d["hours"]),
            weekdays=tuple(float(x) for x in d["weekdays"]),
            backdate_days=int(d["backdate_days"]),
            bursts=tuple(
                Burst(
                    starts=tuple(int(s) for s in b["starts"]),
                    minutes=float(b["minutes"]),
                    rate=float(b["rate"]),
                    inserts=_opt(b["inserts"]),
                    wave_minutes=float(b["wave_minutes"]),
                    wave_rate=_opt(b["wave_rate"]),
                    wave_updates=_opt(b["wave_updates"]),
                )
                for b in d["bursts"]
            ),
        )

    def describe(self) -> str:
        bursts = sum(len(b.starts) for b in self.bursts)
        return f"{self.name} ({bursts} bursts a week)" if bursts else self.name


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


def load(spec: str) -> Profile | None:
    """The profile ``--traffic`` names: a built-in, or a TOML file; None for ``steady``.

    Raises :class:`ProfileError` (its message names the key; the caller names the file)
    or :class:`FileNotFoundError` for a name that is neither.
    """
    if spec == STEADY:
        return None
    if spec in BUILT_IN:
        return parse(BUILT_IN[spec], spec)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError("", f"cannot read it ({exc})") from None
    return parse(text, path.name.removesuffix(".toml"))


def parse(text: str, default_name: str) -> Profile:
    """A profile from TOML text; every key checked."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError("", f"not TOML ({exc})") from None
    _known(doc, _TOP, "")
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,40}", name):
        raise ProfileError("name", "must be 1-40 letters, digits, '.', '_' or '-'")
    hours = _numbers(doc, "hours", 24, 0.0, 100.0)
    weekdays = _numbers(doc, "weekdays", 7, 0.0, 100.0)
    backdate = doc.get("backdate_days", 0)
    if not isinstance(backdate, int) or isinstance(backdate, bool):
        raise ProfileError("backdate_days", f"must be a whole number of days (got {backdate!r})")
    if not 0 <= backdate <= MAX_BACKDATE_DAYS:
        raise ProfileError("backdate_days", f"must be 0 to {MAX_BACKDATE_DAYS} (got {backdate})")
    _check_curve(hours, weekdays)
    raw = doc.get("burst", [])
    if not isinstance(raw, list) or not all(isinstance(b, dict) for b in raw):
        raise ProfileError("burst", "must be tables: [[burst]] ...")
    bursts = tuple(_burst(b, f"burst[{i}]") for i, b in enumerate(raw))
    return Profile(name, hours, weekdays, bursts, backdate)


def _known(table: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in keys:
            raise ProfileError(f"{where}{key}", f"unknown key (known: {', '.join(keys)})")


def _number(value: Any, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileError(key, f"must be a number (got {value!r})")
    if value < low:
        raise ProfileError(key, f"must not be below {low:g} (got {value:g})")
    if value > high:
        raise ProfileError(key, f"{value:g} is beyond the bound of {high:g}")
    return float(value)


def _numbers(doc: dict[str, Any], key: str, n: int, low: float, high: float) -> tuple[float, ...]:
    values = doc.get(key)
    if values is None:
        return (1.0,) * n
    if not isinstance(values, list) or len(values) != n:
        raise ProfileError(key, f"must be a list of {n} numbers")
    return tuple(_number(v, f"{key}[{i}]", low, high) for i, v in enumerate(values))


def _check_curve(hours: tuple[float, ...], weekdays: tuple[float, ...]) -> None:
    mean = sum(hours) / 24 * sum(weekdays) / 7
    if mean <= 0:
        raise ProfileError("hours", "the day-and-week curve is zero all week: no traffic at all")
    peak = max(hours) * max(weekdays) / mean
    if peak > MAX_MULTIPLIER:
        raise ProfileError(
            "hours",
            f"the curve's peak is {peak:.1f} times its mean, beyond the bound of "
            f"{MAX_MULTIPLIER:g}",
        )


def _burst(table: dict[str, Any], where: str) -> Burst:
    _known(table, _BURST, where + ".")
    if ("at" in table) == ("cron" in table):
        raise ProfileError(where, "give one of 'at' (times) or 'cron' (a schedule)")
    if "cron" in table:
        starts = cron(table["cron"], f"{where}.cron")
    else:
        starts = _at(table["at"], f"{where}.at")
    for key in ("minutes", "rate"):
        if key not in table:
            raise ProfileError(f"{where}.{key}", "missing")
    minutes = _number(table["minutes"], f"{where}.minutes", 0.0, MINUTES_PER_WEEK)
    if minutes <= 0:
        raise ProfileError(f"{where}.minutes", "must be above 0")

    def opt(key: str, high: float) -> float | None:
        return None if key not in table else _number(table[key], f"{where}.{key}", 0.0, high)

    return Burst(
        starts=starts,
        minutes=minutes,
        rate=_number(table["rate"], f"{where}.rate", 0.0, MAX_MULTIPLIER),
        inserts=opt("inserts", 1.0),
        wave_minutes=opt("wave_minutes", MINUTES_PER_WEEK) or 0.0,
        wave_rate=opt("wave_rate", MAX_MULTIPLIER),
        wave_updates=opt("wave_updates", 1.0),
    )


def _at(values: Any, key: str) -> tuple[int, ...]:
    """``["12:00", "Fri 20:30"]``: every day at 12:00, and Fridays at 20:30."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values:
        raise ProfileError(key, 'must be a list of times, e.g. ["12:00", "Fri 20:30"]')
    starts: set[int] = set()
    for v in values:
        m = re.fullmatch(r"(?:([A-Za-z]{3})\s+)?(\d{1,2}):(\d{2})", v if isinstance(v, str) else "")
        if m is None or int(m[2]) > 23 or int(m[3]) > 59:
            raise ProfileError(key, f"{v!r} is not a time like '12:00' or 'Fri 20:30'")
        day = m[1]
        if day is not None and day.lower() not in WEEKDAYS:
            raise ProfileError(key, f"{v!r}: {day!r} is not a weekday (Mon..Sun)")
        days = range(7) if day is None else [WEEKDAYS.index(day.lower())]
        starts.update(d * 1440 + int(m[2]) * 60 + int(m[3]) for d in days)
    return tuple(sorted(starts))


def cron(expr: Any, key: str = "cron") -> tuple[int, ...]:
    """The minutes of the week (from Monday 00:00) a cron expression fires at.

    Five fields, ``minute hour day-of-month month day-of-week``, each ``*``, ``*/n``,
    ``a``, ``a-b``, ``a-b/n`` or a list of those; day-of-week 0-7 (0 and 7: Sunday) or
    ``mon``..``sun``. Day-of-month and month must be ``*``: a profile repeats weekly.
    """
    fields = expr.split() if isinstance(expr, str) else []
    if len(fields) != 5:
        raise ProfileError(key, f"{expr!r} is not a cron schedule 'minute hour * * weekday'")
    if fields[2] != "*" or fields[3] != "*":
        raise ProfileError(key, "day of month and month must be '*': a profile repeats weekly")
    minutes = _field(fields[0], 0, 59, key, "minute")
    hours = _field(fields[1], 0, 23, key, "hour")
    days = {(d + 6) % 7 for d in _field(fields[4], 0, 7, key, "weekday")}  # Monday = 0
    return tuple(sorted(d * 1440 + h * 60 + m for d in days for h in hours for m in minutes))


def _field(text: str, low: float, high: int, key: str, what: str) -> set[int]:
    out: set[int] = set()
    names = {name: (i + 1) % 7 for i, name in enumerate(WEEKDAYS)} if what == "weekday" else {}
    for part in text.lower().split(","):
        m = re.fullmatch(r"(\*|\w+)(?:-(\w+))?(?:/(\d+))?", part)
        if m is None:
            raise ProfileError(key, f"{what} field {text!r} is not understood")
        step = int(m[3]) if m[3] else 1

        def value(token: str) -> int:
            if token in names:
                return names[token]
            if not token.isdigit() or not low <= int(token) <= high:
                raise ProfileError(key, f"{what} {token!r} is not in {low:g}-{high}")
            return int(token)

        if m[1] == "*":
            first, last = int(low), high
        else:
            first = value(m[1])
            last = value(m[2]) if m[2] else (high if m[3] else first)
        if step < 1 or last < first:
            raise ProfileError(key, f"{what} field {text!r} is an empty range")
        out.update(range(first, last + 1, step))
    return out
