"""``GET /v1/models`` and ``GET /v1/models/{id}``: the agents as model ids a client can pick."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from openclaw.agents.registry import AgentRegistry
from openclaw.errors import ModelNotFoundError
from openclaw.gateway.state import require_auth
from openclaw.gateway.wire import JSONResponse


def model_ids(agents: AgentRegistry) -> list[str]:
    return ["openclaw", "openclaw/default", *(f"openclaw/{agent_id}" for agent_id in agents.ids)]


class ModelsEndpoint:
    """The list never changes while the gateway runs, so it is rendered once."""

    def __init__(self, agents: AgentRegistry) -> None:
        created = int(time.time())
        self._models = {
            mid: {"id": mid, "object": "model", "created": created, "owned_by": "openclaw"}
            for mid in model_ids(agents)
        }
        self._list_body = JSONResponse({"object": "list", "data": list(self._models.values())}).body

    async def list(self, request: Request) -> Response:
        require_auth(request)
        return Response(self._list_body, media_type="application/json")

    async def retrieve(self, request: Request) -> Response:
        require_auth(request)
        model_id = request.path_params["model_id"]
        model = self._models.get(model_id)
        if model is None:
            raise ModelNotFoundError(f"The model `{model_id}` does not exist.", param="model")
        return JSONResponse(model)
