"""The local stack: real services on 127.0.0.1 for the demo and the tests.

``devstack.stack.up()`` starts PostgreSQL, moto (S3 + Secrets Manager), the Kubernetes API
simulator, the sample app (staging and production), Prometheus with node, postgres and
blackbox exporters, Alertmanager, a TLS endpoint, and the Prefect server, each
as its own process with state, logs and pid files under one directory, and writes an env file
for clients. ``up`` and ``down`` are idempotent.
"""
