"""The real `openclaw gateway run` in its own process, for the tests that need one (start-up,
signals, crashes)."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.upstream import FakeUpstream

TOKEN = "process-test-token"


def _limit_open_files(limits: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


class GatewayProcess:
    def __init__(
        self,
        tmp: Path,
        config: dict,
        *,
        extra_env: dict | None = None,
        nofile: tuple[int, int] | None = None,
    ) -> None:
        self.config_path = tmp / "openclaw.json"
        self.state_dir = tmp / "state"
        self.config_path.write_text(json.dumps(config))
        self.env = {
            **os.environ,
            "OPENCLAW_CONFIG_PATH": str(self.config_path),
            "OPENCLAW_STATE_DIR": str(self.state_dir),
            "OPENCLAW_GATEWAY_TOKEN": TOKEN,
            **(extra_env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openclaw", "gateway", "run", "--port", "0"],
            env=self.env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            # The open-file limit the gateway starts with (soft, hard), as a shell's ulimit.
            preexec_fn=None if nofile is None else lambda: _limit_open_files(nofile),
        )
        self.lines: list[str] = []
        self.port = 0
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if match:
                    self.port = int(match.group(1))
                    ready.set()
            ready.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        if not ready.wait(60) or not self.port:
            self.proc.kill()
            raise RuntimeError("gateway did not start:\n" + "".join(self.lines))

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float = 30) -> int:
        """The exit code, once the process ended and its last log lines were read."""
        code = self.proc.wait(timeout)
        self._pump.join(10)
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.wait()
        self.close()
        return code

    def close(self) -> None:
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self._pump.join(5)
            self.proc.stderr.close()


ENABLED = {"gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": True}}}}}


def upstream_models(up: FakeUpstream) -> dict:
    """`models` config with one OpenAI-compatible provider, the suite's upstream."""
    return {
        "providers": {
            "up": {"api": "openai-completions", "baseUrl": up.base_url, "models": [{"id": "m"}]}
        }
    }
