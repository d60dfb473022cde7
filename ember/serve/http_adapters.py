"""Ray 2.5's HTTP adapters: functions that turn an HTTP request into the input of a deployment
graph (``DAGDriver.bind(graph, http_adapter=json_request)``).

The driver calls an adapter with what its parameters ask for, by FastAPI's rules (Ray resolved
adapters with FastAPI's dependency injection): a parameter annotated
``starlette.requests.Request`` (or not annotated) gets the request, ``bytes`` the raw body (or
the uploaded file of that name, for a multipart form), a scalar (``def parse_query_args(field_a:
int, field_b: str)``) the query parameter of its name, and any other annotation (a pydantic
model, ``dict[str, NdArray]``, ``list[float]``, ...) the JSON body validated against it;
FastAPI's ``Query``, ``Header``, ``Cookie``, ``Body``, ``Form`` and ``File`` markers work too
(``ember/serve/_adapter_params.py`` has the rules). A request that lacks a parameter, or whose
body is not JSON or does not match, is answered ``422`` with what was wrong, as FastAPI does.

This module needs pydantic (it comes with the ``serve`` extra); numpy, pandas and Pillow
load when the adapter that needs them first runs.
"""

from __future__ import annotations

import io
from typing import Any, Optional, Union

from pydantic import BaseModel, Field

from ember.errors import EmberError

__all__ = [
    "NdArray",
    "image_to_ndarray",
    "json_request",
    "json_to_multi_ndarray",
    "json_to_ndarray",
    "pandas_read_json",
    "starlette_request",
]

_1DArray = list[float]
_2DArray = list[list[float]]
_3DArray = list[list[list[float]]]
_4DArray = list[list[list[list[float]]]]


class BadRequestBody(EmberError, ValueError):
    """The request's body cannot be what the adapter needs: the driver answers 422."""


class NdArray(BaseModel):
    """The JSON body of a numeric array: ``{"array": [[1, 2], [3, 4]]}``, optionally with
    ``"shape"`` (the array is reshaped to it, so it may come flattened) and ``"dtype"``."""

    array: Union[_1DArray, _2DArray, _3DArray, _4DArray] = Field(  # noqa: UP007 (pydantic)
        ..., description="The array as a nested list (1 to 4 dimensions), or flattened "
                         "with its shape given.")
    shape: Optional[list[int]] = Field(  # noqa: UP045 (pydantic evaluates it on 3.10)
        default=None, description="The shape to reshape the array to.")
    dtype: Optional[str] = Field(  # noqa: UP045
        default=None, description="The numpy dtype of the array, e.g. 'float32'.")


def starlette_request(request: Any) -> Any:
    """The request itself (the driver's default adapter): the graph gets a Starlette
    ``Request``."""
    return request


async def json_request(request: Any) -> Any:
    """The request's JSON body, parsed (``422`` if it is not JSON)."""
    import json

    body = await request.body()
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadRequestBody(f"the request body is not JSON ({exc}); send a JSON body, e.g. "
                             "curl -d '{\"x\": 1}'") from None


def json_to_ndarray(payload: NdArray) -> Any:
    """An ``NdArray`` JSON body as a numpy array (reshaped to ``shape``, cast to ``dtype``)."""
    import numpy as np

    array = np.array(payload.array)
    if payload.shape:
        array = array.reshape(payload.shape)
    if payload.dtype:
        array = array.astype(payload.dtype)
    return array


def json_to_multi_ndarray(payload: dict[str, NdArray]) -> dict[str, Any]:
    """A JSON object of ``NdArray``s (``{"a": {"array": [...]}, ...}``) as numpy arrays by
    name."""
    return {name: json_to_ndarray(value) for name, value in payload.items()}


async def pandas_read_json(raw_df: Any) -> Any:
    """The JSON body as a ``pandas.DataFrame`` (``pandas.read_json``)."""
    import pandas as pd

    body = await raw_df.body()
    try:
        return pd.read_json(io.BytesIO(body))
    except ValueError as exc:
        raise BadRequestBody(f"the request body is not a JSON table pandas can read: {exc}"
                             ) from None


def image_to_ndarray(img: bytes) -> Any:
    """An image file (PNG, JPEG, ...) as a numpy array (needs Pillow): the form field ``img``
    of a multipart upload, as Ray's took it (``curl -F img=@cat.png``), or the whole body."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        return np.array(Image.open(io.BytesIO(img)))
    except UnidentifiedImageError as exc:
        raise BadRequestBody(f"the request body is not an image Pillow can read: {exc}"
                             ) from None
