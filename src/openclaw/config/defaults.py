"""Named defaults for every limit and timeout; the config can override each of them."""

from __future__ import annotations

GATEWAY_PORT = 18789
SHUTDOWN_TIMEOUT_MS = 10_000

AUTH_MAX_ATTEMPTS = 10
AUTH_WINDOW_MS = 60_000
AUTH_LOCKOUT_MS = 300_000

MAX_BODY_BYTES = 20 * 1024 * 1024
BODY_TIMEOUT_MS = 30_000
SSE_KEEPALIVE_MS = 15_000

MAX_IMAGE_PARTS = 8
MAX_TOTAL_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_MAX_BYTES = 10 * 1000 * 1000
IMAGE_MAX_REDIRECTS = 3
IMAGE_TIMEOUT_MS = 10_000
IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")

# Files given to a run (the Responses API's input_file, chat completions' file part): their
# text goes to the model.
FILE_MAX_BYTES = 5 * 1024 * 1024
FILE_MAX_CHARS = 60_000
MAX_FILE_PARTS = 8
FILE_TIMEOUT_MS = 10_000
FILE_MIMES = (
    "text/plain",
    "text/markdown",
    "text/html",
    "text/csv",
    "application/json",
    "application/pdf",
)
PDF_MAX_PAGES = 50

RESPONSES_RETENTION_DAYS = 30

# POST /v1/embeddings
EMBEDDINGS_MAX_INPUTS = 2048
EMBEDDINGS_MAX_INPUT_CHARS = 32_768
EMBEDDINGS_MAX_TOTAL_CHARS = 1_000_000
EMBEDDINGS_MAX_BODY_BYTES = 8 * 1024 * 1024

DEFAULT_AGENT_ID = "main"
AGENT_TIMEOUT_SECONDS = 600
BOOTSTRAP_MAX_CHARS = 20_000
MAX_HISTORY_MESSAGES = 100
MAX_CONCURRENT_RUNS = 32
MAX_QUEUED_RUNS = 256

PROVIDER_CONNECT_TIMEOUT_SECONDS = 10.0
PROVIDER_READ_TIMEOUT_SECONDS = 300.0
PROVIDER_MAX_RETRIES = 2

LOCAL_PROVIDER = "local"
LOCAL_MODEL = "gemma-3-270m"
LOCAL_CONTEXT_SIZE = 4096

EPHEMERAL_MAX_AGE_MS = 24 * 3600 * 1000
EPHEMERAL_MAX_COUNT = 1000
MAINTENANCE_INTERVAL_MS = 10 * 60 * 1000

TOOLS_PROFILE = "coding"
TOOLS_MAX_ROUNDS = 16
TOOLS_LOOP_MAX_REPEATS = 3
EXEC_ALLOW = ("ls", "cat", "head", "tail", "wc", "grep", "echo", "date", "pwd")
EXEC_TIMEOUT_SECONDS = 60.0
EXEC_MAX_OUTPUT_CHARS = 200_000
WEB_FETCH_TIMEOUT_SECONDS = 30.0
WEB_FETCH_MAX_CHARS = 50_000
WEB_FETCH_MAX_BYTES = 2_000_000
WEB_FETCH_MAX_REDIRECTS = 3
WEB_FETCH_CACHE_SECONDS = 900
# POST /tools/invoke: tools that change the host stay off the HTTP door unless allowed there.
HTTP_TOOLS_DENY = ("exec", "write", "edit", "apply_patch", "sessions_send", "sessions_spawn")
TOOLS_INVOKE_MAX_BODY_BYTES = 2 * 1024 * 1024
