"""The whole system on one machine: the control plane's own handlers on moto.

``seg_local`` is the composition of the product for local use (``seg up``), end-to-end
tests and benchmarks. It plays the AWS services the handlers run on (moto in server
mode for DynamoDB and SQS; SQS event-source mappings; API Gateway's WebSocket API and
its ``@connections`` management API; the EventBridge schedule) and never reimplements
business logic: every table, queue, function and trigger comes from
``lambdas.resources``, every request is answered by the ``lambdas`` handlers.

It may import ``lambdas``, ``onprem_gateway`` and ``seg_contract`` (it composes them);
nothing in those packages imports it.
"""
