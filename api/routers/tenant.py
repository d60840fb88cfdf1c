"""The caller's own tenant settings: default webhook, webhook secret, artifact retention."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError

from api.deps import OwnerDep, SessionDep, SettingsDep
from api.schemas import TenantSettingsOut, TenantSettingsPatch, WebhookSecretOut
from core.settings import Settings
from core.webhooks import CallbackRefused, check_callback_url
from storage import tenants

router = APIRouter(prefix="/v1/tenant", tags=["tenant"])


def checked_callback_url(url: str | None, settings: Settings, where: tuple = ("body", "callback_url")) -> str | None:
    """A 422 naming the fix when the webhook target is refused (private address, credentials, not http)."""
    if url is None:
        return None
    try:
        return check_callback_url(url, settings)
    except CallbackRefused as exc:
        raise RequestValidationError([{"loc": where, "type": "value_error", "msg": str(exc)}]) from None


def _out(session, owner: str, settings: Settings) -> TenantSettingsOut:
    row = tenants.get(session, owner)
    return TenantSettingsOut(tenant=owner, callback_url=row.callback_url if row else None,
                             artifact_retention_days=row.artifact_retention_days if row else None,
                             service_artifact_retention_days=settings.artifact_retention_days,
                             webhook_secret_set=row is not None)


@router.get("/settings", response_model=TenantSettingsOut)
def get_tenant_settings(session: SessionDep, owner: OwnerDep, settings: SettingsDep) -> TenantSettingsOut:
    """This tenant's settings (never the webhook secret)."""
    return _out(session, owner, settings)


@router.patch("/settings", response_model=TenantSettingsOut)
def update_tenant_settings(body: TenantSettingsPatch, session: SessionDep, owner: OwnerDep,
                           settings: SettingsDep) -> TenantSettingsOut:
    """Set the fields given: `callback_url` (the webhook of jobs submitted without one; checked like a job's),
    `artifact_retention_days` (overrides the service's for this tenant); null sets a field back to the default."""
    values = body.model_dump(include=body.model_fields_set)
    if values.get("callback_url") is not None:
        checked_callback_url(values["callback_url"], settings)
    tenants.update(session, owner, values)
    return _out(session, owner, settings)


@router.post("/webhook-secret", response_model=WebhookSecretOut)
def rotate_webhook_secret(session: SessionDep, owner: OwnerDep) -> WebhookSecretOut:
    """A new webhook signing secret, shown only in this answer; deliveries from now on are signed with it."""
    return WebhookSecretOut(webhook_secret=tenants.rotate_secret(session, owner))
