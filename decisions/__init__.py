"""Pure decision logic: frozen dataclasses in, a decision out. Imports no vendor SDK."""
