"""Retryable steps grouped by the system they touch; vendor errors are translated here."""
