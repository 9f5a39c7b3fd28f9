"""``GET /v1/models`` and ``GET /v1/models/{id}``: the agents as model ids a client can pick.

``created`` is when this state dir first served them (kept in ``<state>/models.json``), so it is
the same across restarts, as a model's creation date should be.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from openclaw.agents.registry import AgentRegistry
from openclaw.errors import InvalidRequestError, ModelNotFoundError
from openclaw.gateway.state import require_auth
from openclaw.gateway.wire import JSONResponse
from openclaw.paths import PRIVATE_FILE, make_private_dir
from openclaw.sessions.keys import is_valid_key

CREATED_FILE = "models.json"
MAX_ID_LENGTH = 256


def model_ids(agents: AgentRegistry) -> list[str]:
    return ["openclaw", "openclaw/default", *(f"openclaw/{agent_id}" for agent_id in agents.ids)]


def first_served(state_dir: Path) -> int:
    """When this state dir first served its models: read, or recorded now (at start-up)."""
    path = state_dir / CREATED_FILE
    try:
        created = json.loads(path.read_text())["created"]
        if isinstance(created, int) and created > 0:
            return created
    except (OSError, ValueError, KeyError, TypeError):
        pass
    created = int(time.time())
    try:
        make_private_dir(state_dir)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"created": created}))
        tmp.replace(path)
    except OSError:
        pass  # a read-only state dir: the start time, then
    return created


class ModelsEndpoint:
    """The list never changes while the gateway runs, so it is rendered once."""

    def __init__(self, agents: AgentRegistry, created: int) -> None:
        self._models = {
            mid: {"id": mid, "object": "model", "created": created, "owned_by": "openclaw"}
            for mid in model_ids(agents)
        }
        self._list_body = JSONResponse({"object": "list", "data": list(self._models.values())}).body

    async def list(self, request: Request) -> Response:
        await require_auth(request)
        return Response(self._list_body, media_type="application/json")

    async def retrieve(self, request: Request) -> Response:
        await require_auth(request)
        # The path parameter arrives URL-decoded ("openclaw%2Fbeta" is "openclaw/beta").
        model_id = request.path_params["model_id"]
        if not model_id or len(model_id) > MAX_ID_LENGTH or not is_valid_key(model_id):
            raise InvalidRequestError("Invalid model id.", param="model")
        model = self._models.get(model_id)
        if model is None:
            raise ModelNotFoundError(f"The model `{model_id}` does not exist.", param="model")
        return JSONResponse(model)
