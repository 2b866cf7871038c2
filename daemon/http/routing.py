"""Which 2026-07-28 request a shared worker's message belongs to (pure policy, no I/O).

Over stdio a worker's messages share one channel. At 2026-07-28 the spec makes each kind
attributable, and lunad relies on exactly that instead of guessing:
- `notifications/progress` names its request's `progressToken` (lunad's own, per request);
- everything on a `subscriptions/listen` stream (the acknowledgement, change notifications,
  the final result) carries `_meta["io.modelcontextprotocol/subscriptionId"]`, the listen
  request's JSON-RPC id, which is lunad's id for it on the worker;
- `notifications/message` (logging) is sent only for a request whose `_meta` carries
  `io.modelcontextprotocol/logLevel`, on that request's stream, never on a listen stream.
  Nothing on the wire names the request, so lunad keeps at most one such request in flight
  per shared worker (ModernWorkers holds the others, up to WAIT, for a free log slot): the
  log messages then belong to that one. A request that waited WAIT in vain is sent anyway;
  while two that asked are in flight, their log messages are dropped, never misrouted (a
  server MAY omit them; failing the request would be worse);
- an `input_required` result's `requestState` may be sealed with a key only that worker
  process holds (the SDK's default is an ephemeral key), so the retry carrying it goes back
  to the worker that issued it.
Anything else (a notification no spec rule attributes) goes to the only ordinary request
in flight, if there is exactly one, else nowhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
LOG_LEVEL = "io.modelcontextprotocol/logLevel"
LISTEN = "subscriptions/listen"
LOG_MESSAGE = "notifications/message"


class Routed(Protocol):
    """What routing needs to know of a request in flight."""

    listen: bool  # a subscriptions/listen stream
    logs: bool  # it asked for log messages (logLevel in its _meta; not a listen)


def _params(message: Mapping[str, Any]) -> Mapping[str, Any]:
    params = message.get("params")
    return params if isinstance(params, dict) else {}


def _meta(holder: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = holder.get("_meta")
    return meta if isinstance(meta, dict) else {}


def wants_logs(request: Mapping[str, Any]) -> bool:
    """Whether a request opts in to `notifications/message` (and so wants a log slot). A
    listen stream never carries them, though the SDK client stamps logLevel on it too."""
    return request.get("method") != LISTEN and LOG_LEVEL in _meta(_params(request))


def echoed_state(request: Mapping[str, Any]) -> str | None:
    """The `requestState` a multi round-trip retry echoes back, if any."""
    state = _params(request).get("requestState")
    return state if isinstance(state, str) else None


def issued_state(answer: Mapping[str, Any]) -> str | None:
    """The `requestState` of an `input_required` result (the worker expects it back)."""
    result = answer.get("result")
    if not isinstance(result, dict) or result.get("resultType") != "input_required":
        return None
    state = result.get("requestState")
    return state if isinstance(state, str) else None


def owner(notification: Mapping[str, Any], in_flight: Mapping[int, Routed],
          by_token: Mapping[Any, int]) -> int | None:
    """lunad's id of the request a worker's notification belongs to, or None (dropped)."""
    params = _params(notification)
    token = params.get("progressToken")
    if token is not None:
        return by_token.get(token)
    subscription = _meta(params).get(SUBSCRIPTION_ID)
    if subscription is not None:
        found = in_flight.get(subscription) if type(subscription) is int else None
        return subscription if found is not None and found.listen else None
    if notification.get("method") == LOG_MESSAGE:
        logging = [ours for ours, request in in_flight.items() if request.logs]
        return logging[0] if len(logging) == 1 else None
    ordinary = [ours for ours, request in in_flight.items() if not request.listen]
    return ordinary[0] if len(ordinary) == 1 else None


def restamp(message: dict[str, Any], client_id: Any) -> None:
    """Give a listen-stream message (notification params or result) the client's id as its
    subscriptionId: the client demultiplexes its streams by the id it chose."""
    for key in ("params", "result"):
        holder = message.get(key)
        if isinstance(holder, dict):
            meta = holder.get("_meta")
            if isinstance(meta, dict) and SUBSCRIPTION_ID in meta:
                holder["_meta"] = {**meta, SUBSCRIPTION_ID: client_id}
