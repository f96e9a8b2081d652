"""Lambda entry points: one composition root per function (adapters from
``lambdas.composition``, built on the first invocation in a cached function and reused
while the container is warm), a thin handler that parses the event, calls one use case
and maps the result.

Tracing never records a handler's response or exception (``capture_response=False,
capture_error=False`` on every decorator, and ``lambdas.resources.OBSERVABILITY_ENV`` in every
function's environment): an API response can carry a newly issued cluster credential or
device password, and traces are readable by more people than those secrets are for."""
