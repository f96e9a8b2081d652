"""Lambda entry points: one composition root per function (adapters from
``lambdas.adapters.wiring``, built on the first invocation in a cached function and reused
while the container is warm), a thin handler that parses the event, calls one use case
and maps the result."""
