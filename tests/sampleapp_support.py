"""A tiny fake of the Kubernetes pod list the sample app polls (only what the app reads)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class FakeKube:
    """Pods per namespace, served as PodLists; ``set_image`` replaces them all."""

    def __init__(self) -> None:
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.selectors: set[str] = set()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if (
                    len(parts) != 5
                    or parts[:3] != ["api", "v1", "namespaces"]
                    or parts[4] != "pods"
                ):
                    self.send_error(404)
                    return
                selector = parse_qs(url.query).get("labelSelector", [""])[0]
                with fake.lock:
                    fake.selectors.add(selector)
                    items = [p for p in fake.pods.get(parts[3], []) if selector == "app=web-app"]
                    body = json.dumps({"kind": "PodList", "items": items}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set_pods(self, namespace: str, *images: str, ready: bool = True, unready: int = 0) -> None:
        """Replace the pods: one per image, plus ``unready`` pods of the first image not Ready."""
        pods = [(image, ready) for image in images] + [(images[0], False)] * unready
        with self.lock:
            self.pods[namespace] = [
                {
                    "metadata": {"name": f"web-app-{i}", "labels": {"app": "web-app"}},
                    "spec": {"containers": [{"name": "web", "image": image}]},
                    "status": {"conditions": [{"type": "Ready", "status": str(is_ready)}]},
                }
                for i, (image, is_ready) in enumerate(pods)
            ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
