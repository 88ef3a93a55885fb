"""What the UI tests share: Airflow signed in as a user, the browser's settings, and a file changed mid-run."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack.airflow_services import Airflow

CHROMIUM = "/usr/bin/chromium"  # Debian's (make system-packages); Playwright never downloads one here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USER = "admin"


class SignedInAirflow(Airflow):
    """The Airflow services with the simple auth manager's login on (no "everyone is admin"):
    the REST calls of the tests carry a token got with the user's password, as a script's would."""

    token: str | None = None

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def password(self) -> str:
        return json.loads(self.password_file.read_text())[USER]

    def start(self) -> None:
        self.spawn_services()
        self.wait_for(self._sign_in, "the api-server to accept the user's password")
        self.wait_until_ready()

    def _sign_in(self) -> bool:
        body = json.dumps({"username": USER, "password": self.password()}).encode()
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(self.base + "/auth/token", data=body, method="POST", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            self.token = json.loads(answer.read())["access_token"]
        return True

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """As Airflow.request, with the token; a locked SQLite database ("Database error") is retried."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
        }
        for attempt in range(5):
            request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as error:
                status, answer = error.code, json.loads(error.read() or b"{}")
            detail = answer.get("detail")
            locked = status == 500 and isinstance(detail, dict) and detail.get("reason") == "Database error"
            if not locked or attempt == 4:
                return status, answer
            time.sleep(1 + attempt)
        raise AssertionError("unreachable")


class ImageChangedAfterManifest:
    """Rewrites an image as soon as a new run's manifest appears in `runs` (one folder per run): the upload
    then finds the file changed since the manifest was built and fails that image with this reason, the
    real failure of a file edited during a run. Between the manifest and the upload the run still plans
    its batches (a task, or more), which leaves the change seconds to happen."""

    def __init__(self, runs: Path, image: Path) -> None:
        self.runs, self.image = runs, image
        self.changed = threading.Event()
        self.stop = threading.Event()

    def start(self) -> None:
        known = set(self.runs.glob("*/s3_upload_manifest.json"))
        threading.Thread(target=self._watch, args=(known,), daemon=True).start()

    def _watch(self, known: set[Path]) -> None:
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            if any(m not in known for m in self.runs.glob("*/s3_upload_manifest.json")):
                self.image.write_bytes(self.image.read_bytes() + b"\0")  # another size than the manifest's
                self.changed.set()
                return
            time.sleep(0.005)

    def wait(self) -> bool:
        """Stop watching; whether the image was changed."""
        self.stop.set()
        return self.changed.is_set()
