"""What the market offers now, from the scheduler's candidates (verified hardware only), the task
queue and recent throughput; and a one-point-a-minute history of it for charts."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from coordinator.market.classes import device_class, sort_key
from coordinator.market.throughput import Rate
from coordinator.scheduling.rules import Candidate


def quantile(sorted_values: Sequence[int], q: float) -> int:
    """The nearest-rank ``q`` quantile of ascending ``sorted_values`` (0 when empty)."""
    if not sorted_values:
        return 0
    k = min(len(sorted_values) - 1, max(0, int(-(-q * len(sorted_values) // 1)) - 1))
    return sorted_values[k]


@dataclass(frozen=True)
class ClassMarket:
    key: str
    label: str
    providers: int
    slots_total: int
    slots_free: int
    price_min: int
    price_p10: int
    price_p50: int
    price_p90: int
    tokens_per_s: float
    samples: int
    speed: float
    memory_mb: int
    tier: str


@dataclass(frozen=True)
class FallbackUsage:
    centralized_providers: int = 0
    tasks_on_centralized: int = 0
    tasks_routed: int = 0
    instances_live: int = 0


@dataclass(frozen=True)
class MarketPoint:
    at: float
    queue_depth: int
    running: int
    slots_free: int
    price_p50: dict[str, int] = field(default_factory=dict)
    tokens_per_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MarketView:
    generated_at: float
    classes: tuple[ClassMarket, ...]
    providers: int
    queue_depth: int
    running: int
    fallback: FallbackUsage
    history: tuple[MarketPoint, ...] = ()

    def as_dict(self) -> dict:
        """JSON-ready; amounts as decimal strings (uint256 in the chain's terms)."""
        d = asdict(self)
        for c in d["classes"]:
            for k in ("price_min", "price_p10", "price_p50", "price_p90"):
                c[k] = str(c[k])
        for p in d["history"]:
            p["price_p50"] = {k: str(v) for k, v in p["price_p50"].items()}
        return d


def by_class(candidates: Sequence[Candidate]) -> dict[str, list[Candidate]]:
    """Eligible candidates grouped by the class of their verified devices."""
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        if c.eligible:
            groups.setdefault(device_class(c.gpus).key, []).append(c)
    return groups


def market_view(candidates: Sequence[Candidate], *, queued: int, running: int, rates: Mapping[str, Rate],
                fallback: FallbackUsage, now: float, slots: Mapping[str, int] | None = None,
                history: Sequence[MarketPoint] = ()) -> MarketView:
    """``slots``: each provider's total slots (default: its free ones)."""
    slots = slots or {}
    classes = []
    for key, members in by_class(candidates).items():
        prices = sorted(c.price_per_hour for c in members)
        tiers = {c.tier for c in members}
        rate = rates.get(key)
        cls = device_class(members[0].gpus)
        classes.append(ClassMarket(
            key=key, label=cls.label, providers=len(members),
            slots_total=sum(max(slots.get(c.provider_id, 0), c.free_slots) for c in members),
            slots_free=sum(max(0, c.free_slots) for c in members),
            price_min=prices[0], price_p10=quantile(prices, 0.1), price_p50=quantile(prices, 0.5),
            price_p90=quantile(prices, 0.9), tokens_per_s=round(rate.tokens_per_s, 2) if rate else 0.0,
            samples=rate.samples if rate else 0, speed=members[0].speed,
            memory_mb=max((g.memory_total_mb for c in members for g in c.gpus), default=0),
            tier=tiers.pop() if len(tiers) == 1 else "MIXED"))
    classes.sort(key=lambda c: sort_key(c.key))
    return MarketView(now, tuple(classes), sum(c.providers for c in classes), queued, running, fallback,
                      tuple(history))


class MarketHistory:
    """The last ``points`` minutes of the view, one point per ``every_s`` (in memory)."""

    def __init__(self, *, every_s: float = 60.0, points: int = 24 * 60) -> None:
        self.every_s = every_s
        self._points: deque[MarketPoint] = deque(maxlen=points)

    def due(self, now: float) -> bool:
        return not self._points or now - self._points[-1].at >= self.every_s

    def add(self, view: MarketView) -> None:
        self._points.append(MarketPoint(
            view.generated_at, view.queue_depth, view.running, sum(c.slots_free for c in view.classes),
            {c.key: c.price_p50 for c in view.classes}, {c.key: c.tokens_per_s for c in view.classes if c.samples}))

    def points(self) -> tuple[MarketPoint, ...]:
        return tuple(self._points)
