"""``POST /v1/embeddings``: OpenAI's embeddings API, answered by an agent's embedding model.

``model`` names the agent (``openclaw``, ``openclaw/<agentId>``, as on the other endpoints); its
embedding model (``agents.defaults.embeddings.model``, per agent too) answers, else the embedded
local model, which needs no network and no key.  ``x-openclaw-model`` picks another allowed
model.  Inputs: a string, strings, or token arrays; identical inputs are computed once and the
whole batch goes to the model in one call.  Usage is what the model really counted.
"""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from openclaw.config import defaults as d
from openclaw.errors import InvalidRequestError
from openclaw.gateway.body import read_body
from openclaw.gateway.http.chat_request import MODEL_HEADER, agent_from_model, header_agent
from openclaw.gateway.state import GatewayState, require_auth
from openclaw.logs import get_logger

log = get_logger("embeddings")

LOCAL_EMBEDDINGS = f"{d.LOCAL_PROVIDER}/{d.LOCAL_MODEL}"


TokenId = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    model: StrictStr
    input: StrictStr | list[StrictStr] | list[TokenId] | list[list[TokenId]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[StrictInt, Field(ge=1, le=65536)] | None = None
    user: StrictStr | None = None


def _parse(body: bytes) -> EmbeddingsRequest:
    try:
        return EmbeddingsRequest.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise InvalidRequestError("The request body is not valid JSON.") from None
        if not err["loc"]:
            raise InvalidRequestError("The request body must be a JSON object.") from None
        top = str(err["loc"][0])
        if err["type"] == "missing":
            raise InvalidRequestError(f"Missing required parameter: '{top}'.", param=top) from None
        what = {
            "input": "a string, an array of strings, or token arrays",
            "encoding_format": "`float` or `base64`",
            "dimensions": "an integer from 1 to 65536",
            "model": "a string",
        }.get(top, "valid")
        raise InvalidRequestError(f"`{top}` must be {what}.", param=top) from None


def _inputs(raw: str | list[str] | list[int] | list[list[int]]) -> list[str | tuple[int, ...]]:
    if isinstance(raw, str):
        return [raw]
    out: list[str | tuple[int, ...]] = []
    tokens: list[int] = []
    for item in raw:
        if isinstance(item, int):
            tokens.append(item)  # one token array
        else:
            out.append(item if isinstance(item, str) else tuple(item))
    return [tuple(tokens)] if tokens else out


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "float":
        return vector
    # OpenAI's base64: the little-endian float32 array.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


class EmbeddingsEndpoint:
    def __init__(self, gw: GatewayState) -> None:
        self.gw = gw
        http = gw.config.gateway.http
        self.cfg = http.endpoints.embeddings
        self.body_timeout = http.body_timeout_ms / 1000

    async def handle(self, request: Request) -> Response:
        await require_auth(request)
        body = await read_body(request, limit=self.cfg.max_body_bytes, timeout=self.body_timeout)
        req = _parse(body)
        if req.model_extra:
            log.debug("ignored fields", extra={"fields": sorted(req.model_extra)})
        ref = self._model(request, req)
        inputs = self._checked(_inputs(req.input))
        unique = list(dict.fromkeys(inputs))  # each distinct input computed once
        result = await self.gw.runtime.providers.embed(ref, unique, req.dimensions)
        by_input = dict(zip(unique, result.vectors, strict=True))
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _encode(by_input[x], req.encoding_format),
            }
            for i, x in enumerate(inputs)
        ]
        answer: dict[str, Any] = {
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    def _model(self, request: Request, req: EmbeddingsRequest) -> str:
        """The embedding model that answers: ``x-openclaw-model`` if allowed, else the agent's."""
        agent = self.gw.runtime.agents.get(header_agent(request) or agent_from_model(req.model))
        own = agent.embedding_model or LOCAL_EMBEDDINGS
        name = request.headers.get(MODEL_HEADER, "").strip()
        if not name:
            return own
        if name == own:
            return own
        return agent.pick_model(name)

    def _checked(self, inputs: list[str | tuple[int, ...]]) -> list[str | tuple[int, ...]]:
        cfg = self.cfg
        if not inputs:
            raise InvalidRequestError("`input` must not be empty.", param="input")
        if len(inputs) > cfg.max_inputs:
            raise InvalidRequestError(
                f"`input` has {len(inputs)} items; at most {cfg.max_inputs} are allowed.",
                param="input",
            )
        total = 0
        for i, item in enumerate(inputs):
            if len(item) == 0:
                raise InvalidRequestError(f"`input[{i}]` is empty.", param="input")
            if len(item) > cfg.max_input_chars:
                raise InvalidRequestError(
                    f"`input[{i}]` is longer than {cfg.max_input_chars} characters.",
                    param="input",
                )
            total += len(item)
        if total > cfg.max_total_chars:
            raise InvalidRequestError(
                f"`input` totals more than {cfg.max_total_chars} characters.", param="input"
            )
        return inputs
