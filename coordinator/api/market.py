"""The market's domain objects as protobuf messages (GetMarket, QuoteJob, Job.quote)."""

from __future__ import annotations

from coordinator.market.quote import Quote
from coordinator.market.view import MarketView
from gpumesh._convert import timestamp
from gpumesh.v1 import jobs_pb2


def market_to_proto(v: MarketView) -> jobs_pb2.MarketView:
    out = jobs_pb2.MarketView(generated_at=timestamp(v.generated_at), providers=v.providers,
                              queue_depth=v.queue_depth, running=v.running,
                              fallback=jobs_pb2.FallbackUsage(**vars(v.fallback)))
    for c in v.classes:
        out.classes.append(jobs_pb2.GpuClassMarket(
            key=c.key, label=c.label, providers=c.providers, slots_total=c.slots_total, slots_free=c.slots_free,
            price_min=str(c.price_min), price_p10=str(c.price_p10), price_p50=str(c.price_p50),
            price_p90=str(c.price_p90), tokens_per_s=c.tokens_per_s, samples=c.samples, speed=c.speed,
            memory_mb=c.memory_mb, tier=c.tier))
    for p in v.history:
        point = out.history.add(at=p.at, queue_depth=p.queue_depth, running=p.running, slots_free=p.slots_free)
        point.price_p50.update({k: str(x) for k, x in p.price_p50.items()})
        point.tokens_per_s.update(p.tokens_per_s)
    return out


def quote_to_proto(q: Quote) -> jobs_pb2.Quote:
    return jobs_pb2.Quote(
        requests=q.requests, tasks=q.tasks, prompt_tokens=q.prompt_tokens, output_tokens=q.output_tokens,
        cost_low=str(q.cost_low), cost_expected=str(q.cost_expected), cost_high=str(q.cost_high), eta_s=q.eta_s,
        classes=[jobs_pb2.QuoteClass(key=c.key, label=c.label, providers=c.providers,
                                     price_per_hour=str(c.price_per_hour), eta_s=c.eta_s, cost=str(c.cost),
                                     meets_deadline=c.meets_deadline, chosen=c.chosen, tier=c.tier)
                 for c in q.classes],
        fallback_needed=q.fallback_needed, fallback_reason=q.fallback_reason, servable=q.servable, reason=q.reason,
        deadline_s=int(q.deadline_s), verification_share=q.verification_share, basis=q.basis,
        quoted_at=timestamp(q.quoted_at))


def quote_dict_to_proto(d: dict) -> jobs_pb2.Quote:
    """A quote as a job's event keeps it (``Quote.as_dict``) back as the message."""
    return jobs_pb2.Quote(
        requests=int(d.get("requests", 0)), tasks=int(d.get("tasks", 0)), prompt_tokens=int(d.get("prompt_tokens", 0)),
        output_tokens=int(d.get("output_tokens", 0)), cost_low=str(d.get("cost_low", "")),
        cost_expected=str(d.get("cost_expected", "")), cost_high=str(d.get("cost_high", "")),
        eta_s=float(d.get("eta_s", 0.0)), fallback_needed=bool(d.get("fallback_needed")),
        fallback_reason=str(d.get("fallback_reason", "")), servable=bool(d.get("servable")),
        reason=str(d.get("reason", "")), deadline_s=int(d.get("deadline_s") or 0),
        verification_share=float(d.get("verification_share", 0.0)), basis=str(d.get("basis", "")),
        quoted_at=timestamp(float(d.get("quoted_at", 0.0))),
        classes=[jobs_pb2.QuoteClass(key=c["key"], label=c["label"], providers=c["providers"],
                                     price_per_hour=c["price_per_hour"], eta_s=c["eta_s"], cost=c["cost"],
                                     meets_deadline=c["meets_deadline"], chosen=c["chosen"], tier=c["tier"])
                 for c in d.get("classes", ())])
