"""What the service can do: method schemas and preset recipes."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api.schemas import ErrorOut, RecipeOut
from compression.registry import RECIPES, method_schemas

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
