"""Lambda entry points: one composition root per function (clients and adapters built
once at module scope), a thin handler that parses the event, calls one use case and
maps the result."""
