"""Webhooks: when a job with a callback_url finishes, its job document is POSTed there, signed with the
tenant's secret, retried with exponential backoff; every attempt is logged on the job.

A target must resolve to public addresses only, unless the operator allow-lists it
(MODELPRESS_WEBHOOK_ALLOW_HOSTS): checked at submit (a 422 that says so) and again on every attempt against
fresh DNS answers, and the request goes to the very address that was checked, so a name cannot be pointed
at a private address between the check and the connection. Redirects are never followed; proxies from the
environment are not used (the checked address is the one connected to)."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as ResolveTimeout
from dataclasses import dataclass
from datetime import timedelta

import httpx

from core.documents import webhook_body
from core.runtime import Runtime
from core.settings import Settings
from storage import tenants
from storage.models import CallbackStatus, Job, utcnow
from storage.retry import with_db_retry
from storage.webhooks import PENDING, record_attempt

log = logging.getLogger(__name__)

EVENT = "job.finished"
ALLOW_SETTING = "MODELPRESS_WEBHOOK_ALLOW_HOSTS"
MAX_BACKOFF_S = 3600.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


class CallbackRefused(ValueError):
    """A target no retry can fix: not http(s), credentials in it, or an address that is not public."""


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    host: str
    port: int
    literal: bool   # the host is an IP address, not a name


def parse_target(url: str) -> Target:
    try:
        parsed = httpx.URL(url)
        host = parsed.host
    except (httpx.InvalidURL, ValueError) as exc:
        raise CallbackRefused(f"callback_url is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise CallbackRefused("callback_url must be an http:// or https:// URL with a host")
    if parsed.userinfo:
        raise CallbackRefused("callback_url must not carry credentials (user:password@); put a token in its path "
                              "or query, or verify the X-Modelpress-Signature header")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return Target(parsed, host.lower(), port, _literal(host) is not None)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def not_public(ip: IPAddress) -> str | None:
    """What the address is when it is not a public one ("a loopback", ...); None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for attr in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{attr}"):
            return ("an " if attr[0] == "u" else "a ") + attr.replace("_", "-")
    return None if ip.is_global else "a non-global"


def resolve(target: Target, timeout: float) -> list[IPAddress]:
    """Every address of the host (OSError when it does not resolve in time)."""
    literal = _literal(target.host)
    if literal is not None:
        return [literal]
    try:
        infos = _resolver.submit(socket.getaddrinfo, target.host, target.port, type=socket.SOCK_STREAM
                                 ).result(timeout=timeout)
    except ResolveTimeout:
        raise OSError(f"no DNS answer in {timeout:.0f} s") from None
    except (UnicodeError, ValueError) as exc:
        raise OSError(str(exc)) from None
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


def _allowed(target: Target, ip: IPAddress, allow: list[str]) -> bool:
    for entry in allow:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:   # a host name entry
            if entry.lower() == target.host:
                return True
    return False


def checked_addresses(target: Target, allow: list[str], timeout: float) -> list[IPAddress]:
    """The host's addresses, every one public or allow-listed; CallbackRefused names the first that is not."""
    addresses = resolve(target, timeout)
    for ip in addresses:
        why = not_public(ip)
        if why and not _allowed(target, ip, allow):
            where = f"is {why} address" if target.literal else f"resolves to {ip}, {why} address"
            raise CallbackRefused(f"callback_url host {target.host} {where}; webhooks go to public addresses only "
                                  f"(an operator can allow hosts or networks with {ALLOW_SETTING})")
    return addresses


def check_callback_url(url: str, settings: Settings) -> str:
    """At submit and in tenant settings: the URL as given, or CallbackRefused (a host that does not resolve too)."""
    target = parse_target(url)
    try:
        checked_addresses(target, settings.webhook_allow_hosts, settings.webhook_timeout_s)
    except OSError as exc:
        raise CallbackRefused(f"callback_url host {target.host} does not resolve ({exc})") from None
    return url


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """X-Modelpress-Signature: HMAC-SHA256 over "<timestamp>." followed by the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def headers(secret: str, body: bytes, delivery_id: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {"Content-Type": "application/json", "User-Agent": "modelpress-webhook/0.1",
            "X-Modelpress-Event": EVENT, "X-Modelpress-Delivery": delivery_id,
            "X-Modelpress-Timestamp": timestamp, "X-Modelpress-Signature": sign(secret, timestamp, body)}


def post(target: Target, ip: IPAddress, body: bytes, hdrs: dict[str, str], timeout: float) -> int:
    """POST to the checked address; the name still goes in Host and TLS SNI (so certificates verify)."""
    extensions = {} if target.literal else {"sni_hostname": target.host}
    hdrs = {**hdrs, "Host": target.url.netloc.decode("ascii")}
    url = target.url.copy_with(host=str(ip))
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client, \
            client.stream("POST", url, content=body, headers=hdrs, extensions=extensions) as resp:
        return resp.status_code   # the body is never read


def backoff(settings: Settings, attempt: int) -> float:
    return min(settings.webhook_backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)


def _attempt(settings: Settings, job: Job, secret: str, entry: dict) -> bool:
    """One POST; fills entry's status_code / error. -> True when no retry can help (a refused target)."""
    body = webhook_body(job)
    try:
        target = parse_target(job.callback_url)
        ip = checked_addresses(target, settings.webhook_allow_hosts, settings.webhook_timeout_s)[0]
        code = entry["status_code"] = post(target, ip, body, headers(secret, body, f"{job.id}:{EVENT}"),
                                           settings.webhook_timeout_s)
        if not 200 <= code < 300:
            entry["error"] = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
    except CallbackRefused as exc:
        entry["error"] = str(exc)
        return True
    except (httpx.HTTPError, OSError) as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
    return False


def deliver_once(rt: Runtime, job_id: str) -> float | None:
    """One attempt at a job's pending delivery. -> seconds until the next attempt; None when none follows
    (delivered, given up, or nothing pending: a duplicate message)."""
    def load() -> tuple[Job | None, str | None]:
        with rt.sessions() as s:
            job = s.get(Job, job_id)
            if job is None or job.callback_status != PENDING or not job.callback_url:
                return None, None
            return job, tenants.webhook_secret(s, job.owner)

    job, secret = with_db_retry(load)
    if job is None:
        return None
    settings = rt.settings
    attempt = len(job.callback_log or []) + 1
    entry: dict = {"attempt": attempt, "at": utcnow().isoformat(), "status_code": None, "error": None}
    started = time.monotonic()
    permanent = _attempt(settings, job, secret, entry)
    entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    delay = None if entry["error"] is None or permanent or attempt >= settings.webhook_max_attempts \
        else backoff(settings, attempt)
    status = CallbackStatus.delivered if entry["error"] is None else \
        CallbackStatus.pending if delay is not None else CallbackStatus.failed
    entry["next_attempt_in_s"] = delay
    due = utcnow() + timedelta(seconds=delay) if delay is not None else None

    def record() -> bool:
        with rt.sessions() as s:
            return record_attempt(s, job_id, entry, status, due)

    if not with_db_retry(record):
        return None
    log.info("webhook %s attempt %d for %s: %s", status.value, attempt, job_id, entry["error"] or entry["status_code"])
    return delay


def announce(rt: Runtime, job_ids: list[str]) -> None:
    """Send the pending deliveries of jobs that just finished; a broker failure is left to the reaper."""
    for job_id in job_ids:
        try:
            rt.enqueue_webhook(job_id)
        except Exception:
            log.warning("broker unavailable while queueing the webhook of %s; the reaper will retry", job_id,
                        exc_info=True)
