"""What the service can do (method schemas, preset recipes) and what the tenant stores (usage)."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api.deps import OwnerDep, SessionDep, SettingsDep
from api.schemas import ErrorOut, RecipeOut, UsageOut
from compression.registry import RECIPES, method_schemas
from storage import tenants
from storage.usage import active_jobs, usage_by_kind

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/methods")
def list_methods() -> dict[str, dict]:
    """JSON Schema of every method spec, keyed by its `kind`."""
    return method_schemas()


@router.get("/recipes", response_model=list[RecipeOut])
def list_recipes() -> list[RecipeOut]:
    return [RecipeOut(name=r.name, description=r.description, stages=r.stages) for r in RECIPES.values()]


@router.get("/recipes/{name}", response_model=RecipeOut, responses={404: {"model": ErrorOut, "description": "unknown recipe"}})
def get_recipe(name: str) -> RecipeOut:
    r = RECIPES.get(name)
    if r is None:
        raise HTTPException(404, f"recipe {name!r} not found")
    return RecipeOut(name=r.name, description=r.description, stages=r.stages)


@router.get("/usage", response_model=UsageOut)
def get_usage(session: SessionDep, owner: OwnerDep, settings: SettingsDep) -> UsageOut:
    """Bytes stored by kind against the quota, active jobs, and the artifact retention (the tenant's own, else
    the service's)."""
    kinds = usage_by_kind(session, owner)
    return UsageOut(used_bytes=sum(k["bytes"] for k in kinds.values()), quota_bytes=settings.tenant_storage_quota_bytes,
                    **kinds, active_jobs=active_jobs(session, owner),
                    artifact_retention_days=tenants.retention_days(session, owner, settings.artifact_retention_days))
