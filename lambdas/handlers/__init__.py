"""Lambda entry points, one module per function, each declared through
``lambdas.handlers.skeleton.LambdaFunction``: its composition root (adapters from
``lambdas.composition``, built on the first invocation and reused while the container is
warm), and a thin handler that receives the parsed event, calls one use case and leaves
the answer (and the mapping of the domain's typed errors) to the skeleton.

Tracing never records a handler's response or exception (``capture_response=False,
capture_error=False`` on every decorator the skeleton applies, and
``lambdas.resources.OBSERVABILITY_ENV`` in every function's environment): an API response
can carry a newly issued cluster credential or device password, and traces are readable
by more people than those secrets are for."""
