"""The typed path's overhead: ``manager.enqueue(jt, model)`` against ``manager.submit``.

Prints the median of several rounds of N submissions each way, on the memory backend (no
workers: this measures what a producer pays), and the median of the per-round ratios
(each round runs both ways back to back, so a slow spell of the machine hits both).
The issue's bound: the typed path costs at most 2x the untyped one.

Run: ``python benchmarks/bench_typed.py [--jobs N] [--runs R]``
"""

from __future__ import annotations

import argparse
import statistics
import time

from pydantic import BaseModel

from typedq import JobQueueManager
from typedq.typed import JobType


class Item(BaseModel):
    sku: str
    qty: int
    price: float


class Order(BaseModel):
    order_id: str
    customer: str
    email: str
    country: str
    currency: str
    total: float
    paid: bool
    notes: str
    priority: int
    channel: str
    items: list[Item]
    tags: list[str]


def sample() -> Order:
    return Order(
        order_id="o-1001", customer="Ada Lovelace", email="ada@example.org", country="GB",
        currency="GBP", total=99.5, paid=True, notes="leave at the door", priority=2,
        channel="web", items=[Item(sku=f"sku-{i}", qty=i, price=9.95) for i in range(3)],
        tags=["gift", "express"],
    )


def run(jobs: int, typed: bool) -> float:
    manager = JobQueueManager()
    order_jt = JobType("order", Order, result=str)
    manager.register(order_jt, lambda o: o.order_id)
    order = sample()
    data = order.model_dump(mode="json")
    start = time.perf_counter()
    if typed:
        for _ in range(jobs):
            manager.enqueue(order_jt, order)
    else:
        for _ in range(jobs):
            manager.submit("order", data)
    elapsed = time.perf_counter() - start
    manager.close()
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    untyped, typed = [], []
    for _ in range(args.runs):  # interleaved, so machine noise hits both alike
        untyped.append(run(args.jobs, typed=False))
        typed.append(run(args.jobs, typed=True))
    u, t = statistics.median(untyped), statistics.median(typed)
    size = len(sample().model_dump_json())
    print(f"median of {args.runs} runs x {args.jobs} jobs, payload {size} B as JSON")
    print(f"{'path':<34}{'jobs/s':>12}{'us/job':>10}")
    print(f"{'submit(job_type, dict)':<34}{u:>12,.0f}{1e6 / u:>10.2f}")
    print(f"{'enqueue(JobType, model)':<34}{t:>12,.0f}{1e6 / t:>10.2f}")
    ratios = [a / b for a, b in zip(untyped, typed, strict=True)]
    ratio = statistics.median(ratios)
    print(f"per-round ratios: {min(ratios):.2f}x..{max(ratios):.2f}x")
    print(f"typed / untyped cost: {ratio:.2f}x  [{'met' if ratio <= 2.0 else 'MISSED'}: <= 2x]")


if __name__ == "__main__":
    main()
