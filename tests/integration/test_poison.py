"""A processor that refuses one payment (a 4XX about that payment) must not
stall the queue nor be taken for down: the payment is parked as rejected, with
the reason, visible in GET /payments/{id} and /stats, never in the summary,
and an operator can send it through again (POST /payments/{id}/requeue)."""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest

from tools.clients import Backend, Processors
from tools.waiting import wait_until

pytestmark = pytest.mark.integration
EVERY = 3  # the stand-in refuses ids whose sha256 is a multiple of this


def poison(correlation_id: str) -> bool:
    """The stand-in's rule, written out again: the test's own oracle."""
    return int(hashlib.sha256(correlation_id.encode()).hexdigest(), 16) % EVERY == 0


def refuse(processors: Processors, every: int, status: int = 400) -> None:
    processors.http.put(f"{processors.urls['default']}/admin/configurations/refuse",
                        json={"every": every, "status": status}).raise_for_status()


def test_a_refused_payment_is_parked_and_can_be_requeued(clean: None, backend: Backend,
                                                          processors: Processors) -> None:
    refuse(processors, EVERY, 403)
    ids = [str(uuid.uuid4()) for _ in range(60)]
    for correlation_id in ids:
        assert backend.pay(10.0, correlation_id)[1].status_code == 202
    bad = [cid for cid in ids if poison(cid)]
    good = [cid for cid in ids if not poison(cid)]
    assert bad and good
    wait_until(lambda: backend.processed() == len(good) and backend.backlog() == 0, timeout=30,
               what="every good payment processed behind the refused ones", ignoring=httpx.HTTPError)

    stats = backend.stats()
    assert stats["queue"]["rejected"] == len(bad)
    for cid in bad:
        state = backend.http.get(f"/payments/{cid}").json()
        assert (state["state"], state["processor"]) == ("rejected", "default"), state
        assert "403" in state["reason"]
        assert processors.find("default", cid) is None and processors.find("fallback", cid) is None
    summary = backend.summary()
    assert summary["default"] == {"totalRequests": len(good), "totalAmount": 10.0 * len(good)}
    assert processors.summary("default")["totalRequests"] == len(good)
    assert summary["fallback"]["totalRequests"] == 0  # a refusal is not a reason to pay 15%

    # The operator fixes the cause and sends them through again.
    refuse(processors, 0)
    for cid in bad:
        answer = backend.http.post(f"/payments/{cid}/requeue")
        assert answer.status_code == 202 and answer.json()["state"] == "pending", answer.text
    wait_until(lambda: backend.processed() == len(ids), timeout=30, what="the requeued payments processed",
               ignoring=httpx.HTTPError)
    assert backend.stats()["queue"]["rejected"] == 0
    assert processors.summary("default")["totalRequests"] == len(ids)

    not_rejected = backend.http.post(f"/payments/{bad[0]}/requeue")
    assert not_rejected.status_code == 409 and "processed" in not_rejected.json()["error"]
    assert backend.http.post(f"/payments/{uuid.uuid4()}/requeue").status_code == 404
    assert backend.http.get(f"/payments/{bad[0]}/requeue").status_code == 405
    assert backend.http.post(f"/payments/{bad[0]}").status_code == 405
