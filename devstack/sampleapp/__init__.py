"""The application being operated: a sample web app that behaves like the image deployed.

``python -m devstack.sampleapp --env staging --port 18081 --kube-url http://127.0.0.1:18080``
serves one environment. Every poll interval it lists the Deployment's pods in the Kubernetes
API simulator (``GET /api/v1/namespaces/{ns}/pods?labelSelector=app=web-app``) and keeps the
Ready ones; each request is served "by" a random Ready pod, like a Service, so traffic is
mixed during a rollout. If the simulator cannot be reached the last known pods keep serving.

Endpoints:
    ``/``         the traffic; 200, or 500 per the serving pod's behaviour; 503 with no Ready pod
    ``/health``   200 ``{"status": "ok", "image": ..., "pod": ...}``; 503 when the serving
                  pod's image is broken or no pod is Ready
    ``/metrics``  Prometheus text (see :mod:`devstack.sampleapp.metrics`)
    ``/upload/NAME``  PUT stores the body in the app's volume; 507 past its quota
    ``/_sim/faults``, ``/_sim/traffic``, ``/_sim/volume``  inject faults into the serving
                  pods (``leak`` grows their memory), set the traffic level spread over them,
                  fill, list or empty the volume; ``/_sim/volume/logs/delete`` removes named
                  files of its ``logs/`` (see :mod:`devstack.sampleapp.control`)

Responses carry ``X-Served-By`` (pod) and ``X-Image`` headers.

Behaviour by image tag (substring of the tag, case-insensitive; e.g.
``registry.local/web-app:1.1.0-prodbroken``):

===============  =======================================  ====================================
tag contains     staging                                  production
===============  =======================================  ====================================
``broken``       every ``/`` answers 500, /health 503     same
``slow``         ~2.5 s per ``/`` request (p95 > 2 s)     same
``flaky``        ~5% of ``/`` answer 500                  same
``prodbroken``   healthy                                  ~30% of ``/`` answer 500, /health 200
``prodslow``     healthy                                  ~2.5 s per ``/`` request
``busy``         1500 requests queued, 95% of its CPU     same
``poolexhaust``  DB pool exhausted, ~50% of ``/`` 500     same
anything else    healthy: a few ms, no errors             same
===============  =======================================  ====================================

A ``crashloop`` tag never gets a Ready pod in the simulator: ``/`` and ``/health`` answer 503.

Latency is an ``asyncio.sleep``: a slow request never blocks the others.
"""

from __future__ import annotations

from devstack.sampleapp.app import create_app
from devstack.sampleapp.behaviour import Behaviour, behaviour_for, image_tag
from devstack.sampleapp.pods import Pod, ready_pods

__all__ = ["Behaviour", "Pod", "behaviour_for", "create_app", "image_tag", "ready_pods"]
